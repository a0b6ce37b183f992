"""The running part of `twinledger twins run`, whatever it runs (simulators + bridge, or a bridge to external
OPC-UA servers): start the processes in order, one live line a second from the bridge's status, a clean stop at
Ctrl-C / SIGTERM / the end of --duration, and the closing summary."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from orchestrator.cli_common import UserError
from orchestrator.twins_state import TwinsDir, anchor_label

SIM_LOG, BRIDGE_LOG = "twins-simulators", "twins-bridge"
#: (name, argv, log name) of one process to start; started in this order, stopped in the reverse one.
Step = tuple[str, list[str], str]


def _last_log_line(path: Path) -> str:
    try:
        lines = [x for x in path.read_text(errors="replace").splitlines() if x.strip()]
    except OSError:
        return ""
    return lines[-1].strip()[:300] if lines else ""


class _Stopper:
    """SIGINT (Ctrl-C) and SIGTERM ask the run to stop. While a child is being spawned the signal only sets the
    flag (a KeyboardInterrupt between Popen and remembering the child would leave it running); elsewhere it
    interrupts whatever blocks (waiting for a child to be ready) so that the stop starts at once."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name
        self._defer = 0
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        if not self._defer:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        try:
            yield
        finally:
            for sig, old in self._old.items():
                signal.signal(sig, old)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self._defer += 1
        try:
            yield
        finally:
            self._defer -= 1


class _LiveLine:
    """One status line per second from the bridge's status.json: rates come from two consecutive statuses."""

    def __init__(self, td: TwinsDir, since: float) -> None:
        self.td = td
        self.since = since  # status.json of an earlier run is not this run's
        self.prev: tuple[float, int] | None = None
        self.rate = 0.0
        self.last: dict[str, Any] = {}

    def update(self) -> dict[str, Any]:
        st = self.td.read_json(self.td.status)
        if st and st.get("time") and float(st["time"]) >= self.since:
            now, readings = float(st["time"]), int(st.get("counters", {}).get("readings", 0))
            if self.prev and now > self.prev[0]:
                self.rate = (readings - self.prev[1]) / (now - self.prev[0])
            if not self.prev or now > self.prev[0]:
                self.prev = (now, readings)
            self.last = st
        return self.last

    def fields(self, elapsed: float) -> dict[str, Any]:
        """The live figures (`twins run --json` prints them as one JSON object per second)."""
        st = self.last
        c, b = st.get("counters", {}), st.get("bridge", {})
        twins = st.get("twins", {})
        return {
            "elapsed_s": round(elapsed, 1), "status": bool(st), "values_per_s": round(self.rate, 1),
            "twins_live": sum(1 for t in twins.values() if t.get("updates")), "twins": len(twins),
            "sealed": c.get("batches", 0), "anchored": c.get("anchored", 0), "anchor_errors": c.get("anchor_errors", 0),
            "lost": b.get("lost", 0), "alerts": len(st.get("alerts", [])), "alerts_recorded": c.get("alerts_raised", 0),
            "top_risk": _top_risk(twins),
            "opcua": "connected" if b.get("connected", True) else "reconnecting" if b.get("connects") else "connecting",
        }

    def text(self, elapsed: float) -> str:
        f = self.fields(elapsed)
        parts = [f"[{elapsed:5.0f}s]"]
        if not f["status"]:
            return " | ".join(parts + ["waiting for the bridge's first status…"])
        parts += [f"{f['values_per_s']:6.0f} values/s", f"twins {f['twins_live']}/{f['twins']}",
                  f"sealed {f['sealed']}", f"anchored {f['anchored']}"]
        if f["anchor_errors"]:
            parts.append(f"anchor errors {f['anchor_errors']} (retrying)")
        parts += [f"lost {f['lost']}", f"alerts {f['alerts']} ({f['alerts_recorded']} recorded)"]
        if f["top_risk"]:
            parts.append(f"top risk {f['top_risk']}")
        if f["opcua"] != "connected":
            parts.append(f"OPC-UA {f['opcua']}")
        return " | ".join(parts)


def _top_risk(twins: dict[str, dict[str, Any]]) -> str:
    """The machine most likely to fail next and the patient with the highest NEWS2-like score."""
    out = []
    machines = [(t["prediction"]["probability"], a, t["prediction"].get("model", "")) for a, t in twins.items()
                if t.get("prediction") and t["prediction"].get("probability") is not None]
    if machines:
        p, a, model = max(machines)
        out.append(f"{a} P(fail) {p:.3f} [{model}]")
    patients = [(t["risk"].get("score", 0), a, t["risk"].get("risk", "")) for a, t in twins.items() if t.get("risk")]
    if patients:
        score, a, band = max(patients)
        out.append(f"{a} NEWS2-like {score} ({band})")
    return ", ".join(out)


def run_processes(td: TwinsDir, steps: list[Step], run_info: dict[str, Any], say: Callable[..., None], *,
                  target: dict[str, Any], duration: float, json_out: bool, netns: str | None = None) -> int:
    """Start ``steps`` (each must print a JSON ready line), show them live until a stop, stop them (the last started
    first: the bridge seals what is pending at SIGTERM), print the summary; exit code 0, or 1 when a process exited
    badly. ``UserError`` when one did not start or stopped unexpectedly. ``netns``: the network namespace they all
    run in (the OPC-UA org's placement), None for this machine's own."""
    from twins.procs import Proc

    logs = {name: log for name, _, log in steps}
    stopper = _Stopper()
    procs: list[tuple[str, Proc]] = []
    t_live = time.monotonic()
    live = _LiveLine(td, since=time.time())
    error: str | None = None
    reason = "the end of --duration"
    tty = sys.stdout.isatty() and not json_out
    t_end: float | None = None
    refreshed = False
    codes: dict[str, int | None] = {}
    with stopper.installed():
        try:
            for name, argv, log in steps:
                with stopper.deferred():
                    p = Proc(argv, log=td.log(log), netns=netns)
                    procs.append((name, p))
                    run_info["pids"][name] = p.pid
                    td.write_json(td.run, run_info)
                try:
                    ready = p.wait_ready(60)
                except (RuntimeError, TimeoutError) as exc:
                    raise UserError(f"the twins {name} did not start: {exc}; last log line: {_last_log_line(td.log(log))}") from None
                if ready.get("metrics"):
                    run_info["metrics"][name] = ready["metrics"]
                    td.write_json(td.run, run_info)
            served = run_info["metrics"]
            metrics_text = ("metrics " + ", ".join(f"{n} {u}" for n, u in served.items()) + "; ") if served else ""
            say(f"running ({', '.join(f'{n} pid {p.pid}' for n, p in procs)}); {metrics_text}"
                + (f"stopping after {duration:g} s" if duration else "Ctrl-C stops everything"),
                event="running", pids={n: p.pid for n, p in procs}, metrics=served)
            t_live = time.monotonic()
            next_tick = t_live + 1.0
            while not stopper.requested:
                elapsed = time.monotonic() - t_live
                if duration and elapsed >= duration:
                    break
                dead = [(n, p) for n, p in procs if p.p.poll() is not None]
                if dead:
                    n, p = dead[0]
                    error = (f"the twins {n} stopped unexpectedly (exit {p.p.returncode}); "
                             f"last log line: {_last_log_line(td.log(logs[n]))}")
                    break
                time.sleep(max(0.0, min(next_tick, t_live + (duration or 1e9)) - time.monotonic()))
                if time.monotonic() >= next_tick:
                    next_tick += 1.0
                    live.update()
                    line = live.text(time.monotonic() - t_live)
                    if json_out:
                        print(json.dumps({"event": "live", "anchor": anchor_label(target),
                                          **live.fields(time.monotonic() - t_live)}), flush=True)
                    elif tty:  # refresh one line in place; a wrapped line could not be rewritten
                        print("\r\x1b[K" + line[:shutil.get_terminal_size().columns - 1], end="", flush=True)
                        refreshed = True
                    else:
                        print(line, flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            # From here a signal only sets the flag: stopping is bounded (SIGTERM, then SIGKILL) and must finish.
            with stopper.deferred():
                t_end = time.monotonic()
                if stopper.requested:
                    reason = stopper.requested
                if refreshed:
                    print(flush=True)  # end the line refreshed in place
                # bridge first: at SIGTERM it seals what is pending and waits for the anchorer
                for name, p in reversed(procs):
                    codes[name] = p.stop(timeout=20)
                run_info.update(stopped_at=time.time(), exit_codes=codes, pids={})
                if procs:
                    td.write_json(td.run, run_info)
    if error:
        raise UserError(error)
    st = live.update()
    c, b = st.get("counters", {}), st.get("bridge", {})
    bad = {n: code for n, code in codes.items() if code not in (0, -signal.SIGTERM)}
    gaps = b.get("gaps_sealed", 0)
    say(f"stopped on {reason} after {(t_end or time.monotonic()) - t_live:.1f} s: {c.get('readings', 0)} values, "
        f"{c.get('batches', 0)} batches sealed, {c.get('anchored', 0)} anchored, {b.get('lost', 0)} lost, "
        + (f"{gaps} gap records sealed (`twinledger verify gaps`), " if gaps else "")
        + f"{c.get('alerts_raised', 0)} alerts recorded"
        + (f"; exit codes {bad}" if bad else "")
        + f"; state kept in {td.root} (`twinledger twins status`, `twinledger verify reading ASSET SEQ`)",
        event="stopped", reason=reason, values=c.get("readings", 0), sealed=c.get("batches", 0),
        anchored=c.get("anchored", 0), lost=b.get("lost", 0), gaps_sealed=gaps,
        alerts_recorded=c.get("alerts_raised", 0), exit_codes=codes)
    return 1 if bad else 0
