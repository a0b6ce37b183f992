"""The sequencer orders, de-duplicates and refills by source time (twins.bridge.sequencer): the reading's identity
is (variable, SourceTimestamp); the bridge's ordinal seq is derived, dense, and continued across restarts."""

import asyncio

import pytest

from twins.bridge.mapping import NodeMap, parse_mapping
from twins.bridge.sequencer import NoHistory, Sequencer

NODE = NodeMap("ns=2;s=a.p", "a", "p", "plant1", "machine")
K = ("a", "p")
BAD = 0x80000000


def _history(times):
    return {t: (t, 0, float(t)) for t in times}


def _fetcher(history, reads=None):
    async def fetch(node, from_ts, to_ts):
        if reads is not None:
            reads.append((from_ts, to_ts))
        lo, hi = from_ts or 0, to_ts if to_ts is not None else 1 << 62
        return [s for t, s in sorted(history.items()) if lo <= t <= hi]
    return fetch


async def _until_idle(s, connected=lambda: True):
    t = asyncio.create_task(s.run_filler(connected))
    while not s.idle():
        await asyncio.sleep(0.001)
    t.cancel()


def test_live_values_in_time_order_duplicates_dropped_and_ordinals_continue():
    got = []
    s = Sequencer([NODE], got.append)
    s.resume({K: (7, 3000)})  # the store sealed ordinal 7 at t=3000
    for t in (3000, 4000, 4000, 2000, 5000):  # the re-sent initial value, a repeat, an older one
        s.offer(K, t, 0, t / 1000)
    assert [(r.seq, r.source_ts_us, r.value) for r in got] == [(8, 4000, 4.0), (9, 5000, 5.0)]
    assert s.duplicates == 3 and s.delivered == 2 and got[0].org == "plant1" and got[0].good


def test_bad_and_uncertain_values_are_readings_of_their_quality():
    got = []
    s = Sequencer([NODE], got.append)
    s.offer(K, 1000, 0, 1.0)
    s.offer(K, 2000, BAD | 0x00320000, float("nan"))
    s.offer(K, 3000, 0x40000000, 3.0)
    assert [(r.seq, r.quality) for r in got] == [(1, "good"), (2, "bad"), (3, "uncertain")]
    assert s.not_good == 2


def test_reconnect_catches_up_from_history_before_live_values():
    """Away from 2000 to the first live value 9000 of the new session: history fills 3000..8000, live continues."""
    got, reads = [], []
    history = _history(range(1000, 12001, 1000))

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = _fetcher(history, reads)
        s.resume({K: (2, 2000)})
        s.request_catch_up()  # the new subscription exists; its first values arrive before the read is served
        s.offer(K, 9000, 0, 9.0)
        s.offer(K, 10000, 0, 10.0)
        await _until_idle(s)
        s.offer(K, 11000, 0, 11.0)
        return s

    s = asyncio.run(main())
    assert [r.source_ts_us for r in got] == list(range(3000, 11001, 1000))
    assert [r.seq for r in got] == list(range(3, 12))
    assert reads == [(2000, 9000)], "read from the last value taken up to the session's first live value"
    assert s.replayed == 6 and s.lost == 0


def test_catch_up_with_no_live_value_yet_reads_up_to_now():
    got, reads = [], []

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = _fetcher(_history(range(1000, 6001, 1000)), reads)
        s.resume({K: (1, 1000)})
        s.request_catch_up()
        await _until_idle(s)
        s.offer(K, 6000, 0, 6.0)  # the subscription's initial value: already delivered from history
        s.offer(K, 7000, 0, 7.0)
        return s

    s = asyncio.run(main())
    assert [r.source_ts_us for r in got] == list(range(2000, 7001, 1000)) and reads == [(1000, None)]
    assert s.duplicates == 1


def test_overflow_bit_refills_up_to_the_flagged_value():
    got, reads = [], []

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = _fetcher(_history(range(1000, 9001, 1000)), reads)
        s.resume({K: (1, 1000)})
        s.offer(K, 2000, 0, 2.0)
        s.offer(K, 6000, 0, 6.0, overflow=True)  # the server's queue dropped 3000..5000
        s.offer(K, 7000, 0, 7.0)  # waits behind the refill
        await _until_idle(s)
        return s

    s = asyncio.run(main())
    assert [r.source_ts_us for r in got] == list(range(2000, 7001, 1000))
    assert reads == [(2000, 6000)] and s.gaps == 1 and s.overflows == 1 and s.replayed == 3


def test_a_second_overflow_during_the_read_reads_again_up_to_it():
    got, reads = [], []
    history = _history(range(1000, 20001, 1000))
    s = Sequencer([NODE], got.append)

    async def fetch(node, from_ts, to_ts):
        reads.append((from_ts, to_ts))
        if len(reads) == 1:  # while the first read is on the wire: more live values, then another overflow
            s.offer(K, 6000, 0, 6.0)
            s.offer(K, 7000, 0, 7.0)
            s.offer(K, 12000, 0, 12.0, overflow=True)  # 8000..11000 dropped by the server
            s.offer(K, 13000, 0, 13.0)
        return await _fetcher(history)(node, from_ts, to_ts)

    async def main():
        s.fetch = fetch
        s.resume({K: (1, 1000)})
        s.offer(K, 5000, 0, 5.0, overflow=True)
        await _until_idle(s)

    asyncio.run(main())
    assert [r.source_ts_us for r in got] == list(range(2000, 13001, 1000))
    assert reads == [(1000, 5000), (7000, 12000)] and s.rereads == 1


def test_start_from_history_reads_from_the_beginning():
    got = []

    async def main():
        s = Sequencer([NODE], got.append, start_from="history")
        s.fetch = _fetcher(_history(range(1000, 5001, 1000)))
        s.request_catch_up()
        s.offer(K, 5000, 0, 5.0)
        await _until_idle(s)

    asyncio.run(main())
    assert [(r.seq, r.source_ts_us) for r in got] == [(i, 1000 * i) for i in range(1, 6)]


def test_a_server_without_history_delivers_what_came_and_counts_the_break(caplog):
    got = []

    async def fetch(node, from_ts, to_ts):
        raise NoHistory("BadHistoryOperationUnsupported")

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = fetch
        s.resume({K: (1, 1000)})
        s.request_catch_up()
        s.offer(K, 5000, 0, 5.0)
        await _until_idle(s)
        s.offer(K, 9000, 0, 9.0, overflow=True)
        await _until_idle(s)
        return s

    s = asyncio.run(main())
    assert [r.source_ts_us for r in got] == [5000, 9000] and s.lost == 2
    assert len([r for r in caplog.records if "keeps no history" in r.getMessage()]) == 1


def test_fetch_failure_keeps_the_request_for_the_reconnect():
    up = [True]

    async def fetch(node, from_ts, to_ts):
        up[0] = False  # the connection went down with the read
        raise ConnectionError("gone")

    async def main():
        s = Sequencer([NODE], lambda r: None)
        s.fetch = fetch
        s.resume({K: (1, 1000)})
        s.offer(K, 5000, 0, 5.0, overflow=True)
        await asyncio.wait_for(s.run_filler(lambda: up[0]), 1)
        return s

    s = asyncio.run(main())
    assert not s.idle() and s.vars[K].pending == [(5000, 0, 5.0)]


def test_failed_read_while_connected_is_retried():
    got, calls = [], []

    async def fetch(node, from_ts, to_ts):
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.TimeoutError()  # a loaded server answered too late; the connection is still up
        return await _fetcher(_history(range(1000, 6001, 1000)))(node, from_ts, to_ts)

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = fetch
        s.resume({K: (1, 1000)})
        s.offer(K, 5000, 0, 5.0, overflow=True)
        await asyncio.wait_for(_until_idle(s), 3)

    asyncio.run(main())
    assert len(calls) == 2 and [r.source_ts_us for r in got] == [2000, 3000, 4000, 5000]


def test_mapping_validation():
    m = parse_mapping({"assets": {"a": {"org": "plant1", "kind": "machine"}},
                       "nodes": {"ns=2;s=a.p": {"asset": "a", "property": "p"}}})
    assert m.nodes == [NODE] and m.orgs() == ["plant1"]
    with pytest.raises(ValueError, match="not under 'assets'"):
        parse_mapping({"assets": {"a": {"org": "x"}}, "nodes": {"n": {"asset": "b", "property": "p"}}})
    with pytest.raises(ValueError, match="mapped twice"):
        parse_mapping({"assets": {"a": {"org": "x"}}, "nodes": {"n": {"asset": "a", "property": "p"}, "m": {"asset": "a", "property": "p"}}})


def test_simulator_history_store_pages_typed_scalars_and_keeps_the_newest_sample(tmp_path):
    import time as _time

    from asyncua import ua

    from twins.simulators.history import SeqHistoryStore

    h = SeqHistoryStore(tmp_path / "h.sqlite", retention_s=1.0, max_history_data_response_size=4)
    h.types["a.p"] = ua.VariantType.UInt16
    old = _time.time_ns() // 1000 - 10_000_000
    h.append([("a.p", i, old + i, float(i), old + i) for i in range(1, 11)], {"a": {"n": 10}})
    nid = ua.NodeId("a.p", 2)
    dvs, cont = asyncio.run(h.read_node_history(nid, None, None, 0))
    assert [dv.Value.Value for dv in dvs] == [1, 2, 3, 4] and cont is not None
    assert {dv.Value.VariantType for dv in dvs} == {ua.VariantType.UInt16}
    dvs, cont = asyncio.run(h.read_node_history(nid, cont, None, 0))
    assert [dv.Value.Value for dv in dvs] == [5, 6, 7, 8]
    h._last_prune = -1e9  # force the retention pass on the next append
    h.append([("b.q", 1, old, 1.0, old)], {})
    assert h.last_positions()["a.p"][0] == 10 and h.last_positions()["b.q"][0] == 1
    assert h.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 2
    assert h.states() == {"a": {"n": 10}}
