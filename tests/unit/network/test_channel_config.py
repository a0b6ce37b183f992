"""The config-delta builder of `org add` (network/channel_config.py): the change, what it means, the checks.

The change works on configtxlator's JSON of a common.Config; the update itself is computed by the real
configtxlator when its binary is installed.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from network import channel_config as cc


def implicit(rule: str, sub: str) -> dict:
    return {"mod_policy": "Admins", "policy": {"type": cc.IMPLICIT_META, "value": {"rule": rule, "sub_policy": sub}},
            "version": "0"}


def org(msp: str, port: int) -> dict:
    return {"groups": {}, "mod_policy": "Admins", "policies": {}, "version": "0",
            "values": {"AnchorPeers": {"mod_policy": "Admins", "version": "0",
                                       "value": {"anchor_peers": [{"host": "127.0.0.1", "port": port}]}}}}


def config(*msps: str) -> dict:
    return {"sequence": "0", "channel_group": {"mod_policy": "Admins", "version": "0", "groups": {"Application": {
        "mod_policy": "Admins", "version": "0", "values": {},
        "groups": {m: org(m, 7000 + i) for i, m in enumerate(msps)},
        "policies": {"Admins": implicit("MAJORITY", "Admins"), "Endorsement": implicit("MAJORITY", "Endorsement"),
                     "Readers": implicit("ANY", "Readers"), "Writers": implicit("ANY", "Writers")}}}}}


FOUNDERS = ("Hospital1MSP", "Hospital2MSP", "Plant1MSP", "Plant2MSP")
DEFINITION = {"Name": "Hospital3MSP", "ID": "Hospital3MSP", "AnchorPeers": [{"Host": "127.0.0.1", "Port": 7100}],
              "Policies": {"Admins": {"Type": "Signature", "Rule": "OR('Hospital3MSP.admin')"}}}


def test_majority_of_the_member_orgs():
    assert [cc.majority(n) for n in range(1, 7)] == [1, 2, 2, 3, 3, 4]
    assert cc.required("ANY", 5) == 1 and cc.required("ALL", 5) == 5 and cc.required("MAJORITY", 5) == 3


def test_with_org_adds_the_group_and_leaves_the_original_alone():
    before = config(*FOUNDERS)
    after = cc.with_org(before, "Hospital3MSP", org("Hospital3MSP", 7100))
    assert cc.application_orgs(before) == sorted(FOUNDERS)
    assert cc.application_orgs(after) == sorted([*FOUNDERS, "Hospital3MSP"])
    # Everything else is the same: the update's write set is the new group under /Channel/Application.
    del after["channel_group"]["groups"]["Application"]["groups"]["Hospital3MSP"]
    assert after == before
    with pytest.raises(cc.ChannelConfigError, match="already an application org"):
        cc.with_org(before, "Plant1MSP", {})


def test_without_org_is_the_reverse():
    before = config(*FOUNDERS, "Hospital3MSP")
    assert cc.without_org(before, "Hospital3MSP") == config(*FOUNDERS)
    with pytest.raises(cc.ChannelConfigError, match="not an application org"):
        cc.without_org(config(*FOUNDERS), "Hospital3MSP")


def test_delta_says_what_is_added_and_what_the_policies_then_need():
    before = config(*FOUNDERS)
    lines = cc.describe_delta(before, cc.with_org(before, "Hospital3MSP", org("Hospital3MSP", 7100)), DEFINITION)
    assert lines[0] == "+ /Channel/Application/Hospital3MSP"
    assert "    anchor peers: 127.0.0.1:7100" in lines
    assert "    policy Admins: OR('Hospital3MSP.admin')" in lines
    # MAJORITY of 5 is 3, as it was of 4; ANY stays one.
    assert "  /Channel/Application/Endorsement = MAJORITY Endorsement: 3 of 5 orgs (was 3 of 4)" in lines
    assert "  /Channel/Application/Admins = MAJORITY Admins: 3 of 5 orgs (was 3 of 4)" in lines
    assert "  /Channel/Application/Readers = ANY Readers: 1 of 5 orgs (was 1 of 4)" in lines
    removed = cc.describe_delta(config(*FOUNDERS, "Hospital3MSP", "Plant3MSP"), config(*FOUNDERS, "Plant3MSP"))
    assert removed[0] == "- /Channel/Application/Hospital3MSP"
    assert "  /Channel/Application/Admins = MAJORITY Admins: 3 of 5 orgs (was 4 of 6)" in removed


def test_delta_takes_anchor_peers_from_the_definition_when_the_group_is_not_built_yet():
    before = config(*FOUNDERS)
    lines = cc.describe_delta(before, cc.with_org(before, "Hospital3MSP", {"values": {}}), DEFINITION)
    assert "    anchor peers: 127.0.0.1:7100" in lines


def configtxlator() -> Path:
    from peers.binaries import fabric_bin_dir

    bin_dir = fabric_bin_dir()
    if not (bin_dir / "configtxlator").exists():
        pytest.skip("Fabric binaries not installed (scripts/build_fabric.sh)")
    return bin_dir


def test_compute_update_with_configtxlator_writes_only_the_new_group(tmp_path: Path):
    bin_dir = configtxlator()
    before = config(*FOUNDERS)
    after = cc.with_org(before, "Hospital3MSP", org("Hospital3MSP", 7100))
    envelope = cc.compute_update(bin_dir, "consortium", before, after, tmp_path)
    assert envelope is not None and cc.signers(bin_dir, envelope) == []
    payload = cc.decode(bin_dir, envelope, "common.Envelope")["payload"]
    assert payload["header"]["channel_header"]["type"] == cc.CONFIG_UPDATE
    update = payload["data"]["config_update"]
    assert update["channel_id"] == "consortium"
    application = update["write_set"]["groups"]["Application"]
    # The Application group's version goes up (its set of groups changed); the founders are only read.
    assert application["version"] == "1" and sorted(application["groups"]) == sorted([*FOUNDERS, "Hospital3MSP"])
    assert all(application["groups"][m] == {"groups": {}, "mod_policy": "", "policies": {}, "values": {}, "version": "0"}
               for m in FOUNDERS)
    assert application["groups"]["Hospital3MSP"]["values"]["AnchorPeers"]["value"]["anchor_peers"] == [
        {"host": "127.0.0.1", "port": 7100}]
    assert cc.compute_update(bin_dir, "consortium", before, before, tmp_path / "same") is None


# -- the admin certificate check ------------------------------------------------------------------------
def name(cn: str, ou: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if ou:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
    return x509.Name(attrs)


def make_ca(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn)).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(key, hashes.SHA256()))
    return cert, key


def admin_msp(tmp: Path, ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], *, ou: str = "admin",
              days: tuple[int, int] = (-1, 365), issuer_name: x509.Name | None = None) -> Path:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name("admin", ou)).issuer_name(issuer_name or ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now + dt.timedelta(days=days[0])).not_valid_after(now + dt.timedelta(days=days[1]))
            .sign(ca_key, hashes.SHA256()))
    msp = tmp / f"msp-{ou}-{days[0]}-{days[1]}-{x509.random_serial_number() % 10**6}"
    (msp / "signcerts").mkdir(parents=True)
    (msp / "signcerts" / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return msp


def test_check_admin_accepts_a_valid_admin_and_names_every_problem(tmp_path: Path):
    ca = make_ca("ca.hospital1")
    root = tmp_path / "ca-cert.pem"
    root.write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    assert cc.check_admin(admin_msp(tmp_path, ca), root) is None
    assert "expired on" in cc.check_admin(admin_msp(tmp_path, ca, days=(-30, -1)), root)
    assert "not valid before" in cc.check_admin(admin_msp(tmp_path, ca, days=(1, 30)), root)
    assert "not an admin's (OU client)" in cc.check_admin(admin_msp(tmp_path, ca, ou="client"), root)
    # Same subject name as the org's CA, but signed by another key: not the org's CA.
    forger = make_ca("ca.hospital1")
    assert "not issued by the org's CA" in cc.check_admin(admin_msp(tmp_path, forger), root)
    assert "not issued by the org's CA" in cc.check_admin(admin_msp(tmp_path, make_ca("ca.plant1")), root)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no admin certificate" in cc.check_admin(empty, root)


def test_delta_of_a_removal_says_what_the_policies_then_need():
    before = config(*FOUNDERS)
    lines = cc.describe_delta(before, cc.without_org(before, "Plant2MSP"))
    assert lines[0] == "- /Channel/Application/Plant2MSP"
    assert "  /Channel/Application/Admins = MAJORITY Admins: 2 of 3 orgs (was 3 of 4)" in lines
    assert "  /Channel/Application/Endorsement = MAJORITY Endorsement: 2 of 3 orgs (was 3 of 4)" in lines
    assert "  /Channel/Application/Readers = ANY Readers: 1 of 3 orgs (was 1 of 4)" in lines
    assert not [ln for ln in lines if ln.startswith("+")]


def test_compute_update_of_a_removal_drops_only_that_group(tmp_path: Path):
    bin_dir = configtxlator()
    before = config(*FOUNDERS)
    envelope = cc.compute_update(bin_dir, "consortium", before, cc.without_org(before, "Plant2MSP"), tmp_path)
    assert envelope is not None
    update = cc.decode(bin_dir, envelope, "common.Envelope")["payload"]["data"]["config_update"]
    application = update["write_set"]["groups"]["Application"]
    # The Application group's version goes up and its write set lists the three that stay, as reads only.
    assert application["version"] == "1" and sorted(application["groups"]) == ["Hospital1MSP", "Hospital2MSP", "Plant1MSP"]
    assert sorted(update["read_set"]["groups"]["Application"]["groups"]) == ["Hospital1MSP", "Hospital2MSP", "Plant1MSP"]
