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

    reads = []

    async def counted(node, from_ts, to_ts):
        reads.append((from_ts, to_ts))
        return await fetch(node, from_ts, to_ts)

    async def main():
        s = Sequencer([NODE], got.append, retry_delays=(0.01, 0.02))
        s.fetch = counted
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
    # the hole was inside the range read, so it was asked for again (twice, per retry_delays) before being declared lost
    assert len(reads) == 3 and s.rereads == 2


def test_fetch_failure_keeps_the_request_for_the_reconnect():
    calls = []
    up = [True]

    async def fetch(node, from_ts, to_ts):
        calls.append(1)
        up[0] = False  # the connection went down with the read
        raise ConnectionError("gone")

    async def main():
        s = Sequencer([NODE], lambda r: None)
        s.fetch = fetch
        s.resume({("a", "p"): (1, 1000)})
        s.offer(("a", "p"), 5, 5000, 5.0)
        await asyncio.wait_for(s.run_filler(lambda: up[0]), 1)
        return s

    s = asyncio.run(main())
    assert calls == [1] and not s.idle() and s.vars[("a", "p")].pending == [(5, 5000, 5.0)]


def test_failed_read_while_connected_is_retried():
    got, calls = [], []
    history = {i: (i, 1000 * i, float(i)) for i in range(1, 10)}

    async def fetch(node, from_ts, to_ts):
        calls.append(1)
        if len(calls) == 1:
            raise asyncio.TimeoutError()  # a loaded server answered too late; the connection is still up
        return [x for x in history.values() if from_ts <= x[1] <= to_ts]

    async def main():
        s = Sequencer([NODE], got.append)
        s.fetch = fetch
        s.resume({("a", "p"): (1, 1000)})
        s.offer(("a", "p"), 5, 5000, 5.0)
        t = asyncio.create_task(s.run_filler(lambda: True))
        await asyncio.wait_for(_until_idle(s), 3)
        t.cancel()
        return s

    s = asyncio.run(main())
    assert len(calls) == 2 and [r.seq for r in got] == [2, 3, 4, 5] and s.lost == 0


async def _until_idle(s):
    while not s.idle():
        await asyncio.sleep(0.001)


def test_reconnect_to_restarted_server_reads_past_the_stale_bound():
    """The failure seen in the pipeline test: the read in flight at the server's SIGKILL failed; after the
    reconnect the filler re-read up to the newest *old-connection* pending sample, while the restarted server's
    first live values (its current value re-sent at subscribe, then new ones) reached pending during that read.
    Readings the old server published but never delivered live (77..79 here) lie between the two: the server
    has them, they were not in the range read, and they must be read — not declared lost."""
    got = []
    server = {i: (i, 1000 * i, float(i)) for i in range(1, 101)}  # the restarted server's history file
    reads = []

    async def fetch(node, from_ts, to_ts):
        reads.append((from_ts, to_ts))
        if len(reads) == 1:
            # while this read is on the wire, the new subscription delivers the server's current value (80),
            # then new ones; 77..79 were published before the kill and never reached the bridge live
            for seq in (80, 81, 82):
                s.offer(("a", "p"), *server[seq])
        hi = to_ts if to_ts is not None else 1 << 62
        return [x for x in server.values() if from_ts <= x[1] <= hi]

    async def main():
        nonlocal s
        s = Sequencer([NODE], got.append, start_from="history")
        s.resume({("a", "p"): (59, 59000)})
        for seq in range(61, 77):  # old connection: a gap opened at 61, live samples up to 76 wait in pending
            s.offer(("a", "p"), *server[seq])
        assert s.vars[("a", "p")].filling
        s.fetch = fetch  # (the old connection's read of it failed with the kill; this is the new connection)
        s.request_catch_up()
        t = asyncio.create_task(s.run_filler(lambda: True))
        await asyncio.wait_for(_until_idle(s), 2)
        t.cancel()
        return s

    s = None
    s = asyncio.run(main())
    assert [r.seq for r in got] == list(range(60, 83))
    assert s.lost == 0 and s.rereads == 1
    assert reads[0] == (59000, 76000) and reads[1] == (76000, 82000)


def test_range_the_server_answered_without_is_read_again_before_it_counts_as_lost():
    """A server that answers a range without samples it then serves (history not yet visible to the read):
    the hole lies inside the range read, so it is re-read after a backoff, not declared lost."""
    got = []
    server = {i: (i, 1000 * i, float(i)) for i in range(1, 40)}
    reads = []

    async def fetch(node, from_ts, to_ts):
        reads.append(asyncio.get_running_loop().time())
        rows = [x for x in server.values() if from_ts <= x[1] <= to_ts]
        if len(reads) <= 2:
            rows = [x for x in rows if not 11 <= x[0] <= 20]  # not there yet on the first two reads
        return rows

    async def main():
        s = Sequencer([NODE], got.append, retry_delays=(0.05, 0.1, 0.2))
        s.fetch = fetch
        s.resume({("a", "p"): (10, 10000)})
        s.offer(("a", "p"), 25, 25000, 25.0)
        t = asyncio.create_task(s.run_filler(lambda: True))
        await asyncio.wait_for(_until_idle(s), 3)
        t.cancel()
        return s

    s = asyncio.run(main())
    assert [r.seq for r in got] == list(range(11, 26)) and s.lost == 0
    assert len(reads) == 3 and reads[1] - reads[0] >= 0.045 and reads[2] - reads[1] >= 0.095  # backoff


def test_in_range_hole_is_lost_only_after_the_bounded_retries():
    got = []
    server = {i: (i, 1000 * i, float(i)) for i in range(1, 40) if not 11 <= i <= 20}  # pruned for good
    reads = []

    async def fetch(node, from_ts, to_ts):
        reads.append(1)
        return [x for x in server.values() if from_ts <= x[1] <= to_ts]

    async def main():
        s = Sequencer([NODE], got.append, retry_delays=(0.01, 0.01, 0.01))
        s.fetch = fetch
        s.resume({("a", "p"): (10, 10000)})
        s.offer(("a", "p"), 25, 25000, 25.0)
        t = asyncio.create_task(s.run_filler(lambda: True))
        for _ in range(3):  # later live samples wait behind the hole meanwhile, in order
            await asyncio.sleep(0.005)
        s.offer(("a", "p"), 26, 26000, 26.0)
        await asyncio.wait_for(_until_idle(s), 3)
        t.cancel()
        return s

    s = asyncio.run(main())
    assert len(reads) == 4 and s.lost == 10
    assert [r.seq for r in got] == list(range(21, 27))


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


def test_each_hole_gets_its_own_rereads_and_a_failing_variable_does_not_block_others():
    got = []
    other = NodeMap("ns=2;s=a.q", "a", "q", "plant1", "machine")
    # a.p: hole 11..12 appears on the first read only; hole 21..22 is pruned for good
    server = {i: (i, 1000 * i, float(i)) for i in range(1, 40) if not 21 <= i <= 22}
    reads = {"p": 0, "q": 0}

    async def fetch(node, from_ts, to_ts):
        if node.prop == "q":
            reads["q"] += 1
            if reads["q"] == 1:
                raise asyncio.TimeoutError()
            return [x for x in server.values() if from_ts <= x[1] <= to_ts]
        reads["p"] += 1
        rows = [x for x in server.values() if from_ts <= x[1] <= to_ts]
        return [x for x in rows if not (reads["p"] == 1 and 11 <= x[0] <= 12)]

    async def main():
        s = Sequencer([NODE, other], got.append, retry_delays=(0.01, 0.01))
        s.fetch = fetch
        s.resume({("a", "q"): (10, 10000), ("a", "p"): (10, 10000)})
        s.offer(("a", "q"), 15, 15000, 15.0)  # q's read fails first (queued first)
        s.offer(("a", "p"), 25, 25000, 25.0)
        t = asyncio.create_task(s.run_filler(lambda: True))
        await asyncio.wait_for(_until_idle(s), 5)
        t.cancel()
        return s

    s = asyncio.run(main())
    p = [r.seq for r in got if r.prop == "p"]
    q = [r.seq for r in got if r.prop == "q"]
    assert q == list(range(11, 16)) and reads["q"] == 2
    assert p == list(range(11, 21)) + [23, 24, 25]
    # hole 11..12 took 1 re-read; the read that filled it first showed hole 21..22, which then had both of its own
    # re-reads (a budget carried over from the first hole would have left it one): 4 reads of a.p in all
    assert reads["p"] == 4 and s.lost == 2
