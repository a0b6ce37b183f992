"""`twinledger peer add` on a real network of its own (the session network keeps its four peers).

From a running consortium with a consent record in hospital1's private data:

* ``--dry-run`` names the peer and its ports and changes nothing;
* `peer add --org hospital1` is killed half-way (after the spec names the new peer), and the next
  `peer add --org hospital1` finishes that peer instead of adding another;
* the new peer is level with the others, every org's peer sees it through discovery, it holds the private
  data recorded before it existed (answered with hospital1's first peer frozen, so only it can answer), and
  it endorses: a transaction submitted through it carries its own signature among the endorsements;
* no founding node's ports moved, no founding node restarted, `status` lists it healthy;
* an unknown org is one clear line and no change.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from fabric_protos.common import common_pb2
from fabric_protos.msp import identities_pb2
from fabric_protos.peer import transaction_pb2

from network.spec import load_spec
from orchestrator.connect import connect
from tests.fabric_net import PORTS, FabricNet, start_network, stop_network
from tests.ports import free_port_base

REPO = Path(__file__).resolve().parents[2]
ORG = "hospital1"
NEW = "peer1.hospital1"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    net = start_network(tmp_path_factory.mktemp("peeradd") / "net", free_port_base(PORTS))
    try:
        yield net
    finally:
        stop_network(net)


def cli(net: FabricNet, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args, "--home", str(net.home)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def test_peer_add_resumes_catches_up_holds_private_data_and_endorses(net: FabricNet) -> None:
    founding = {n.name: n.ports for n in net.spec.nodes()}
    pids = {name: p["pid"] for name, p in net.processes().items()}
    net.ok("consent", "record", "pat-peer-add", "train:sepsis", "--as", f"{ORG}:steward")

    spec_before = net.layout.spec_file.read_text()
    planned = net.ok("peer", "add", "--org", ORG, "--dry-run")
    assert planned["name"] == NEW and planned["dry_run"] and net.layout.spec_file.read_text() == spec_before
    assert "'nosuchorg' is not a hospital or plant of this network" in net.fails("peer", "add", "--org", "nosuchorg")
    assert net.layout.spec_file.read_text() == spec_before

    # Killed half-way: once the spec names the new peer, before it has joined.
    first = cli(net, "peer", "add", "--org", ORG)
    deadline = time.monotonic() + 60
    while NEW not in net.layout.spec_file.read_text():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not (net.layout.node_dir(NEW) / "joined").exists()

    resumed = net.run("peer", "add", "--org", ORG, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming {NEW}" in resumed.stdout and f"{NEW} joined" in resumed.stdout, resumed.stdout
    spec = load_spec(net.layout.spec_file)
    assert spec.added == (NEW,), "the resumed run finished the same peer, it did not add another"

    # Founding nodes: same ports, not restarted; the new one listed healthy.
    assert {n.name: n.ports for n in spec.nodes() if n.name in founding} == founding
    now = net.processes()
    assert all(now[name]["pid"] == pid for name, pid in pids.items() if name in now), "a founding node restarted"
    status = {n["name"]: n for n in net.ok("status")["nodes"]}
    assert status[NEW]["healthy"] and status[f"twinledger.{NEW}"]["healthy"]
    assert status[NEW]["height"] == status["peer0.plant1"]["height"]

    async def through_new_peer() -> tuple[bytes, str]:
        async with connect(spec, net.layout, ORG, "steward", peer_index=1) as gateway:
            network = gateway.network(spec.channel)
            record = await network.contract(net.chaincode, "consent").evaluate(
                "ReadConsent", "pat-peer-add", "train:sepsis", endorsing_orgs=[spec.org(ORG).msp_id])
            commit = await network.contract(net.chaincode, "consent").new_proposal(
                "RecordConsent", transient={"consent": json.dumps(
                    {"pseudonym": "pat-peer-add-2", "salt": "00" * 16, "scope": "train:sepsis", "status": "given"},
                    sort_keys=True, separators=(",", ":")).encode()},
                endorsing_orgs=[spec.org(ORG).msp_id]).endorse()
            status = await (await commit.submit()).status()
            assert status.successful, status.code_name
            return record, commit.transaction_id

    # Only the new peer can answer for hospital1 while its first peer is frozen.
    old = net.processes()["peer0.hospital1"]["pid"]
    os.kill(old, signal.SIGSTOP)
    try:
        record, tx_id = asyncio.run(asyncio.wait_for(through_new_peer(), 60))
    finally:
        os.kill(old, signal.SIGCONT)
    assert json.loads(json.loads(record)["record"])["pseudonym"] == "pat-peer-add"
    assert endorsers(net, spec, tx_id) == {subject_of(net.layout.node_msp(NEW))}
    net.wait_ready()


def endorsers(net: FabricNet, spec, tx_id: str) -> set[str]:
    """Subjects of the certificates that endorsed ``tx_id`` (from the committed transaction)."""
    async def fetch() -> bytes:
        async with connect(spec, net.layout, "plant1", "admin") as gateway:
            return await gateway.network(spec.channel).contract("qscc").evaluate(
                "GetTransactionByID", spec.channel, tx_id)

    processed = transaction_pb2.ProcessedTransaction.FromString(asyncio.run(fetch()))
    assert processed.validationCode == transaction_pb2.VALID
    payload = common_pb2.Payload.FromString(processed.transactionEnvelope.payload)
    tx = transaction_pb2.Transaction.FromString(payload.data)
    action = transaction_pb2.ChaincodeActionPayload.FromString(tx.actions[0].payload)
    out = set()
    for e in action.action.endorsements:
        ident = identities_pb2.SerializedIdentity.FromString(e.endorser)
        out.add(x509.load_pem_x509_certificate(ident.id_bytes).subject.rfc4514_string())
    return out


def subject_of(msp: Path) -> str:
    cert = next((msp / "signcerts").glob("*.pem"))
    return x509.load_pem_x509_certificate(cert.read_bytes()).subject.rfc4514_string()
