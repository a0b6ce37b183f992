"""kill -9 a SuperNode mid-round (issue 13, faults): `twinledger fl run` on the real network (``fabric_net``),
Flower's real SuperLink and SuperNodes under the network's supervisor.

plant2's SuperNode is SIGKILLed the moment its SuperExec launches plant2's round-1 training task (seen in
``$TL_FL_TRACE``), so the training message it pulled dies with it. What must happen: the supervisor
restarts the SuperNode; the ServerApp notices the node left (or came back as a new process) instead of
waiting out its deadline, and -- the run allowing one org per round (``--min-orgs 1``) -- commits round 1
with plant1's update alone, names why plant2's is missing, and goes on; the ledger's rounds are
consecutive, each round's updates come only from its participants, and `twinledger fl verify` passes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.fabric_net import REPO, FabricNet
from tests.integration.test_fl_cli import PLANTS, _logs, flower, register_federation  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

VICTIM = "plant2"


def _launches(trace: Path, pid: int) -> int:
    """How many tasks the SuperExec with ``pid`` has launched (``task-launch`` lines of the trace)."""
    if not trace.exists():
        return 0
    n = 0
    for line in trace.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written
        n += rec.get("phase") == "task-launch" and rec.get("pid") == pid
    return n


def _run_and_kill(net: FabricNet, port_base: str, tmp_path: Path, min_orgs: int) -> tuple[str, dict, int, list, str, float]:
    """`twinledger fl run` of a new 2-round task; plant2's SuperNode SIGKILLed as its round-1 training task
    starts. Returns (task, the kill's pid and times, exit code, timed stdout lines, stderr, seconds)."""
    datasets = register_federation(net)
    task = net.unique("maintenance-kill")
    trace = tmp_path / "trace.jsonl"
    env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    env.update(PYTHONUNBUFFERED="1", TL_FL_TRACE=str(trace))
    argv = [sys.executable, "-m", "orchestrator.cli", "fl", "run", task, "--rounds", "2", "--min-orgs", str(min_orgs),
            "--datasets", datasets["plant1"], datasets["plant2"], "--port-base", port_base, "--timeout", "240",
            "--home", str(net.home)]  # fmt: skip
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    lines: list[tuple[float, str]] = []
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic() - t0, ln.rstrip("\n")) for ln in proc.stdout))
    reader.start()
    killed: dict = {}
    try:
        # The SuperExec launches one task per message: plant2's round-1 admission, then its round-1 training.
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None:
            procs = net.processes()
            exec_pid = procs.get(f"superexec.{VICTIM}", {}).get("pid")
            if exec_pid and _launches(trace, exec_pid) >= 2:
                node = procs[f"supernode.{VICTIM}"]
                os.kill(node["pid"], signal.SIGKILL)
                killed = {"pid": node["pid"], "restarts": node.get("restarts", 0), "at": time.monotonic() - t0}
                break
            time.sleep(0.05)
        assert killed, f"plant2's training task was never launched\n{lines}\n{_logs(net)}"
        # The supervisor restarts it (the run removes its processes from the supervisor when it ends).
        while proc.poll() is None and time.monotonic() - t0 < 300:
            node = net.processes().get(f"supernode.{VICTIM}", {})
            if "restarted" not in killed and node.get("pid") not in (None, killed["pid"]):
                killed["restarted"] = time.monotonic() - t0
            time.sleep(0.5)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(10)
    elapsed = time.monotonic() - t0
    err = proc.stderr.read() if proc.stderr else ""
    out = "\n".join(text for _, text in lines)
    print(f"\nfl run --min-orgs {min_orgs} with plant2's SuperNode killed at {killed['at']:.1f} s (restarted at "
          f"{killed.get('restarted', float('nan')):.1f} s): rc {rc} after {elapsed:.1f} s\n{out}\n{err}")
    assert "restarted" in killed, killed  # the supervisor restarted the SuperNode (a new process)
    return task, killed, rc, lines, err, elapsed


def test_kill_9_a_supernode_mid_round(fabric_net: FabricNet, flower: str, tmp_path: Path) -> None:
    net = fabric_net
    task, killed, rc, lines, err, elapsed = _run_and_kill(net, flower, tmp_path, min_orgs=1)
    out = "\n".join(text for _, text in lines)
    assert rc == 0, f"{out}\n{err}\n{_logs(net)}"

    # The run said what happened to plant2's round-1 update, and finished both rounds.
    assert "round 1/2 committed" in out and "round 2/2 committed" in out, out
    assert any(text.startswith(f"round 1: update not aggregated: {VICTIM}: no update: ")
               for _, text in lines), out  # fmt: skip

    # Round 1 waited for the dead node only until the SuperLink declared it offline (2 heartbeats of 10 s),
    # not for the run's deadline.
    seconds = next(text for _, text in lines if "seconds per round:" in text).split("seconds per round:")[1].split()
    assert float(seconds[0]) < 60, seconds

    # The ledger: rounds 1 and 2, consecutive, round 2 starting from round 1's result; round 1's result
    # holds plant1's update only; no round holds an update of an org that was not its participant.
    doc = net.ok("fl", "rounds", task)
    r1, r2 = doc["rounds"]
    assert (r1["round"], r2["round"]) == (1, 2) and r2["global_sha256"] == r1["result_sha256"]
    assert [u["org"] for u in r1["updates"]] == ["plant1"], r1
    for r in (r1, r2):
        assert r["result_sha256"] and r["commit_tx_id"]
        assert {u["org"] for u in r["updates"]} <= set(r["participants"]) <= set(PLANTS)
    # Every model and update the rounds name re-hashes to its ledger record.
    check = net.ok("fl", "verify", task)
    # (distinct artefacts: round 1's result, FedAvg of one update, is that very update)
    named = {h for r in (r1, r2) for h in (r["global_sha256"], r["result_sha256"], *(u["sha256"] for u in r["updates"]))}
    assert r1["result_sha256"] == r1["updates"][0]["sha256"]
    assert check["passed"] and check["verified"] == len(named) and not check["problems"], check


def test_kill_9_a_supernode_when_the_round_needs_it(fabric_net: FabricNet, flower: str, tmp_path: Path) -> None:
    """The same kill with both plants required (the default): one clear line, exit 1, and the ledger holds
    round 1 started (never committed) and what is there verifies; a next `fl run` of the task re-runs round 1
    (``governance.ResumePoint``)."""
    net = fabric_net
    task, _, rc, lines, err, elapsed = _run_and_kill(net, flower, tmp_path, min_orgs=2)
    assert rc == 1, err
    assert len(err.strip().splitlines()) == 1, err
    assert "round 1: 1 valid update(s), 2 needed" in err and "plant2: no update: " in err, err
    assert elapsed < 150, elapsed  # it stopped when the node was declared gone, not at the run's deadline
    doc = net.ok("fl", "rounds", task)
    [r1] = doc["rounds"]
    assert r1["round"] == 1 and r1["result_sha256"] is None and r1["start_tx_id"]
    check = net.ok("fl", "verify", task)
    assert check["passed"] and check["verified"] == 1 and not check["problems"], check  # round 1's start model
