"""Profiles of the gateway's peer and its chaincode server during bench.ledger's busiest recorded-check cell.

They are the two largest CPU users per recorded check (the peers' and chaincode servers' columns of the table):
  * the peer (Go): Fabric's own pprof endpoint (core.yaml ``peer.profile``, off in every network), switched on
    for this one peer of the bench's temporary network on a loopback port, then the peer restarted by the
    supervisor; a CPU profile is taken over the measured window of the cell and summarised with
    ``go tool pprof -top -cum`` (the Go toolchain that built the Fabric binaries);
  * its chaincode server (Python): restarted by the supervisor under ``python -m cProfile`` (the manifest's
    argv), and restarted plainly after the first sweep so that cProfile writes its file (later sweeps run
    without it: the profilers slow what they watch); summarised by own time.
    cProfile counts every resumption of a coroutine as a call, so its call counts are not transactions.

Only for a temporary network: the bench changes a node's configuration and restarts it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import pstats
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import yaml

from bench.faults import await_ready, kill9, wait_restarted
from bench.network import BenchNetwork
from network.processes.control import reload_supervisor
from network.processes.procspec import load_manifest, upsert_processes
from peers.binaries import fabric_binary

TOP = 22  # lines of each summary


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _go() -> str | None:
    return shutil.which("go") or next((p for p in ("/usr/local/go/bin/go",) if Path(p).exists()), None)


class LedgerProfiler:
    def __init__(self, net: BenchNetwork, peer: str, out_dir: Path, say=print) -> None:
        self.net, self.peer, self.out_dir, self.say = net, peer, out_dir, say
        self.chaincode = next(p.name for p in load_manifest(net.layout.run)
                              if p.type == "chaincode" and p.name.endswith(f".{peer}"))
        self.pprof_port = _free_loopback_port()
        self.peer_profile = out_dir / f"{peer}.cpu.pprof"
        self.cc_profile = out_dir / f"{self.chaincode}.cprofile"
        self._original_cc = None
        self._capture: threading.Thread | None = None

    # --- switching on and off ------------------------------------------------------------------
    def enable(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        core = self.net.layout.node_config(self.peer) / "core.yaml"
        config = yaml.safe_load(core.read_text())
        config["peer"]["profile"] = {"enabled": True, "listenAddress": f"127.0.0.1:{self.pprof_port}"}
        core.write_text(yaml.safe_dump(config, sort_keys=False))
        [self._original_cc] = [p for p in load_manifest(self.net.layout.run) if p.name == self.chaincode]
        profiled = dataclasses.replace(self._original_cc, argv=[
            self._original_cc.argv[0], "-m", "cProfile", "-o", str(self.cc_profile), *self._original_cc.argv[1:]])
        upsert_processes(self.net.layout.run, [profiled])
        reload_supervisor(self.net.home)  # the chaincode server restarts under cProfile
        wait_restarted(self.net.home, self.peer, kill9(self.net.home, self.peer))  # the peer, with pprof on
        await_ready(self.net.spec, self.net.layout, self.net.home)
        self.say(f"  profiling {self.peer} (pprof on 127.0.0.1:{self.pprof_port}) and {self.chaincode} (cProfile)")

    def finish(self) -> None:
        """Restart the chaincode server without cProfile (the profiled one writes its file as it stops)."""
        if self._original_cc is None:
            return
        original, self._original_cc = self._original_cc, None
        upsert_processes(self.net.layout.run, [original])
        reload_supervisor(self.net.home)
        deadline = time.monotonic() + 30
        while not self.cc_profile.exists() and time.monotonic() < deadline:
            time.sleep(0.2)

    # --- the capture ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def cell(self, warmup: float, duration: float) -> Iterator[None]:
        """Take the peer's CPU profile over this cell's measured window (in a thread: the cell runs meanwhile)."""
        seconds = max(1, int(duration))

        def fetch() -> None:
            time.sleep(warmup)
            url = f"http://127.0.0.1:{self.pprof_port}/debug/pprof/profile?seconds={seconds}"
            with urllib.request.urlopen(url, timeout=seconds + 30) as answer:
                self.peer_profile.write_bytes(answer.read())

        self._capture = threading.Thread(target=fetch, name="pprof-capture", daemon=True)
        self._capture.start()
        yield
        self._capture.join(timeout=60)

    # --- the summaries ------------------------------------------------------------------------------
    def report(self) -> None:
        print(f"\nProfile of {self.peer} (Go pprof, busiest recorded-check cell): {self.peer_profile}")
        go = _go()
        if not self.peer_profile.exists():
            print("  (no profile was taken)")
        elif go is None:
            print(f"  read it with: go tool pprof -top -cum {fabric_binary('peer')} {self.peer_profile}")
        else:
            top = subprocess.run([go, "tool", "pprof", "-top", "-cum", f"-nodecount={TOP}", str(fabric_binary("peer")),
                                  str(self.peer_profile)], capture_output=True, text=True, timeout=120)
            print("\n".join("  " + line for line in (top.stdout or top.stderr).splitlines()[:TOP + 6]))
        print(f"\nProfile of {self.chaincode} (cProfile, the first sweep, by own time): {self.cc_profile}")
        if not self.cc_profile.exists():
            print("  (cProfile wrote no file)")
            return
        stats = pstats.Stats(str(self.cc_profile), stream=sys.stdout)
        stats.strip_dirs().sort_stats("tottime").print_stats(TOP)
