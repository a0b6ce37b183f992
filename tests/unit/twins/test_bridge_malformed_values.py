"""A real OPC-UA server on 127.0.0.1 sends the bridge values it cannot use; the bridge stays up and loud.

An in-test asyncua server (a real socket, NoSecurity: the values are the subject here, not the channel)
publishes, per variable, good standard scalars around one kind of trouble repeated: a String, an array (the
project's former ``[seq, value]`` pair convention is one), NaN, infinities, values under Bad or Uncertain status
codes, values without a SourceTimestamp, a source time going backwards. The real bridge (twins.bridge.client)
subscribes with the real twin runtime behind it. Each variable must give at most ONE warning naming it, the bridge
must keep delivering the good values after the trouble, Bad and Uncertain values are readings of that quality
(sealed with their status, never applied to a twin), refused values open no refill. A second bridge resuming from
the server's history meets the same values through HistoryRead and takes them the same way.
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
BAD_CODES = (ua.StatusCodes.BadSensorFailure, ua.StatusCodes.BadOutOfService, ua.StatusCodes.BadCommunicationError)
NO_SOURCE = "no-source"  # a step written without a SourceTimestamp
BACK = "back"  # a step written with an older source time than the one before


def d(x: float) -> ua.Variant:
    return ua.Variant(float(x), D)


# property -> ([(variant, status or None, flag)], what is delivered [(value or None, quality)], the warning's words)
SCRIPT: dict[str, tuple[list[tuple], list[tuple], str]] = {
    "Good": ([(d(s), None, None) for s in range(1, 6)], [(float(s), "good") for s in range(1, 6)], ""),
    # (each repeat differs: asyncua's own server notifies a change of value or status)
    "Text": ([(d(1), None, None)] + [(ua.Variant(f"garbage{i}", ua.VariantType.String), None, None) for i in range(3)]
             + [(d(2), None, None)], [(1.0, "good"), (2.0, "good")], "'garbage0' (str) is not a Boolean or numeric scalar"),
    "Pair": ([(d(1), None, None)] + [(ua.Variant([float(i), 2.0], D), None, None) for i in range(1, 4)] + [(d(2), None, None)],
             [(1.0, "good"), (2.0, "good")], "(2-element array) is not a Boolean or numeric scalar"),
    "NaN": ([(d(1), None, None), (d(math.nan), None, None), (d(5), None, None)], [(1.0, "good"), (5.0, "good")],
            "nan under a Good status is not a finite number"),
    "Inf": ([(d(1), None, None), (d(math.inf), None, None), (d(-math.inf), None, None), (d(4), None, None)],
            [(1.0, "good"), (4.0, "good")], "inf under a Good status is not a finite number"),
    # asyncua's server drops the value of a Bad data value (the client gets the status alone), as the spec allows
    "Status": ([(d(1), None, None)] + [(d(2), ua.StatusCode(code), None) for code in BAD_CODES] + [(d(2), None, None)],
               [(1.0, "good"), (None, "bad"), (None, "bad"), (None, "bad"), (2.0, "good")],
               "a value came with status BadSensorFailure"),
    "Uncertain": ([(d(1), None, None), (d(2), ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue), None), (d(3), None, None)],
                  [(1.0, "good"), (2.0, "uncertain"), (3.0, "good")], "status UncertainLastUsableValue"),
    "NoSource": ([(d(1), None, NO_SOURCE), (d(2), None, NO_SOURCE)], [(1.0, "good"), (2.0, "good")],
                 "no SourceTimestamp: its values are ordered and identified by their ServerTimestamp"),
    "Back": ([(d(5), None, None), (d(6), None, None), (d(2), None, BACK), (d(3), None, BACK), (d(7), None, None)],
             [(5.0, "good"), (6.0, "good"), (7.0, "good")], ""),  # older values are duplicates: dropped, counted
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
    # Double variable, so its type check is turned off for this one (Bad status codes keep
    # asyncua's spec behaviour: the value is dropped and the client gets the status alone).
    server.iserver.aspace._is_expected_variant_type = lambda *_: True  # type: ignore[method-assign]
    obj = await server.nodes.objects.add_object(ua.NodeId(ASSET, idx), ua.QualifiedName(ASSET, idx))
    nodes = {}
    for prop in SCRIPT:
        nid = ua.NodeId(f"{ASSET}.{prop}", idx)
        var = await obj.add_variable(nid, ua.QualifiedName(prop, idx), 0.0, varianttype=D)
        # (with a source time: asyncua's in-memory history cannot hold a value without one)
        await server.write_attribute_value(nid, ua.DataValue(d(0), StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData),
                                                             SourceTimestamp=T0 - dt.timedelta(seconds=10)))
        if prop != "NoSource":  # asyncua's in-memory history cannot hold a value without a SourceTimestamp
            await server.historize_node_data_change(var, period=None, count=1000)
        nodes[prop] = nid
    await server.start()
    return server, nodes


async def _publish(server: Server, nodes: dict[str, ua.NodeId]) -> None:
    """Write every script: source times 1 ms apart (a BACK step goes a second back), server times always forward."""
    t = 0
    for step in range(max(len(s[0]) for s in SCRIPT.values())):
        for prop, (values, _, _) in SCRIPT.items():
            if step < len(values):
                variant, status, flag = values[step]
                t += 1000
                at = T0 + dt.timedelta(microseconds=t - (1_000_000 if flag == BACK else 0))
                server_at = T0 + dt.timedelta(microseconds=t)
                dv = ua.DataValue(variant, StatusCode=status or ua.StatusCode(),
                                  SourceTimestamp=None if flag == NO_SOURCE else at, ServerTimestamp=server_at)
                await server.write_attribute_value(nodes[prop], dv)
        await asyncio.sleep(0.02)


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


def _delivered(readings: list[Reading]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {p: [] for p in SCRIPT}
    for r in readings:
        out[r.prop].append((r.value if math.isfinite(r.value) else None, r.quality))
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
            assert all(math.isfinite(r.value) for r in got if r.good)
            assert all([r.seq for r in got if r.prop == p] == list(range(1, len(want[p]) + 1)) for p in SCRIPT)
            assert bridge.connects == 1 and bridge.last_error is None, "the garbage never broke the session"
            assert (bridge.seq.lost, bridge.seq.gaps, bridge.seq.rereads) == (0, 0, 0), "refused values open no gap"
            assert bridge.seq.duplicates == 2 and bridge.seq.not_good == 4
            assert bridge.values.refused == 3 + 3 + 1 + 2 and bridge.values.server_time == 2

            # what the twin holds: only good values; what was sealed for the ledger: every reading, with its status
            sealed = rt.anchor_once()
            assert sealed
            for record in sealed:  # what the twins contract would be given
                await anchorer.submit_anchor(record)
            stored = list(rt.store.iter_readings(ASSET))
            assert _delivered(stored) == want
            assert {r.status for r in stored if r.prop == "Status"} == {0} | set(BAD_CODES)
            assert rt.twins[ASSET].last["Status"][2] == 2.0 and rt.twins[ASSET].updates == sum(
                1 for r in got if r.good)
            state = rt.twins[ASSET].snapshot()
            json.dumps(state, allow_nan=False)  # raises on a NaN or an infinity anywhere in the twin
            rt.close()

            # at most one line per variable, naming it and what was wrong
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "twins.bridge"]
            for prop, (_, _, needle) in SCRIPT.items():
                mine = [w for w in warnings if w.startswith(f"{ASSET}/{prop}:")]
                assert len(mine) == (1 if needle else 0), (prop, mine)
                assert not needle or needle in mine[0], (prop, mine)
            assert not [w for w in warnings if not w.startswith(f"{ASSET}/")], warnings

            # a bridge resuming after the first reading of each variable reads the rest from the server's history
            caplog.clear()
            rt2 = TwinRuntime(_mapping(url), tmp_path / "r2.sqlite", MemoryAnchorer(), interval=0.05, report_every=0)
            got2: list[Reading] = []
            rt2.on_reading = got2.append  # type: ignore[method-assign]
            first = {(ASSET, r.prop): (r.seq, r.source_ts_us) for r in got if r.seq == 1 and r.prop != "NoSource"}
            bridge2 = await _run_bridge(url, rt2, lambda b: b.connected and b.seq.fills >= len(first) and b.seq.idle(),
                                        positions=first)
            rt2.close()
            # asyncua's in-memory history keeps what its own subscription historized: the good values at least
            for prop, (_, delivered, _) in SCRIPT.items():
                if prop == "NoSource":
                    continue
                again = [(r.value, r.quality) for r in got2 if r.prop == prop and r.good]
                assert again == [v for v in delivered[1:] if v[1] == "good"], (prop, again)
                assert [r.seq for r in got2 if r.prop == prop][:1] in ([], [2]), "ordinals continue after the resumed one"
            assert bridge2.seq.lost == 0 and bridge2.seq.replayed > 0
        finally:
            await server.stop()

    asyncio.run(scenario())


BAD_SENSOR = ua.StatusCode(ua.StatusCodes.BadSensorFailure)


@pytest.mark.parametrize("value, status, ts, server_ts, expect, needle", [
    (1.5, None, T0, None, (0, 1.5), None),
    (3, None, T0, None, (0, 3.0), None),  # integers are numbers
    (True, None, T0, None, (0, 1.0), None),  # Booleans are 1 / 0
    (2 ** 60 + 1, None, T0, None, (0, float(2 ** 60)), "beyond 2**53"),  # said once, still a reading
    (0.0, ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData), None, None, None, None),  # never had a value: nothing
    (None, BAD_SENSOR, T0, None, (BAD_SENSOR.value, None), "status BadSensorFailure"),
    (2.5, ua.StatusCode(ua.StatusCodes.UncertainLastUsableValue), T0, None, (0x40000000 | 0x00900000, 2.5), "Uncertain"),
    (1.0, None, None, T0, (0, 1.0), "no SourceTimestamp"),
    (1.0, None, None, None, None, "neither a Source nor a Server timestamp"),
    (math.nan, None, T0, None, None, "not a finite number"),
    ("1.5", None, T0, None, None, "'1.5' (str) is not a Boolean or numeric scalar"),
    ([3.0, 1.5], None, T0, None, None, "(2-element array)"),
    (None, None, T0, None, None, "None (NoneType)"),
    (b"\x00\x01", None, T0, None, None, "(bytes)"),
    ("x" * 500, None, T0, None, None, "..."),  # a long value is cut short: the line stays a line
])
def test_value_check(value, status, ts, server_ts, expect, needle, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="twins.bridge")
    check = ValueCheck()
    for _ in range(3):
        got = check.sample(("a.b", "P"), value, status, ts, server_ts)
    if expect is None:
        assert got is None
    else:
        assert got[1] == expect[0] and (got[2] == expect[1] if expect[1] is not None else math.isnan(got[2]))
    lines = [r.getMessage() for r in caplog.records]
    if needle is None:
        assert lines == [] and check.refused == 0
    else:
        assert len(lines) == 1 and lines[0].startswith("a.b/P: ") and needle in lines[0] and "\n" not in lines[0], lines
        assert check.refused == (3 if expect is None else 0) and len(lines[0]) < 400


@pytest.mark.parametrize("content, needle", [
    (b"nodes: [x", "not valid YAML at line 1, column 10"),
    (b"\xff\xfe", "not UTF-8 text"),
    (b"- 1", "expected a mapping with 'assets' and 'nodes'"),
    (b"assets: {a: {org: p}}\nnodes: {n: 5}", "node 'n' needs 'asset' and 'property'"),
    (b"assets: {a: {org: p, kind: robot}}\nnodes: {n: {asset: a, property: P}}", "unknown kind 'robot'"),
    (None, "cannot read it"),  # a directory
])
def test_a_malformed_mapping_file_is_one_line(content, needle, tmp_path) -> None:
    from twins.bridge.mapping import MappingError, load_mapping

    path = tmp_path / "mapping.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    with pytest.raises(MappingError) as err:
        load_mapping(path)
    assert needle in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)
