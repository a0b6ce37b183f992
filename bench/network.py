"""A Fabric network for a benchmark: an existing home, or a temporary one brought up and down by the bench.

Benchmarks measure the real thing: `twinledger up` (the real orderers, peers, CAs and chaincode servers
under the supervisor), run as a user runs it, on free ports in a temporary home that is stopped and
removed at the end, whatever happens in between.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from network.layout import Layout
from network.spec import Spec, load_spec
from network.processes.control import read_state

ROOT = Path(__file__).resolve().parents[1]
PORTS = 200  # the default spec's nodes need 121 ports; room to spare


@dataclass(frozen=True)
class BenchNetwork:
    home: Path
    spec: Spec
    layout: Layout
    up_seconds: float | None  # None: an existing network, not started by the bench

    def pids_by_type(self) -> dict[str, list[int]]:
        """Supervised processes by kind (peer, orderer, chaincode, ca), for CPU accounting."""
        out: dict[str, list[int]] = {}
        for proc in read_state(self.home).get("processes", []):
            if proc.get("pid"):
                out.setdefault(proc["type"], []).append(proc["pid"])
        return out


def _twinledger(*args: str, home: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@contextlib.contextmanager
def bench_network(home: Path | None = None, say=print,
                  around: Callable[[Path], contextlib.AbstractContextManager[Any]] | None = None,
                  spec: Path | None = None) -> Iterator[BenchNetwork]:
    """``home``: use that running network as it is. Otherwise `twinledger up` a temporary one (from ``spec``,
    default the default spec), and `down` + remove it at the end; ``around(home)`` is entered before that
    `up` and left after `down` (e.g. a node's data folder on a small file system)."""
    if home is not None:
        layout = Layout(home)
        if not layout.spec_file.exists():
            raise SystemExit(f"no network in {home}; run `twinledger up --home {home}` first")
        yield BenchNetwork(home, load_spec(layout.spec_file), layout, None)
        return
    from tests.ports import free_port_base  # the same free-range finder the tests use

    work = Path(tempfile.mkdtemp(prefix="tl-bench-"))
    temp_home = work / "net"
    # `kill` of a bench must still take its network down: SIGTERM unwinds like Ctrl-C, through `finally`.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        with around(temp_home) if around else contextlib.nullcontext():
            try:
                say(f"starting a network in {temp_home} (twinledger up) ...")
                t0 = time.monotonic()
                spec_args = ["--spec", str(spec)] if spec else []
                result = _twinledger("up", "--port-base", str(free_port_base(PORTS)), *spec_args, home=temp_home)
                if result.returncode != 0:
                    raise SystemExit(f"twinledger up failed:\n{result.stdout}\n{result.stderr}")
                up_seconds = time.monotonic() - t0
                say(f"network up in {up_seconds:.1f} s")
                layout = Layout(temp_home)
                yield BenchNetwork(temp_home, load_spec(layout.spec_file), layout, up_seconds)
            finally:
                _twinledger("down", home=temp_home, timeout=120)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
