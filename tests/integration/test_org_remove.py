"""`twinledger org remove` on a real network of its own (the session network keeps its four orgs).

From a running consortium of hospital1, hospital2, plant1 and plant2, where plant2's steward registered a
data set and granted it to plant1, and plant1's operator checked it:

* ``--dry-run`` prints the channel config delta (the group removed, what MAJORITY then needs) and the three
  staying orgs' admins that would sign, and changes nothing;
* `org remove plant2` is killed half-way (right after the channel update committed) and the next one finishes it;
* the channel no longer holds Plant2MSP; plant2's peer, chaincode server and CA are stopped and gone from
  `status`, which lists plant2 as removed; no other node restarted;
* a gateway call signed by plant2's client (over a TLS session the peer accepts, hospital1's client's) is refused
  by the channel's policies on evaluate and on submit, and so is a submit signed by plant2's admin;
* plant1's operator's check of plant2's data set is denied, "owner org 'plant2' was removed from the consortium
  at <time>"; the data set's audit still shows plant2's registration and grant and both checks;
* `org remove plant2` again is a no-op that says so.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from network import channel_config as cc
from network.gateway import Gateway
from network.gateway_errors import GatewayError
from network.identity import load_msp_identity
from network.spec import load_spec
from orchestrator.org_add import admin_of
from peers.binaries import fabric_bin_dir
from tests.fabric_net import PORTS, FabricNet, start_network, stop_network
from tests.ports import free_port_base

REPO = Path(__file__).resolve().parents[2]
GONE = "plant2"
PURPOSE = "train:maintenance-v1"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    net = start_network(tmp_path_factory.mktemp("orgremove") / "net", free_port_base(PORTS))
    try:
        yield net
    finally:
        stop_network(net)


async def _as_removed(net: FabricNet, user: str, call: str) -> str:
    """``call`` (evaluate or submit) signed by ``user``@plant2 through hospital1's peer; the TLS session is
    hospital1's client's, so what refuses it is the channel's policies, not the TLS handshake."""
    peer = net.spec.nodes_of("hospital1", "peer")[0]
    identity, signer = load_msp_identity(net.layout.user_msp(GONE, user), "Plant2MSP")
    tls = net.layout.user_tls("hospital1", "client")
    endpoint = f"127.0.0.1:{peer.ports.listen}"
    async with Gateway.connect(endpoint, identity=identity, signer=signer, tls_root_cert_pem=net.layout.ca_cert("hospital1"),
                               client_cert_pem=tls / "client.crt", client_key_pem=tls / "client.key") as gateway:
        contract = gateway.network(net.spec.channel).contract(net.chaincode)
        with pytest.raises(GatewayError) as refused:
            if call == "evaluate":
                await contract.evaluate("ListOrgs")
            else:
                await contract.submit("RegisterOrg", GONE, "plant")
    return str(refused.value)


def test_org_remove_dry_run_crash_resume_refusals_denied_data_audit_and_rerun(net: FabricNet) -> None:
    dataset = net.unique("p2-line")
    net.ok("data", "register", dataset, "--kind", "tabular", "--sha256", "cd" * 32, "--as", f"{GONE}:steward")
    net.ok("data", "grant", dataset, "--to", "plant1", "--purpose", PURPOSE, "--as", f"{GONE}:steward")
    assert net.ok("data", "check", dataset, "--purpose", PURPOSE, "--as", "plant1:operator")["allowed"]

    pids = {name: p["pid"] for name, p in net.processes().items()}
    ports_before = [n.ports.listen for n in net.spec.nodes_of(GONE)] + [net.spec.nodes_of(GONE, "peer")[0].ports.chaincode]
    spec_before = net.layout.spec_file.read_text()
    dry = net.run("org", "remove", GONE, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    for line in ("- /Channel/Application/Plant2MSP",
                 "/Channel/Application/Admins = MAJORITY Admins: 2 of 3 orgs (was 3 of 4)",
                 "/Channel/Application/Endorsement = MAJORITY Endorsement: 2 of 3 orgs (was 3 of 4)",
                 "signatures: admin@hospital1, admin@hospital2, admin@plant1 (3 of 4, MAJORITY Admins)",
                 f"would stop: ca.{GONE}, peer0.{GONE}, twinledger.peer0.{GONE}"):
        assert line in dry.stdout, dry.stdout
    assert net.layout.spec_file.read_text() == spec_before
    assert {name: p["pid"] for name, p in net.processes().items()} == pids
    assert "last hospital or plant" not in dry.stdout

    # Killed half-way: right after the channel update committed (the spec then marks plant2 removed).
    t0 = time.monotonic()
    first = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "org", "remove", GONE, "--home", str(net.home)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 120
    while "removed: true" not in net.layout.spec_file.read_text():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    killed_at = time.monotonic() - t0
    config = cc.fetch_config(fabric_bin_dir(), net.spec.channel, admin_of(net.spec, net.layout, "plant1"), net.home / "t")
    assert "Plant2MSP" not in cc.application_orgs(config)
    t1 = time.monotonic()
    resumed = net.run("org", "remove", GONE)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    for line in (f"resuming the removal of org {GONE}", "channel consortium no longer holds Plant2MSP",
                 f"registry: {GONE} removed at", f"stopped: ca.{GONE}, peer0.{GONE}, twinledger.peer0.{GONE}",
                 f"org {GONE} removed from channel consortium"):
        assert line in resumed.stdout, resumed.stdout
    print(f"org remove: killed after the channel update at {killed_at:.1f} s, resumed in {time.monotonic() - t1:.1f} s")

    spec = load_spec(net.layout.spec_file)
    assert spec.org(GONE).removed and GONE not in [o.name for o in spec.member_orgs]
    assert cc.application_orgs(config) == ["Hospital1MSP", "Hospital2MSP", "Plant1MSP"]
    status = net.ok("status")
    assert not [n for n in status["nodes"] if n["org"] == GONE], status["nodes"]
    assert {o["name"]: o["state"] for o in status["orgs"]} == {
        "hospital1": "member", "hospital2": "member", "plant1": "member", GONE: "removed"}
    now = net.processes()
    assert not [name for name in now if name.endswith(f".{GONE}")]
    assert all(now[name]["pid"] == pid for name, pid in pids.items() if not name.endswith(f".{GONE}")), "a node restarted"

    # Its identities: refused by the channel's policies (evaluate and submit), its admin too.
    for user, call in (("client", "evaluate"), ("client", "submit"), ("admin", "submit")):
        why = asyncio.run(_as_removed(net, user, call))
        # The peer no longer finds Plant2MSP among the channel's MSPs: the proposal fails its first check.
        assert "access denied: channel [consortium] creator org unknown" in why, (user, call, why)
        print(f"{user}@{GONE} {call}: {why[:200]}")
    # Its peer and CA are gone: nothing listens on their ports.
    for port in ports_before:
        with socket.socket() as s, pytest.raises(OSError):
            s.settimeout(2)
            s.connect(("127.0.0.1", port))

    # Its data set: no one may use it any more, with the reason; its history stays in the audit.
    denied = net.run("data", "check", dataset, "--purpose", PURPOSE, "--as", "plant1:operator", "--json")
    assert denied.returncode == 3, denied.stdout + denied.stderr  # the CLI's exit code of a denial
    check = json.loads(denied.stdout)
    assert not check["allowed"] and check["reason"] == "owner_removed", check
    assert check["detail"].startswith(f"owner org '{GONE}' was removed from the consortium at "), check
    audit = net.ok("data", "audit", dataset, "--as", "hospital1:client")
    assert [e["action"] for e in audit["entries"]] == ["registered", "granted", "access", "access"], audit
    assert [e.get("allowed") for e in audit["entries"][2:]] == [True, False]
    assert audit["owner"] == GONE

    # `up` on the running network (every stage idempotent) neither starts plant2's nodes nor waits for them.
    t2 = time.monotonic()
    again_up = net.run("up", timeout=300)
    assert again_up.returncode == 0, again_up.stdout + again_up.stderr
    assert not [name for name in net.processes() if name.endswith(f".{GONE}")]
    print(f"up after the removal: {time.monotonic() - t2:.1f} s")

    again = net.run("org", "remove", GONE)
    assert again.returncode == 0 and "was already removed from channel consortium: nothing to do" in again.stdout, again.stdout
    assert load_spec(net.layout.spec_file) == spec
