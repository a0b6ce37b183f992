"""The process supervisor: one daemon per network that starts, watches and stops every node process.

It outlives the `twinledger up` that started it, so later commands (`status`, `down`, `logs`) talk to it
through files under <home>/run/: the manifest (what to run), state.json (what runs, restarts, health) and
supervisor.pid (whom to signal). Behaviour:

* each process gets one log file <home>/logs/<name>.log (appended across restarts, with a marker line),
  0600 in a 0700 folder: a log holds no secret, but what a node prints is nobody else's business;
* a process that exits unexpectedly is restarted with exponential backoff (1 s doubling to 30 s); the
  backoff resets once it has stayed up for STABLE_AFTER seconds. The fatal line of its log is kept as
  its ``last_error``; when that line says its disk is full, it is not restarted until that file system
  has room again (network/processes/exit_reason.py), then at once;
* children die with the supervisor (PR_SET_PDEATHSIG), so a killed supervisor leaves no orphans;
* SIGTERM stops children in reverse start order (SIGTERM, then SIGKILL after a grace period);
* SIGHUP re-reads the manifest: new processes start, removed ones stop;
* with ``--metrics-port``, Prometheus metrics of every process it runs (up, healthy, restarts, uptime)
  at http://127.0.0.1:PORT/metrics, beside the Fabric nodes' own operations endpoints.

Run as ``python -m network.processes.supervisor --home DIR``.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from network.child_process import die_with_parent
from network.files import PRIVATE_UMASK, open_private_log, private_dir
from network.metrics import Registry, serve_metrics
from network.processes.exit_reason import RESTART_FREE_BYTES, free_bytes, read_exit_reason
from network.processes.health import probe
from network.processes.procspec import ProcSpec, load_manifest, pid_path, state_path, write_json_atomic

BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
STABLE_AFTER = 60.0
STOP_GRACE = 10.0
TICK = 0.25
HEALTH_EVERY = 2.0


def start_marker(spec: ProcSpec, restarts: int) -> str:
    """The line opening each run in a process's log: its command line (argv carries no secret: they go
    through the environment, see network/ca.py) and the names -- never the values -- of its own
    environment variables, since those may be secrets."""
    env = f" (env: {' '.join(sorted(spec.env))})" if spec.env else ""
    return f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} start #{restarts} {shlex.join(spec.command)}{env}\n"


def log_event(event: str, **fields: object) -> None:
    """One structured line per event on the supervisor's own log (its stdout)."""
    rec = {"ts": round(time.time(), 3), "event": event, **fields}
    try:
        print(json.dumps(rec, sort_keys=True), flush=True)
    except OSError:
        pass  # its own log's disk is full: keep supervising (state.json and the nodes matter more)


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
    ready: bool = False  # the spec's ready probes answered since the last start
    last_probe: float = 0.0
    stopping: bool = False
    log_offset: int = 0             # where this run's output starts in its log
    last_error: str | None = None   # the fatal line of the last unexpected exit
    full_path: str | None = None    # set while waiting for space on the disk holding this path
    free: int | None = None         # bytes free there at the last look
    free_at_exit: int | None = None # ... and when the node died of it


class SupervisorMetrics:
    """What a scrape of the supervisor shows, per process (labels: name, org, type)."""

    def __init__(self) -> None:
        self.registry = Registry()
        labels = ("name", "org", "type")
        self.up = self.registry.gauge("twinledger_process_up", "1 while the process runs", labels)
        self.healthy = self.registry.gauge("twinledger_process_healthy", "1 while its health probe passes", labels)
        self.uptime = self.registry.gauge("twinledger_process_uptime_seconds", "Seconds since its last start", labels)
        self.restarts = self.registry.counter("twinledger_process_restarts_total", "Unexpected exits followed by a restart", labels)

    def observe(self, c: Child, now: float) -> None:
        key = (c.spec.name, c.spec.org, c.spec.type)
        self.up.labels(*key).set(1 if c.proc is not None else 0)
        self.healthy.labels(*key).set(1 if c.healthy else 0)
        self.uptime.labels(*key).set(round(now - c.started_at, 1) if c.proc is not None else 0)

    def restarted(self, c: Child) -> None:
        self.restarts.labels(c.spec.name, c.spec.org, c.spec.type).inc()


class Supervisor:
    def __init__(self, home: Path, metrics_port: int | None = None):
        self.home = home
        self.run_dir = home / "run"
        self.log_dir = home / "logs"
        self.children: dict[str, Child] = {}
        self.stop_requested = False
        self.reload_requested = True
        self.metrics_port = metrics_port
        self.metrics = SupervisorMetrics()
        self.state_unwritable = False

    # -- lifecycle of one child --------------------------------------------------------
    def _start(self, c: Child) -> None:
        try:
            private_dir(self.log_dir)
            log = open_private_log(self.log_dir / f"{c.spec.name}.log")
        except OSError as e:
            # Its log's disk is full (or gone): a node started blind would be undiagnosable. Wait as for
            # any start failure -- and, for a full disk, until it has room (_may_start).
            self._start_failed(c, f"cannot open its log: {e}", self.log_dir if e.errno == errno.ENOSPC else None)
            return
        try:
            log.write(start_marker(c.spec, c.restarts).encode())
        except OSError as e:
            log.close()
            self._start_failed(c, f"cannot write its log: {e}", self.log_dir if e.errno == errno.ENOSPC else None)
            return
        c.log_offset = log.tell()
        env = {**os.environ, **c.spec.env}
        try:
            c.proc = subprocess.Popen(
                c.spec.command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=c.spec.cwd, env=env, preexec_fn=die_with_parent(), close_fds=True,
            )
        except OSError as e:
            log.write(f"cannot start: {e}\n".encode())
            self._start_failed(c, f"cannot start: {e}")
            return
        finally:
            log.close()
        c.started_at = time.monotonic()
        c.healthy = False
        c.ready = False
        c.last_probe = 0.0
        log_event("started", name=c.spec.name, pid=c.proc.pid, restarts=c.restarts)

    def _start_failed(self, c: Child, error: str, full_path: Path | None = None) -> None:
        c.proc = None
        c.last_exit = -1
        c.last_error = error
        c.full_path = str(full_path) if full_path else None
        c.free_at_exit = _free_or_none(c.full_path)
        c.next_start = time.monotonic() + c.backoff
        c.backoff = min(c.backoff * 2, BACKOFF_MAX)
        log_event("start_failed", name=c.spec.name, error=error)

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
        reason = read_exit_reason(self.log_dir / f"{c.spec.name}.log", c.log_offset)
        c.last_error = reason.line if reason else None
        c.full_path = reason.full_path if reason else None
        c.free_at_exit = _free_or_none(c.full_path)
        log_event("exited", name=c.spec.name, code=c.last_exit, up_s=round(up_for, 1), restart_in_s=c.backoff,
                  error=c.last_error, waiting_for_space=c.full_path)
        c.backoff = min(c.backoff * 2, BACKOFF_MAX)
        c.restarts += 1
        self.metrics.restarted(c)

    def _may_start(self, c: Child, now: float) -> bool:
        """Due, and -- after a full disk -- room on that disk again: at once when space was freed since the
        node died, else (it died with RESTART_FREE_BYTES free, needing more) only after the usual backoff, so
        a disk that stays short never makes a tight crash loop."""
        if c.full_path is None:
            return now >= c.next_start
        c.free = _free_or_none(c.full_path)
        if c.free is None:
            return now >= c.next_start  # the path is gone (a remount?): fall back to the backoff
        if c.free < RESTART_FREE_BYTES:
            return False
        freed = c.free_at_exit is None or c.free - c.free_at_exit >= RESTART_FREE_BYTES // 8
        if not freed and now < c.next_start:
            return False
        log_event("space_returned", name=c.spec.name, path=c.full_path, free_bytes=c.free)
        c.full_path = None
        return True

    def _stop(self, c: Child) -> None:
        self._stop_together([c])

    def _stop_together(self, children: list[Child]) -> None:
        """SIGTERM every one of ``children`` at once, then wait for each (SIGKILL after the grace period):
        processes of one kind stop in parallel (four chaincode servers take ~2 s each to stop)."""
        running = []
        for c in children:
            c.stopping = True
            if c.proc is None or c.proc.poll() is not None:
                continue
            try:
                os.killpg(c.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            running.append(c)
        deadline = time.monotonic() + STOP_GRACE
        for c in running:
            try:
                c.proc.wait(max(0.0, deadline - time.monotonic()))
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
                    "last_error": c.last_error,
                    "waiting_for_space": ({"path": c.full_path, "free_bytes": c.free, "needs_bytes": RESTART_FREE_BYTES}
                                          if c.full_path else None),
                    "up_s": round(now - c.started_at, 1) if c.proc else 0,
                }
                for c in self.children.values()
            ],
        }
        try:
            write_json_atomic(state_path(self.run_dir), state)
        except OSError as e:
            # A full disk under <home>/run must not take the supervisor -- and with it every node -- down;
            # the state is rewritten every half second once there is room.
            if not self.state_unwritable:
                log_event("state_unwritable", error=str(e))
            self.state_unwritable = True
        else:
            self.state_unwritable = False

    def run(self) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stop_requested", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stop_requested", True))
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "reload_requested", True))
        pid_path(self.run_dir).write_text(str(os.getpid()))
        log_event("supervisor_started", pid=os.getpid(), home=str(self.home))
        metrics_server = None
        if self.metrics_port:
            try:
                metrics_server = serve_metrics(self.metrics.registry, self.metrics_port)
                log_event("metrics", url=f"http://127.0.0.1:{self.metrics_port}/metrics")
            except OSError as e:
                # Metrics are for watching; a taken port must not keep the network from running.
                log_event("metrics_unavailable", port=self.metrics_port, error=str(e))
        last_state = 0.0
        try:
            while not self.stop_requested:
                if self.reload_requested:
                    self._reload()
                now = time.monotonic()
                for c in self.children.values():
                    self._reap(c)
                    if c.proc is None and not c.stopping and self._may_start(c, now):
                        self._start(c)
                    elif c.proc is not None and now - c.last_probe >= HEALTH_EVERY:
                        c.last_probe = now
                        was = c.healthy
                        c.ready = c.ready or probe(c.spec.ready)
                        c.healthy = c.ready and probe(c.spec.health)
                        if was != c.healthy:
                            log_event("health", name=c.spec.name, healthy=c.healthy)
                if now - last_state >= 0.5:
                    for c in self.children.values():
                        self.metrics.observe(c, now)
                    self._write_state()
                    last_state = now
                time.sleep(TICK)
        finally:
            # Reverse start order, one kind at a time: chaincode servers, peers, orderers, then CAs.
            for group in _runs_of_one_type(list(reversed(self.children.values()))):
                self._stop_together(group)
            self._write_state()
            pid_path(self.run_dir).unlink(missing_ok=True)
            if metrics_server is not None:
                metrics_server.shutdown()
            log_event("supervisor_stopped")
        return 0


def _free_or_none(path: str | None) -> int | None:
    if path is None:
        return None
    try:
        return free_bytes(path)
    except OSError:
        return None


def _runs_of_one_type(children: list[Child]) -> list[list[Child]]:
    """Consecutive children of the same type, grouped, order kept."""
    groups: list[list[Child]] = []
    for c in children:
        if groups and groups[-1][0].spec.type == c.spec.type:
            groups[-1].append(c)
        else:
            groups.append([c])
    return groups


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m network.processes.supervisor")
    ap.add_argument("--home", required=True, type=Path)
    ap.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on 127.0.0.1:PORT/metrics")
    args = ap.parse_args(argv)
    # Every node it runs inherits this: ledgers, keys and configs a node writes (fabric-ca-server's holds
    # the bootstrap password) are the owner's alone from creation, whatever mode the node asks for.
    os.umask(PRIVATE_UMASK)
    return Supervisor(args.home.resolve(), args.metrics_port).run()


if __name__ == "__main__":
    sys.exit(main())
