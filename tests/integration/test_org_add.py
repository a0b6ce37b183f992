"""`twinledger org add` on a real network of its own (the session network keeps its four orgs).

From a running consortium of hospital1, hospital2, plant1 and plant2:

* ``--dry-run`` prints the channel config delta (the new group, anchor peer, what MAJORITY then needs) and the
  admins that would sign, and changes nothing; too few signers is one clear line and no change;
* `org add hospital3` is killed half-way (once the spec names it) and the next `org add` finishes it;
* hospital3's peer is found by discovery from a founder's peer; it endorses (its peer's signature is on a
  transaction with two founders'), and two endorsements of five orgs are no longer enough (MAJORITY of 5 is 3);
* hospital3's steward registers a data set and grants it to plant1; plant1's operator's check is allowed and
  recorded in the data set's audit;
* no founding node moved or restarted; `status` lists hospital3's CA, peer and chaincode server healthy;
* `org add hospital3` again is a no-op that says so;
* a stale config block: `org add plant3` computed against the config fetched before hospital3 joined is
  refused by the orderer, fetched again, signed again by a majority of the five and submitted.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from network import channel_config as cc
from network.spec import load_spec
from orchestrator.org_add import add_org, admin_of
from peers.binaries import fabric_bin_dir
from orchestrator.connect import connect
from orchestrator.readiness import peer_view
from tests.fabric_net import PORTS, FabricNet, start_network, stop_network
from tests.integration.test_peer_add import endorsers, subject_of
from tests.ports import free_port_base

REPO = Path(__file__).resolve().parents[2]
NEW, PEER = "hospital3", "peer0.hospital3"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    net = start_network(tmp_path_factory.mktemp("orgadd") / "net", free_port_base(PORTS))
    try:
        yield net
    finally:
        stop_network(net)


def test_org_add_dry_run_resume_discovery_endorsement_governance_rerun_and_stale_config(
        net: FabricNet, monkeypatch: pytest.MonkeyPatch) -> None:
    founding = {n.name: n.ports for n in net.spec.nodes()}
    pids = {name: p["pid"] for name, p in net.processes().items()}
    spec_before = net.layout.spec_file.read_text()

    dry = net.run("org", "add", NEW, "--kind", "hospital", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for line in ("+ /Channel/Application/Hospital3MSP", "anchor peers: 127.0.0.1:",
                 "/Channel/Application/Endorsement = MAJORITY Endorsement: 3 of 5 orgs (was 3 of 4)",
                 "/Channel/Application/Admins = MAJORITY Admins: 3 of 5 orgs (was 3 of 4)",
                 "signatures: admin@hospital1, admin@hospital2, admin@plant1 (3 of 4, MAJORITY Admins)"):
        assert line in dry.stdout, dry.stdout
    too_few = net.fails("org", "add", NEW, "--kind", "hospital", "--signers", "hospital1,plant1")
    assert "needs the signatures of 3 of the 4 member orgs' admins" in too_few and "nothing was changed" in too_few
    assert net.layout.spec_file.read_text() == spec_before and not net.layout.org_dir(NEW).exists()
    assert f"ca.{NEW}" not in net.processes()

    bin_dir = fabric_bin_dir()
    old_config = cc.fetch_config(bin_dir, net.spec.channel, admin_of(net.spec, net.layout, "plant2"), net.home / "t")

    # Killed half-way: once the spec names the new org, before it has joined.
    t0 = time.monotonic()
    first = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "org", "add", NEW, "--kind", "hospital",
                              "--home", str(net.home)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 60
    while NEW not in net.layout.spec_file.read_text():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    resumed = net.run("org", "add", NEW, "--kind", "hospital", timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for line in (f"resuming org {NEW}", "signatures collected: hospital1 (Hospital1MSP), hospital2 (Hospital2MSP), "
                 "plant1 (Plant1MSP)", f"approved twinledger 1.0 (sequence 1) for {NEW}", f"registered org {NEW}",
                 "MAJORITY Endorsement = 3 of 5 orgs' peers", f"org {NEW} joined channel"):
        assert line in resumed.stdout, resumed.stdout
    print(f"org add (killed once, resumed): {time.monotonic() - t0:.1f} s")

    spec = load_spec(net.layout.spec_file)
    assert spec.org(NEW).msp_id == "Hospital3MSP" and NEW in [o.name for o in spec.member_orgs]
    assert {n.name: n.ports for n in spec.nodes() if n.name in founding} == founding
    now = net.processes()
    assert all(now[name]["pid"] == pid for name, pid in pids.items() if name in now), "a founding node restarted"
    status = {n["name"]: n for n in net.ok("status")["nodes"]}
    for node in (f"ca.{NEW}", PEER, f"twinledger.{PEER}"):
        assert status[node]["healthy"] and status[node]["org"] == NEW, status.get(node)
    assert status[PEER]["height"] == status["peer0.plant1"]["height"]

    # Discovery: a founder's peer sees hospital3's peer with the chaincode.
    seen = {p.endpoint: p for p in peer_view(spec, net.layout, spec.node("peer0.plant2"))}
    mine = seen[f"127.0.0.1:{spec.node(PEER).ports.listen}"]
    assert mine.msp_id == "Hospital3MSP" and net.chaincode in mine.chaincodes

    # Its steward governs its data; a founder's check under its grant is recorded.
    dataset = net.unique("h3-cohort")
    net.ok("data", "register", dataset, "--kind", "tabular", "--sha256", "ab" * 32, "--as", f"{NEW}:steward")
    net.ok("data", "grant", dataset, "--to", "plant1", "--purpose", "train:sepsis", "--as", f"{NEW}:steward")
    check = net.ok("data", "check", dataset, "--purpose", "train:sepsis", "--as", "plant1:operator")
    assert check["allowed"] and check["org"] == "plant1"
    audit = net.ok("data", "audit", dataset, "--as", f"{NEW}:steward")
    assert [e["action"] for e in audit["entries"]] == ["registered", "granted", "access"]
    assert audit["entries"][2]["org"] == "plant1" and audit["entries"][2]["tx_id"] == check["tx_id"]

    # Its peer endorses; with five orgs two endorsements no longer satisfy MAJORITY Endorsement.
    async def grant(endorsing: list[str]) -> tuple[str, str]:
        async with connect(spec, net.layout, NEW, "steward") as gateway:
            contract = gateway.network(spec.channel).contract(net.chaincode, "data")
            commit = await contract.new_proposal("Grant", dataset, "hospital2", f"train:{len(endorsing)}", "",
                                                 endorsing_orgs=endorsing).endorse()
            status = await (await commit.submit()).status()
            return status.code_name, commit.transaction_id

    code, tx_id = asyncio.run(grant(["Hospital3MSP", "Hospital1MSP", "Plant2MSP"]))
    assert code == "VALID"
    assert subject_of(net.layout.node_msp(PEER)) in endorsers(net, spec, tx_id)
    code, _ = asyncio.run(grant(["Hospital3MSP", "Hospital1MSP"]))
    assert code == "ENDORSEMENT_POLICY_FAILURE"

    again = net.run("org", "add", NEW, "--kind", "hospital")
    assert again.returncode == 0 and "already a member of channel consortium: nothing to do" in again.stdout, again.stdout
    assert load_spec(net.layout.spec_file) == spec

    # A stale config block: plant3's update is first computed against the config of four orgs.
    real_fetch, fetched = cc.fetch_config, []

    def fetch_once_stale(*args, **kwargs):
        fetched.append(args)
        return old_config if len(fetched) == 1 else real_fetch(*args, **kwargs)

    monkeypatch.setattr(cc, "fetch_config", fetch_once_stale)
    lines: list[str] = []
    t0 = time.monotonic()
    result = add_org(net.home, "plant3", "plant", progress=lines.append)
    print(f"org add plant3 (one stale retry): {time.monotonic() - t0:.1f} s")
    out = "\n".join(lines)
    assert "the channel config changed since it was fetched" in out and "error validating ReadSet" in out, out
    assert result.signers == ["hospital1", "hospital2", "hospital3"], out  # chosen again: 3 of the 5 members
    monkeypatch.undo()
    now = cc.fetch_config(bin_dir, net.spec.channel, admin_of(net.spec, net.layout, "plant2"), net.home / "t")
    assert cc.application_orgs(now) == ["Hospital1MSP", "Hospital2MSP", "Hospital3MSP", "Plant1MSP", "Plant2MSP", "Plant3MSP"]
    assert "MAJORITY Endorsement = 4 of 6 orgs' peers" in out, out
