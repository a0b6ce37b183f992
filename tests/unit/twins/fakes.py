"""An in-memory anchorer for unit tests of the twins in process (the product anchors on the ledger only).

It keeps the rules of the twins contract that the runtime relies on: the same record under a batch id again
answers the first tx id, another record under it is refused (``AnchorConflict``), a record whose previous batch
is anchored must carry that batch's record hash, an alert is raised once per key and a report once per
(org, period). ``chain_head`` answers the org's last batch, as ``FabricAnchorer.chain_head`` does.
"""

from __future__ import annotations

import hashlib
from typing import Any

from twins.anchoring.alert_outbox import AlertRecord
from twins.anchoring.anchorer import AnchorConflict, _same_report
from twins.anchoring.record import BatchRecord
from twins.anchoring.sustainability_report import SustainabilityReport


def _id(kind: str, *parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return f"{kind}-" + h.hexdigest()[:40]


class MemoryAnchorer:
    name = "memory"

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, Any]] = {}
        self.alerts: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[str, Any]] = {}

    async def submit_anchor(self, record: BatchRecord) -> str:
        old = self.entries.get(record.batch_id)
        if old is not None:
            if old["record_hash"] != record.record_hash():
                raise AnchorConflict(f"batch {record.batch_id} already anchored with another record")
            return str(old["tx_id"])
        prev = self.entries.get(f"{record.org}:{record.batch_no - 1:010d}")
        if prev is not None and prev["record_hash"] != record.prev_record_hash:
            raise AnchorConflict(f"batch {record.batch_id} does not follow the org's chain")
        self.entries[record.batch_id] = {"batch_id": record.batch_id, "record": record.to_dict(),
                                         "record_hash": record.record_hash(),
                                         "tx_id": _id("mem", record.canonical())}
        return str(self.entries[record.batch_id]["tx_id"])

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        return self.entries.get(batch_id)

    async def raise_alert(self, alert: AlertRecord) -> str:
        e = self.alerts.setdefault(alert.key, {
            "alert_key": alert.key, "tx_id": _id("mem-alert", alert.key, alert.nonce),
            "alert": {"org": alert.org, "asset": alert.asset, "kind": alert.kind, "score": alert.score,
                      "detail": alert.detail}})
        return str(e["tx_id"])

    async def report_sustainability(self, report: SustainabilityReport) -> str:
        old = self.reports.get(report.key)
        if old is not None:
            return _same_report(old, report)
        self.reports[report.key] = {"report_key": report.key, "tx_id": _id("mem-report", report.key, report.metrics_json()),
                                    "report": {"org": report.org, "period": report.period, "metrics": report.metrics}}
        return str(self.reports[report.key]["tx_id"])

    async def chain_head(self, org: str) -> tuple[int, str] | None:
        mine = [e for e in self.entries.values() if e["record"]["org"] == org]
        if not mine:
            return None
        last = max(mine, key=lambda e: e["record"]["batch_no"])
        return int(last["record"]["batch_no"]), str(last["record_hash"])
