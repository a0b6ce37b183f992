"""Test helpers around the double as a process: a home with real identities, the double serving it.

TEST DOUBLE support: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric
binaries can be built here. ``prepare_home`` runs the real ``twinledger up`` (real Fabric CAs under the
supervisor, every node and user enrolled); ``DoubleProcess`` starts ``python -m tests.fabric_double``
on that home, waits for its ``ready`` line (its log goes to <home>/logs/fabric-double.log) and stops it
with SIGTERM (then SIGKILL if it hangs).
Every process started here is stopped by the matching ``stop``/``down_home``.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

from tests.ports import free_port_base

REPO = Path(__file__).resolve().parents[2]
#: Ports to reserve for the default spec (5 CAs, 3 orderers, 4 peers; 10 ports each) with room to spare.
PORTS = 200


def twinledger(*args: str, home: Path, timeout: float = 120, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    """Run the `twinledger` CLI as a subprocess of this interpreter (no TL_HOME/TL_AS from outside)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=clean)


def terminate(process: subprocess.Popen, grace: float = 10) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit status (the test servers' orderly stop)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=grace)
    return process.returncode


def prepare_home(home: Path) -> int:
    """`twinledger up` on free ports: CAs running and identities enrolled. Returns the port base.

    Without the Fabric binaries `up` stops after the identities with exit 1 and one line saying so;
    that is the expected outcome here. Any other failure raises with `up`'s output.
    """
    base = free_port_base(PORTS)
    result = twinledger("up", "--port-base", str(base), home=home, timeout=300)
    if result.returncode != 0 and "peers and orderers cannot start" not in result.stderr:
        raise RuntimeError(f"twinledger up failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return base


def down_home(home: Path) -> None:
    twinledger("down", home=home, timeout=60)


class DoubleProcess:
    """``python -m tests.fabric_double --home H`` until stop(); ``ready`` is its first output line."""

    def __init__(self, home: Path, *, register_orgs: bool = True, timeout: float = 60,
                 block_ms: int | None = None) -> None:
        """``block_ms``: the double's block cutting interval (``--block-ms``); None keeps the spec's batch timeout."""
        argv = [sys.executable, "-m", "tests.fabric_double", "--home", str(home)]
        if register_orgs:
            argv.append("--register-orgs")
        if block_ms is not None:
            argv += ["--block-ms", str(block_ms)]
        # stderr goes to a log file in the home, never a pipe nobody drains (the chaincode logs there).
        self.log = home / "logs" / "fabric-double.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)
        lines: queue.Queue[str] = queue.Queue()
        # A reader thread, so that waiting for the line can time out even if the process prints nothing.
        threading.Thread(target=lambda: lines.put(self.process.stdout.readline() if self.process.stdout else ""),
                         daemon=True).start()
        try:
            self.ready = lines.get(timeout=timeout).strip()
        except queue.Empty:
            self.ready = ""
        if not self.ready.startswith("ready"):
            self.stop()
            tail = self.log.read_text(errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"the fabric double did not get ready: {self.ready!r}; log: {' | '.join(tail)}")

    def stop(self) -> int:
        """SIGTERM, then SIGKILL after 10 s; returns the exit status."""
        terminate(self.process)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode
