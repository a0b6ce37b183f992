"""The process supervisor: one daemon per network that starts, watches and stops every node process.

It outlives the `twinledger up` that started it, so later commands (`status`, `down`, `logs`) talk to it
through files under <home>/run/: the manifest (what to run), state.json (what runs, restarts, health) and
supervisor.pid (whom to signal). Behaviour:

* each process gets one log file <home>/logs/<name>.log (appended across restarts, with a marker line);
* a process that exits unexpectedly is restarted with exponential backoff (1 s doubling to 30 s); the
  backoff resets once it has stayed up for STABLE_AFTER seconds;
* children die with the supervisor (PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans;
* SIGTERM stops children in reverse start order (SIGTERM, then SIGKILL after a grace period);
* SIGHUP re-reads the manifest: new processes start, removed ones stop.

Run as ``python -m orchestrator.supervisor --home DIR``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from orchestrator.health import probe
from orchestrator.procspec import ProcSpec, load_manifest, pid_path, state_path, write_json_atomic

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
STOP_GRACE = 10.0
TICK = 0.25
HEALTH_EVERY = 2.0

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the child before exec: get SIGTERM when the supervisor dies, and a process group of its own."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass
    os.setpgrp()


def log_event(event: str, **fields: object) -> None:
    """One structured line per event on the supervisor's own log (its stdout)."""
    rec = {"ts": round(time.time(), 3), "event": event, **fields}
    print(json.dumps(rec, sort_keys=True), flush=True)


@dataclass
class Child:
    spec: ProcSpec
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    backoff: float = BACKOFF_START
    next_start: float = 0.0
    last_exit: int | None = None
    healthy: bool = False
    last_probe: float = 0.0
    stopping: bool = False


class Supervisor:
    def __init__(self, home: Path):
        self.home = home
        self.run_dir = home / "run"
        self.log_dir = home / "logs"
        self.children: dict[str, Child] = {}
        self.stop_requested = False
        self.reload_requested = True

    # -- lifecycle of one child --------------------------------------------------------
    def _start(self, c: Child) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{c.spec.name}.log", "ab", buffering=0)
        log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start #{c.restarts} {' '.join(c.spec.argv)}\n".encode())
        env = {**os.environ, **c.spec.env}
        try:
            c.proc = subprocess.Popen(
                c.spec.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=c.spec.cwd, env=env, preexec_fn=_die_with_parent, close_fds=True,
            )
        except OSError as e:
            log.write(f"cannot start: {e}\n".encode())
            c.proc = None
            c.last_exit = -1
            c.next_start = time.monotonic() + c.backoff
            c.backoff = min(c.backoff * 2, BACKOFF_MAX)
            log_event("start_failed", name=c.spec.name, error=str(e))
            return
        finally:
            log.close()
        c.started_at = time.monotonic()
        c.healthy = False
        c.last_probe = 0.0
        log_event("started", name=c.spec.name, pid=c.proc.pid, restarts=c.restarts)

    def _reap(self, c: Child) -> None:
        if c.proc is None or c.proc.poll() is None:
            return
        c.last_exit = c.proc.returncode
        up_for = time.monotonic() - c.started_at
        c.proc = None
        c.healthy = False
        if c.stopping:
            return
        if up_for >= STABLE_AFTER:
            c.backoff = BACKOFF_START
        c.next_start = time.monotonic() + c.backoff
        log_event("exited", name=c.spec.name, code=c.last_exit, up_s=round(up_for, 1), restart_in_s=c.backoff)
        c.backoff = min(c.backoff * 2, BACKOFF_MAX)
        c.restarts += 1

    def _stop(self, c: Child) -> None:
        c.stopping = True
        if c.proc is None or c.proc.poll() is not None:
            return
        try:
            os.killpg(c.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            c.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            os.killpg(c.proc.pid, signal.SIGKILL)
            c.proc.wait()
        log_event("stopped", name=c.spec.name, code=c.proc.returncode)

    # -- the loop -------------------------------------------------------------------------
    def _reload(self) -> None:
        self.reload_requested = False
        wanted = {p.name: p for p in load_manifest(self.run_dir)}
        for name in list(self.children):
            if name not in wanted or wanted[name] != self.children[name].spec:
                self._stop(self.children.pop(name))
        for name, spec in wanted.items():
            if name not in self.children:
                self.children[name] = Child(spec)
        log_event("manifest", processes=list(wanted))

    def _write_state(self) -> None:
        now = time.monotonic()
        state = {
            "supervisor_pid": os.getpid(),
            "updated": time.time(),
            "processes": [
                {
                    "name": c.spec.name, "org": c.spec.org, "type": c.spec.type,
                    "pid": c.proc.pid if c.proc else None,
                    "running": c.proc is not None,
                    "healthy": c.healthy,
                    "restarts": c.restarts,
                    "last_exit": c.last_exit,
                    "up_s": round(now - c.started_at, 1) if c.proc else 0,
                }
                for c in self.children.values()
            ],
        }
        write_json_atomic(state_path(self.run_dir), state)

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop_requested", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stop_requested", True))
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_requested", True))
        pid_path(self.run_dir).write_text(str(os.getpid()))
        log_event("supervisor_started", pid=os.getpid(), home=str(self.home))
        last_state = 0.0
        try:
            while not self.stop_requested:
                if self.reload_requested:
                    self._reload()
                now = time.monotonic()
                for c in self.children.values():
                    self._reap(c)
                    if c.proc is None and not c.stopping and now >= c.next_start:
                        self._start(c)
                    elif c.proc is not None and now - c.last_probe >= HEALTH_EVERY:
                        c.last_probe = now
                        was = c.healthy
                        c.healthy = probe(c.spec.health)
                        if was != c.healthy:
                            log_event("health", name=c.spec.name, healthy=c.healthy)
                if now - last_state >= 0.5:
                    self._write_state()
                    last_state = now
                time.sleep(TICK)
        finally:
            # Reverse start order: peers before orderers before CAs.
            for c in reversed(list(self.children.values())):
                self._stop(c)
            self._write_state()
            pid_path(self.run_dir).unlink(missing_ok=True)
            log_event("supervisor_stopped")
        return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m orchestrator.supervisor")
    ap.add_argument("--home", required=True, type=Path)
    args = ap.parse_args(argv)
    return Supervisor(args.home.resolve()).run()


if __name__ == "__main__":
    sys.exit(main())
