"""Where sealed batch records go: the ``Anchorer`` interface and its implementations.

- ``MemoryAnchorer``  in-process dict (unit tests).
- ``FileAnchorer``    one JSON line per anchored batch in an append-only file (integration tests, and local
                      runs until the Fabric peers exist). Several processes may share the file (flock).
- ``OrgRoutedAnchorer`` one anchorer per org (``connect_ledger``: one Fabric identity per org).
- ``FabricAnchorer``  submits the record to the ``twins`` contract of the TwinLedger chaincode through
                      ``network.gateway`` (``twins:AnchorSensorBatch(batch_id, record_json)``, chaincode/twins.py)
                      and reads it back with ``twins:ReadSensorBatch(batch_id)``.

Every implementation is idempotent per batch: submitting the same record twice returns the first tx id, and
a different record under an already-anchored batch id is refused (``AnchorConflict``), as the chaincode will.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from twins.anchoring.record import BatchRecord, canonical_json

# The twins contract's functions (chaincode/twins.py). The caller must be an operator or admin of record.org.
# args: batch_id, record canonical JSON; returns {"batch_id", "record", "record_hash", "tx_id", ...}.
ANCHOR_FUNCTION = "twins:AnchorSensorBatch"
READ_FUNCTION = "twins:ReadSensorBatch"  # args: batch_id; returns the same stored JSON


class AnchorConflict(RuntimeError):
    """A batch id already anchored with a different record."""


@runtime_checkable
class Anchorer(Protocol):
    name: str

    async def submit_anchor(self, record: BatchRecord) -> str:
        """Anchor the record; return the transaction id (or the file/memory equivalent)."""
        ...

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        """The anchored record as stored by the anchor side: ``{"record": {...}, "record_hash", "tx_id"}``."""
        ...


def _entry(record: BatchRecord, tx_id: str) -> dict[str, Any]:
    return {"batch_id": record.batch_id, "record": record.to_dict(), "record_hash": record.record_hash(), "tx_id": tx_id}


def _local_tx_id(kind: str, record: BatchRecord) -> str:
    return f"{kind}-" + hashlib.sha256(record.canonical()).hexdigest()[:40]


class MemoryAnchorer:
    name = "memory"

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}

    async def submit_anchor(self, record: BatchRecord) -> str:
        old = self.entries.get(record.batch_id)
        if old is not None:
            if old["record_hash"] != record.record_hash():
                raise AnchorConflict(f"batch {record.batch_id} already anchored with another record")
            return str(old["tx_id"])
        e = _entry(record, _local_tx_id("mem", record))
        self.entries[record.batch_id] = e
        return str(e["tx_id"])

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        return self.entries.get(batch_id)


class FileAnchorer:
    """JSON lines: ``{"batch_id", "record", "record_hash", "tx_id"}``; fsync'd before the tx id is returned."""

    name = "file"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.touch(exist_ok=True)
        self._cache: dict[str, dict[str, Any]] = {}
        self._offset = 0

    def _refresh(self) -> None:
        with open(self.path, "rb") as f:
            f.seek(self._offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # ignore a torn last line (a writer killed mid-append)
        for line in data[:end].splitlines():
            if line.strip():
                e = json.loads(line)
                self._cache.setdefault(e["batch_id"], e)
        self._offset += end

    def _submit_sync(self, record: BatchRecord) -> str:
        with open(self.path, "ab") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self._refresh()
                old = self._cache.get(record.batch_id)
                if old is not None:
                    if old["record_hash"] != record.record_hash():
                        raise AnchorConflict(f"batch {record.batch_id} already anchored with another record")
                    return str(old["tx_id"])
                e = _entry(record, _local_tx_id("file", record))
                f.write(canonical_json(e) + b"\n")
                f.flush()
                os.fsync(f.fileno())
                return str(e["tx_id"])
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    async def submit_anchor(self, record: BatchRecord) -> str:
        return self._submit_sync(record)

    def get_anchor_sync(self, batch_id: str) -> dict[str, Any] | None:
        self._refresh()
        return self._cache.get(batch_id)

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        return self.get_anchor_sync(batch_id)


class FabricAnchorer:
    """Anchors through the Fabric Gateway (``network.gateway.Contract``).

    ``contract`` is a ``network.gateway.Contract`` for the twins chaincode (any object with ``new_proposal``
    and ``evaluate`` of the same shape works, which is how it is unit-tested). The record travels as its
    canonical JSON; the chaincode stores it under its batch id, answers the same record again with the stored
    anchor, refuses a different one ("already anchored with a different record"), and emits
    ``SensorBatchAnchored``. ``contract`` must be bound to the chaincode without a contract name (the function
    names above are qualified). Not run against real peers yet: the Fabric binaries are not built here.
    """

    name = "fabric"

    def __init__(self, contract: Any, *, anchor_function: str = ANCHOR_FUNCTION, read_function: str = READ_FUNCTION) -> None:
        self.contract = contract
        self.anchor_function = anchor_function
        self.read_function = read_function

    @classmethod
    def connect(cls, endpoint: str, *, msp_dir: str | Path, msp_id: str, tls_root_cert: str | Path, channel: str,
                chaincode: str, server_name_override: str | None = None) -> tuple["FabricAnchorer", Any]:
        """Open a ``network.gateway.Gateway`` as the org identity in ``msp_dir`` (call inside the event loop that
        will use it); returns the anchorer and the gateway (close it with ``await gateway.close()``)."""
        from network.gateway import Gateway
        from network.identity import load_msp_identity

        identity, signer = load_msp_identity(msp_dir, msp_id)
        gateway = Gateway.connect(endpoint, identity=identity, signer=signer, tls_root_cert_pem=Path(tls_root_cert),
                                  server_name_override=server_name_override)
        return cls(gateway.network(channel).contract(chaincode)), gateway

    async def submit_anchor(self, record: BatchRecord) -> str:
        proposal = self.contract.new_proposal(self.anchor_function, record.batch_id, record.canonical())
        try:
            transaction = await proposal.endorse()
        except Exception as exc:  # the gateway's EndorseError carries the contract's one-line message
            if "already anchored with a different record" in str(exc):
                raise AnchorConflict(f"batch {record.batch_id} already anchored with another record") from exc
            raise
        first_tx = _stored_tx_id(getattr(transaction, "result", None))
        if first_tx and first_tx != str(proposal.transaction_id):
            return first_tx  # already anchored with this very record: the first tx id, nothing to order
        commit = await transaction.submit()
        status = await commit.status()
        if not status.successful:
            raise RuntimeError(
                f"anchor of {record.batch_id} invalidated by the peers: {status.code_name} "
                f"(tx {status.transaction_id}, block {status.block_number})"
            )
        return str(proposal.transaction_id)

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        raw = await self.contract.evaluate(self.read_function, batch_id)
        if not raw:
            return None
        d = json.loads(raw)
        record = d.get("record", d)
        rec = BatchRecord.from_dict(record)
        return {"batch_id": batch_id, "record": rec.to_dict(), "record_hash": rec.record_hash(), "tx_id": d.get("tx_id", "")}


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


def connect_ledger(config: dict[str, Any]) -> tuple[OrgRoutedAnchorer, list[Any]]:
    """An ``OrgRoutedAnchorer`` of ``FabricAnchorer``s from a ledger config (call inside the event loop that will
    use it); returns it with the gateways to close (``await g.close()``). The config, as ``twinledger twins run``
    writes it::

        {"channel": "consortium", "chaincode": "twinledger",
         "orgs": {"plant1": {"endpoint": "127.0.0.1:17050", "msp_dir": ".../users/operator/msp",
                             "msp_id": "Plant1MSP", "tls_root_cert": ".../ca-cert.pem"}, ...}}
    """
    by_org: dict[str, Anchorer] = {}
    gateways: list[Any] = []
    for org, c in sorted(config["orgs"].items()):
        anchorer, gateway = FabricAnchorer.connect(
            c["endpoint"], msp_dir=c["msp_dir"], msp_id=c["msp_id"], tls_root_cert=c["tls_root_cert"],
            channel=config["channel"], chaincode=config["chaincode"], server_name_override=c.get("server_name_override"),
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


async def resubmit_pending(store: Any, anchorer: Anchorer, now_us: int) -> int:
    """Anchor every sealed batch of ``store`` that has no anchor yet (after a crash); returns how many."""
    n = 0
    for rec in store.pending_batches():
        tx = await anchorer.submit_anchor(rec)
        store.record_anchor(rec.batch_id, tx, now_us)
        n += 1
        await asyncio.sleep(0)
    return n
