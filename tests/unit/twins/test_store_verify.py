import asyncio
import json
import sqlite3

import pytest

from tests.unit.twins.fakes import MemoryAnchorer
from twins.anchoring import AnchorConflict, Batcher, BatchRecord, ReadingStore, VerificationError, verify_all_batches, verify_batch, verify_reading
from twins.anchoring.anchorer import FabricAnchorer, resubmit_pending
from twins.readings import Reading


def _readings(org, asset, n, start=1):
    out = []
    for i in range(start, start + n):
        out.append(Reading(org, asset, "Torque", i, 1_700_000_000_000_000 + i * 1000, 40.0 + i / 10))
        out.append(Reading(org, asset, "ToolWear", i, 1_700_000_000_000_000 + i * 1000, float(2 * i)))
    return out


def _seal(store, anchorer, readings):
    b = Batcher(store, lambda org: {"plant1.m1": ('{"x":1}', "ab" * 32)} if org == "plant1" else {})
    for r in readings:
        b.add(r)
    sealed = b.seal_all()
    for rec, _ in sealed:
        store.record_anchor(rec.batch_id, asyncio.run(anchorer.submit_anchor(rec)), 1)
    return sealed


def test_batches_per_org_verify_and_chain(tmp_path):
    store = ReadingStore(tmp_path / "r.sqlite")
    anchorer = MemoryAnchorer()
    s1 = _seal(store, anchorer, _readings("plant1", "plant1.m1", 5) + _readings("hospital1", "hospital1.bed1", 3))
    assert [rec.org for rec, _ in s1] == ["hospital1", "plant1"]
    rec = s1[1][0]
    # both variables of plant1.m1 span seq 1..5: one per-asset range (compact_ranges); the patient too
    assert rec.count == 10 and rec.seq_ranges == {"plant1.m1": [1, 5]}
    assert s1[0][0].seq_ranges == {"hospital1.bed1": [1, 3]}
    assert rec.twin_state_hashes == {"plant1.m1": "ab" * 32} and rec.prev_record_hash == ""
    s2 = _seal(store, anchorer, _readings("plant1", "plant1.m1", 4, start=6))
    rec2 = s2[0][0]
    assert rec2.batch_no == 2 and rec2.prev_record_hash == rec.record_hash()
    res = asyncio.run(verify_reading(store, anchorer, "plant1.m1", 7))
    assert {v.reading.prop for v in res} == {"Torque", "ToolWear"}
    v = asyncio.run(verify_reading(store, anchorer, "plant1.m1", 3, "Torque"))[0]
    assert v.reading.value == pytest.approx(40.3) and v.batch_id == "plant1:0000000001"
    assert v.anchor["tx_id"] == anchorer.entries[v.batch_id]["tx_id"] and v.merkle_root == rec.merkle_root
    assert store.last_positions()[("plant1.m1", "Torque")] == (9, 1_700_000_000_000_000 + 9000)
    with pytest.raises(VerificationError, match="no stored reading"):
        asyncio.run(verify_reading(store, anchorer, "plant1.m1", 99))


def test_store_is_append_only_and_tamper_is_detected(tmp_path):
    store = ReadingStore(tmp_path / "r.sqlite")
    anchorer = MemoryAnchorer()
    _seal(store, anchorer, _readings("plant1", "plant1.m1", 9))
    db = sqlite3.connect(tmp_path / "r.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE readings SET value = 0 WHERE seq = 4")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM readings WHERE seq = 4")
    # an attacker with file access drops the trigger and edits one value
    db.execute("DROP TRIGGER readings_no_update")
    db.execute("UPDATE readings SET value = value + 0.01 WHERE asset='plant1.m1' AND prop='Torque' AND seq = 4")
    db.commit()
    asyncio.run(verify_reading(store, anchorer, "plant1.m1", 5))  # others still verify
    with pytest.raises(VerificationError, match="altered"):
        asyncio.run(verify_reading(store, anchorer, "plant1.m1", 4))
    # ... and rewriting the local root too is caught by the anchored record
    levels_attack = tmp_path / "r.sqlite"
    db.execute("DROP TRIGGER batches_no_update")
    db.execute("UPDATE batches SET root = X'" + "00" * 32 + "'")
    db.commit()
    with pytest.raises(VerificationError):
        asyncio.run(verify_reading(store, anchorer, "plant1.m1", 5))
    assert levels_attack.exists()


def test_a_whole_batch_verifies_and_any_altered_or_missing_leaf_is_caught(tmp_path):
    store = ReadingStore(tmp_path / "r.sqlite")
    anchorer = MemoryAnchorer()
    _seal(store, anchorer, _readings("plant1", "plant1.m1", 6) + _readings("hospital1", "hospital1.bed1", 2))
    _seal(store, anchorer, _readings("plant1", "plant1.m1", 3, start=7))
    ids = store.batch_ids()
    assert ids == ["hospital1:0000000001", "plant1:0000000001", "plant1:0000000002"]
    assert [asyncio.run(verify_batch(store, anchorer, b)).count for b in ids] == [4, 12, 6]
    assert [i for i, _ in store.batch_readings(ids[1])] == list(range(12))
    db = sqlite3.connect(tmp_path / "r.sqlite")
    db.execute("DROP TRIGGER readings_no_update")
    db.execute("UPDATE readings SET value = value + 0.01 WHERE asset='plant1.m1' AND prop='ToolWear' AND seq = 8")
    db.commit()
    with pytest.raises(VerificationError, match="altered"):
        asyncio.run(verify_batch(store, anchorer, ids[2]))
    db.execute("DROP TRIGGER readings_no_delete")
    db.execute("DELETE FROM readings WHERE asset='hospital1.bed1' AND seq = 2 AND prop='Torque'")
    db.commit()
    with pytest.raises(VerificationError, match="3 leaves of its 4"):
        asyncio.run(verify_batch(store, anchorer, ids[0]))
    asyncio.run(verify_batch(store, anchorer, ids[1]))  # the untouched batch still verifies
    verified, failed = asyncio.run(verify_all_batches(store, anchorer))
    assert verified == 1 and sorted(failed) == [ids[0], ids[2]]
    anchorer.entries.pop(ids[1])
    with pytest.raises(VerificationError, match="no anchor"):
        asyncio.run(verify_batch(store, anchorer, ids[1]))


def test_anchored_record_mismatch_and_missing_anchor(tmp_path):
    store = ReadingStore(tmp_path / "r.sqlite")
    anchorer = MemoryAnchorer()
    (rec, _), = _seal(store, anchorer, _readings("plant1", "plant1.m1", 3))
    anchorer.entries[rec.batch_id]["record"]["merkle_root"] = "00" * 32
    with pytest.raises(VerificationError, match="anchored root"):
        asyncio.run(verify_reading(store, anchorer, "plant1.m1", 2))
    with pytest.raises(VerificationError, match="no anchor"):
        asyncio.run(verify_reading(store, MemoryAnchorer(), "plant1.m1", 2))


def test_the_fake_anchorer_keeps_the_contracts_rules(tmp_path):
    rec = BatchRecord("plant1", 1, "aa" * 32, 2, {"a/p": [1, 2]}, 1, 2, {}, "", 3)
    other = BatchRecord("plant1", 1, "bb" * 32, 2, {"a/p": [1, 2]}, 1, 2, {}, "", 3)
    a = MemoryAnchorer()
    tx = asyncio.run(a.submit_anchor(rec))
    assert asyncio.run(a.submit_anchor(rec)) == tx
    with pytest.raises(AnchorConflict):
        asyncio.run(a.submit_anchor(other))
    with pytest.raises(AnchorConflict, match="chain"):
        asyncio.run(a.submit_anchor(BatchRecord("plant1", 2, "cc" * 32, 1, {"a/p": [3, 3]}, 3, 3, {}, "00" * 32, 4)))
    assert asyncio.run(a.chain_head("plant1")) == (1, rec.record_hash()) and asyncio.run(a.chain_head("plant2")) is None


def test_pending_batches_are_resubmitted(tmp_path):
    store = ReadingStore(tmp_path / "r.sqlite")
    b = Batcher(store)
    for r in _readings("plant1", "plant1.m1", 3):
        b.add(r)
    b.seal_all()
    assert len(store.pending_batches()) == 1
    anchorer = MemoryAnchorer()
    assert asyncio.run(resubmit_pending(store, anchorer, 5)) == 1
    assert store.pending_batches() == []
    asyncio.run(verify_reading(store, anchorer, "plant1.m1", 1))


def test_fabric_anchorer_uses_the_gateway_contract_shape():
    calls = []

    class Status:
        successful, code_name, transaction_id, block_number = True, "VALID", "tx1", 7

    class Commit:
        async def status(self):
            return Status()

    class Tx:
        async def submit(self):
            return Commit()

    class Proposal:
        transaction_id = "tx1"

        async def endorse(self):
            return Tx()

    class Contract:
        stored = {}

        def new_proposal(self, fn, *args):
            calls.append((fn, args))
            rec = json.loads(args[1])
            assert args[0] == rec["batch_id"]
            self.stored[rec["batch_id"]] = args[1]
            return Proposal()

        async def evaluate(self, fn, batch_id):
            calls.append((fn, (batch_id,)))
            return self.stored.get(batch_id, b"")

    a = FabricAnchorer(Contract())
    rec = BatchRecord("plant1", 1, "aa" * 32, 2, {"a/p": [1, 2]}, 1, 2, {}, "", 3)
    assert asyncio.run(a.submit_anchor(rec)) == "tx1"
    got = asyncio.run(a.get_anchor(rec.batch_id))
    assert got["record_hash"] == rec.record_hash()
    assert calls[0][0] == "twins:AnchorSensorBatch" and calls[1][0] == "twins:ReadSensorBatch"


def test_a_new_store_continues_the_orgs_chain_on_the_ledger(tmp_path):
    """The ledger keeps one chain per org: a second store (another twins home) seals its first batch after the
    first store's last one, and both stores' readings verify against the same anchorer."""
    from twins.bridge.mapping import parse_mapping
    from twins.runtime import TwinRuntime

    anchorer = MemoryAnchorer()
    first = ReadingStore(tmp_path / "a.sqlite")
    s1 = _seal(first, anchorer, _readings("plant1", "plant1.m1", 3))
    s1 += _seal(first, anchorer, _readings("plant1", "plant1.m1", 2, start=4))
    mapping = parse_mapping({"assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}},
                             "nodes": {"ns=2;s=x": {"asset": "plant1.m1", "property": "Torque"}}})

    async def second_run() -> TwinRuntime:
        rt = TwinRuntime(mapping, tmp_path / "b.sqlite", anchorer, interval=0.05, report_every=0)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run_anchoring(stop))
        await asyncio.sleep(0.1)
        for r in _readings("plant1", "plant1.m1", 2, start=1):
            rt.on_reading(r)
        await asyncio.sleep(0.2)
        stop.set()
        await task
        rt.close()
        return rt

    rt = asyncio.run(second_run())
    assert rt.last_anchored_by_org["plant1"] == 3
    second = ReadingStore(tmp_path / "b.sqlite")
    (rec,) = [b.record for b in (second.batch("plant1:0000000003"),) if b is not None]
    assert rec.prev_record_hash == s1[-1][0].record_hash() and second.pending_batches() == []
    assert second.first_batch_no("plant1") == 3
    asyncio.run(verify_reading(second, anchorer, "plant1.m1", 1, "Torque"))
    asyncio.run(verify_reading(first, anchorer, "plant1.m1", 1, "Torque"))  # the first store's batch 1 is its own
    # the first store now lags the ledger's chain: its next batch is refused, never anchored beside the other
    with pytest.raises(AnchorConflict):
        _seal(first, anchorer, _readings("plant1", "plant1.m1", 1, start=6))


def test_fabric_anchorer_finds_the_chain_head_by_doubling_and_bisecting():
    reads = []

    class Contract:
        async def evaluate(self, fn, batch_id):
            reads.append(batch_id)
            n = int(batch_id.rpartition(":")[2])
            if n > 37:
                raise RuntimeError(f"sensor batch {batch_id!r} not found")
            return json.dumps({"record_hash": f"h{n}"}).encode()

    assert asyncio.run(FabricAnchorer(Contract()).chain_head("plant1")) == (37, "h37")
    assert len(reads) <= 2 * 6 + 1 and all(r.startswith("plant1:") for r in reads)

    class Empty:
        async def evaluate(self, fn, batch_id):
            raise RuntimeError(f"sensor batch {batch_id!r} not found")

    assert asyncio.run(FabricAnchorer(Empty()).chain_head("plant2")) is None


def test_a_slow_org_does_not_hold_up_the_others(tmp_path):
    """Each org's records go to the ledger from a task of their own: in order within the org, orgs in parallel."""
    from twins.bridge.mapping import parse_mapping
    from twins.runtime import TwinRuntime

    class SlowForPlant1(MemoryAnchorer):
        """plant1's ledger calls hang until released (deterministic, whatever the machine's load)."""
        order: list[str] = []
        release: asyncio.Event | None = None

        async def submit_anchor(self, record):
            if record.org == "plant1":
                await self.release.wait()
            self.order.append(record.batch_id)
            return await super().submit_anchor(record)

    anchorer = SlowForPlant1()
    mapping = parse_mapping({"assets": {"plant1.m1": {"org": "plant1", "kind": "machine"},
                                        "plant2.m1": {"org": "plant2", "kind": "machine"}},
                             "nodes": {"ns=2;s=a": {"asset": "plant1.m1", "property": "Torque"},
                                       "ns=2;s=b": {"asset": "plant2.m1", "property": "Torque"}}})

    async def go() -> None:
        anchorer.release = asyncio.Event()
        rt = TwinRuntime(mapping, tmp_path / "r.sqlite", anchorer, interval=0.05, report_every=0)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run_anchoring(stop))
        for i in range(1, 4):
            for org in ("plant1", "plant2"):
                rt.on_reading(Reading(org, f"{org}.m1", "Torque", i, 1_700_000_000_000_000 + i, 40.0))
            await asyncio.sleep(0.07)
        for _ in range(100):  # plant2's batches reach the ledger while plant1's first call still hangs
            if sum(b.startswith("plant2") for b in anchorer.order) >= 2:
                break
            await asyncio.sleep(0.05)
        plant2 = [b for b in anchorer.order if b.startswith("plant2")]
        assert plant2 == [f"plant2:{n:010d}" for n in range(1, len(plant2) + 1)] and len(plant2) >= 2
        assert not any(b.startswith("plant1") for b in anchorer.order)
        anchorer.release.set()
        stop.set()
        await task
        rt.close()

    asyncio.run(go())
    plant1 = [b for b in anchorer.order if b.startswith("plant1")]
    assert plant1 == [f"plant1:{n:010d}" for n in range(1, len(plant1) + 1)] and len(plant1) >= 2
