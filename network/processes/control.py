"""Talking to a network's supervisor daemon from short-lived commands (up, down, status, logs)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from network.files import open_private_log, private_dir
from network.processes.procspec import pid_path, state_path


class SupervisorError(RuntimeError):
    pass


def _alive(pid: int) -> bool:
    """True while pid runs; a zombie (exited, not yet reaped by its parent) counts as gone."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child (tests start the daemon directly)
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def supervisor_pid(home: Path) -> int | None:
    """The live supervisor's pid, or None (a stale pid file from a crash is ignored)."""
    try:
        pid = int(pid_path(home / "run").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    if not _alive(pid):
        return None
    # Guard against pid reuse after a reboot: the process must be our supervisor for this home.
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return pid
    if b"network.processes.supervisor" in cmdline and str(home).encode() in cmdline:
        return pid
    return None


def start_supervisor(home: Path, metrics_port: int | None = None) -> int:
    """Start the daemon (detached from the terminal) unless one runs; returns its pid. With metrics_port
    it serves Prometheus metrics of its processes on 127.0.0.1:metrics_port/metrics."""
    pid = supervisor_pid(home)
    if pid:
        os.kill(pid, signal.SIGHUP)  # pick up manifest changes
        return pid
    # Logs and run files (the manifest holds every process's environment) are the owner's alone:
    # folders 0700, files 0600, from creation.
    private_dir(home / "logs")
    private_dir(home / "run")
    state_path(home / "run").unlink(missing_ok=True)
    log = open_private_log(home / "logs" / "supervisor.log")
    proc = subprocess.Popen(
        [sys.executable, "-m", "network.processes.supervisor", "--home", str(home),
         *(["--metrics-port", str(metrics_port)] if metrics_port else [])],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
        cwd=str(Path(__file__).resolve().parents[2]),  # the repository root: `-m network...` resolves there
    )
    log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if supervisor_pid(home) == proc.pid:
            return proc.pid
        if proc.poll() is not None:
            raise SupervisorError(f"supervisor exited at start (code {proc.returncode}); see {home / 'logs' / 'supervisor.log'}")
        time.sleep(0.05)
    raise SupervisorError(f"supervisor did not start within 10 s; see {home / 'logs' / 'supervisor.log'}")


def reload_supervisor(home: Path) -> None:
    pid = supervisor_pid(home)
    if not pid:
        raise SupervisorError("the network is not running; run `twinledger up` first")
    os.kill(pid, signal.SIGHUP)


def stop_supervisor(home: Path, timeout: float = 60.0) -> bool:
    """SIGTERM the daemon, which stops its children in order; False when nothing ran."""
    pid = supervisor_pid(home)
    if not pid:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)  # its children get SIGTERM through PDEATHSIG
    return True


def read_state(home: Path) -> dict:
    try:
        return json.loads(state_path(home / "run").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {"processes": []}


def wait_healthy(
    home: Path, names: Iterable[str], timeout: float, progress: Callable[[str], None] | None = None
) -> None:
    """Block until every named process is healthy; raise naming the laggards and their logs."""
    want = set(names)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        state = read_state(home)
        if not supervisor_pid(home):
            raise SupervisorError(f"supervisor is not running; see {home / 'logs' / 'supervisor.log'}")
        healthy = {p["name"] for p in state.get("processes", []) if p["healthy"]}
        for n in sorted((healthy & want) - seen):
            seen.add(n)
            if progress:
                progress(n)
        if want <= healthy:
            return
        time.sleep(0.2)
    procs = {p["name"]: p for p in state.get("processes", [])}
    bad = sorted(want - {n for n, p in procs.items() if p["healthy"]})
    detail = "; ".join(
        f"{n} (restarts {procs.get(n, {}).get('restarts', '?')}, log {home / 'logs' / (n + '.log')})" for n in bad
    )
    raise SupervisorError(f"not healthy after {timeout:.0f} s: {detail}")
