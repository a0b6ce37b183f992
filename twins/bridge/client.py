"""The OPC-UA side of the bridge: connect (SignAndEncrypt, see twins.security; NoSecurity without ``security``), subscribe, reconnect.

One asyncua ``Client`` per connection attempt. On loss (asyncua's watchdog fires ``connection_lost_callback``,
or the subscription reports a bad status) the session is torn down and a new one is attempted after an
exponential backoff with jitter (``backoff_initial`` doubling up to ``backoff_max``). Every (re)connect
re-resolves the namespace index, re-creates the subscription and asks the sequencer to catch up from
history (by time range, from each variable's last delivered timestamp), so values published while we were away
are replayed in order (see ``twins.bridge.sequencer``). One filler task per session serves the history reads; it
retries a failed read itself while the session is up and ends with the session (the request survives for the
next one's catch-up).

Subscription parameters, chosen so that OPC-UA itself says when a value may be missing: publishing interval
``publish_ms`` (default 20 ms); per monitored item a queue of 10 000, sampling interval 0 (every write is queued),
DiscardOldest, and a DataChangeFilter with trigger StatusValueTimestamp — a value written again unchanged with a new
SourceTimestamp is a new reading too (the default trigger would not report it). A server whose item queue
overflows flags the next value with the Overflow info bit: that variable refills from history up to it. The
client's own queue (200 000 notifications) does not drop silently either: when full, the session is dropped
and reconnected (asyncua's DISCONNECT overflow policy), whose catch-up reads the rest back. asyncua itself asks
the server to Republish notification messages whose sequence numbers it missed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

from asyncua import Client, ua
from asyncua.common.subscription import DataChangeEvent, OverflowPolicy, StatusChangeEvent
from asyncua.crypto import uacrypto

from twins.bridge.mapping import Mapping, NodeMap
from twins.bridge.sequencer import NoHistory, Sample, Sequencer
from twins.bridge.values import ValueCheck
from twins.readings import Reading, us_to_dt
from twins.security import CLIENT_POLICY, ClientSecurity, TrustList, file_format, uri_of, validator

log = logging.getLogger("twins.bridge")
_NS = re.compile(r"^ns=(\d+);")
#: HistoryRead answers that mean "no history to read back here" (not a passing failure worth retrying).
NO_HISTORY = frozenset({ua.StatusCodes.BadHistoryOperationUnsupported, ua.StatusCodes.BadHistoryOperationInvalid,
                        ua.StatusCodes.BadNotReadable, ua.StatusCodes.BadNotSupported})
#: A DataValue's StatusCode info bits: InfoType = DataValue (bits 10-11 = 01) and its Overflow bit (7).
_INFO_TYPE_MASK, _INFO_DATAVALUE, _OVERFLOW = 0x0C00, 0x0400, 0x0080
_HISTORY_READ = 0x04  # AccessLevel bit (Part 3, 8.57)


def overflowed(status: ua.StatusCode | None) -> bool:
    """The server's monitored-item queue dropped values before this one (Part 4, 7.39 / 5.12.1.5)."""
    code = status.value if status is not None else 0
    return (code & _INFO_TYPE_MASK) == _INFO_DATAVALUE and bool(code & _OVERFLOW)


class OpcUaBridge:
    def __init__(
        self, mapping: Mapping, deliver: Callable[[Reading], None], *, url: str | None = None,
        positions: dict[tuple[str, str], tuple[int, int]] | None = None, security: ClientSecurity | None = None,
        publish_ms: float = 20.0, backoff_initial: float = 0.2, backoff_max: float = 5.0, start_from: str = "live",
        timeout: float = 4.0, watchdog_s: float = 3.0,
    ) -> None:
        self.mapping = mapping
        self.url = url or mapping.server
        if not self.url:
            raise ValueError("no server URL: give --url or 'server:' in the mapping file")
        self.security = security
        self.publish_ms = publish_ms
        self.backoff_initial, self.backoff_max = backoff_initial, backoff_max
        self.timeout = timeout
        self.watchdog_s = watchdog_s
        self.seq = Sequencer(mapping.nodes, deliver, start_from)
        self.values = ValueCheck()  # what a server sends that is not a reading: refused, logged once per variable
        if positions:
            self.seq.resume(positions)
        self.connected = False
        self.connects = 0
        self.disconnects = 0
        self.last_error: str | None = None
        self.client_overflows = 0  # sessions dropped because the client's notification queue was full
        self._client: Client | None = None
        self._trust: TrustList | None = None
        if security is not None and not security.trust:
            raise ValueError("a secure bridge needs a trust list (the CA certificates the server must chain to)")
        self._node_by_key: dict[tuple[str, str], Any] = {}
        self._no_history_access: set[tuple[str, str]] = set()

    # --- history ---------------------------------------------------------------------------------
    async def _fetch(self, node: NodeMap, from_ts_us: int | None, to_ts_us: int | None) -> list[Sample]:
        """HistoryRead (raw, by time range, paged by continuation points) of one variable: samples by time."""
        key = (node.asset, node.prop)
        if key in self._no_history_access:
            raise NoHistory("its AccessLevel has no HistoryRead")
        ua_node = self._node_by_key[key]
        start = us_to_dt(max(from_ts_us or 0, 1))
        end = us_to_dt(to_ts_us if to_ts_us is not None else now_us() + 3_600_000_000)  # None: up to now (+1 h of clock skew)
        details = ua.ReadRawModifiedDetails(IsReadModified=False, StartTime=start, EndTime=end, NumValuesPerNode=0, ReturnBounds=False)
        out: list[Sample] = []
        cont = None
        while True:
            try:
                res = await ua_node.history_read(details, cont)
                res.StatusCode.check()
            except ua.UaStatusCodeError as exc:
                if exc.code in NO_HISTORY:
                    raise NoHistory(ua.StatusCode(exc.code).name) from None
                raise
            for dv in res.HistoryData.DataValues or []:
                v = dv.Value.Value if dv.Value is not None else None
                sample = self.values.sample(key, v, dv.StatusCode, dv.SourceTimestamp, dv.ServerTimestamp)
                if sample is not None:
                    out.append(sample)
            if not res.ContinuationPoint or res.ContinuationPoint == cont:
                break
            cont = res.ContinuationPoint
        out.sort(key=lambda s: s[0])
        return out

    # --- connection ------------------------------------------------------------------------------
    async def _connect(self) -> Client:
        if self.security is not None and self._trust is None:
            self._trust = await TrustList(self.security.trust).load()
        return await open_client(self.url, self.security, self._trust, timeout=self.timeout, watchdog_s=self.watchdog_s)

    async def _resolve(self, client: Client) -> None:
        idx = None
        if self.mapping.namespace:
            ns_array = await client.get_namespace_array()
            if self.mapping.namespace not in ns_array:
                raise RuntimeError(f"server has no namespace {self.mapping.namespace}")
            idx = ns_array.index(self.mapping.namespace)
        self._node_by_key = {}
        for n in self.mapping.nodes:
            nid = _NS.sub(f"ns={idx};", n.node_id) if idx is not None else n.node_id
            self._node_by_key[(n.asset, n.prop)] = client.get_node(nid)
        # A variable whose (user) AccessLevel lacks HistoryRead keeps no history the bridge may read, whatever a
        # HistoryRead would answer (some servers answer Good with no values): its breaks become gap records at once.
        self._no_history_access = set()
        items = list(self._node_by_key.items())
        for i in range(0, len(items), 1000):
            chunk = items[i:i + 1000]
            try:
                levels = await client.read_attributes([n for _, n in chunk], ua.AttributeIds.UserAccessLevel)
            except (ua.UaError, ua.UaStatusCodeError, asyncio.TimeoutError):
                continue  # not known: HistoryRead will say
            for (key, _), dv in zip(chunk, levels):
                level = dv.Value.Value if dv.Value is not None else None
                if isinstance(level, int) and not level & _HISTORY_READ:
                    self._no_history_access.add(key)

    async def _session(self, client: Client, stop: asyncio.Event) -> None:
        lost = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            self.last_error = repr(exc)
            lost.set()

        client.connection_lost_callback = on_lost
        await self._resolve(client)
        sub = await client.create_subscription(self.publish_ms, handler=None, queue_maxsize=200_000,
                                               overflow=OverflowPolicy.DISCONNECT)

        def client_overflow() -> None:
            self.client_overflows += 1
            self.last_error = "the client's notification queue overflowed"
            lost.set()  # dropped notifications: reconnect and read them back from history

        sub.set_overflow_disconnect_handler(client_overflow)
        changes = ua.DataChangeFilter(Trigger=ua.DataChangeTrigger.StatusValueTimestamp)
        key_of = {}
        nodes = list(self._node_by_key.items())
        for i in range(0, len(nodes), 500):
            chunk = nodes[i:i + 500]
            handles = await sub._subscribe([n for _, n in chunk], ua.AttributeIds.Value, changes, queuesize=10000,
                                           sampling_interval=0)
            for (key, node), h in zip(chunk, handles):
                if isinstance(h, ua.StatusCode):
                    raise RuntimeError(f"cannot monitor {node}: {h}")
                key_of[node.nodeid] = key
        self.connected = True
        self.connects += 1
        log.info("connected to %s, %d variables", self.url, len(key_of))
        self.seq.fetch = self._fetch
        self.seq.request_catch_up()
        filler = asyncio.create_task(self.seq.run_filler(lambda: self.connected))
        queue: asyncio.Queue = sub._event_queue  # type: ignore[assignment]  # asyncua 2.1 iterator-mode queue
        offer, check = self.seq.offer, self.values.sample
        get_lost = asyncio.create_task(lost.wait())
        get_stop = asyncio.create_task(stop.wait())
        try:
            while True:
                getter = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getter, get_lost, get_stop}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    break
                batch = [getter.result()]
                while True:
                    try:
                        batch.append(queue.get_nowait())
                    except asyncio.QueueEmpty:
                        break
                for ev in batch:
                    if isinstance(ev, DataChangeEvent):
                        key = key_of[ev.node.nodeid]
                        dv = ev.data.monitored_item.Value
                        sample = check(key, ev.value, dv.StatusCode, dv.SourceTimestamp, dv.ServerTimestamp)
                        if sample is not None:
                            offer(key, *sample, overflowed(dv.StatusCode))
                    elif isinstance(ev, StatusChangeEvent) or ev is None:
                        self.last_error = f"subscription status {getattr(ev, 'notification', None)}"
                        lost.set()
        finally:
            self.connected = False
            for t in (filler, get_lost, get_stop):
                t.cancel()
            await asyncio.gather(filler, get_lost, get_stop, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            client = None
            try:
                client = await self._connect()
                attempt = 0
                await self._session(client, stop)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any connect/session failure: back off and retry
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("bridge connection to %s failed: %s", self.url, self.last_error)
            finally:
                if client is not None:
                    self.disconnects += 1
                    await _close_quietly(client, graceful=stop.is_set())
            if stop.is_set():
                break
            delay = min(self.backoff_max, self.backoff_initial * (2 ** attempt)) * (0.5 + random.random() / 2)
            attempt += 1
            try:
                await asyncio.wait_for(stop.wait(), timeout=delay)
            except asyncio.TimeoutError:
                pass


async def open_client(url: str, security: ClientSecurity | None, trust: TrustList | None, *, timeout: float = 4.0,
                      watchdog_s: float = 3.0, name: str = "TwinLedger bridge") -> Client:
    """A connected asyncua client: SignAndEncrypt (``twins.security``) with ``security`` (whose server must chain to
    ``trust``, loaded), NoSecurity without. `twins map` browses through one too."""
    # asyncua probes the server every watchdog interval and gives the probe that long to answer: a loaded server
    # (10k values/s) needs more than 0.5 s. A killed server is noticed at once anyway (socket closed).
    client = Client(url, timeout=timeout, watchdog_intervall=watchdog_s)
    client.name = client.description = name
    if security is not None:
        if trust is None:
            trust = await TrustList(security.trust).load()
        client.application_uri = uri_of(security.cert)
        # asyncua checks the server's certificate (chain to our trust list, its application URI, server role)
        # at CreateSession, before the session carries anything
        client.certificate_validator = validator(trust, "server")
        props = lambda p: uacrypto.CertProperties(str(p), extension=file_format(p))  # noqa: E731
        await client.set_security(
            CLIENT_POLICY, props(security.cert), props(security.key),
            server_certificate=props(security.server_cert) if security.server_cert else None,
            mode=ua.MessageSecurityMode.SignAndEncrypt,
        )
    try:
        await client.connect()
    except BaseException:
        client.disconnect_socket()  # a refused session leaves the socket open otherwise
        raise
    return client


async def _close_quietly(client: Client, graceful: bool) -> None:
    try:
        if graceful:
            await asyncio.wait_for(client.disconnect(), timeout=2.0)
        else:
            raise RuntimeError
    except Exception:
        try:
            client.uaclient.request_disconnect()
        except Exception:
            pass
        try:
            publish = getattr(client.uaclient.session, "_publish_task", None)
            if publish is not None:
                publish.cancel()
            if client._supervisor_task:
                client._supervisor_task.cancel()
            if client._stale_watchdog_task:
                client._stale_watchdog_task.cancel()
            if client._renew_channel_task:
                client._renew_channel_task.cancel()
        except Exception:
            pass
        client.disconnect_socket()


def now_us() -> int:
    return time.time_ns() // 1000
