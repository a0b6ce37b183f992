"""`twinledger fl run / rounds / verify` as a user runs them, on the real Fabric network of the test run
(``fabric_net``): Flower's real SuperLink and one SuperNode per plant (TLS, node authentication) under
the network's supervisor, every round on the real peers.

Each test works on data sets and tasks of its own (``fabric_net.unique``): each plant's steward
registers its share of AI4I 2020 under a new ID and grants the other plant its use for the task's
purpose, so a revocation here touches nobody else's runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federated.data import data_root, task_spec
from federated.launch import stop_deployment
from orchestrator.cli_data import short_actor
from network.processes.procspec import load_manifest
from tests.fabric_net import REPO, FabricNet
from tests.ports import free_port_base

pytestmark = pytest.mark.integration

PLANTS = ["plant1", "plant2"]
SPEC = task_spec("maintenance")
MANIFEST = data_root() / "ai4i2020" / "ai4i2020.csv"  # the data sets' manifest hash is the file's SHA-256


def run_live(net: FabricNet, *args: str, timeout: float = 420.0) -> tuple[int, list[tuple[float, str]], str]:
    """Run the CLI on the network's home and time-stamp each stdout line as it arrives (progress must be
    shown live)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args, "--home", str(net.home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env={**env, "PYTHONUNBUFFERED": "1"})  # fmt: skip
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


def register_federation(net: FabricNet, purpose: str = SPEC.purpose) -> dict[str, str]:
    """Each plant's steward registers its share of AI4I 2020 under a new ID and grants the other plant its
    use for ``purpose`` (the calls `twinledger data register` / `data grant` make, through the steward's
    own gateway). Returns org -> data set ID."""
    name = net.unique("ai4i")
    datasets = {org: f"{org}.{name}" for org in PLANTS}
    manifest = hashlib.sha256(MANIFEST.read_bytes()).hexdigest()
    for org, other in (("plant1", "plant2"), ("plant2", "plant1")):
        with net.connect_sync(org, "steward") as gw:
            data = gw.network(net.spec.channel).contract(net.chaincode, "data")
            data.submit("RegisterDataset", datasets[org], "tabular", "{}", manifest, "internal")
            data.submit("Grant", datasets[org], other, purpose, "")
    return datasets


def audit(net: FabricNet, dataset: str, org: str) -> list[dict]:
    """The data set's audit trail (data:Audit), as org's admin reads it."""
    with net.connect_sync(org, "admin") as gw:
        return json.loads(gw.network(net.spec.channel).contract(net.chaincode, "data").evaluate("Audit", dataset))["entries"]


def _logs(net: FabricNet) -> str:
    return "\n".join(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
                     for f in sorted((net.home / "logs").glob("*.log"))
                     if f.name.startswith(("superlink", "supernode", "superexec")))  # fmt: skip


@pytest.fixture
def flower(fabric_net: FabricNet):
    """A free SuperLink port; afterwards the Flower processes a kept or failed run left under the network's
    supervisor are removed from it (the network itself stays up for the other tests)."""
    yield str(free_port_base(len(PLANTS) + 1))
    run_dir = fabric_net.home / "run"
    ours = [p for p in load_manifest(run_dir) if p.type in ("superlink", "supernode")]
    if ours:
        stop_deployment(fabric_net.home, ours)


def test_run_rounds_verify_tamper_and_a_revocation_excludes(fabric_net: FabricNet, flower: str) -> None:
    net, port_base = fabric_net, flower
    datasets = register_federation(net)
    d1, d2 = datasets["plant1"], datasets["plant2"]
    task = net.unique("maintenance")

    # 1. Two rounds of the plants' task over their data sets; the processes stay up for the later runs.
    t0 = time.monotonic()
    rc, lines, err = run_live(net, "fl", "run", task, "--rounds", "2", "--datasets", d1, d2, "--port-base", port_base,
                              "--keep-running")  # fmt: skip
    print(f"\nfl run on Fabric (2 rounds, 2 plants, processes started): {time.monotonic() - t0:.1f} s")
    out = "\n".join(text for _, text in lines)
    assert rc == 0, f"{out}\n{err}\n{_logs(net)}"
    assert lines[0][1] == "ledger: Fabric, channel consortium (operator@plant1 via peer0.plant1)"
    assert f"task {task} created on the Fabric ledger (tx " in out and f"for fl:maintenance over {d1}, {d2}" in out
    for r in (1, 2):
        assert any(text.startswith(f"round {r}/2 started from") and "participants plant1, plant2  tx " in text
                   for _, text in lines), out  # fmt: skip
    committed = next(t for t, text in lines if text.startswith("round 1/2 committed"))
    assert lines[-1][0] - committed > 3.0, "round 1 was only reported when the whole run had ended"
    assert "round 2/2 committed" in out and "evaluated on each org's test split: plant1 AUROC" in out
    assert f"{task}: 7 verified, 0 missing, 0 mismatched" in out  # 3 models + 2 x 2 updates

    # 2. What the ledger recorded, as JSON: each round names its participants with the transactions of
    # their own recorded checks, which are in the data sets' audit trails as allowed checks of that org.
    doc = net.ok("fl", "rounds", task)
    assert doc["ledger"] == "Fabric" and doc["task"]["rounds"] == 2 and doc["task"]["purpose"] == SPEC.purpose
    assert sorted(doc["task"]["datasets"]) == [d1, d2] and doc["task"]["created_by_org"] == "plant1"
    r1, r2 = doc["rounds"]
    assert r1["participants"] == r2["participants"] == PLANTS and r2["global_sha256"] == r1["result_sha256"]
    assert re.fullmatch(r"[0-9a-f]{64}", r1["commit_tx_id"]) and set(r2["evaluation"]) == set(PLANTS)
    trails = {ds: audit(net, ds, owner) for owner, ds in datasets.items()}
    allowed = {(e["org"], ds, e["tx_id"]) for ds, entries in trails.items() for e in entries
               if e["action"] == "access" and e["allowed"] and e["purpose"] == SPEC.purpose}  # fmt: skip
    for r in (r1, r2):
        assert {(org, ds, tx) for org, c in r["checks"].items() for ds, tx in c.items()} <= allowed
        assert set(r["checks"]) == set(PLANTS) and all(set(c) == {d1, d2} for c in r["checks"].values())
    text = net.run("fl", "rounds", task).stdout
    assert text.splitlines()[0].startswith("ledger: Fabric, channel consortium (")  # read through any running peer
    assert f"{r1['global_sha256'][:12]} -> {r1['result_sha256'][:12]}" in text and r1["commit_tx_id"] in text

    # 3. The stored models verify; running the finished task again creates nothing and trains nothing.
    res = net.run("fl", "verify", task)
    assert res.returncode == 0 and f"{task}: 7 verified, 0 missing, 0 mismatched" in res.stdout, res.stdout + res.stderr
    res = net.run("fl", "run", task, "--datasets", d1, d2)
    assert res.returncode == 0 and f"task {task} found on the Fabric ledger" in res.stdout, res.stdout + res.stderr
    assert "all 2 rounds are committed and evaluated; nothing to train" in res.stdout
    assert len(net.ok("fl", "rounds", task)["rounds"]) == 2

    # 4. A stored update is changed on disk: verify fails naming the file and what the ledger says it is.
    victim = next(u["sha256"] for u in r1["updates"] if u["org"] == "plant2")
    stored = net.home / "flower" / "store" / victim
    original = stored.read_bytes()
    try:
        stored.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
        res = net.run("fl", "verify", task)
        assert res.returncode == 1, res.stdout + res.stderr
        assert f"MISMATCHED: {stored} (round 1 update of plant2)" in res.stdout and "6 verified" in res.stdout
        res = net.run("fl", "verify", task, "--json")
        problems = json.loads(res.stdout)["problems"]
        assert res.returncode == 1 and [(p["file"], p["problem"], p["records"]) for p in problems] == [
            (str(stored), "mismatched", ["round 1 update of plant2"])]
    finally:
        stored.write_bytes(original)  # the store is the network home's, shared with the other tests

    # 5. plant2's steward revokes plant1's grant. A new run: plant1's own recorded check of plant2's data
    # set is denied, so StartRound refuses plant1 as a participant -- and, the server acting as plant1's
    # operator by default, refuses the caller: the run stops at round 1 saying what to do. Acting as
    # plant2 it runs with plant2 alone.
    net.ok("data", "revoke", d2, "--to", "plant1", "--purpose", SPEC.purpose, "--as", "plant2")
    after = net.unique("maintenance")
    rc, lines, err = run_live(net, "fl", "run", after, "--rounds", "1", "--min-orgs", "1", "--datasets", d1, d2,
                              "--port-base", port_base, "--keep-running")  # fmt: skip
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert "access denied: StartRound is for operators of round 1's participants" in err and err.rstrip().endswith(
        "the server acted as operator@plant1 via peer0.plant1: pass --as ORG naming an org that is admitted"), err
    t0 = time.monotonic()
    rc, lines, err = run_live(net, "fl", "run", after, "--rounds", "1", "--min-orgs", "1", "--datasets", d1, d2,
                              "--as", "plant2", "--port-base", port_base)  # fmt: skip
    print(f"fl run on Fabric (1 round, plant1 revoked, processes reused): {time.monotonic() - t0:.1f} s")
    out = "\n".join(text for _, text in lines)
    assert rc == 0, f"{out}\n{err}\n{_logs(net)}"
    assert lines[0][1] == "ledger: Fabric, channel consortium (operator@plant2 via peer0.plant2)"
    assert (f"round 1: plant1 not participating: refused to train: its recorded check of {d2} was denied (revoked: "
            f"the grant of '{d2}' to 'plant1' for '{SPEC.purpose}' was revoked at ") in out, out
    assert f"(on the ledger: plant1's own data:Check record, `twinledger data audit {d2}`)" in out
    (only,) = net.ok("fl", "rounds", after)["rounds"]
    assert only["participants"] == ["plant2"] and [u["org"] for u in only["updates"]] == ["plant2"]
    assert set(only["evaluation"]) == {"plant2"} and set(only["checks"]) == {"plant2"}

    # 6. The audit trail of plant2's data set, as plant2's steward sees it: every check signed by the
    # checking org's own operator; plant1's use granted in both rounds of the first run, denied as revoked
    # in the stopped run and in the last one.
    entries = audit(net, d2, "plant2")
    uses = [(short_actor(e["caller"]), e["org"], e["role"], e["allowed"], e["reason"])
            for e in entries if e["action"] == "access"]  # fmt: skip
    assert [u for u in uses if u[1] == "plant1"] == [("operator@plant1", "plant1", "operator", True, "granted")] * 2 + [
        ("operator@plant1", "plant1", "operator", False, "revoked")] * 2
    assert {u for u in uses if u[1] == "plant2"} == {("operator@plant2", "plant2", "operator", True, "owner")}


def test_start_round_is_refused_through_the_gateway(fabric_net: FabricNet) -> None:
    """models:StartRound on the real peers: an org that is not an org of the task, even with an allowed
    recorded check, cannot start a round naming itself; an org of the task needs its own recorded checks."""
    from network.gateway_errors import GatewayError

    net = fabric_net
    datasets = register_federation(net)
    d2 = datasets["plant2"]
    task = net.unique("maintenance")
    purpose = SPEC.purpose

    def contracts(org: str):  # noqa: ANN202 -- the org's operator: its models and data contracts
        gw = net.connect_sync(org, "operator")
        network = gw.network(net.spec.channel)
        return gw, network.contract(net.chaincode, "models"), network.contract(net.chaincode, "data")

    gw2, models2, data2 = contracts("plant2")
    gw1, models1, data1 = contracts("plant1")
    with gw1, gw2:
        # plant2's task over plant2's data set only; plant1 holds a live grant of it for the purpose
        models2.submit("CreateTask", task, "mlp-11-8-1", purpose, json.dumps([d2]), "2", "fedavg", "{}")
        check = json.loads(data1.submit("Check", d2, purpose))
        assert check["allowed"] and check["reason"] == "granted" and check["org"] == "plant1"
        # the reported bug: plant1's operator starts plant2's task naming only itself
        with pytest.raises(GatewayError, match=rf"access denied: plant1 is not an org of task '{task}' \(plant2\)"):
            models1.submit("StartRound", task, "1", "ab" * 32, json.dumps({"plant1": {d2: check["tx_id"]}}))
        # plant2 itself must name its own recorded check: plant1's allowed one does not count
        with pytest.raises(GatewayError, match=rf"the check of '{d2}' in transaction {check['tx_id']} is org "
                                               r"'plant1''s, not 'plant2''s"):
            models2.submit("StartRound", task, "1", "ab" * 32, json.dumps({"plant2": {d2: check["tx_id"]}}))
        own = json.loads(data2.submit("Check", d2, purpose))
        started = json.loads(models2.submit("StartRound", task, "1", "ab" * 32, json.dumps({"plant2": {d2: own["tx_id"]}})))
        assert started["participants"] == ["plant2"] and started["checks"] == {"plant2": {d2: own["tx_id"]}}
    # nothing of the refused calls is on the ledger
    (only,) = net.ok("fl", "rounds", task)["rounds"]
    assert only["start_tx_id"] == started["start_tx_id"] and only["participants"] == ["plant2"]


def test_without_a_network_each_command_says_so_in_one_line(tmp_path: Path) -> None:
    from tests.fabric_net import twinledger

    home = tmp_path / "empty"
    for cmd in (["fl", "run", "maintenance-v1"], ["fl", "rounds"], ["fl", "verify", "maintenance-v1"]):
        res = twinledger(*cmd, home=home)
        assert res.returncode == 1 and res.stdout == ""
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        assert lines[0] == (f"twinledger: the Fabric ledger is not reachable: there is no network in {home} "
                            f"(`twinledger up --home {home}` starts the network; see `twinledger status`)")
    assert not (home / "flower").exists()  # nothing was started or prepared
    # the local JSON ledger is gone: its options are refused as unknown
    res = twinledger("fl", "run", "maintenance-v1", "--ledger-file", str(tmp_path / "l.json"), home=home)
    assert res.returncode == 2 and "unrecognized arguments: --ledger-file" in res.stderr
