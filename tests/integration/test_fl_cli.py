"""`twinledger fl run / rounds / verify` as a user runs them: subprocesses of the installed CLI, Flower's
real SuperLink and one SuperNode per plant (TLS, node authentication) under the TwinLedger supervisor.

Fabric's peers cannot run on this machine: the runs use either ``--ledger-file`` (a local JSON ledger, not
Fabric) or the peers' test double (tests/fabric_double: the real chaincode behind the Gateway service).
Without either the commands stop with one line. A grant revoked between two runs is exercised once, on
the double (the JSON ledger's same rule is covered in process by tests/unit/federated).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federated.data import task_spec
from federated.governance import JsonFileLedger
from orchestrator.control import stop_supervisor
from tests.ports import free_port_base

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).parent / "twinledger"
PLANTS = ["plant1", "plant2"]
SPEC = task_spec("maintenance")


def twinledger(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
    return subprocess.run([str(CLI), *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip


def run_live(*args: str, timeout: float = 420.0) -> tuple[int, list[tuple[float, str]], str]:
    """Run the CLI and time-stamp each stdout line as it arrives (progress must be shown live)."""
    proc = subprocess.Popen([str(CLI), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    t0, lines = time.monotonic(), []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.monotonic() - t0, line.rstrip("\n")))
            if time.monotonic() - t0 > timeout:
                raise TimeoutError(f"twinledger {' '.join(args)} ran longer than {timeout:.0f} s")
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read() if proc.stderr else ""
    lines.append((time.monotonic() - t0, "<exit>"))
    return rc, lines, err


@pytest.fixture
def env(tmp_path):
    home, ledger = tmp_path / "home", tmp_path / "ledger.json"
    yield home, ledger, str(free_port_base(len(PLANTS) + 1))
    stop_supervisor(home, timeout=30)  # whatever a failed or kept run left running


def _logs(home: Path) -> str:
    return "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
                     for f in sorted((home / "logs").glob("*.log")))  # fmt: skip


def test_run_rounds_verify_and_tamper(env):
    home, ledger_file, port_base = env
    common = ["--home", str(home), "--ledger-file", str(ledger_file)]
    d1, d2 = (SPEC.dataset_id(o) for o in PLANTS)

    # 1. Two rounds of the plants' task; --grant-all makes the grants each plant's steward would make.
    t0 = time.monotonic()
    rc, lines, err = run_live("fl", "run", "maintenance-it", "--rounds", "2", "--grant-all", "--port-base", port_base,
                              *common)  # fmt: skip
    print(f"\nfl run (2 rounds, 2 plants): {time.monotonic() - t0:.1f} s")
    out = "\n".join(text for _, text in lines)
    assert rc == 0, f"{out}\n{err}\n{_logs(home)}"
    assert lines[0][1] == f"ledger: local JSON ledger, not Fabric ({ledger_file})"
    assert "task maintenance-it created on the local JSON ledger (not Fabric)" in out
    assert (f"granted for {SPEC.purpose}, as each data set's steward would: {d2} to plant1, {d1} to plant2 "
            "(local JSON ledger, not Fabric)") in out  # fmt: skip
    for r in (1, 2):
        assert any(text.startswith(f"round {r}/2 started from") and "participants plant1, plant2" in text
                   for _, text in lines), out  # fmt: skip
    committed = next(t for t, text in lines if text.startswith("round 1/2 committed"))
    done = lines[-1][0]
    assert done - committed > 3.0, "round 1 was only reported when the whole run had ended"
    assert "round 2/2 committed" in out and "evaluated on each org's test split: plant1 AUROC" in out
    assert "maintenance-it: 7 verified, 0 missing, 0 mismatched" in out  # 3 models + 2 x 2 updates
    # Each round each plant recorded its use of both data sets: its own as owner, the other's under a grant.
    uses = [(a["org"], a["dataset"], a["reason"]) for a in JsonFileLedger(ledger_file).audit]
    assert sorted(uses) == sorted([("plant1", d1, "owner"), ("plant1", d2, "granted"),
                                   ("plant2", d2, "owner"), ("plant2", d1, "granted")] * 2)  # fmt: skip

    # 2. What the ledger recorded, as JSON.
    res = twinledger("fl", "rounds", "maintenance-it", "--json", *common)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["ledger"] == "local JSON ledger, not Fabric"
    assert doc["task"]["rounds"] == 2 and doc["task"]["purpose"] == SPEC.purpose
    assert sorted(doc["task"]["datasets"]) == [d1, d2]
    r1, r2 = doc["rounds"]
    assert r1["participants"] == r2["participants"] == PLANTS and r1["excluded"] == {} == r2["excluded"]
    assert r2["global_sha256"] == r1["result_sha256"] and r1["commit_tx_id"].startswith("local-")
    assert sorted(u["org"] for u in r1["updates"]) == PLANTS and set(r2["evaluation"]) == set(PLANTS)
    text = twinledger("fl", "rounds", "maintenance-it", *common).stdout
    assert text.splitlines()[0].startswith("ledger: local JSON ledger, not Fabric")
    assert f"{r1['global_sha256'][:12]} -> {r1['result_sha256'][:12]}" in text and r1["commit_tx_id"] in text

    # 3. The stored models verify; running the finished task again creates nothing and trains nothing.
    res = twinledger("fl", "verify", "maintenance-it", *common)
    assert res.returncode == 0 and "7 verified, 0 missing, 0 mismatched" in res.stdout, res.stdout + res.stderr
    res = twinledger("fl", "run", "maintenance-it", "--port-base", port_base, *common)
    assert res.returncode == 0 and "task maintenance-it found on the local JSON ledger" in res.stdout, res.stdout + res.stderr
    assert "all 2 rounds are committed and evaluated; nothing to train" in res.stdout
    again = JsonFileLedger(ledger_file)
    assert again.get_task("maintenance-it").tx_id == doc["task"]["tx_id"] and len(again.list_rounds("maintenance-it")) == 2

    # 4. A stored update is changed on disk: verify fails naming the file and what the ledger says it is.
    victim = next(u["sha256"] for u in r1["updates"] if u["org"] == "plant2")
    stored = home / "flower" / "store" / victim
    data = bytearray(stored.read_bytes())
    data[-1] ^= 0x01
    stored.write_bytes(bytes(data))
    res = twinledger("fl", "verify", "maintenance-it", *common)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"MISMATCHED: {stored} (round 1 update of plant2)" in res.stdout and "6 verified" in res.stdout
    res = twinledger("fl", "verify", "maintenance-it", "--json", *common)
    problems = json.loads(res.stdout)["problems"]
    assert res.returncode == 1 and [(p["file"], p["problem"], p["records"]) for p in problems] == [
        (str(stored), "mismatched", ["round 1 update of plant2"])]


def test_fabric_path_cross_org_grants_admit_and_a_revocation_excludes(tmp_path):
    """The same command against Fabric peers -- here the TEST DOUBLE of the peers (tests/fabric_double:
    the real chaincode behind the Gateway service, with the home's real Fabric-CA identities), since the
    peer binaries cannot be built on this machine. Each org's ClientApp records its use of both plants'
    data sets with its own operator identity; plant2's steward revokes plant1's grant between two runs."""
    from network.layout import Layout
    from network.spec import load_spec
    from orchestrator.bringup import CHAINCODE_NAME
    from orchestrator.cli_data import short_actor
    from orchestrator.connect import connect_sync
    from peers.binaries import fabric_available
    from tests.fabric_double.process import DoubleProcess, down_home, prepare_home

    if fabric_available() is None:
        pytest.skip("the Fabric binaries are installed: real peers own the peer ports, not the double")
    home = tmp_path / "net"
    prepare_home(home)  # `twinledger up`: CAs and every identity (the peers cannot start here)
    try:
        # This machine's situation: a network whose peers are not running.
        res = twinledger("fl", "run", "maintenance-fab", "--home", str(home))
        assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert f"the Fabric ledger is not reachable: no peer of plant1, plant2 is running in {home}" in res.stderr
        assert "pass --ledger-file PATH" in res.stderr
    except BaseException:
        down_home(home)
        raise
    double = DoubleProcess(home)
    port_base = str(free_port_base(len(PLANTS) + 1))
    d1, d2 = (SPEC.dataset_id(o) for o in PLANTS)
    try:
        spec, layout = load_spec(home / "spec.yaml"), Layout(home)

        def data_contract(org: str):  # noqa: ANN202 -- a steward's SyncContract, as `twinledger data` uses
            gw = connect_sync(spec, layout, org, "steward")
            return gw, gw.network(spec.channel).contract(CHAINCODE_NAME, "data")

        # Each plant's steward registers its data set and grants the other plant its use for the task,
        # as `twinledger data register` / `data grant` do.
        for org, other in (("plant1", "plant2"), ("plant2", "plant1")):
            gw, data = data_contract(org)
            with gw:
                data.submit("RegisterDataset", SPEC.dataset_id(org), "tabular", "{}", "ab" * 32, "internal")
                data.submit("Grant", SPEC.dataset_id(org), other, SPEC.purpose, "")

        # 1. One round with both plants; the processes stay up for the next run.
        t0 = time.monotonic()
        rc, lines, err = run_live("fl", "run", "maintenance-fab", "--rounds", "1", "--home", str(home),
                                  "--port-base", port_base, "--keep-running")  # fmt: skip
        print(f"\nfl run on the Fabric double (1 round, 2 plants): {time.monotonic() - t0:.1f} s")
        out = "\n".join(text for _, text in lines)
        assert rc == 0, f"{out}\n{err}\n{_logs(home)}"
        assert lines[0][1] == "ledger: Fabric, channel consortium (operator@plant1 via peer0.plant1)" and "JSON" not in out
        assert "task maintenance-fab created on the Fabric ledger (tx " in out and "4 verified, 0 missing" in out
        doc = json.loads(twinledger("fl", "rounds", "maintenance-fab", "--json", "--home", str(home)).stdout)
        assert doc["ledger"] == "Fabric" and doc["task"]["created_by_org"] == "plant1"  # the first org's operator
        (r1,) = doc["rounds"]
        assert r1["participants"] == PLANTS and len(r1["commit_tx_id"]) == 64 and set(r1["evaluation"]) == set(PLANTS)

        # 2. plant2's steward revokes plant1's grant (the CLI, as a steward runs it). On Fabric only a
        # participant's operator may start a round: acting as plant1, which is no longer admitted, the
        # run stops at round 1 saying what to do; acting as plant2 it runs.
        res = twinledger("data", "revoke", d2, "--to", "plant1", "--purpose", SPEC.purpose, "--as", "plant2",
                         "--home", str(home))  # fmt: skip
        assert res.returncode == 0, res.stdout + res.stderr
        rc, lines, err = run_live("fl", "run", "maintenance-fab-rv", "--rounds", "1", "--min-orgs", "1", "--home",
                                  str(home), "--port-base", port_base, "--keep-running")  # fmt: skip
        assert rc == 1 and len(err.strip().splitlines()) == 1, err
        assert "access denied: StartRound is for operators of round 1's participants" in err and err.rstrip().endswith(
            "the server acted as operator@plant1 via peer0.plant1: pass --as ORG naming an org that is admitted"), err
        t0 = time.monotonic()
        rc, lines, err = run_live("fl", "run", "maintenance-fab-rv", "--rounds", "1", "--min-orgs", "1",
                                  "--as", "plant2", "--home", str(home), "--port-base", port_base)  # fmt: skip
        print(f"fl run on the Fabric double (1 round, plant1 revoked, processes reused): {time.monotonic() - t0:.1f} s")
        out = "\n".join(text for _, text in lines)
        assert rc == 0, f"{out}\n{err}\n{_logs(home)}"
        assert (f"round 1: plant1 not participating: refused to train: its recorded check of {d2} was denied (revoked: "
                f"the grant of '{d2}' to 'plant1' for '{SPEC.purpose}' was revoked at ") in out, out
        assert f"(on the ledger: plant1's own data:Check record, `twinledger data audit {d2}`)" in out
        rv = json.loads(twinledger("fl", "rounds", "maintenance-fab-rv", "--json", "--home", str(home)).stdout)["rounds"]
        assert [r["participants"] for r in rv] == [["plant2"]] and [u["org"] for u in rv[0]["updates"]] == ["plant2"]
        assert set(rv[0]["evaluation"]) == {"plant2"}

        # 3. The audit trails: every check signed by the checking org's own operator. plant1's use of
        # plant2's data set was granted in run 1 and denied as revoked in run 2, as plant2's steward sees it.
        res = twinledger("data", "audit", d2, "--json", "--as", "plant2", "--home", str(home))
        assert res.returncode == 0, res.stderr
        uses = [(short_actor(e["caller"]), e["org"], e["role"], e["allowed"], e["reason"])
                for e in json.loads(res.stdout)["entries"] if e["action"] == "access"]  # fmt: skip
        assert [u for u in uses if u[1] == "plant1"] == [("operator@plant1", "plant1", "operator", True, "granted")] + [
            ("operator@plant1", "plant1", "operator", False, "revoked")] * 2  # the stopped run's and the last run's
        assert {u for u in uses if u[1] == "plant2"} == {("operator@plant2", "plant2", "operator", True, "owner")}
        gw, data = data_contract("plant1")
        with gw:
            trail = json.loads(data.evaluate("Audit", d1))["entries"]
        assert {(e["org"], e["allowed"], e["reason"]) for e in trail if e["action"] == "access"} == {
            ("plant1", True, "owner"), ("plant2", True, "granted")}
        assert twinledger("fl", "verify", "maintenance-fab", "--home", str(home)).returncode == 0
    finally:
        double.stop()
        stop_supervisor(home, timeout=30)  # the Flower processes a failed run may have left
        down_home(home)


def test_without_a_network_or_a_ledger_file_each_command_says_so_in_one_line(tmp_path):
    home = tmp_path / "empty"
    for cmd in (["fl", "run", "maintenance-v1"], ["fl", "rounds"], ["fl", "verify", "maintenance-v1"]):
        res = twinledger(*cmd, "--home", str(home))
        assert res.returncode == 1 and res.stdout == ""
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert lines[0].startswith(f"twinledger: the Fabric ledger is not reachable: there is no network in {home}")
        assert "pass --ledger-file PATH" in lines[0]
    assert not (home / "flower").exists()  # nothing was started or prepared
