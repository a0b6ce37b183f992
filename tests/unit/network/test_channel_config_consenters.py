"""The consenter-set delta builder of `orderer add` / `orderer remove` (network/channel_config.py).

The change works on configtxlator's JSON of a common.Config (etcdraft metadata certificates are base64 of the
PEM text); the update itself is computed by the real configtxlator when its binary is installed.
"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from network import channel_config as cc

MSP = "OrdererMSP"


def pem(cn: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def consenter(port: int) -> cc.Consenter:
    cert = pem(f"orderer{port}")
    return cc.Consenter("127.0.0.1", port, cert, cert)


def config(*ports: int) -> dict:
    orderer = {"mod_policy": "Admins", "version": "0", "policies": {}, "groups": {MSP: {
        "groups": {}, "mod_policy": "Admins", "policies": {}, "version": "0",
        "values": {"Endpoints": {"mod_policy": "Admins", "version": "0",
                                 "value": {"addresses": [f"127.0.0.1:{p}" for p in ports]}}}}},
        "values": {"ConsensusType": {"mod_policy": "Admins", "version": "0", "value": {
            "metadata": {"consenters": [consenter(p).as_config() for p in ports],
                         "options": {"election_tick": 10, "heartbeat_tick": 1, "max_inflight_blocks": 5,
                                     "snapshot_interval_size": 16777216, "tick_interval": "100ms"}},
            "state": "STATE_NORMAL", "type": "etcdraft"}}}}
    return {"sequence": "3", "channel_group": {"mod_policy": "Admins", "version": "0", "groups": {"Orderer": orderer},
                                               "policies": {}, "values": {}}}


def test_consenters_are_read_with_their_pem_certificates():
    c = config(7050, 7060, 7070)
    got = cc.consenters(c)
    assert [x.address for x in got] == ["127.0.0.1:7050", "127.0.0.1:7060", "127.0.0.1:7070"]
    assert all(x.client_tls_cert.startswith("-----BEGIN CERTIFICATE-----") for x in got)
    assert cc.orderer_endpoints(c, MSP) == ["127.0.0.1:7050", "127.0.0.1:7060", "127.0.0.1:7070"]


def test_with_consenter_adds_the_consenter_and_the_endpoint_and_leaves_the_original_alone():
    before = config(7050, 7060, 7070)
    new = consenter(7080)
    after = cc.with_consenter(before, new)
    assert cc.orderer_endpoints(after, MSP) == cc.orderer_endpoints(before, MSP), "the endpoint is a second update"
    after = cc.with_endpoint(after, MSP, new.address)
    assert cc.with_endpoint(after, MSP, new.address) == after
    assert [x.address for x in cc.consenters(after)][-1] == "127.0.0.1:7080"
    assert cc.consenters(after)[-1] == new, "the certificates round-trip through base64"
    assert base64.b64decode(after["channel_group"]["groups"]["Orderer"]["values"]["ConsensusType"]["value"]["metadata"]
                            ["consenters"][-1]["server_tls_cert"]).decode() == new.server_tls_cert
    assert cc.orderer_endpoints(after, MSP)[-1] == "127.0.0.1:7080"
    assert len(cc.consenters(before)) == 3 and len(cc.orderer_endpoints(before, MSP)) == 3
    with pytest.raises(cc.ChannelConfigError, match="already a consenter"):
        cc.with_consenter(after, new)


def test_without_consenter_is_the_reverse_and_never_removes_the_last():
    before = config(7050, 7060, 7070, 7080)
    after = cc.without_endpoint(before, MSP, "127.0.0.1:7060")
    assert len(cc.consenters(after)) == 4
    after = cc.without_consenter(after, "127.0.0.1:7060")
    assert [x.address for x in cc.consenters(after)] == ["127.0.0.1:7050", "127.0.0.1:7070", "127.0.0.1:7080"]
    assert cc.orderer_endpoints(after, MSP) == ["127.0.0.1:7050", "127.0.0.1:7070", "127.0.0.1:7080"]
    with pytest.raises(cc.ChannelConfigError, match="not a consenter"):
        cc.without_consenter(after, "127.0.0.1:7060")
    with pytest.raises(cc.ChannelConfigError, match="only consenter"):
        cc.without_consenter(config(7050), "127.0.0.1:7050")


def test_a_solo_or_bft_channel_has_no_raft_consenter_set():
    c = config(7050)
    c["channel_group"]["groups"]["Orderer"]["values"]["ConsensusType"]["value"]["type"] = "BFT"
    with pytest.raises(cc.ChannelConfigError, match="not etcdraft"):
        cc.consenters(c)


def test_fault_tolerance_of_raft_clusters():
    assert [cc.fault_tolerance(n) for n in range(0, 7)] == [0, 0, 0, 1, 1, 2, 2]


def grow(config: dict, c: cc.Consenter) -> dict:
    return cc.with_endpoint(cc.with_consenter(config, c), MSP, c.address)


def shrink(config: dict, address: str) -> dict:
    return cc.without_consenter(cc.without_endpoint(config, MSP, address), address)


def test_delta_says_what_changes_and_what_the_quorum_then_is():
    before = config(7050, 7060, 7070)
    added = cc.describe_consenter_delta(before, grow(before, consenter(7080)), MSP)
    assert added[0].startswith("+ /Channel/Orderer ConsensusType etcdraft consenter 127.0.0.1:7080 (TLS certificate CN=orderer7080")
    assert added[1] == f"+ /Channel/Orderer/{MSP} Endpoints 127.0.0.1:7080"
    assert added[2] == "  Raft quorum: 3 of 4 consenters, tolerating 1 failed (was 2 of 3, tolerating 1)"
    removed = cc.describe_consenter_delta(before, shrink(before, "127.0.0.1:7050"), MSP)
    assert removed == ["- /Channel/Orderer ConsensusType etcdraft consenter 127.0.0.1:7050",
                       f"- /Channel/Orderer/{MSP} Endpoints 127.0.0.1:7050",
                       "  Raft quorum: 2 of 2 consenters, tolerating 0 failed (was 2 of 3, tolerating 1)"]
    unenrolled = cc.describe_consenter_delta(before, grow(before, cc.Consenter("127.0.0.1", 7080, "", "")), MSP)
    assert "enrolled when it is added" in unenrolled[0], "a dry run before enrolment still names the change"


def test_compute_update_with_configtxlator_writes_only_the_orderer_values(tmp_path: Path):
    from peers.binaries import fabric_bin_dir

    bin_dir = fabric_bin_dir()
    if not (bin_dir / "configtxlator").exists():
        pytest.skip("Fabric binaries not installed (scripts/install_fabric.sh)")
    before = config(7050, 7060, 7070)
    envelope = cc.compute_update(bin_dir, "consortium", before, grow(before, consenter(7080)), tmp_path)
    assert envelope is not None
    update = cc.decode(bin_dir, envelope, "common.Envelope")["payload"]["data"]["config_update"]
    orderer = update["write_set"]["groups"]["Orderer"]
    assert set(orderer["values"]) == {"ConsensusType"} and orderer["values"]["ConsensusType"]["version"] == "1"
    assert set(orderer["groups"][MSP]["values"]) == {"Endpoints"}
    assert cc.compute_update(bin_dir, "consortium", before, before, tmp_path / "same") is None
