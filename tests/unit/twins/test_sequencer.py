import asyncio

from twins.bridge.mapping import NodeMap, parse_mapping
from twins.bridge.sequencer import Sequencer

import pytest

NODE = NodeMap("ns=2;s=a.p", "a", "p", "plant1", "machine")


def test_in_order_duplicates_and_gap_replay_from_history():
    got = []
    history = {i: (i, 1000 * i, float(i)) for i in range(1, 30)}

    async def fetch(node, from_ts, to_ts):
        return [s for s in history.values() if from_ts <= s[1] <= (to_ts if to_ts is not None else 1 << 60)]

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = fetch
        s.resume({("a", "p"): (3, 3000)})
        s.offer(("a", "p"), 3, 3000, 3.0)  # duplicate (re-sent current value)
        s.offer(("a", "p"), 4, 4000, 4.0)
        s.offer(("a", "p"), 8, 8000, 8.0)  # gap 5..7
        s.offer(("a", "p"), 9, 9000, 9.0)  # waits behind the gap
        s.offer(("a", "p"), 9, 9000, 9.0)  # duplicate while filling
        task = asyncio.create_task(s.run_filler(lambda: True))
        for _ in range(50):
            await asyncio.sleep(0)
        s.offer(("a", "p"), 10, 10000, 10.0)
        task.cancel()
        return s

    s = asyncio.run(main())
    assert [r.seq for r in got] == [4, 5, 6, 7, 8, 9, 10]
    assert s.gaps == 1 and s.lost == 0 and s.replayed >= 3 and s.duplicates >= 2
    assert got[1].org == "plant1" and got[1].source_ts_us == 5000


def test_catch_up_after_reconnect_and_loss_is_counted():
    got = []
    history = {i: (i, 1000 * i, float(i)) for i in list(range(1, 5)) + list(range(7, 12))}  # 5, 6 pruned

    async def fetch(node, from_ts, to_ts):
        return [s for s in history.values() if from_ts <= s[1]]

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = fetch
        s.resume({("a", "p"): (2, 2000)})
        s.request_catch_up()
        await asyncio.wait_for(_drain(s), 2)
        return s

    async def _drain(s):
        t = asyncio.create_task(s.run_filler(lambda: True))
        while not s.idle():
            await asyncio.sleep(0.001)
        t.cancel()

    s = asyncio.run(main())
    assert [r.seq for r in got] == [3, 4, 7, 8, 9, 10, 11]
    assert s.lost == 2


def test_fetch_failure_keeps_the_request():
    calls = []

    async def fetch(node, from_ts, to_ts):
        calls.append(1)
        raise ConnectionError("gone")

    async def main():
        s = Sequencer([NODE], lambda r: None)
        s.fetch = fetch
        s.resume({("a", "p"): (1, 1000)})
        s.offer(("a", "p"), 5, 5000, 5.0)
        await asyncio.wait_for(s.run_filler(lambda: True), 1)
        return s

    s = asyncio.run(main())
    assert calls and not s.idle() and s.vars[("a", "p")].pending == [(5, 5000, 5.0)]


def test_mapping_validation():
    m = parse_mapping({"assets": {"a": {"org": "plant1", "kind": "machine"}},
                       "nodes": {"ns=2;s=a.p": {"asset": "a", "property": "p"}}})
    assert m.nodes == [NODE] and m.orgs() == ["plant1"]
    with pytest.raises(ValueError, match="not under 'assets'"):
        parse_mapping({"assets": {"a": {"org": "x"}}, "nodes": {"n": {"asset": "b", "property": "p"}}})
    with pytest.raises(ValueError, match="mapped twice"):
        parse_mapping({"assets": {"a": {"org": "x"}}, "nodes": {"n": {"asset": "a", "property": "p"}, "m": {"asset": "a", "property": "p"}}})


def test_simulator_history_store_pages_and_keeps_the_newest_sample(tmp_path):
    import time as _time

    from asyncua import ua

    from twins.simulators.history import SeqHistoryStore

    h = SeqHistoryStore(tmp_path / "h.sqlite", retention_s=1.0, max_history_data_response_size=4)
    old = _time.time_ns() // 1000 - 10_000_000
    h.append([("a.p", i, old + i, float(i), old + i) for i in range(1, 11)], {"a": {"n": 10}})
    nid = ua.NodeId("a.p", 2)
    dvs, cont = asyncio.run(h.read_node_history(nid, None, None, 0))
    assert [dv.Value.Value[0] for dv in dvs] == [1, 2, 3, 4] and cont is not None
    dvs, cont = asyncio.run(h.read_node_history(nid, cont, None, 0))
    assert [dv.Value.Value[0] for dv in dvs] == [5, 6, 7, 8]
    h._last_prune = -1e9  # force the retention pass on the next append
    h.append([("b.q", 1, old, 1.0, old)], {})
    assert h.last_positions()["a.p"][0] == 10 and h.last_positions()["b.q"][0] == 1
    assert h.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0] == 2
    assert h.states() == {"a": {"n": 10}}
