"""The simulator OPC-UA server: machines and monitors as standard scalar variables, with history.

Address space: namespace ``urn:twinledger:simulators`` (index 2); one object per asset; one variable per
property with the string node id ``<asset>.<prop>``, e.g. ``ns=2;s=plant1.m1.Torque``.

Values are what real equipment publishes: a standard scalar of the signal's declared type (Double, Float, Int32,
UInt16, Boolean: ``MachineSource.types`` / ``PatientSource.types``), status Good, the sample time as
SourceTimestamp and the publishing time as ServerTimestamp. Nothing of ours travels in the value: a client
identifies a value by its variable and SourceTimestamp (``twins.readings``), and a value written again unchanged
is still reported (clients ask for the StatusValueTimestamp trigger). A variable that never had a sample
holds BadWaitingForInitialData. Every variable is Historizing and readable by HistoryRead (time range), as a
historian's.

Each tick: generate the due samples → append them to the SQLite history and commit → write them to the
address space. Source timestamps are the scheduled sample times (wall clock), strictly increasing per
variable (a restarted server continues after the last one in its history); if the server falls more than a
second behind schedule it skips ahead (logged), since samples that were never generated are not lost readings.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from asyncua import Server, ua
from asyncua.crypto.permission_rules import SimpleRoleRuleset
from asyncua.server.user_managers import UserManager
from cryptography import x509

from twins.metrics import listen_host
from twins.security import SERVER_POLICY, TrustList, file_format, uri_of, validator
from twins.readings import us_to_dt
from twins.simulators.history import SeqHistoryStore, as_float32, no_data_datavalue, sample_datavalue

NAMESPACE = "urn:twinledger:simulators"
APP_URI = "urn:twinledger:simulators:server"
log = logging.getLogger("twins.simulators")


class _Users(UserManager):
    """Sessions get the User role (read, subscribe, HistoryRead); admin operations stay closed. With a trust list,
    only over a secure channel whose client certificate chains to it: asyncua validates the certificate a client
    names in CreateSession, but that one is optional in the request, so the channel's own certificate (the one
    the session's messages are actually signed and encrypted with) is checked here again at ActivateSession."""

    def __init__(self, trust: TrustList | None) -> None:
        self.trust = trust

    def get_user(self, iserver, username=None, password=None, certificate=None):  # type: ignore[no-untyped-def]
        from asyncua.crypto.permission_rules import User, UserRole

        if self.trust is not None:
            if not certificate:
                log.warning("refused a session without a client certificate")
                return None
            cert = x509.load_der_x509_certificate(certificate)
            if not self.trust.trusts(cert):
                log.warning("refused a session with an untrusted client certificate %s", cert.subject.rfc4514_string())
                return None
        return User(role=UserRole.User)


@dataclass
class ServerSecurity:
    """SignAndEncrypt (twins.security.POLICY_NAME) with this certificate; clients must chain to ``trust`` (CA
    certificate files or folders). The application URI is the certificate's."""

    cert: Path
    key: Path
    trust: list[Path] = field(default_factory=list)


class SimulatorServer:
    def __init__(self, sources: list[Any], history_path: Path, host: str = "127.0.0.1", port: int = 4840,
                 tick_s: float = 0.02, security: ServerSecurity | None = None, retention_s: float = 86400.0) -> None:
        # one address, never all interfaces: 127.0.0.1, or the OPC-UA org's host from the spec
        self.host = listen_host(host, "simulators")
        self.sources = sources
        self.url = f"opc.tcp://{self.host}:{port}/twinledger/sim"
        self.port = port
        self.tick_s = tick_s
        self.security = security
        self.history = SeqHistoryStore(history_path, retention_s=retention_s)
        if security is not None and not security.trust:
            raise ValueError("a secure simulator needs a trust list (the CA certificates its clients chain to)")
        self._trust = TrustList(security.trust) if security is not None else None
        self.server = Server(user_manager=_Users(self._trust))
        self.ns = 2
        self.nodeids: dict[tuple[str, str], ua.NodeId] = {}
        self.last: dict[str, tuple[int, int]] = {}  # "asset.prop" -> (its count of samples, last ts_us)
        self.types: dict[str, ua.VariantType] = {}  # "asset.prop" -> its scalar type
        self.published = 0
        self.published_by_org: dict[str, int] = dict.fromkeys(sorted({s.org for s in sources}), 0)
        self.rate_by_org: dict[str, float] = dict.fromkeys(self.published_by_org, 0.0)  # values/s over the last second
        self.overloads = 0
        self.paused = False
        self._stop = asyncio.Event()

    def var(self, asset: str, prop: str) -> str:
        return f"ns={self.ns};s={asset}.{prop}"

    async def setup(self) -> None:
        s = self.server
        await s.init()
        s.set_endpoint(self.url)
        s.set_server_name("TwinLedger simulators")
        if self.security is None:  # only behind the simulators' --insecure
            await s.set_application_uri(APP_URI)
            s.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        else:
            sec = self.security
            await s.set_application_uri(uri_of(sec.cert))
            await s.load_certificate(str(sec.cert), format=file_format(sec.cert))
            await s.load_private_key(str(sec.key), format=file_format(sec.key))
            assert self._trust is not None
            trust = await self._trust.load()
            s.set_security_policy([SERVER_POLICY], permission_ruleset=SimpleRoleRuleset())
            s.set_certificate_validator(validator(trust, "client"))
        self.ns = await s.register_namespace(NAMESPACE)
        s.iserver.history_manager.set_storage(self.history)
        last = self.history.last_positions()
        states = self.history.states()
        objects = s.nodes.objects
        for src in self.sources:
            if src.asset in states:
                src.restore(states[src.asset])
            obj = await objects.add_object(ua.NodeId(src.asset, self.ns), ua.QualifiedName(src.asset, self.ns))
            for prop in src.props:
                nid = ua.NodeId(f"{src.asset}.{prop}", self.ns)
                key = f"{src.asset}.{prop}"
                vtype = src.types[prop]
                self.history.types[key] = vtype
                self.types[key] = vtype
                seq, ts, val = last.get(key, (0, 0, math.nan))
                init = sample_datavalue(vtype, val, ts) if seq else no_data_datavalue(vtype)
                v = await obj.add_variable(nid, ua.QualifiedName(prop, self.ns), init.Value.Value, varianttype=vtype)
                await s.write_attribute_value(nid, init)
                await v.write_attribute(ua.AttributeIds.Historizing, ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
                al = ua.AccessLevel.CurrentRead.mask | ua.AccessLevel.HistoryRead.mask
                await v.write_attribute(ua.AttributeIds.AccessLevel, ua.DataValue(ua.Variant(al, ua.VariantType.Byte)))
                await v.write_attribute(ua.AttributeIds.UserAccessLevel, ua.DataValue(ua.Variant(al, ua.VariantType.Byte)))
                self.nodeids[(src.asset, prop)] = nid
                self.last[key] = (seq, ts)

    def mapping(self) -> dict[str, Any]:
        """The bridge's mapping file for this server (node id → asset and property)."""
        return {
            "server": self.url,
            "namespace": NAMESPACE,
            "assets": {src.asset: {"org": src.org, "kind": src.kind} for src in self.sources},
            "nodes": {nid.to_string(): {"asset": a, "property": p} for (a, p), nid in self.nodeids.items()},
        }

    async def run(self) -> None:
        await self.server.start()
        try:
            await self._loop()
        finally:
            await self.server.stop()

    def stop(self) -> None:
        self._stop.set()

    def clients_connected(self) -> int:
        """OPC-UA client connections open now (asyncua keeps one transport per TCP connection)."""
        return len(getattr(self.server.iserver, "asyncio_transports", ()))

    async def _loop(self) -> None:
        t0 = time.monotonic()
        wall0 = time.time()
        emitted = {src.asset: 0 for src in self.sources}
        # stagger the assets' sampling phases (real sensors are not synchronised): asset i of n starts i/n of a
        # sample period late, so a plant's values spread over time instead of arriving in lock-step bursts
        n = len(self.sources)
        base = {src.asset: t0 + (i / n) / src.rate for i, src in enumerate(self.sources)}
        rate_t, rate_from = t0, dict(self.published_by_org)
        while not self._stop.is_set():
            now = time.monotonic()
            if now - rate_t >= 1.0:  # the metrics' current rate, once a second
                self.rate_by_org = {o: (v - rate_from.get(o, 0)) / (now - rate_t) for o, v in self.published_by_org.items()}
                rate_t, rate_from = now, dict(self.published_by_org)
            if self.paused:  # keep serving (subscriptions, HistoryRead) without producing; resume re-bases
                for src in self.sources:
                    base[src.asset] = now - emitted[src.asset] / src.rate
                await asyncio.sleep(self.tick_s)
                continue
            rows: list[tuple[str, int, int, float, int]] = []
            writes: list[tuple[ua.NodeId, ua.VariantType, float, int, datetime]] = []
            by_org: dict[str, int] = {}
            server_ts = time.time_ns() // 1000
            server_dt = us_to_dt(server_ts)
            for src in self.sources:
                due = int((now - base[src.asset]) * src.rate) - emitted[src.asset]
                if due > src.rate + 1:  # more than 1 s behind: skip ahead
                    self.overloads += 1
                    log.warning("%s: %d samples behind schedule, skipping ahead", src.asset, due)
                    base[src.asset] = now - (emitted[src.asset] + 1) / src.rate
                    due = 1
                before = len(writes)
                for _ in range(max(due, 0)):
                    emitted[src.asset] += 1
                    t_sched = wall0 + (base[src.asset] - t0) + emitted[src.asset] / src.rate
                    ts_us = int(t_sched * 1e6)
                    ts_dt = us_to_dt(ts_us)
                    for prop, value in src.step().items():
                        nid = self.nodeids[(src.asset, prop)]
                        key = nid.Identifier
                        vtype = self.types[key]
                        if vtype == ua.VariantType.Float:
                            value = as_float32(value)  # what the variable holds, hence what history must return
                        seq, last_ts = self.last[key]
                        ts = ts_us if ts_us > last_ts else last_ts + 1
                        self.last[key] = (seq + 1, ts)
                        rows.append((key, seq + 1, ts, value, server_ts))
                        writes.append((nid, vtype, value, ts, ts_dt if ts == ts_us else us_to_dt(ts)))
                if len(writes) > before:
                    by_org[src.org] = by_org.get(src.org, 0) + len(writes) - before
            if rows:
                self.history.append(rows, {src.asset: src.state() for src in self.sources})  # durable first
                write = self.server.write_attribute_value
                for nid, vtype, value, ts, ts_dt in writes:
                    await write(nid, sample_datavalue(vtype, value, ts, server_ts, ts_dt, server_dt))
                self.published += len(writes)
                for org, k in by_org.items():
                    self.published_by_org[org] += k
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, self.tick_s - (time.monotonic() - now)))
            except asyncio.TimeoutError:
                pass


def ready_line(server: SimulatorServer, metrics: str | None = None) -> str:
    line: dict[str, Any] = {"event": "ready", "endpoint": server.url, "assets": len(server.sources),
                            "variables": len(server.nodeids)}
    if metrics:
        line["metrics"] = metrics
    return json.dumps(line)
