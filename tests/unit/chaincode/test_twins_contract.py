"""The twins contract ("twins"): sensor batch anchors, alerts, maintenance decisions, sustainability."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from chaincode.twins import EVENT_BATCH_ANCHORED
from twins.anchoring.record import BatchRecord

H = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(5)]


def batch(org: str = "plant1", no: int = 1, prev: str = "", **changes: Any) -> BatchRecord:
    fields = dict(org=org, batch_no=no, merkle_root=H[0], count=4, seq_ranges={"mill-1/temp": [10, 13]},
                  first_ts_us=1_000, last_ts_us=2_000, twin_state_hashes={"mill-1": H[1]}, prev_record_hash=prev,
                  sealed_at_us=3_000)
    fields.update(changes)
    return BatchRecord(**fields)


def op(c: Any, org: str = "plant1") -> Any:
    return c.user(org, role="operator")


def anchor(c: Any, rec: BatchRecord, who: Any = None) -> Any:
    return c.call(who or op(c), "twins:AnchorSensorBatch", rec.batch_id, rec.canonical().decode())


def test_anchor_is_stored_immutable_and_idempotent(consortium: Any) -> None:
    c = consortium
    rec = batch()
    response, stub = anchor(c, rec)
    assert response.status == 200, response.message
    stored = json.loads(response.payload)
    assert stored["record"] == rec.to_dict() and stored["record_hash"] == rec.record_hash()
    assert stored["tx_id"] == stub.txid and [e.event_name for e in stub.events] == [EVENT_BATCH_ANCHORED]
    assert BatchRecord.from_dict(stored["record"]) == rec
    # The same record again: answered with the stored anchor, nothing written.
    before = c.ledger.world()
    response, stub = anchor(c, rec, who=c.user("plant1", role="admin"))
    assert response.status == 200 and json.loads(response.payload) == stored
    assert not stub.has_writes() and c.ledger.world() == before
    c.rejected(op(c), "twins:AnchorSensorBatch", rec.batch_id, batch(count=5).canonical().decode(),
               fragment=f"batch 'plant1:0000000001' is already anchored with a different record (record hash "
                        f"{rec.record_hash()})")
    assert c.ok(c.user("hospital1", role="client"), "twins:ReadSensorBatch", rec.batch_id) == stored
    # Chaining: the next batch names this one's record hash.
    c.rejected(op(c), "twins:AnchorSensorBatch", "plant1:0000000002", batch(no=2, prev=H[3]).canonical().decode(),
               fragment="record.prev_record_hash")
    assert anchor(c, batch(no=2, prev=rec.record_hash()))[0].status == 200


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"merkle_root": "zz"}, "record.merkle_root 'zz' is not a SHA-256 digest"),
        ({"merkle_root": H[0].upper()}, "is not a SHA-256 digest (64 lower-case"),
        ({"count": 0}, "record.count 0 is out of range"),
        ({"count": 2.0}, "record.count must be a whole number"),
        ({"seq_ranges": {}}, "record.seq_ranges must be a non-empty object"),
        ({"seq_ranges": {"a/p": [5, 4]}}, "starts at 5 after it ends at 4"),
        ({"seq_ranges": {"a/p": [1]}}, "must be [first_seq, last_seq]"),
        ({"first_ts_us": 3_000}, "record.first_ts_us 3000 is after record.last_ts_us 2000"),
        ({"sealed_at_us": 1_500}, "record.sealed_at_us 1500 is before its last reading 2000"),
        ({"twin_state_hashes": {"mill-1": "x"}}, "record.twin_state_hashes['mill-1'] 'x' is not a SHA-256"),
        ({"prev_record_hash": "abc"}, "record.prev_record_hash 'abc' is not a SHA-256"),
    ],
)
def test_record_rules(consortium: Any, changes: dict[str, Any], fragment: str) -> None:
    rec = batch().to_dict() | changes
    consortium.rejected(op(consortium), "twins:AnchorSensorBatch", "plant1:0000000001", json.dumps(rec),
                        fragment=fragment)


def test_anchor_identity_and_shape_rules(consortium: Any) -> None:
    c = consortium
    rec = batch()
    text = rec.canonical().decode()
    c.rejected(op(c, "plant2"), "twins:AnchorSensorBatch", rec.batch_id, text,
               fragment="access denied: the caller anchors batches of its own org 'plant2', not of 'plant1'")
    for role in ("steward", "client", None):
        c.rejected(c.user("plant1", role=role), "twins:AnchorSensorBatch", rec.batch_id, text,
                   fragment="access denied: AnchorSensorBatch needs role 'admin' or 'operator'")
    c.rejected(op(c), "twins:AnchorSensorBatch", "plant1:0000000002", text,
               fragment="batch ID 'plant1:0000000002' does not match the record's org and batch_no ('plant1:0000000001')")
    c.rejected(op(c), "twins:AnchorSensorBatch", "plant1-1", text, fragment="batch ID 'plant1-1' is not of the form")
    d = rec.to_dict()
    del d["extra"]
    c.rejected(op(c), "twins:AnchorSensorBatch", rec.batch_id, json.dumps(d), fragment="missing extra")
    c.rejected(op(c), "twins:AnchorSensorBatch", rec.batch_id, json.dumps(rec.to_dict() | {"x": 1}),
               fragment="unknown x")
    c.rejected(op(c), "twins:AnchorSensorBatch", rec.batch_id, "[]", fragment="record must be a JSON object")
    c.rejected(c.user("plant1", role="client"), "twins:ReadSensorBatch", "plant1:0000000009",
               fragment="sensor batch 'plant1:0000000009' not found")


def test_alert_decision_ack(consortium: Any) -> None:
    c = consortium
    alert = c.ok(op(c), "twins:RaiseAlert", "mill-1", "bearing_wear", "0.87", '{"rul_h":12}')
    assert (alert["org"], alert["score"], alert["status"]) == ("plant1", 0.87, "open")
    c.rejected(op(c, "plant2"), "twins:DecideMaintenance", alert["id"], "schedule",
               fragment="access denied: alert '%s' belongs to org 'plant1'" % alert["id"])
    c.rejected(c.user("plant1", role="admin"), "twins:DecideMaintenance", alert["id"], "schedule",
               fragment="access denied: DecideMaintenance needs role 'operator'")
    c.rejected(op(c), "twins:DecideMaintenance", alert["id"], "panic", fragment="decision 'panic' is not one of")
    c.rejected(op(c), "twins:DecideMaintenance", "nope", "schedule", fragment="alert 'nope' not found")
    decision = c.ok(op(c), "twins:DecideMaintenance", alert["id"], "schedule")
    assert decision["alert"] == alert["id"] and decision["status"] == "pending"
    assert c.ok(op(c), "twins:ReadAlert", alert["id"])["decision_id"] == decision["id"]
    c.rejected(op(c), "twins:DecideMaintenance", alert["id"], "dismiss",
               fragment=f"alert '{alert['id']}' was already decided")
    for who in (c.user("plant1", role="steward"), c.user("plant1", role="client")):
        c.rejected(who, "twins:AckDecision", decision["id"], fragment="access denied: AckDecision needs role 'admin' or 'operator'")
    c.rejected(c.user("plant2", role="admin"), "twins:AckDecision", decision["id"],
               fragment="belongs to org 'plant1'")
    acked = c.ok(c.user("plant1", role="admin"), "twins:AckDecision", decision["id"])
    assert acked["status"] == "acknowledged" and acked["acked_at"] == "2025-03-01T12:00:00Z"
    c.rejected(op(c), "twins:AckDecision", decision["id"], fragment="was already acknowledged")
    assert c.ok(c.user("hospital1", role="client"), "twins:ReadDecision", decision["id"]) == acked


def test_alerts_and_decisions_name_the_model(consortium: Any) -> None:
    c = consortium
    sha = hashlib.sha256(b"global model of round 3").hexdigest()
    label = f"federated:maintenance-v1:round3:{sha[:12]}"
    alert = c.ok(op(c), "twins:RaiseAlert", "mill-1", "failure-risk", "0.61",
                 json.dumps({"model": label, "model_sha256": sha, "text": "P(next product fails) 0.61"}))
    assert (alert["model"], alert["model_sha256"]) == (label, sha)
    assert c.ok(c.user("plant2", role="client"), "twins:ReadAlert", alert["id"])["model_sha256"] == sha
    decision = c.ok(op(c), "twins:DecideMaintenance", alert["id"], "repair-now")
    assert (decision["model"], decision["model_sha256"]) == (label, sha)
    # the rules model is named without a hash; an alert naming no model is recorded as before (backward compatible)
    rules = c.ok(op(c), "twins:RaiseAlert", "mill-2", "failure-risk", "0.3", '{"model":"fallback:ai4i-rules-v1"}')
    assert (rules["model"], rules["model_sha256"]) == ("fallback:ai4i-rules-v1", None)
    bare = c.ok(op(c), "twins:RaiseAlert", "mill-3", "wear", "0.3", '{"rul_h":12}')
    assert (bare["model"], bare["model_sha256"]) == (None, None)
    assert c.ok(op(c), "twins:DecideMaintenance", bare["id"], "monitor")["model"] is None


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (("mill-1", "wear", "1.5", "{}"), "score '1.5' is not a number between 0 and 1"),
        (("mill-1", "wear", "NaN", "{}"), "score 'NaN' is not a number"),
        (("mill-1", "wear", "-0.1", "{}"), "is not a number between 0 and 1"),
        (("mill 1", "wear", "0.5", "{}"), "asset 'mill 1' is not valid"),
        (("mill-1", "Wear!", "0.5", "{}"), "alert kind 'Wear!' is not valid"),
        (("mill-1", "wear", "0.5", "[]"), "detail must be a JSON object"),
        (("mill-1", "wear", "0.5", '{"model":"federated:m-v1:round2:' + "ab" * 6 + '"}'),
         "detail.model names a federated model; detail.model_sha256 must give its SHA-256"),
        (("mill-1", "wear", "0.5", '{"model":"federated:m-v1:round2:' + "ab" * 6 + '","model_sha256":"' + "cd" * 32 + '"}'),
         "does not name the model of detail.model_sha256"),
        (("mill-1", "wear", "0.5", '{"model":"fallback:ai4i-rules-v1","model_sha256":"' + "cd" * 32 + '"}'),
         "detail.model must be the federated model's label"),
        (("mill-1", "wear", "0.5", '{"model":"federated:m:round1:' + "ab" * 6 + '","model_sha256":"AB"}'),
         "detail.model_sha256 'AB' is not a SHA-256 digest"),
        (("mill-1", "wear", "0.5", '{"model":"bad\\nlabel"}'), "is not a model label"),
        (("mill-1", "wear", "0.5", '{"model":7}'), "detail.model must be"),
    ],
)
def test_alert_rules(consortium: Any, args: tuple[str, ...], fragment: str) -> None:
    consortium.rejected(op(consortium), "twins:RaiseAlert", *args, fragment=fragment)


def test_only_operators_raise_alerts(consortium: Any) -> None:
    for role in ("admin", "steward", "client"):
        consortium.rejected(consortium.user("plant1", role=role), "twins:RaiseAlert", "mill-1", "wear", "0.5", "{}",
                            fragment="access denied: RaiseAlert needs role 'operator'")


def test_sustainability(consortium: Any) -> None:
    c = consortium
    metrics = '{"co2_kg":12.5,"energy_kwh":40,"water_l":0}'
    record = c.ok(op(c), "twins:ReportSustainability", "plant1", "2025-02", metrics)
    assert record["metrics"] == {"co2_kg": 12.5, "energy_kwh": 40, "water_l": 0}
    assert c.ok(c.user("plant2", role="client"), "twins:ReadSustainability", "plant1", "2025-02") == record
    c.rejected(op(c), "twins:ReportSustainability", "plant1", "2025-02", metrics,
               fragment="org 'plant1' has already reported period '2025-02'")
    c.rejected(op(c), "twins:ReportSustainability", "plant2", "2025-03", metrics,
               fragment="access denied: ReportSustainability reports the caller's own org 'plant1', not 'plant2'")
    c.rejected(c.user("plant1", role="steward"), "twins:ReportSustainability", "plant1", "2025-03", metrics,
               fragment="access denied: ReportSustainability needs role 'admin' or 'operator'")
    c.rejected(op(c), "twins:ReportSustainability", "plant1", "2025-13", metrics, fragment="period '2025-13' is not a period")
    c.rejected(op(c), "twins:ReportSustainability", "plant1", "2025-03", '{"co2_kg":-1}', fragment="metric 'co2_kg' is negative")
    c.rejected(op(c), "twins:ReportSustainability", "plant1", "2025-03", "{}", fragment="metrics must hold at least one")
    assert c.ok(c.user("plant1", role="admin"), "twins:ReportSustainability", "plant1", "2025-W10", metrics)


def test_fabric_anchorer_drives_the_contract(consortium: Any) -> None:
    """twins.anchoring.FabricAnchorer's calls, end to end against the real contract."""
    import asyncio

    from twins.anchoring.anchorer import AnchorConflict, FabricAnchorer

    c = consortium
    who = op(c)

    class Status:
        successful, code_name, block_number = True, "VALID", 1

    class Proposal:
        def __init__(self, function: str, args: tuple[Any, ...]) -> None:
            self.function, self.args, self.stub = function, [a.decode() if isinstance(a, bytes) else a for a in args], None
            self.transaction_id = ""

        async def endorse(self) -> Any:
            response, stub = await c.ledger.run(who, self.function, *self.args, chaincode=c.chaincode)
            if response.status != 200:
                raise RuntimeError(response.message)
            self.transaction_id, proposal = stub.txid, self

            class Tx:
                result = bytes(response.payload)

                async def submit(self) -> Any:
                    class Commit:
                        async def status(self) -> Any:
                            Status.transaction_id = proposal.transaction_id
                            return Status()
                    return Commit()
            return Tx()

    class Contract:
        def new_proposal(self, function: str, *args: Any) -> Proposal:
            return Proposal(function, args)

        async def evaluate(self, function: str, *args: str) -> bytes:
            response, _ = await c.ledger.run(who, function, *args, chaincode=c.chaincode)
            if response.status != 200:
                raise RuntimeError(response.message)
            return bytes(response.payload)

    async def scenario() -> None:
        anchorer = FabricAnchorer(Contract())
        rec = batch()
        tx = await anchorer.submit_anchor(rec)
        assert await anchorer.submit_anchor(rec) == tx  # idempotent: the first tx id
        got = await anchorer.get_anchor(rec.batch_id)
        assert got == {"batch_id": rec.batch_id, "record": rec.to_dict(), "record_hash": rec.record_hash(), "tx_id": tx,
                       # who anchored it and when, as the contract stored them (the caller's cert, the tx timestamp)
                       "anchored_at": "2025-03-01T12:00:00Z", "anchored_by": got["anchored_by"]}
        assert got["anchored_by"].startswith("x509::CN=operator.plant1,")
        with pytest.raises(AnchorConflict):
            await anchorer.submit_anchor(batch(count=9))
        await anchorer.submit_anchor(batch(no=2, prev=rec.record_hash()))

    asyncio.run(scenario())
