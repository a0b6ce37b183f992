"""The dashboard's way to the ledger: one gateway connection per local enrolled identity, opened lazily.

Identity decides access (DESIGN.md): the dashboard never forwards an identity from the browser. The page
may only *choose* one of the identities this home holds enrolled (``LedgerClient.enrolled``); the server loads
that user's own MSP folder (``orchestrator.connect``) and signs with its key, so the chaincode sees the
steward's certificate exactly as it would from `twinledger data grant --as hospital1:steward`.

Connections are cached per (org, user) because opening one costs a TLS handshake; a connection whose
call failed as unavailable is dropped so the next poll dials again (peers restarted, or started later).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from network.gateway_errors import GatewayError
from network.gateway_sync import SyncContract, SyncGateway
from network.layout import Layout
from network.spec import Spec, SpecError, load_spec
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.connect import connect_sync
from orchestrator.ledger_session import chaincode_message

DATA_CONTRACT = "data"
MODELS_CONTRACT = "models"
#: Seconds a dashboard read may take before the panel says the ledger is unavailable; the page polls
#: every 1-2 s, so a read must not hang on a dead peer for the client's default 30 s.
READ_TIMEOUT = 4.0
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class LedgerUnavailable(Exception):
    """The ledger could not be asked (no network, not enrolled, peer unreachable); one line for the page."""


class LedgerRefused(Exception):
    """The chaincode answered with an error (bad argument, access denied); its one-line message."""


def describe_gateway_error(exc: Exception) -> Exception:
    """Map a gateway failure to what the page shows: unavailable (retry later) or refused (the contract said no).

    Refused only when the chaincode itself answered (its own words, "access denied: Grant is for stewards of
    ...", as the `twinledger data` commands print them) or a transaction was invalidated; a peer that cannot
    be reached, or that answered UNAVAILABLE because something behind it is down, is "unavailable".
    """
    if isinstance(exc, GatewayError):
        said = chaincode_message(exc)
        if said:
            return LedgerRefused(said)
        if exc.code in _UNREACHABLE:
            return LedgerUnavailable(f"ledger unavailable: {exc}")
        return LedgerRefused(str(exc))
    return LedgerUnavailable(f"ledger unavailable: {exc}")


class LedgerClient:
    """Evaluate and submit on the home's channel as one of its enrolled users."""

    def __init__(self, home: Path, read_as: tuple[str, str] | None = None,
                 connector: Callable[[Spec, Layout, str, str], SyncGateway] = connect_sync) -> None:
        self.home = home
        self.layout = Layout(home)
        self._read_as = read_as
        self._connector = connector
        self._lock = threading.Lock()
        self._gateways: dict[tuple[str, str], SyncGateway] = {}
        # Calls in flight on each open gateway. The server answers polls on several threads at once, so one
        # thread may drop a connection (its call found the peer down) while another is mid-call on it:
        # a dropped gateway is closed by whichever call leaves it last, never under a running call.
        self._in_use: dict[int, int] = {}
        self._retired: set[int] = set()

    # --- what this home holds ------------------------------------------------------------------
    def spec(self) -> Spec:
        if not self.layout.spec_file.exists():
            raise LedgerUnavailable(f"ledger unavailable: no network in {self.home}; run `twinledger up` first")
        try:
            return load_spec(self.layout.spec_file)
        except SpecError as exc:
            raise LedgerUnavailable(f"ledger unavailable: {exc}") from None

    def enrolled(self, user: str) -> list[str]:
        """Member orgs whose ``user`` identity is enrolled in this home (the identities the server can act as)."""
        try:
            spec = self.spec()
        except LedgerUnavailable:
            return []
        return [o.name for o in spec.member_orgs if self.layout.user_msp(o.name, user).exists()]

    def reader(self) -> tuple[str, str]:
        """Whom reads are signed as: the --as identity, else the first member org's admin (DESIGN's default)."""
        if self._read_as is not None:
            return self._read_as
        admins = self.enrolled("admin")
        if not admins:
            raise LedgerUnavailable(f"ledger unavailable: no enrolled identity in {self.home}; run `twinledger up` first")
        return admins[0], "admin"

    # --- calls ---------------------------------------------------------------------------------
    def _acquire(self, org: str, user: str) -> SyncGateway:
        """The cached gateway for org:user (dialled on first use), counted as in use until ``_release``."""
        with self._lock:
            gw = self._gateways.get((org, user))
            if gw is None:
                try:
                    gw = self._connector(self.spec(), self.layout, org, user)
                except (SpecError, OSError, ValueError) as exc:
                    raise LedgerUnavailable(f"ledger unavailable: {exc}") from None
                self._gateways[(org, user)] = gw
            self._in_use[id(gw)] = self._in_use.get(id(gw), 0) + 1
            return gw

    def _release(self, gw: SyncGateway, *, drop: bool) -> None:
        """End one call on ``gw``; ``drop`` retires it (the next call dials again: peer restarted or not up yet)."""
        with self._lock:
            if drop:
                for key, cached in list(self._gateways.items()):
                    if cached is gw:
                        del self._gateways[key]
                        self._retired.add(id(gw))
            left = self._in_use[id(gw)] - 1
            if left:
                self._in_use[id(gw)] = left
                return
            del self._in_use[id(gw)]
            if id(gw) not in self._retired:
                return
            self._retired.discard(id(gw))
        gw.close()

    def read_contract(self, contract_name: str | None) -> ReadContract:
        """A read-only contract as the reading identity (see ``reader``), with the dashboard's deadline."""
        return ReadContract(self, contract_name, self.reader())

    def call(self, org: str, user: str, contract_name: str | None, fn: Callable[[SyncContract], bytes]) -> bytes:
        """Run one gateway call as org:user; failures become LedgerUnavailable / LedgerRefused."""
        gw = self._acquire(org, user)
        drop = False
        try:
            return fn(gw.network(self.spec().channel).contract(CHAINCODE_NAME, contract_name))
        except (GatewayError, grpc.RpcError, OSError) as exc:
            mapped = describe_gateway_error(exc)
            drop = isinstance(mapped, LedgerUnavailable)
            raise mapped from None
        finally:
            self._release(gw, drop=drop)

    def evaluate(self, contract_name: str, function: str, *args: str, as_: tuple[str, str] | None = None) -> Any:
        org, user = as_ or self.reader()
        raw = self.call(org, user, contract_name, lambda c: c.evaluate(function, *args, timeout=READ_TIMEOUT))
        return json.loads(raw) if raw else None

    def submit(self, contract_name: str, function: str, *args: str, as_: tuple[str, str]) -> Any:
        org, user = as_
        raw = self.call(org, user, contract_name, lambda c: c.submit(function, *args))
        return json.loads(raw) if raw else None

    def close(self) -> None:
        """Close every gateway no call is using; one still in use is closed by its last call."""
        with self._lock:
            gateways, self._gateways = list(self._gateways.values()), {}
            idle = [gw for gw in gateways if id(gw) not in self._in_use]
            self._retired.update(id(gw) for gw in gateways if id(gw) in self._in_use)
        for gw in idle:
            gw.close()


class ReadContract:
    """A contract for the parts' own ledger classes (``FabricRoundLedger``, ``FabricAnchorer``) to read through.

    Their ``evaluate(function, *args)`` carries no deadline; here every read gets ``READ_TIMEOUT`` (a dead peer
    makes a panel say "unavailable" within seconds instead of holding the poll for the client's 30 s), and
    failures arrive as ``LedgerUnavailable`` / ``LedgerRefused`` like every other dashboard read. The
    dashboard never submits through it.
    """

    def __init__(self, client: LedgerClient, contract_name: str | None, as_: tuple[str, str]) -> None:
        self._client = client
        self._contract_name = contract_name
        self._as = as_

    def evaluate(self, function: str, *args: Any) -> bytes:
        org, user = self._as
        return self._client.call(org, user, self._contract_name,
                                 lambda c: c.evaluate(function, *args, timeout=READ_TIMEOUT))

    def submit(self, function: str, *args: Any) -> bytes:
        raise PermissionError(f"the dashboard only reads through this contract; it does not submit {function}")


class AsyncContractAdapter:
    """Presents a blocking ``SyncContract`` with the awaitable ``evaluate`` that ``twins.FabricAnchorer`` reads with.

    The anchorer's verification is async; the dashboard's connections are the blocking wrapper's (their
    loop is private), so each call runs in a worker thread instead of on that private loop.
    """

    def __init__(self, contract: ReadContract) -> None:
        self._contract = contract

    async def evaluate(self, function: str, *args: Any) -> bytes:
        return await asyncio.to_thread(self._contract.evaluate, function, *args)
