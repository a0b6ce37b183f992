"""The supervisor daemon with real (tiny) child processes: start, health, crash restart, reload, stop."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from network.processes.control import read_state, start_supervisor, stop_supervisor, supervisor_pid, reload_supervisor, wait_healthy
from network.processes.procspec import ProcSpec, save_manifest, upsert_processes, load_manifest
from tests.ports import free_port_base

SERVER = "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('listening', flush=True); time.sleep(3600)"


def _proc(name: str, port: int) -> ProcSpec:
    return ProcSpec(name, "org1", "chaincode", [sys.executable, "-c", SERVER, str(port)], health=f"tcp://127.0.0.1:{port}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _state(home: Path, name: str) -> dict:
    return next(p for p in read_state(home)["processes"] if p["name"] == name)


@pytest.fixture
def home(tmp_path):
    yield tmp_path
    stop_supervisor(tmp_path, timeout=20)


def test_start_health_crash_restart_and_orderly_stop(home):
    base = free_port_base(2)
    save_manifest(home / "run", [_proc("a", base), _proc("b", base + 1)])
    sup = start_supervisor(home)
    wait_healthy(home, ["a", "b"], timeout=20)
    first = _state(home, "a")["pid"]

    os.kill(first, signal.SIGKILL)  # a crash
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        st = _state(home, "a")
        if st["healthy"] and st["pid"] != first:
            break
        time.sleep(0.2)
    st = _state(home, "a")
    assert st["pid"] != first and st["restarts"] == 1 and st["healthy"] and st["last_exit"] == -9
    assert (home / "logs" / "a.log").read_text().splitlines().count("listening") == 2, "one log file across restarts"

    pids = [p["pid"] for p in read_state(home)["processes"]]
    assert stop_supervisor(home)
    assert supervisor_pid(home) is None and not _pid_alive(sup)
    assert not any(_pid_alive(p) for p in pids), "down must stop every child"


def test_killed_supervisor_takes_its_children_along(home):
    base = free_port_base(1)
    save_manifest(home / "run", [_proc("a", base)])
    sup = start_supervisor(home)
    wait_healthy(home, ["a"], timeout=20)
    child = _state(home, "a")["pid"]
    os.kill(sup, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _pid_alive(child), "PDEATHSIG must stop the children of a killed supervisor"
    assert supervisor_pid(home) is None, "a stale pid file is not a running supervisor"


def test_reload_adds_and_removes_processes(home):
    base = free_port_base(2)
    save_manifest(home / "run", [_proc("a", base)])
    start_supervisor(home)
    wait_healthy(home, ["a"], timeout=20)
    a_pid = _state(home, "a")["pid"]
    upsert_processes(home / "run", [_proc("b", base + 1)])
    reload_supervisor(home)
    wait_healthy(home, ["a", "b"], timeout=20)
    assert _state(home, "a")["pid"] == a_pid, "an unchanged process keeps running across a reload"
    save_manifest(home / "run", [p for p in load_manifest(home / "run") if p.name == "b"])
    reload_supervisor(home)
    deadline = time.monotonic() + 20
    while any(p["name"] == "a" for p in read_state(home)["processes"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [p["name"] for p in read_state(home)["processes"]] == ["b"]
    assert not _pid_alive(a_pid)


def test_a_process_that_cannot_start_is_reported_not_fatal(home):
    base = free_port_base(1)
    save_manifest(home / "run", [ProcSpec("ghost", "org1", "peer", ["/nonexistent/binary"]), _proc("a", base)])
    start_supervisor(home)
    wait_healthy(home, ["a"], timeout=20)
    from network.processes.control import SupervisorError
    with pytest.raises(SupervisorError, match="ghost"):
        wait_healthy(home, ["ghost"], timeout=2)
    assert "cannot start" in (home / "logs" / "ghost.log").read_text()


def test_duplicate_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="duplicate"):
        save_manifest(tmp_path, [_proc("a", 1), _proc("a", 2)])


def _scrape(port: int) -> dict[str, float]:
    """The supervisor's /metrics as {sample with labels: value}; the exposition must parse line by line."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    return samples


def test_metrics_show_each_process_up_healthy_and_its_restarts(home):
    base = free_port_base(2)
    save_manifest(home / "run", [_proc("a", base)])
    start_supervisor(home, metrics_port=base + 1)
    wait_healthy(home, ["a"], timeout=20)
    labels = '{name="a",org="org1",type="chaincode"}'
    deadline = time.monotonic() + 10
    while _scrape(base + 1).get(f"twinledger_process_healthy{labels}") != 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    before = _scrape(base + 1)
    assert before[f"twinledger_process_up{labels}"] == 1 and before[f"twinledger_process_healthy{labels}"] == 1
    assert before.get(f"twinledger_process_restarts_total{labels}", 0) == 0

    os.kill(_state(home, "a")["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        after = _scrape(base + 1)
        if after.get(f"twinledger_process_restarts_total{labels}") == 1 and after[f"twinledger_process_healthy{labels}"] == 1:
            break
        time.sleep(0.2)
    assert after[f"twinledger_process_restarts_total{labels}"] == 1 and after[f"twinledger_process_up{labels}"] == 1


def test_logs_are_private_and_show_argv_and_env_names_but_no_env_value(home):
    """Folders 0700, logs 0600 from creation; the start line is a copy-pasteable argv plus the names of
    the process's own variables -- values may be secrets, so they never reach a log. Children run under
    umask 077: what a node writes is its owner's alone."""
    base = free_port_base(1)
    writes = f"open('made-by-child', 'w').write('x'); {SERVER}"
    spec = ProcSpec("a", "org1", "chaincode", [sys.executable, "-c", writes, str(base)], env={"SOME_TOKEN": "t0k3n-value"},
                    cwd=str(home), health=f"tcp://127.0.0.1:{base}")
    save_manifest(home / "run", [spec])
    start_supervisor(home)
    wait_healthy(home, ["a"], timeout=20)
    log = (home / "logs" / "a.log").read_text()
    assert "(env: SOME_TOKEN)" in log and "t0k3n-value" not in log and "made-by-child" in log and log.count("listening") == 2
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(home / "logs") == 0o700 and mode(home / "run") == 0o700
    assert mode(home / "logs" / "a.log") == 0o600 and mode(home / "logs" / "supervisor.log") == 0o600
    assert mode(home / "run" / "processes.json") == 0o600 and mode(home / "run" / "state.json") == 0o600
    assert mode(home / "made-by-child") == 0o600


SLOW_TO_STOP = ("import signal,socket,sys,time\n"
                "def bye(*_): time.sleep(1.5); sys.exit(0)\n"
                "signal.signal(signal.SIGTERM, bye)\n"
                "s=socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); time.sleep(3600)")


def test_processes_of_one_kind_stop_together(home):
    """Four chaincode servers that each take 1.5 s to stop: the supervisor stops them in ~1.5 s, not ~6 s."""
    base = free_port_base(4)
    specs = [ProcSpec(f"cc{i}", "org1", "chaincode", [sys.executable, "-c", SLOW_TO_STOP, str(base + i)],
                      health=f"tcp://127.0.0.1:{base + i}") for i in range(4)]
    save_manifest(home / "run", specs)
    start_supervisor(home)
    wait_healthy(home, [s.name for s in specs], timeout=30)
    t0 = time.monotonic()
    stop_supervisor(home, timeout=30)
    took = time.monotonic() - t0
    assert supervisor_pid(home) is None
    assert 1.4 <= took < 4.5, f"stopping 4 slow children took {took:.1f} s"


def test_ready_probes_gate_health_once_per_start(home):
    """A process counts as healthy only after its ready probes answered; a closed one keeps it unhealthy."""
    base = free_port_base(3)
    listening = ProcSpec("a", "org1", "chaincode", [sys.executable, "-c", SERVER, str(base)], ready=f"tcp://127.0.0.1:{base}")
    never = ProcSpec("b", "org1", "chaincode", [sys.executable, "-c", SERVER, str(base + 1)],
                     health=f"tcp://127.0.0.1:{base + 1}", ready=f"tcp://127.0.0.1:{base + 2}")  # nothing listens on base+2
    save_manifest(home / "run", [listening, never])
    start_supervisor(home)
    wait_healthy(home, ["a"], timeout=20)
    time.sleep(4.5)  # two probe periods: b's health answers, its ready probe never does
    assert _state(home, "b")["healthy"] is False
    assert load_manifest(home / "run")[1].ready == f"tcp://127.0.0.1:{base + 2}"  # the field survives the manifest


def test_the_fatal_line_of_an_exit_is_kept_for_status(home):
    crash = "import sys; print('starting', flush=True); print('panic: ledger corrupt at block 7', flush=True); sys.exit(2)"
    save_manifest(home / "run", [ProcSpec("crashy", "org1", "peer", [sys.executable, "-c", crash])])
    start_supervisor(home)
    deadline = time.monotonic() + 20
    st: dict = {}
    while time.monotonic() < deadline and not st.get("last_error"):
        time.sleep(0.2)
        st = next((p for p in read_state(home).get("processes", []) if p["name"] == "crashy"), {})
    assert st["last_error"] == "panic: ledger corrupt at block 7" and st["last_exit"] == 2
    assert st["waiting_for_space"] is None, "not a full disk: restarted with the usual backoff"


def test_after_a_full_disk_it_restarts_at_once_only_when_space_was_freed(tmp_path, monkeypatch):
    """The decision alone (free space faked): no start below the threshold; at once when space was freed since
    the exit; after the usual backoff when the node died with room left (it needs more than the disk has)."""
    from network.processes import supervisor as sup

    free = {"bytes": 16 * 1024}
    monkeypatch.setattr(sup, "free_bytes", lambda path: free["bytes"])
    s = sup.Supervisor(tmp_path)
    c = sup.Child(ProcSpec("p", "org1", "peer", ["true"]), full_path="/data/x", free_at_exit=16 * 1024, next_start=100.0)
    assert not s._may_start(c, now=200.0), "below the threshold: wait, whatever the backoff says"
    free["bytes"] = 64 * 1024 * 1024
    assert s._may_start(c, now=50.0) and c.full_path is None, "space freed: at once, before the backoff"

    tight = sup.Child(ProcSpec("q", "org1", "peer", ["true"]), full_path="/data/x",
                      free_at_exit=64 * 1024 * 1024, next_start=100.0)
    assert not s._may_start(tight, now=50.0), "died with room left: no tight crash loop"
    assert s._may_start(tight, now=150.0), "...the usual backoff instead"
