"""`twinledger data` and `twinledger consent` as subprocesses, on the real Fabric network of the test run.

The session network (``fabric_net``: real Fabric CAs, orderers and peers, the real chaincode served as
CCaaS; every user's certificate carries its `role`) and the CLI run exactly as a steward would run it.
Each test uses its own data set IDs and pseudonyms (``fabric_net.unique``), so tests depend neither on one
another's order nor on what other modules of the run wrote to the same channel.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from network.spec import load_spec
from tests.fabric_net import FabricNet, twinledger
from tests.ports import free_port_base

pytestmark = pytest.mark.integration


@pytest.fixture
def net(fabric_net: FabricNet) -> FabricNet:
    return fabric_net


def check(net: FabricNet, dataset: str, purpose: str, who: str, *extra: str) -> tuple[int, Any]:
    """`data check` as ``who``: exit 0 (allowed) or 3 (denied), and its JSON answer."""
    result = net.run("data", "check", dataset, "--purpose", purpose, "--as", who, "--json", *extra)
    assert result.returncode in (0, 3), result.stderr
    return result.returncode, json.loads(result.stdout)


def test_register_grant_check_revoke_and_audit(net: FabricNet, tmp_path: Path) -> None:
    ds = net.unique("ai4i-plant1")
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"files": {"ai4i.csv": "3f" * 32}}))
    record = net.ok("data", "register", ds, "--kind", "tabular", "--sha256", str(manifest),
                    "--sensitivity", "internal", "--schema", '{"rows": 10000}', "--as", "plant1")
    assert record["manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert (record["owner"], record["sensitivity"], record["schema"]) == ("plant1", "internal", {"rows": 10000})
    assert "CN=steward" in record["registered_by"]  # --as ORG alone means the org's steward here

    grant = net.ok("data", "grant", ds, "--to", "plant2", "--purpose", "train:maintenance-v1",
                   "--as", "plant1:steward")
    assert (grant["grantee"], grant["status"], grant["expires_at"]) == ("plant2", "active", None)

    code, allowed = check(net, ds, "train:maintenance-v1", "plant2:client")
    assert code == 0 and allowed["allowed"] and allowed["reason"] == "granted"
    code, preview = check(net, ds, "train:maintenance-v1", "plant2:operator", "--read-only")
    assert code == 0 and preview["allowed"]
    code, wrong = check(net, ds, "train:other-v1", "plant2:operator")
    assert code == 3 and wrong["reason"] == "wrong_purpose"
    code, stranger = check(net, ds, "train:maintenance-v1", "hospital1:client")
    assert code == 3 and stranger["reason"] == "no_grant"

    revoked = net.ok("data", "revoke", ds, "--to", "plant2", "--purpose", "train:maintenance-v1",
                     "--as", "plant1")
    assert revoked["status"] == "revoked" and "CN=steward" in revoked["revoked_by"]
    code, denied = check(net, ds, "train:maintenance-v1", "plant2:client")
    assert code == 3 and not denied["allowed"] and denied["reason"] == "revoked"
    human = net.run("data", "check", ds, "--purpose", "train:maintenance-v1", "--as", "plant2:client")
    assert human.returncode == 3 and human.stdout.startswith("denied") and "revoked" in human.stdout

    # Any member may audit: registration, grant, revocation and every recorded check, oldest first,
    # each with its caller and transaction; the read-only check is not there.
    trail = net.ok("data", "audit", ds, "--as", "hospital2")
    entries = trail["entries"]
    assert [e["action"] for e in entries] == [
        "registered", "granted", "access", "access", "access", "revoked", "access", "access"]
    assert [e["tx_id"] for e in entries] == [
        record["tx_id"], grant["tx_id"], allowed["tx_id"], wrong["tx_id"], stranger["tx_id"], revoked["tx_id"],
        denied["tx_id"], entries[-1]["tx_id"]]
    assert preview["tx_id"] not in {e["tx_id"] for e in entries}
    accesses = [e for e in entries if e["action"] == "access"]
    assert [(e["org"], e["role"], e["allowed"], e["reason"]) for e in accesses] == [
        ("plant2", "client", True, "granted"), ("plant2", "operator", False, "wrong_purpose"),
        ("hospital1", "client", False, "no_grant"), ("plant2", "client", False, "revoked"),
        ("plant2", "client", False, "revoked")]
    assert all(e["caller"].startswith(f"x509::CN={e['role']},") for e in accesses)
    table = net.run("data", "audit", ds).stdout
    assert "client@plant2" in table and "operator@plant2" in table and revoked["tx_id"] in table


def test_grant_expires(net: FabricNet) -> None:
    ds = net.unique("sensors-plant2")
    net.ok("data", "register", ds, "--kind", "timeseries", "--sha256", "ab" * 32, "--as", "plant2")
    grant = net.ok("data", "grant", ds, "--to", "plant1", "--purpose", "train:maintenance-v1",
                   "--expires", "10s", "--as", "plant2")
    # Asked at once through the gateway (a CLI process may take seconds to start on a loaded machine).
    with net.connect_sync("plant1", "operator") as gateway:
        answer = json.loads(gateway.network(net.spec.channel).contract(net.chaincode, "data").evaluate(
            "CheckReadOnly", ds, "train:maintenance-v1"))
    assert answer["allowed"] and answer["expires_at"] == grant["expires_at"]
    expiry = dt.datetime.fromisoformat(grant["expires_at"].replace("Z", "+00:00")).timestamp()
    time.sleep(max(0.0, expiry - time.time()) + 0.5)
    code, answer = check(net, ds, "train:maintenance-v1", "plant1:operator")
    assert code == 3 and answer["reason"] == "expired"
    grants = net.ok("data", "grants", ds, "--as", "plant1")
    assert [(g["grantee"], g["state"]) for g in grants] == [("plant1", "expired")]


def test_only_the_owners_steward_governs(net: FabricNet) -> None:
    ds = net.unique("ecg-hospital1")
    net.ok("data", "register", ds, "--kind", "signals", "--sha256", "cd" * 32, "--as", "hospital1")
    before = net.ok("data", "audit", ds)

    line = net.fails("data", "grant", ds, "--to", "hospital2", "--purpose", "train:cardiac-v1",
                     "--as", "hospital1:operator")
    assert line == ("twinledger: access denied: Grant needs role 'steward' in the caller's certificate, "
                    "found 'operator'")
    line = net.fails("data", "grant", ds, "--to", "hospital2", "--purpose", "train:cardiac-v1",
                     "--as", "hospital2:steward")
    assert "access denied: Grant is for stewards of org 'hospital1'" in line
    line = net.fails("data", "revoke", ds, "--to", "hospital2", "--purpose", "train:cardiac-v1",
                     "--as", "hospital1")
    assert "has no grant to 'hospital2'" in line
    line = net.fails("data", "register", ds, "--kind", "signals", "--sha256", "cd" * 32,
                     "--as", "hospital2")
    assert "already registered by org 'hospital1'" in line

    assert net.ok("data", "audit", ds) == before
    assert net.ok("data", "grants", ds) == []


def test_list_and_tables(net: FabricNet) -> None:
    ds = net.unique("vitals-hospital2")
    net.ok("data", "register", ds, "--kind", "timeseries", "--sha256", "ef" * 32,
           "--sensitivity", "restricted", "--as", "hospital2")
    listed = {d["id"]: d for d in net.ok("data", "list", "--as", "plant1:client")}
    assert listed[ds]["owner"] == "hospital2"
    assert listed[ds]["sensitivity"] == "restricted"
    table = net.run("data", "list").stdout.splitlines()
    assert table[0].split() == ["ID", "OWNER", "KIND", "SENSITIVITY", "REGISTERED", "MANIFEST", "SHA256"]
    assert any(line.split()[:2] == [ds, "hospital2"] for line in table[1:])


def test_consent(net: FabricNet, tmp_path: Path) -> None:
    patient = net.unique("pt-7f3a9c")
    given = net.ok("consent", "record", patient, "train:cardiac-v1", "--as", "hospital1")
    assert (given["hospital"], given["collection"]) == ("hospital1", "_implicit_org_Hospital1MSP")
    shown = net.ok("consent", "show", patient, "train:cardiac-v1", "--as", "hospital1:client")
    assert hashlib.sha256(shown["record"].encode()).hexdigest() == shown["sha256"] == given["sha256"]
    assert json.loads(shown["record"])["status"] == "given"

    # Another org checks the record the hospital showed, by digest or by the record's text in a file.
    assert net.ok("consent", "verify", "hospital1", patient, "train:cardiac-v1", "--sha256", given["sha256"],
                  "--as", "plant1")["match"] is True
    shown_file = tmp_path / "record.json"
    shown_file.write_text(shown["record"])
    assert net.ok("consent", "verify", "hospital1", patient, "train:cardiac-v1", "--sha256", str(shown_file),
                  "--as", "hospital2")["match"] is True
    result = net.run("consent", "verify", "hospital1", patient, "train:cardiac-v1", "--sha256", "0" * 64,
                     "--as", "plant1")
    assert result.returncode == 3 and result.stdout.startswith("no match")

    line = net.fails("consent", "record", patient, "train:cardiac-v1", "--as", "hospital1")
    assert line == "twinledger: the consent for this pseudonym and scope is already 'given'"
    withdrawn = net.ok("consent", "withdraw", patient, "train:cardiac-v1", "--as", "hospital1:steward")
    assert withdrawn["sha256"] != given["sha256"]
    stale = net.run("consent", "verify", "hospital1", patient, "train:cardiac-v1", "--sha256", given["sha256"],
                    "--as", "plant1", "--json")
    assert stale.returncode == 3 and json.loads(stale.stdout) == {"hospital": "hospital1", "recorded": True,
                                                                  "match": False}

    line = net.fails("consent", "record", "pt-0001", "train:maintenance-v1", "--as", "plant1")
    assert line == "twinledger: access denied: RecordConsent is for hospitals; org 'plant1' is registered as 'plant'"
    line = net.fails("consent", "record", "pt-0001", "train:cardiac-v1", "--as", "hospital1:client")
    assert line == ("twinledger: access denied: RecordConsent needs role 'steward' in the caller's certificate, "
                    "found 'client'")
    line = net.fails("consent", "withdraw", net.unique("pt-never"), "train:cardiac-v1", "--as", "hospital2")
    assert "nothing to withdraw" in line


@pytest.fixture
def unreachable_home(net: FabricNet, tmp_path: Path) -> Path:
    """The same identities, but a spec whose ports nothing listens on: every peer is down."""
    home = tmp_path / "down"
    home.mkdir()
    shutil.copytree(net.home / "orgs", home / "orgs")
    spec = yaml.safe_load((net.home / "spec.yaml").read_text())
    spec["port_base"] = free_port_base(200)
    (home / "spec.yaml").write_text(yaml.safe_dump(spec))
    return home


def test_unreachable_peer_and_bad_input_before_any_call(unreachable_home: Path) -> None:
    peer_port = load_spec(unreachable_home / "spec.yaml").node("peer0.plant2").ports.listen

    def fails(*args: str) -> str:
        result = twinledger(*args, home=unreachable_home)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        return result.stderr.strip()

    assert fails("data", "list", "--as", "plant2") == (
        f"twinledger: cannot reach peer0.plant2 at 127.0.0.1:{peer_port} — is the network up? (`twinledger status`)")
    # Bad local input is refused before any call: the peer being down is never what the error says.
    assert "neither a SHA-256 digest" in fails("data", "register", "x1", "--kind", "t", "--sha256", "abc")
    assert "neither a JSON object nor a JSON file" in fails(
        "data", "register", "x1", "--kind", "t", "--sha256", "ab" * 32, "--schema", "{rows: 1}")
    assert "is not in the future" in fails("data", "grant", "x1", "--to", "plant2", "--purpose", "train:a",
                                           "--expires", "2020-01-01T00:00:00Z")
    assert "has no time zone" in fails("data", "grant", "x1", "--to", "plant2", "--purpose", "train:a",
                                       "--expires", "2030-01-01T00:00:00")
    assert "unknown org 'lab9'" in fails("data", "grant", "x1", "--to", "lab9", "--purpose", "train:a")
    assert "unknown user 'nurse'" in fails("data", "list", "--as", "hospital1:nurse")
    assert "neither a SHA-256 digest" in fails("consent", "verify", "hospital1", "p", "train:a", "--sha256", "zz")
