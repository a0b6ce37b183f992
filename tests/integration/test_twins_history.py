"""The simulators' SQLite history served through asyncua's HistoryRead, paged by continuation points, read
back by the bridge's fetch (real socket, in-process server)."""

from __future__ import annotations

import asyncio

import pytest

from tests.ports import free_port_base
from twins.bridge.client import OpcUaBridge
from twins.bridge.mapping import parse_mapping
from twins.simulators.machine import MachineSource
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
    assert len(first) >= 20 and [s[0] for s in first] == list(range(1, len(first) + 1))
    assert all(a[1] < b[1] for a, b in zip(first, first[1:])), "source timestamps strictly increase"
    # a second server process on the same history file continues the sequence and serves the old values
    sim2, second = asyncio.run(one_run(0.4))
    assert second[: len(first)] == first
    assert [s[0] for s in second] == list(range(1, len(second) + 1)) and len(second) > len(first)
