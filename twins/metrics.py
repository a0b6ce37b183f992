"""Prometheus metrics of the twins processes: the bridge (``BridgeMetrics``) and the OPC-UA simulators
(``SimulatorMetrics``), served at ``/metrics`` by ``network.metrics.serve_metrics`` when a process is given
``--metrics-port`` (0 or absent: not served), on the process's own listening address (``listen_host``: 127.0.0.1
unless its org's spec places it on another host).

Cost on the hot path: the bridge's per-reading work stays what it was plus one dict increment (readings per org)
and one histogram observation (sensor→twin). Everything else is read *at scrape time* from the counters the
runtime, the sequencer and the simulator already keep (``ScrapeRegistry`` runs its collectors right before it
renders), so a value that nobody scrapes costs nothing, and a scrape sees the figures of that very moment.
Collectors run in the HTTP server's thread and only read ints and copies of small dicts owned by the event loop.

Bridge (``twinledger_bridge_*``)::

    readings_delivered_total{org}       in order, de-duplicated, given to the twins
    readings_sealed_total{org}          of those, sealed into a batch (the store holds exactly these)
    readings_unsealed                   delivered, not sealed yet (waiting for the next interval)
    duplicates_dropped_total            seq <= last delivered (re-sent values, history overlap)
    gaps_total                          sequence jumps that started a history read
    readings_replayed_total             readings delivered from the server's history (gaps and catch-ups)
    readings_lost_total                 sequence numbers the history could not supply
    connected                           1 while an OPC-UA session is up
    reconnects_total                    sessions opened after the first one
    disconnects_total                   sessions that ended (or failed to start after connecting)
    batches_sealed_total{org}           batches sealed into the store in this run
    batches_anchored_total{org}         batches the anchorer accepted in this run (incl. resubmitted at start)
    batches_pending{org}                sealed, queued for the anchorer, not anchored yet
    anchor_errors_total{org}            failed submissions (each retried)
    last_anchored_batch{org}            batch number of the org's latest anchored batch (its chain's sequence)
    anchor_submit_seconds{org}          histogram: one anchorer call (with the ledger: endorse + order + commit)
    sensor_to_twin_seconds              histogram: twin updated − the value's OPC-UA SourceTimestamp
    alerts_raised_total{org}            alerts recorded on the anchor target (one per episode)
    sustainability_reports_total{org}   daily sustainability reports recorded
    record_errors_total                 failed attempts of alerts and reports
    twins{org,kind}                     twins kept by the bridge

Simulators (``twinledger_simulator_*``)::

    values_published_total{org}         values written to the address space (after their history commit)
    values_per_second{org}              published over the last second
    history_rows                        samples held in history.sqlite (HistoryRead's source)
    history_reads_total                 HistoryRead requests served (one per node and page)
    overloads_total                     skips ahead after falling more than 1 s behind schedule
    paused                              1 while production is paused (SIGUSR1)
    clients_connected                   OPC-UA client connections (TCP) open now
    assets{org,kind}                    simulated assets
"""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from network.metrics import Registry, serve_metrics

if TYPE_CHECKING:
    from twins.bridge.client import OpcUaBridge
    from twins.runtime import TwinRuntime
    from twins.simulators.server import SimulatorServer

__all__ = ["BridgeMetrics", "ScrapeRegistry", "SimulatorMetrics", "listen_host", "metrics_url", "set_total", "start_server",
           "stop_server"]

#: Sensor→twin: from a few ms (local socket, idle) to seconds (a history replay after a reconnect).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def listen_host(value: str, who: str) -> str:
    """The one IPv4 address a twins process (``who``) may listen on: loopback or a unicast address of this host
    (its org's spec ``host``), as a literal; "localhost" is 127.0.0.1. Never all interfaces (0.0.0.0), and no
    other name: a name resolves differently per machine and namespace, an address is what the spec gives."""
    if value == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{who}: host {value!r} is not an IPv4 address (give the org's address, like 10.0.0.2, "
                         "or 127.0.0.1)") from None
    if address.version != 4:
        raise ValueError(f"{who}: host {value}: IPv6 is not supported, give an IPv4 address")
    if address.is_unspecified:
        raise ValueError(f"{who}: host {value} would listen on every interface; give one address (127.0.0.1 or the "
                         "org's host)")
    if address.is_multicast or address.is_reserved:  # 224/4, 240/4 and the broadcast address: no unicast listener
        raise ValueError(f"{who}: host {value} is not a unicast address to listen on")
    return str(address)


def metrics_url(port: int, host: str = "127.0.0.1") -> str:
    return f"http://{host}:{port}/metrics"


class ScrapeRegistry(Registry):
    """A ``Registry`` that calls its collectors right before every rendering (one scrape at a time), so that
    figures kept as plain ints by their owners are copied in only when someone asks."""

    def __init__(self) -> None:
        super().__init__()
        self._collectors: list[Callable[[], None]] = []
        self._scrape_lock = threading.Lock()

    def before_scrape(self, fn: Callable[[], None]) -> None:
        self._collectors.append(fn)

    def exposition(self) -> str:
        with self._scrape_lock:
            for fn in self._collectors:
                fn()
            return super().exposition()


def set_total(child: Any, value: float) -> None:
    """Bring a counter child up to ``value`` (a running total kept elsewhere); a counter never goes down."""
    delta = value - child.get()
    if delta > 0:
        child.inc(delta)


class BridgeMetrics:
    """Owned by ``TwinRuntime`` (which feeds the two histograms); ``attach_bridge`` adds the OPC-UA side."""

    def __init__(self) -> None:
        r = self.registry = ScrapeRegistry()
        p = "twinledger_bridge_"
        self.delivered = r.counter(p + "readings_delivered_total", "Readings delivered in order to the twins, by org", ["org"])
        self.sealed_readings = r.counter(p + "readings_sealed_total", "Delivered readings sealed into a batch, by org", ["org"])
        self.unsealed = r.gauge(p + "readings_unsealed", "Delivered readings waiting for the next sealing")
        self.duplicates = r.counter(p + "duplicates_dropped_total", "Values dropped as duplicates (seq <= last delivered)")
        self.gaps = r.counter(p + "gaps_total", "Sequence gaps that started a history read")
        self.replayed = r.counter(p + "readings_replayed_total", "Readings delivered from the server's history")
        self.lost = r.counter(p + "readings_lost_total", "Sequence numbers the server's history could not supply")
        self.connected = r.gauge(p + "connected", "1 while an OPC-UA session is up")
        self.reconnects = r.counter(p + "reconnects_total", "OPC-UA sessions opened after the first one")
        self.disconnects = r.counter(p + "disconnects_total", "OPC-UA sessions or attempts that ended")
        self.sealed = r.counter(p + "batches_sealed_total", "Batches sealed into the store in this run, by org", ["org"])
        self.anchored = r.counter(p + "batches_anchored_total", "Batches accepted by the anchorer in this run, by org", ["org"])
        self.pending = r.gauge(p + "batches_pending", "Sealed batches not anchored yet, by org", ["org"])
        self.anchor_errors = r.counter(p + "anchor_errors_total", "Failed anchor submissions (retried), by org", ["org"])
        self.last_anchored = r.gauge(p + "last_anchored_batch", "Batch number of the org's latest anchored batch", ["org"])
        self.anchor_submit = r.histogram(p + "anchor_submit_seconds", "Duration of one anchor submission, by org", ["org"])
        self.sensor_to_twin = r.histogram(p + "sensor_to_twin_seconds", "Twin updated minus the value's OPC-UA "
                                          "SourceTimestamp", buckets=LATENCY_BUCKETS)
        self.alerts = r.counter(p + "alerts_raised_total", "Alerts recorded on the anchor target, by org", ["org"])
        self.reports = r.counter(p + "sustainability_reports_total", "Daily sustainability reports recorded, by org", ["org"])
        self.record_errors = r.counter(p + "record_errors_total", "Failed attempts to record an alert or a report")
        self.twins = r.gauge(p + "twins", "Twins kept by the bridge, by org and kind", ["org", "kind"])
        #: the hot path's one observation (bound once: a reading costs an attribute-free call)
        self.observe_sensor_to_twin = self.sensor_to_twin.labels().observe
        self._runtime: TwinRuntime | None = None
        self._bridge: OpcUaBridge | None = None
        r.before_scrape(self._collect)

    def attach_runtime(self, rt: TwinRuntime) -> None:
        self._runtime = rt
        for org, twins in rt.by_org.items():
            # every org is exposed from the start (at 0), so that rate() and increase() have a baseline
            for m in (self.delivered, self.sealed_readings, self.sealed, self.anchored, self.anchor_errors, self.alerts,
                      self.pending, self.anchor_submit):
                m.labels(org=org)
            kinds: dict[str, int] = {}
            for t in twins:
                kinds[t.kind] = kinds.get(t.kind, 0) + 1
            for kind, n in kinds.items():
                self.twins.labels(org=org, kind=kind).set(n)

    def attach_bridge(self, bridge: OpcUaBridge) -> None:
        self._bridge = bridge

    def _collect(self) -> None:
        rt, b = self._runtime, self._bridge
        if rt is not None:
            for org, n in list(rt.readings_by_org.items()):
                set_total(self.delivered.labels(org=org), n)
            for counter, totals in ((self.sealed_readings, rt.sealed_readings_by_org), (self.sealed, rt.batches_by_org),
                                    (self.anchored, rt.anchored_by_org), (self.anchor_errors, rt.anchor_errors_by_org),
                                    (self.alerts, rt.alerts_by_org), (self.reports, rt.reports_by_org)):
                for org, n in list(totals.items()):
                    set_total(counter.labels(org=org), n)
            for org, n in list(rt.pending_by_org.items()):
                self.pending.labels(org=org).set(n)
            for org, n in list(rt.last_anchored_by_org.items()):
                self.last_anchored.labels(org=org).set(n)
            self.unsealed.set(rt.unsealed())
            set_total(self.record_errors.labels(), rt.record_errors)
        if b is not None:
            s = b.seq
            for counter, n in ((self.duplicates, s.duplicates), (self.gaps, s.gaps), (self.replayed, s.replayed),
                               (self.lost, s.lost), (self.reconnects, max(0, b.connects - 1)),
                               (self.disconnects, b.disconnects)):
                set_total(counter.labels(), n)
            self.connected.set(1 if b.connected else 0)


class SimulatorMetrics:
    """Read from a ``SimulatorServer`` at scrape time (the server keeps the counts; nothing per value here)."""

    def __init__(self, sim: SimulatorServer) -> None:
        self.sim = sim
        r = self.registry = ScrapeRegistry()
        p = "twinledger_simulator_"
        self.published = r.counter(p + "values_published_total", "Values published (after their history commit), by org", ["org"])
        self.rate = r.gauge(p + "values_per_second", "Values published over the last second, by org", ["org"])
        self.history_rows = r.gauge(p + "history_rows", "Samples held in the history (HistoryRead's source)")
        self.history_reads = r.counter(p + "history_reads_total", "HistoryRead requests served (per node and page)")
        self.overloads = r.counter(p + "overloads_total", "Skips ahead after falling more than 1 s behind schedule")
        self.paused = r.gauge(p + "paused", "1 while production is paused (SIGUSR1)")
        self.clients = r.gauge(p + "clients_connected", "OPC-UA client connections open now")
        self.assets = r.gauge(p + "assets", "Simulated assets, by org and kind", ["org", "kind"])
        kinds: dict[tuple[str, str], int] = {}
        for src in sim.sources:
            kinds[(src.org, src.kind)] = kinds.get((src.org, src.kind), 0) + 1
        for (org, kind), n in kinds.items():
            self.assets.labels(org=org, kind=kind).set(n)
        sim.history.count_rows()  # once, here in the simulator's thread; the store keeps it current from now on
        r.before_scrape(self._collect)

    def _collect(self) -> None:
        sim = self.sim
        for org, n in list(sim.published_by_org.items()):
            set_total(self.published.labels(org=org), n)
        for org, v in list(sim.rate_by_org.items()):
            self.rate.labels(org=org).set(v)
        self.history_rows.set(sim.history.rows or 0)
        set_total(self.history_reads.labels(), sim.history.reads)
        set_total(self.overloads.labels(), sim.overloads)
        self.paused.set(1 if sim.paused else 0)
        self.clients.set(sim.clients_connected())


def start_server(registry: Registry, port: int, what: str, host: str = "127.0.0.1") -> Any:
    """``serve_metrics`` on ``host`` with the one-line error a user can act on when the port is taken."""
    try:
        return serve_metrics(registry, port, host)
    except OSError as exc:
        raise SystemExit(f"error: cannot serve the metrics of the {what} on {host}:{port} ({exc.strerror or exc}); "
                         "give another --metrics-port, or 0 for none") from None


def stop_server(server: Any) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
