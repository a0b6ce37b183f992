"""Gap records (twins.anchoring.record.GapRecord): where a server keeps no history, a break of the stream becomes an
explicit gap (asset, variable, from, to, reason) sealed into the org's batch, covered by its record hash, and shown by
verification; a server with history never produces one."""

import asyncio

from chaincode.arguments import require_json_object
from chaincode.twins import check_batch_record
from tests.unit.twins.fakes import MemoryAnchorer
from twins.anchoring.batcher import Batcher
from twins.anchoring.record import MAX_RECORD_BYTES, BatchRecord, GapRecord
from twins.anchoring.store import ReadingStore
from twins.anchoring.verify import verify_all_batches, verify_gaps, verify_reading
from twins.bridge.mapping import NodeMap
from twins.bridge.sequencer import NoHistory, Sequencer

NODE = NodeMap("ns=2;s=press1.Count", "press1", "Count", "plant1", "machine")
OTHER = NodeMap("ns=2;s=press1.Speed", "press1", "Speed", "plant1", "machine")
K, K2 = ("press1", "Count"), ("press1", "Speed")


async def _until_idle(s):
    t = asyncio.create_task(s.run_filler(lambda: True))
    while not s.idle():
        await asyncio.sleep(0.001)
    t.cancel()


def _run(fetch, steps):
    """A sequencer resumed at Count #3 (t=3000) and Speed #3 (t=3000), after a restart: catch up, then ``steps``."""
    got, gaps = [], []
    batcher_order = []

    async def main():
        s = Sequencer([NODE, OTHER], lambda r: (got.append(r), batcher_order.append(("reading", r.prop))),
                      on_gap=lambda g: (gaps.append(g), batcher_order.append(("gap", g.prop))))
        s.fetch = fetch
        s.resume({K: (3, 3000), K2: (3, 3000)})
        s.request_catch_up()
        for step in steps:
            if step == "idle":
                await _until_idle(s)
            else:
                s.offer(*step)
        await _until_idle(s)
        return s

    return asyncio.run(main()), got, gaps, batcher_order


def test_a_server_without_history_gives_a_gap_from_the_last_sealed_to_the_first_new_reading():
    async def fetch(node, from_ts, to_ts):
        raise NoHistory("BadHistoryOperationUnsupported")

    s, got, gaps, order = _run(fetch, ["idle", (K, 9000, 0, 9.0), (K, 10000, 0, 10.0), (K2, 9500, 0, 1.0)])
    assert [(r.prop, r.seq, r.source_ts_us) for r in got] == [("Count", 4, 9000), ("Count", 5, 10000), ("Speed", 4, 9500)]
    assert [(g.org, g.asset, g.prop, g.from_ts_us, g.to_ts_us) for g in gaps] == [
        ("plant1", "press1", "Count", 3000, 9000), ("plant1", "press1", "Speed", 3000, 9500)]
    assert all("reconnect or restart" in g.reason and "BadHistoryOperationUnsupported" in g.reason for g in gaps)
    # each gap reaches the batcher right before the reading that closes it: both land in the same batch
    assert order[:2] == [("gap", "Count"), ("reading", "Count")] and order[-2:] == [("gap", "Speed"), ("reading", "Speed")]
    assert s.gap_records == 2 and s.lost == 2


def test_an_overflow_on_a_server_without_history_is_a_gap_too_and_each_break_its_own():
    async def fetch(node, from_ts, to_ts):
        raise NoHistory("BadHistoryOperationUnsupported")

    s, got, gaps, _ = _run(fetch, [(K, 5000, 0, 5.0), "idle", (K, 6000, 0, 6.0), (K, 9000, 0, 9.0, True)])
    assert [r.source_ts_us for r in got if r.prop == "Count"] == [5000, 6000, 9000]
    assert [(g.from_ts_us, g.to_ts_us) for g in gaps if g.prop == "Count"] == [(3000, 5000), (6000, 9000)]
    assert "overflow" in [g for g in gaps if g.prop == "Count"][1].reason


def test_a_server_with_history_refills_and_leaves_no_gap():
    history = {t: (t, 0, float(t)) for t in range(1000, 12001, 1000)}

    async def fetch(node, from_ts, to_ts):
        lo, hi = from_ts or 0, to_ts if to_ts is not None else 1 << 62
        return [v for t, v in sorted(history.items()) if lo <= t <= hi]

    s, got, gaps, _ = _run(fetch, [(K, 9000, 0, 9.0), "idle", (K, 10000, 0, 10.0, True)])
    assert gaps == [] and s.gap_records == 0
    assert [r.source_ts_us for r in got if r.prop == "Count"] == list(range(4000, 10001, 1000))


def test_a_gap_is_sealed_into_the_batch_covered_by_its_hash_and_shown_by_verification(tmp_path):
    async def fetch(node, from_ts, to_ts):
        raise NoHistory("BadHistoryOperationUnsupported")

    store = ReadingStore(tmp_path / "r.sqlite")
    batcher = Batcher(store)
    got = []

    async def main():
        s = Sequencer([NODE], lambda r: (got.append(r), batcher.add(r)), on_gap=batcher.add_gap)
        s.fetch = fetch
        s.resume({K: (3, 3000)})
        s.request_catch_up()
        await _until_idle(s)
        s.offer(K, 9000, 0, 9.0)
        s.offer(K, 9100, 0, 9.1)

    asyncio.run(main())
    [(record, readings)] = batcher.seal_all(now_us=20_000)
    [gap] = record.gaps()
    assert (gap.org, gap.asset, gap.prop, gap.from_ts_us, gap.to_ts_us) == ("plant1", "press1", "Count", 3000, 9000)
    assert record.fits_ledger() and batcher.gaps_sealed == 1 and len(readings) == 2
    # what the twins contract takes: a well-formed record, nested at most 3 levels deep (record -> extra -> gaps)
    check_batch_record(record.batch_id, require_json_object("record", record.canonical().decode(),
                                                            max_bytes=MAX_RECORD_BYTES, max_depth=3))
    # the gap is part of what the record hash covers: the same batch without it hashes differently
    bare = BatchRecord.from_dict({**record.to_dict(), "extra": {}})
    assert bare.record_hash() != record.record_hash()
    # a batch without gaps keeps the record it always had (extra {}), so existing hashes are unchanged
    batcher.add(got[-1].__class__("plant1", "press1", "Count", 6, 9200, 9.2, 0))
    [(plain, _)] = batcher.seal_all(now_us=30_000)
    assert plain.extra == {} and plain.gaps() == []

    anchorer = MemoryAnchorer()

    async def anchor_and_verify():
        for b in (record, plain):
            await anchorer.submit_anchor(b)
        return (await verify_gaps(store, anchorer), await verify_all_batches(store, anchorer),
                await verify_reading(store, anchorer, "press1", 4, "Count"))

    gaps, (verified, failed), [proof] = asyncio.run(anchor_and_verify())
    assert verified == 2 and failed == {}
    assert [(g.batch_id, g.gap.prop, g.gap.from_ts_us, g.gap.to_ts_us) for g in gaps] == [
        (record.batch_id, "Count", 3000, 9000)]
    assert proof.to_dict()["gaps"] == [record.gaps()[0].to_dict()]
    store.close()


def test_gap_record_round_trip():
    g = GapRecord("plant1", "press1.line2", "Count", 1, 2, "a reconnect or restart; the server keeps no history (x)")
    assert GapRecord.from_text("plant1", g.to_text()) == g
