"""A real OPC-UA server on 127.0.0.1 sends the bridge values it cannot use; the bridge stays up and loud.

An in-test asyncua server (a real socket, NoSecurity: the values are the subject here, not the channel)
publishes, per variable, good ``[seq, value]`` pairs around one kind of garbage repeated: a String, a
3-element list, NaN, infinities, sequence numbers that are not whole positive numbers, values under a Bad
status code, a sequence number going backwards. The real bridge (twins.bridge.client) subscribes with the
real twin runtime behind it. Each variable must give exactly ONE warning naming it, the bridge must keep
delivering the good values after the garbage, no bad value may reach a twin or a sealed (anchored) batch,
and skipped values must not open gaps (nothing "lost", no history re-reads). A second bridge resuming from
the server's history meets the same garbage through HistoryRead and refuses it the same way.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math

import pytest
from asyncua import Server, ua

from tests.ports import free_port_base
from tests.unit.twins.fakes import MemoryAnchorer
from twins.bridge.client import OpcUaBridge
from twins.bridge.mapping import parse_mapping
from twins.bridge.values import ValueCheck
from twins.readings import Reading
from twins.runtime import TwinRuntime

NS = "urn:twinledger:test:malformed"
ASSET = "plant1.g1"
T0 = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
D = ua.VariantType.Double


def pair(seq: float, value: float) -> ua.Variant:
    return ua.Variant([float(seq), float(value)], D)


BAD_CODES = (ua.StatusCodes.BadSensorFailure, ua.StatusCodes.BadOutOfService, ua.StatusCodes.BadCommunicationError)

# property -> [(variant, status or None)], published in this order; and the seqs the twin must get
SCRIPT: dict[str, tuple[list[tuple[ua.Variant, ua.StatusCode | None]], list[int], str]] = {
    "Good": ([(pair(s, s), None) for s in range(1, 6)], [1, 2, 3, 4, 5], ""),
    # (each repeat differs: a server notifies a change of value or status, not of the timestamp alone)
    "Text": ([(pair(1, 1), None)] + [(ua.Variant(f"garbage{i}", ua.VariantType.String), None) for i in range(3)]
             + [(pair(2, 2), None)], [1, 2], "'garbage0' (str) is not a [seq, value] pair"),
    "Triple": ([(pair(1, 1), None)] + [(ua.Variant([2.0, 2.0, float(i)], D), None) for i in range(3)] + [(pair(2, 2), None)],
               [1, 2], "(3-element list) is not a [seq, value] pair"),
    "NaN": ([(pair(1, 1), None)] + [(pair(s, math.nan), None) for s in (2, 3, 4)] + [(pair(5, 5), None)],
            [1, 5], "seq 2 carries nan, not a finite number"),
    "Inf": ([(pair(1, 1), None), (pair(2, math.inf), None), (pair(3, -math.inf), None), (pair(4, 4), None)],
            [1, 4], "seq 2 carries inf, not a finite number"),
    # the server sends a Bad value without its value (so without a sequence number): it numbered no reading
    "Status": ([(pair(1, 1), None)] + [(pair(2, 2), ua.StatusCode(code)) for code in BAD_CODES] + [(pair(2, 2), None)],
               [1, 2], "a value came with status BadSensorFailure"),
    "Seq": ([(pair(1, 1), None), (pair(1.5, 2), None), (pair(-3, 2), None), (pair(math.nan, 2), None),
             (ua.Variant(["2", "2"], ua.VariantType.String), None), (pair(2, 2), None)],
            [1, 2], "sequence number 1.5 is not a whole number"),
    "Back": ([(pair(s, s), None) for s in (5, 6, 2, 3, 1)] + [(pair(7, 7), None)],
             [5, 6, 7], "sequence number went back from 6 to 2"),
}


def _mapping(url: str):
    return parse_mapping({
        "server": url, "namespace": NS,
        "assets": {ASSET: {"org": "plant1", "kind": "generic"}},
        "nodes": {f"ns=2;s={ASSET}.{p}": {"asset": ASSET, "property": p} for p in SCRIPT},
    })


async def _server(port: int) -> tuple[Server, dict[str, ua.NodeId]]:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/malformed")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NS)
    # A misbehaving server sends what it likes: asyncua's own server would refuse to publish a String in a
    # variable that held a Double pair, so its type check is turned off for this one (Bad status codes keep
    # asyncua's spec behaviour: the value is dropped and the client gets the status alone).
    server.iserver.aspace._is_expected_variant_type = lambda *_: True  # type: ignore[method-assign]
    obj = await server.nodes.objects.add_object(ua.NodeId(ASSET, idx), ua.QualifiedName(ASSET, idx))
    nodes = {}
    for prop in SCRIPT:
        nid = ua.NodeId(f"{ASSET}.{prop}", idx)
        var = await obj.add_variable(nid, ua.QualifiedName(prop, idx), pair(0, math.nan))  # "nothing yet", as the simulators
        await server.historize_node_data_change(var, period=None, count=1000)
        nodes[prop] = nid
    await server.start()
    return server, nodes


async def _publish(server: Server, nodes: dict[str, ua.NodeId]) -> dict[str, int]:
    """Write every script; returns each variable's last source time (µs) for resuming."""
    t = 0
    for step in range(max(len(s[0]) for s in SCRIPT.values())):
        for prop, (values, _, _) in SCRIPT.items():
            if step < len(values):
                variant, status = values[step]
                t += 1000
                at = T0 + dt.timedelta(microseconds=t)
                dv = ua.DataValue(variant, StatusCode=status or ua.StatusCode(), SourceTimestamp=at, ServerTimestamp=at)
                await server.write_attribute_value(nodes[prop], dv)
        await asyncio.sleep(0.02)
    return {}


async def _run_bridge(url: str, rt: TwinRuntime, until, positions=None) -> OpcUaBridge:
    bridge = OpcUaBridge(_mapping(url), rt.on_reading, url=url, positions=positions, backoff_initial=0.1, timeout=4.0)
    stop = asyncio.Event()
    task = asyncio.create_task(bridge.run(stop))
    try:
        for _ in range(200):
            if until(bridge):
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    return bridge


def _delivered(readings: list[Reading]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {p: [] for p in SCRIPT}
    for r in readings:
        out[r.prop].append(r.seq)
    return out


def test_a_server_sending_garbage_gets_one_line_per_variable_and_no_bad_reading(tmp_path, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="twins.bridge")

    async def scenario() -> None:
        port = free_port_base(1)
        url = f"opc.tcp://127.0.0.1:{port}/malformed"
        server, nodes = await _server(port)
        try:
            anchorer = MemoryAnchorer()
            rt = TwinRuntime(_mapping(url), tmp_path / "r.sqlite", anchorer, interval=0.05, report_every=0)
            got: list[Reading] = []
            on_reading = rt.on_reading
            rt.on_reading = lambda r: (got.append(r), on_reading(r))  # type: ignore[method-assign]
            want = {p: s[1] for p, s in SCRIPT.items()}
            published = asyncio.Event()

            async def publish_when_connected(bridge_ready: asyncio.Event) -> None:
                await bridge_ready.wait()
                await _publish(server, nodes)
                published.set()

            ready = asyncio.Event()
            pub = asyncio.create_task(publish_when_connected(ready))

            def until(bridge: OpcUaBridge) -> bool:
                if bridge.connected:
                    ready.set()
                return published.is_set() and _delivered(got) == want

            bridge = await _run_bridge(url, rt, until)
            await pub
            assert _delivered(got) == want, "the good values around the garbage all arrive, in order, once"
            assert all(math.isfinite(r.value) for r in got)
            assert bridge.connects == 1 and bridge.last_error is None, "the garbage never broke the session"
            assert (bridge.seq.lost, bridge.seq.gaps, bridge.seq.rereads) == (0, 0, 0), "refused values open no gap"
            assert bridge.seq.skipped == 3 + 2  # NaN and Inf values passed by their numbers
            assert bridge.seq.backwards == 3
            assert bridge.values.refused == 3 + 3 + 3 + 2 + 3 + 4

            # what the twin holds and what was sealed for the ledger: only the good values
            sealed = rt.anchor_once()
            assert sealed
            for record in sealed:  # what the twins contract would be given
                await anchorer.submit_anchor(record)
            stored = list(rt.store.iter_readings(ASSET))
            assert _delivered(stored) == want and all(math.isfinite(r.value) for r in stored)
            state = rt.twins[ASSET].snapshot()
            json.dumps(state, allow_nan=False)  # raises on a NaN or an infinity anywhere in the twin
            rt.close()

            # one line per variable, naming it and what was wrong
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "twins.bridge"]
            for prop, (_, _, needle) in SCRIPT.items():
                mine = [w for w in warnings if w.startswith(f"{ASSET}/{prop}:")]
                assert len(mine) == (0 if prop == "Good" else 1), (prop, mine)
                assert not needle or needle in mine[0], (prop, mine)
            assert not [w for w in warnings if not w.startswith(f"{ASSET}/")], warnings

            # a bridge resuming after seq 1 of each variable reads the rest from the server's history
            caplog.clear()
            rt2 = TwinRuntime(_mapping(url), tmp_path / "r2.sqlite", MemoryAnchorer(), interval=0.05, report_every=0)
            got2: list[Reading] = []
            rt2.on_reading = got2.append  # type: ignore[method-assign]
            first = {(ASSET, p): (r.seq, r.source_ts_us) for r in got for p in SCRIPT if r.prop == p and r.seq == want[p][0]}
            want2 = {p: s[1][1:] for p, s in SCRIPT.items()}
            bridge2 = await _run_bridge(url, rt2, lambda b: _delivered(got2) == want2 and b.seq.idle(), positions=first)
            rt2.close()
            assert _delivered(got2) == want2 and all(math.isfinite(r.value) for r in got2)
            assert bridge2.seq.lost == 0
            history_warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "twins.bridge"]
            # (asyncua's in-memory history keeps what it could historize: the NaN and infinity pairs at least)
            for prop in SCRIPT:
                mine = [w for w in history_warnings if w.startswith(f"{ASSET}/{prop}:")]
                assert len(mine) == (1 if prop in ("NaN", "Inf") else len(mine[:1])), (prop, history_warnings)
        finally:
            await server.stop()

    asyncio.run(scenario())


@pytest.mark.parametrize("value, status, ts, expect, needle", [
    ([3.0, 1.5], None, T0, (3, 1.5), None),
    ([3, 2], None, T0, (3, 2.0), None),  # integers are numbers too
    ([0.0, math.nan], None, T0, None, None),  # a fresh variable: nothing yet, and nothing to say
    ([True, 1.0], None, T0, None, "sequence number True"),
    ([3.0, False], None, T0, (3, None), "carries False"),
    ([3.0, "1.5"], None, T0, (3, None), "carries '1.5'"),
    ([3.0, None], None, T0, (3, None), "carries None"),
    ([2.0 ** 60, 1.0], None, T0, None, "not a whole number from 1 to 2**53"),
    ([3.0, 1.0], None, None, None, "seq 3 has no source timestamp"),
    ([3.0, 1.0], ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue), T0, (3, None), "UncertainLastUsableValue"),
    (None, None, T0, None, "None (NoneType) is not a [seq, value] pair"),
    (b"\x00\x01", None, T0, None, "(bytes) is not a [seq, value] pair"),
    ({"seq": 1}, None, T0, None, "(dict) is not a [seq, value] pair"),
    ([], None, T0, None, "(0-element list)"),
    (["x" * 500, 1.0], None, T0, None, "..."),  # a long value is cut short: the line stays a line
])
def test_value_check(value, status, ts, expect, needle, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="twins.bridge")
    check = ValueCheck()
    for _ in range(3):
        got = check.sample(("a.b", "P"), value, status, ts)
    assert (got[0], got[2]) == expect if expect else got is None
    lines = [r.getMessage() for r in caplog.records]
    if needle is None:
        assert lines == [] and check.refused == 0
    else:
        assert len(lines) == 1 and lines[0].startswith("a.b/P: ") and needle in lines[0] and "\n" not in lines[0], lines
        assert check.refused == 3 and len(lines[0]) < 300
