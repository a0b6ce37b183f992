"""Where sealed batch records go: the ledger. The ``Anchorer`` interface and its Fabric implementation.

- ``FabricAnchorer``  submits the record to the ``twins`` contract of the TwinLedger chaincode through
                      ``network.gateway`` (``twins:AnchorSensorBatch(batch_id, record_json)``, chaincode/twins.py)
                      and reads it back with ``twins:ReadSensorBatch(batch_id)``.
- ``OrgRoutedAnchorer`` one anchorer per org (``connect_ledger``: one Fabric identity per org, as the contract
                      lets only an operator or admin of a record's org anchor it).

The interface exists so that unit tests can run the runtime in process against a small fake
(tests/unit/twins/fakes.py); every process of the product anchors on the ledger.

Anchoring is idempotent per batch: submitting the same record twice returns the first tx id, and a different
record under an already-anchored batch id is refused (``AnchorConflict``), as the chaincode does.

Alerts (``raise_alert``, one per alert episode: ``twins.anchoring.alert_outbox``) and sustainability reports
(``report_sustainability``, one per org and day: ``twins.anchoring.sustainability_report``) go the same way and
are idempotent too: an alert by its stored nonce (hence its transaction id), a report by (org, period).

The ledger keeps ONE chain of batches per org (batch id ``org:batch_no``; each record holds the previous one's
hash, which the contract checks). ``chain_head(org)`` finds the org's last anchored batch, so that a store that
has never sealed anything for an org continues the org's chain instead of colliding with it (``twins.anchoring_loop``).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from twins.anchoring.record import BatchRecord, canonical_json

if TYPE_CHECKING:  # types only: those modules import the twin models, which import twins.anchoring
    from twins.anchoring.alert_outbox import AlertRecord
    from twins.anchoring.sustainability_report import SustainabilityReport

# The twins contract's functions (chaincode/twins.py). The caller must be an operator or admin of record.org.
# args: batch_id, record canonical JSON; returns {"batch_id", "record", "record_hash", "tx_id", ...}.
ANCHOR_FUNCTION = "twins:AnchorSensorBatch"
READ_FUNCTION = "twins:ReadSensorBatch"  # args: batch_id; returns the same stored JSON
# An operator of the asset's org; args asset, kind, score, detail JSON; the alert's id is the tx id.
RAISE_ALERT_FUNCTION = "twins:RaiseAlert"
READ_ALERT_FUNCTION = "twins:ReadAlert"  # args: alert id (= RaiseAlert's tx id)
# An operator or admin of the org; args org, period, metrics JSON; one report per (org, period).
REPORT_FUNCTION = "twins:ReportSustainability"
READ_REPORT_FUNCTION = "twins:ReadSustainability"  # args: org, period
#: How long a resubmitted alert whose first transaction is still being ordered may take to appear.
DUPLICATE_WAIT_S = 15.0


class AnchorConflict(RuntimeError):
    """A batch id already anchored with a different record."""


@runtime_checkable
class Anchorer(Protocol):
    name: str

    async def submit_anchor(self, record: BatchRecord) -> str:
        """Anchor the record; return the transaction id."""
        ...

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        """The anchored record as stored by the anchor side: ``{"record": {...}, "record_hash", "tx_id"}``."""
        ...

    async def raise_alert(self, alert: AlertRecord) -> str:
        """Record one alert episode (idempotent per ``alert.key`` / nonce); return its tx id (= its id)."""
        ...

    async def report_sustainability(self, report: SustainabilityReport) -> str:
        """Record one org's report of one period (idempotent per (org, period)); return the tx id."""
        ...

    async def chain_head(self, org: str) -> tuple[int, str] | None:
        """(batch_no, record_hash) of the org's last anchored batch, or None when it has none."""
        ...


def _same_report(old: dict[str, Any], report: SustainabilityReport) -> str:
    """The stored tx id when ``old`` holds the same metrics; ``AnchorConflict`` otherwise (reports never change)."""
    if json.loads(canonical_json(old["report"]["metrics"])) != json.loads(canonical_json(report.metrics)):
        raise AnchorConflict(f"org {report.org} already reported {report.period} with other figures")
    return str(old["tx_id"])


class FabricAnchorer:
    """Anchors through the Fabric Gateway (``network.gateway.Contract``).

    ``contract`` is a ``network.gateway.Contract`` for the twins chaincode (any object with ``new_proposal``
    and ``evaluate`` of the same shape works, which is how it is unit-tested). The record travels as its
    canonical JSON; the chaincode stores it under its batch id, answers the same record again with the stored
    anchor, refuses a different one ("already anchored with a different record"), and emits
    ``SensorBatchAnchored``. ``contract`` must be bound to the chaincode without a contract name (the function
    names above are qualified). Tested on a real Fabric network (tests/integration/test_twins_ledger.py).
    """

    name = "fabric"

    def __init__(self, contract: Any, *, anchor_function: str = ANCHOR_FUNCTION, read_function: str = READ_FUNCTION) -> None:
        self.contract = contract
        self.anchor_function = anchor_function
        self.read_function = read_function

    @classmethod
    def connect(cls, endpoint: str, *, msp_dir: str | Path, msp_id: str, tls_root_cert: str | Path, channel: str,
                chaincode: str, server_name_override: str | None = None, tls_client_cert: str | Path | None = None,
                tls_client_key: str | Path | None = None) -> tuple["FabricAnchorer", Any]:
        """Open a ``network.gateway.Gateway`` as the org identity in ``msp_dir`` (call inside the event loop that
        will use it); returns the anchorer and the gateway (close it with ``await gateway.close()``).
        ``tls_client_cert``/``tls_client_key``: the identity's TLS key pair, for peers that require mutual TLS."""
        from network.gateway import Gateway
        from network.identity import load_msp_identity

        identity, signer = load_msp_identity(msp_dir, msp_id)
        gateway = Gateway.connect(endpoint, identity=identity, signer=signer, tls_root_cert_pem=Path(tls_root_cert),
                                  client_cert_pem=Path(tls_client_cert) if tls_client_cert else None,
                                  client_key_pem=Path(tls_client_key) if tls_client_key else None,
                                  server_name_override=server_name_override)
        return cls(gateway.network(channel).contract(chaincode)), gateway

    async def _commit(self, proposal: Any, what: str) -> str:
        """Endorse, order and wait for the commit of ``proposal``; its tx id, or RuntimeError if invalidated."""
        transaction = await proposal.endorse()
        return await self._order(transaction, proposal, what)

    async def _order(self, transaction: Any, proposal: Any, what: str) -> str:
        commit = await transaction.submit()
        status = await commit.status()
        if not status.successful:
            raise RuntimeError(f"{what} invalidated by the peers: {status.code_name} "
                               f"(tx {status.transaction_id}, block {status.block_number})")
        return str(proposal.transaction_id)

    async def _read(self, function: str, *args: str) -> dict[str, Any] | None:
        """A read function's JSON answer, or None when the contract says there is no such record."""
        try:
            raw = await self.contract.evaluate(function, *args)
        except Exception as exc:  # the gateway's EvaluateError carries the contract's NotFound message
            if " not found" in str(exc) or "has no sustainability report" in str(exc):
                return None
            raise
        return json.loads(raw) if raw else None

    async def submit_anchor(self, record: BatchRecord) -> str:
        proposal = self.contract.new_proposal(self.anchor_function, record.batch_id, record.canonical())
        try:
            transaction = await proposal.endorse()
        except Exception as exc:  # the gateway's EndorseError carries the contract's one-line message
            if "already anchored with a different record" in str(exc):
                raise AnchorConflict(f"batch {record.batch_id} already anchored with another record") from exc
            if "is not the record hash of batch" in str(exc):  # the ledger's previous batch is not this store's
                raise AnchorConflict(f"batch {record.batch_id} does not follow the org's chain on the ledger: "
                                     f"its previous batch there is another record") from exc
            raise
        first_tx = _stored_tx_id(getattr(transaction, "result", None))
        if first_tx and first_tx != str(proposal.transaction_id):
            return first_tx  # already anchored with this very record: the first tx id, nothing to order
        return await self._order(transaction, proposal, f"anchor of {record.batch_id}")

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        """The record as the ledger holds it, with the record hash the contract computed and stored (verification
        compares both with the local record, so a ledger entry inconsistent with itself fails too)."""
        d = await self._read(self.read_function, batch_id)
        if d is None:
            return None
        rec = BatchRecord.from_dict(d.get("record", d))
        return {"batch_id": batch_id, "record": rec.to_dict(), "record_hash": d.get("record_hash", rec.record_hash()),
                "tx_id": d.get("tx_id", ""), "anchored_at": d.get("anchored_at"), "anchored_by": d.get("anchored_by")}

    async def chain_head(self, org: str) -> tuple[int, str] | None:
        """The org's last anchored batch on the ledger. The contract has no "latest" query, but an org's chain is
        contiguous from batch 1 (batches are anchored in order, and a new store continues after the head), so
        doubling then bisecting with ReadSensorBatch finds it in ~2 log2(n) reads (~26 for a day at 1 batch/s)."""
        async def at(n: int) -> dict[str, Any] | None:
            return await self._read(self.read_function, f"{org}:{n:010d}")

        first = await at(1)
        if first is None:
            return None
        lo, lo_entry, hi = 1, first, 2  # lo is anchored; hi is probed next
        while (entry := await at(hi)) is not None:
            lo, lo_entry, hi = hi, entry, hi * 2
        while hi - lo > 1:  # lo anchored, hi not
            mid = (lo + hi) // 2
            entry = await at(mid)
            if entry is None:
                hi = mid
            else:
                lo, lo_entry = mid, entry
        return lo, str(lo_entry["record_hash"])

    async def raise_alert(self, alert: AlertRecord) -> str:
        """RaiseAlert as a transaction whose id is fixed by the alert's stored nonce, so that resubmitting after a
        crash never raises it twice: committed already -> found by ReadAlert under that id; ordered but not yet
        committed -> the peers refuse the duplicate tx id (at endorsement or validation) and it appears shortly."""
        proposal = self.contract.new_proposal(RAISE_ALERT_FUNCTION, *alert.args(), nonce=alert.nonce)
        tx_id = str(proposal.transaction_id)
        if await self._read(READ_ALERT_FUNCTION, tx_id) is not None:
            return tx_id
        try:
            transaction = await proposal.endorse()
            return await self._order(transaction, proposal, f"alert {alert.key}")
        except Exception as exc:
            if "duplicate" not in str(exc).lower():  # "duplicate transaction found", DUPLICATE_TXID
                raise
        deadline = asyncio.get_running_loop().time() + DUPLICATE_WAIT_S
        while asyncio.get_running_loop().time() < deadline:
            if await self._read(READ_ALERT_FUNCTION, tx_id) is not None:
                return tx_id
            await asyncio.sleep(0.5)
        raise RuntimeError(f"alert {alert.key}: tx {tx_id} is known to the peers but not readable yet")

    async def report_sustainability(self, report: SustainabilityReport) -> str:
        proposal = self.contract.new_proposal(REPORT_FUNCTION, *report.args())
        try:
            return await self._commit(proposal, f"report {report.key}")
        except Exception as exc:
            if "has already reported period" not in str(exc):
                raise
        stored = await self._read(READ_REPORT_FUNCTION, report.org, report.period)
        if stored is None:
            raise RuntimeError(f"report {report.key}: the contract says it exists but cannot read it")
        return _same_report({"report": stored, "tx_id": stored.get("tx_id", "")}, report)


class OrgRoutedAnchorer:
    """Sends each org's batches to that org's anchorer.

    On the ledger a batch may only be anchored by an operator (or admin) of the org the record belongs to (the
    twins contract checks the caller's MSP), so a bridge serving several orgs holds one gateway identity per
    org. Batch ids start with the org (``BatchRecord.batch_id`` = ``org:number``), which routes reads too.
    """

    def __init__(self, by_org: dict[str, Anchorer], name: str = "fabric") -> None:
        self.by_org = by_org
        self.name = name

    def _for(self, org: str) -> Anchorer:
        a = self.by_org.get(org)
        if a is None:
            raise RuntimeError(f"no anchoring identity for org {org!r} (have: {', '.join(sorted(self.by_org)) or 'none'})")
        return a

    async def submit_anchor(self, record: BatchRecord) -> str:
        return await self._for(record.org).submit_anchor(record)

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        return await self._for(batch_id.rpartition(":")[0]).get_anchor(batch_id)

    async def raise_alert(self, alert: AlertRecord) -> str:
        return await self._for(alert.org).raise_alert(alert)

    async def report_sustainability(self, report: SustainabilityReport) -> str:
        return await self._for(report.org).report_sustainability(report)

    async def chain_head(self, org: str) -> tuple[int, str] | None:
        return await self._for(org).chain_head(org)


def connect_ledger(config: dict[str, Any]) -> tuple[OrgRoutedAnchorer, list[Any]]:
    """An ``OrgRoutedAnchorer`` of ``FabricAnchorer``s from a ledger config (call inside the event loop that will
    use it); returns it with the gateways to close (``await g.close()``). The config, as ``twinledger twins run``
    writes it::

        {"channel": "consortium", "chaincode": "twinledger",
         "orgs": {"plant1": {"endpoint": "127.0.0.1:17050", "msp_dir": ".../users/operator/msp",
                             "msp_id": "Plant1MSP", "tls_root_cert": ".../ca-cert.pem",
                             "tls_client_cert": ".../users/operator/tls/client.crt",
                             "tls_client_key": ".../users/operator/tls/client.key"}, ...}}
    """
    by_org: dict[str, Anchorer] = {}
    gateways: list[Any] = []
    for org, c in sorted(config["orgs"].items()):
        anchorer, gateway = FabricAnchorer.connect(
            c["endpoint"], msp_dir=c["msp_dir"], msp_id=c["msp_id"], tls_root_cert=c["tls_root_cert"],
            channel=config["channel"], chaincode=config["chaincode"], server_name_override=c.get("server_name_override"),
            tls_client_cert=c.get("tls_client_cert"), tls_client_key=c.get("tls_client_key"),
        )
        by_org[org] = anchorer
        gateways.append(gateway)
    return OrgRoutedAnchorer(by_org), gateways


def _stored_tx_id(result: Any) -> str | None:
    """The tx id in the contract's answer (the stored anchor), if the answer is one."""
    if not isinstance(result, (bytes, bytearray, str)) or not result:
        return None
    try:
        answer = json.loads(result)
    except ValueError:
        return None
    tx_id = answer.get("tx_id") if isinstance(answer, dict) else None
    return str(tx_id) if tx_id else None


async def resubmit_pending(store: Any, anchorer: Anchorer, now_us: int,
                           on_anchored: Callable[[BatchRecord, float], None] | None = None) -> int:
    """Anchor every sealed batch of ``store`` that has no anchor yet (after a crash); returns how many.
    ``on_anchored(record, seconds in the anchorer's call)`` follows each one (metrics)."""
    n = 0
    for rec in store.pending_batches():
        t0 = time.perf_counter()
        tx = await anchorer.submit_anchor(rec)
        took = time.perf_counter() - t0
        store.record_anchor(rec.batch_id, tx, now_us)
        n += 1
        if on_anchored is not None:
            on_anchored(rec, took)
        await asyncio.sleep(0)
    return n
