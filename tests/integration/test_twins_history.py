"""The simulators' SQLite history served through asyncua's HistoryRead, paged by continuation points, read
back by the bridge's fetch (real socket, in-process server); and a simulator process SIGKILLed with a history
read on the wire, restarted, and read back without loss."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

import pytest

from tests.ports import free_port_base
from twins.bridge.client import OpcUaBridge
from twins.bridge.mapping import load_mapping, parse_mapping
from twins.procs import Proc, simulator_argv
from twins.simulators.machine import MachineSource
from twins.simulators.history import read_published
from twins.simulators.server import NAMESPACE, SimulatorServer

pytestmark = pytest.mark.integration


def test_history_read_pages_through_continuation_points_and_survives_restart(tmp_path):
    port = free_port_base(1)

    async def one_run(seconds: float) -> tuple[SimulatorServer, list]:
        sim = SimulatorServer([MachineSource("plant1.m1", "plant1", 1, 50.0)], tmp_path / "h.sqlite", port=port, tick_s=0.01)
        sim.history.max_history_data_response_size = 7  # force many continuation points
        await sim.setup()
        await sim.server.start()
        loop = asyncio.create_task(sim._loop())
        await asyncio.sleep(seconds)
        mapping = parse_mapping({**sim.mapping(), "namespace": NAMESPACE})
        got = []
        bridge = OpcUaBridge(mapping, got.append)
        client = await bridge._connect()
        try:
            await bridge._resolve(client)
            node = next(n for n in mapping.nodes if n.prop == "Torque")
            samples = await bridge._fetch(node, 0, None)
        finally:
            await client.disconnect()
            sim.stop()
            await loop
            await sim.server.stop()
        return sim, samples

    sim1, first = asyncio.run(one_run(0.6))
    assert len(first) >= 20 and all(s[1] == 0 for s in first), "Good standard scalars"
    assert all(a[0] < b[0] for a, b in zip(first, first[1:])), "source timestamps strictly increase"
    published = read_published(tmp_path / "h.sqlite")[("plant1.m1", "Torque")]
    assert [(s[0], s[2]) for s in first] == [published[i] for i in sorted(published)][:len(first)]
    # a second server process on the same history file continues after the last sample and serves the old values
    sim2, second = asyncio.run(one_run(0.4))
    assert second[: len(first)] == first and len(second) > len(first)
    assert all(a[0] < b[0] for a, b in zip(second, second[1:]))


def test_simulator_killed_while_a_history_read_is_on_the_wire_loses_nothing(tmp_path):
    """The pipeline test's flaky loss, made deterministic: a real simulator process is SIGKILLed while the bridge's
    history read of one variable is on the wire, then restarted on the same history file.

    Values the old server published that never reached the bridge (here: dropped between the subscription and the
    sequencer, as a loaded bridge loses its unread notification backlog at a kill; the next one comes flagged with
    the Overflow bit, which starts a history read), and a first read after the reconnect that is on the wire while
    the restarted server's first live values arrive. The catch-up after the reconnect reads from the last value
    taken up to the new session's first live value (or up to now), so what history returns and what the new
    subscription sends meet without a hole, whatever pended from the old session."""
    port = free_port_base(1)
    sim_dir = tmp_path / "sim"
    mapping_path = sim_dir / "mapping.yaml"
    argv = simulator_argv(port=port, data_dir=sim_dir, machines=["plant1:1"], machine_rate=20.0,
                          mapping_out=mapping_path, insecure=True)
    key = ("plant1.m1", "Torque")
    got: dict[tuple[str, str], list[int]] = {}
    procs: list[Proc] = []

    def start_sim(name: str) -> Proc:
        p = Proc(argv, log=tmp_path / f"{name}.log")
        procs.append(p)
        p.wait_ready(120)  # generous: a simulator start takes 20+ s on a 2-core machine at load 15
        return p

    async def scenario() -> OpcUaBridge:
        sim = await asyncio.to_thread(start_sim, "sim1")
        bridge = OpcUaBridge(load_mapping(mapping_path), lambda r: got.setdefault(r.key, []).append(r.source_ts_us),
                             start_from="history")
        seq = bridge.seq
        st = seq.vars[key]
        plan = {"drop_from": None, "gap_at": None, "dropped": 0, "new_live": asyncio.Event()}
        offer, fetch = seq.offer, bridge._fetch

        def lossy_offer(k, ts, status, v, overflow=False):
            if k == key and bridge.connects == 1 and plan["drop_from"] is not None:
                if plan["gap_at"] is None and plan["dropped"] >= 3:
                    plan["gap_at"] = ts  # one through after 3 dropped, flagged as the server flags an overflow
                    overflow = True
                else:
                    plan["dropped"] += 1
                    return  # the unread backlog of a lagging bridge, gone with the connection at the kill
            if k == key and bridge.connects >= 2 and plan["gap_at"] is not None and ts > plan["gap_at"]:
                plan["new_live"].set()
            offer(k, ts, status, v, overflow)

        async def staged_fetch(node, from_ts, to_ts):
            if (node.asset, node.prop) != key or plan["gap_at"] is None:
                return await fetch(node, from_ts, to_ts)
            if bridge.connects == 1:
                await asyncio.sleep(0.3)  # the server publishes on; the bridge receives none of it
                os.kill(sim.pid, signal.SIGSTOP)  # freeze the server so the read below stays unanswered...
                read = asyncio.ensure_future(fetch(node, from_ts, to_ts))
                await asyncio.sleep(0.2)
                os.kill(sim.pid, signal.SIGKILL)  # ...and kill it with the read on the wire
                return await read
            # the first read after the reconnect: its range was fixed before the call; the restarted server's
            # first live value arrives while it is on the wire
            await asyncio.wait_for(plan["new_live"].wait(), 30)
            return await fetch(node, from_ts, to_ts)

        seq.offer = lossy_offer  # type: ignore[method-assign]
        bridge._fetch = staged_fetch  # type: ignore[method-assign]
        stop = asyncio.Event()
        run = asyncio.create_task(bridge.run(stop))
        try:
            await _until(lambda: bridge.connects == 1 and seq.idle() and len(got.get(key, [])) >= 10, 60)
            plan["drop_from"] = st.last_ts
            await _until(lambda: sim.p.poll() is not None, 30)  # killed by staged_fetch
            assert st.filling and st.last_ts < plan["gap_at"], "the kill came with the variable's gap still open"
            await asyncio.sleep(0.5)
            sim = await asyncio.to_thread(start_sim, "sim2")
            await _until(lambda: bridge.connects >= 2, 60)
            await asyncio.sleep(1.0)
            sim.signal(signal.SIGUSR1)  # pause production; the bridge must then hold everything
            await asyncio.sleep(0.3)
            history = _history(sim_dir / "history.sqlite")
            await _until(lambda: all(got.get(k, [None])[-1] == max(h) for k, h in history.items()), 60)
        finally:
            stop.set()
            await run
        for k, h in history.items():
            assert got[k] == sorted(h), f"{k}: delivered differs from the simulator's history"
        return bridge

    try:
        bridge = asyncio.run(scenario())
    finally:
        for p in procs:
            p.stop(timeout=5)
    assert bridge.seq.lost == 0 and bridge.seq.overflows >= 1
    assert bridge.seq.replayed > 0, "the dropped readings came back from history"


async def _until(pred, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


def _history(path) -> dict[tuple[str, str], set[int]]:
    """(asset, prop) -> the source times (µs) of every sample the simulator published."""
    db = sqlite3.connect(path)
    out: dict[tuple[str, str], set[int]] = {}
    for var, seq in db.execute("SELECT var, ts_us FROM samples"):
        asset, prop = var.rsplit(".", 1)
        out.setdefault((asset, prop), set()).add(seq)
    db.close()
    return out
