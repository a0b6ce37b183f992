"""Twin alerts as ledger records: one ``twins:RaiseAlert`` per alert *episode*, exactly once, across restarts.

``twins.alerts.twin_alerts`` says which conditions hold now, recomputed from every snapshot. The ledger must not
get one alert per reading (a worn tool stays worn for many products), so ``AlertTracker`` turns conditions into
episodes per (asset, kind): an episode opens when the condition first holds and closes once it has not held for
``clear_after_s`` seconds (hysteresis: a score wobbling around its threshold is one episode, not dozens). Only an
opening is raised on the ledger.

Exactly once, with the store as outbox: the episode (with a random nonce) is written to the store before it is
submitted. The nonce fixes the Fabric transaction id (SHA-256 of nonce and the submitter's certificate), and the
contract uses that tx id as the alert's id. So after a crash the bridge resubmits the very same transaction: if
it had committed, the anchorer finds the alert under that id (``ReadAlert``) or the peers refuse the duplicate
tx id, and nothing is raised twice. Open episodes are restored from the store at start, so a condition that
still holds after a restart is not a new alert either.

An episode is one model's claim: when another model takes over while the condition holds (the twins swapped in a new
federated round, ``twins.model.ledger_watch``), the episode of the old model ends and the new model's opens, so every
alert on the ledger names the model (and its hash) that raised it. Rounds are minutes apart, so this adds at most one
alert per ongoing condition per round.

Conditions are checked each time an asset's sequence number is complete (once per product of a machine), not
only at sealing: a worn tool is often replaced within the second. The alert's detail names the reading it was first seen
at and the batch that reading is anchored in (or, for a condition seen at sealing, the batch whose record holds
the hash of the twin state it was computed from), so every ledger alert can be traced to anchored data.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from twins.alerts import twin_alerts
from twins.anchoring.record import BatchRecord
from twins.anchoring.store import ReadingStore

#: How long a condition must stay away before its episode ends (a later recurrence is a new alert).
CLEAR_AFTER_S = 30.0
#: NEWS2's maximum aggregate score: a patient's alert score on the ledger is NEWS2-like / 20 (0..1, as the contract
#: wants); a machine's is its P(failure) as is.
NEWS2_MAX = 20.0
NONCE_BYTES = 24  # Fabric's nonce size (network.gateway_proposal.NONCE_SIZE)


@dataclass(frozen=True)
class AlertRecord:
    """One alert episode as ``twins:RaiseAlert`` takes it: asset, kind, score ("0.xxxxxx"), detail (JSON object)."""

    key: str  # "asset/kind/episode": the bridge's own id of the episode
    org: str
    asset: str
    kind: str
    episode: int
    score: str
    detail: dict[str, Any] = field(default_factory=dict)
    nonce: bytes = b""

    def args(self) -> tuple[str, str, str, str]:
        return self.asset, self.kind, self.score, json.dumps(self.detail, sort_keys=True, separators=(",", ":"))

    @staticmethod
    def from_row(row: dict[str, Any]) -> "AlertRecord":
        return AlertRecord(row["key"], row["org"], row["asset"], row["kind"], int(row["episode"]), row["score"],
                           row["detail"], row["nonce"])


def score_text(alert: dict[str, Any]) -> str:
    """The rule's severity as the contract's score: a decimal in 0..1 with at most 9 decimals."""
    value = float(alert["value"]) / (NEWS2_MAX if alert["kind"] == "news2" else 1.0)
    return f"{min(1.0, max(0.0, value)):.6f}"


class AlertTracker:
    """Episodes of the alert conditions of the twins; ``observe`` per org at each sealing."""

    def __init__(self, store: ReadingStore, *, clear_after_s: float = CLEAR_AFTER_S,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clear_after_s = clear_after_s
        self.clock = clock
        open_rows = store.alerts(open_only=True)
        self.open: dict[tuple[str, str], str] = {(a["asset"], a["kind"]): a["key"] for a in open_rows}
        # the model that opened each open episode (an episode is one model's claim, see observe)
        self.open_model: dict[tuple[str, str], Any] = {(a["asset"], a["kind"]): a["detail"].get("model") for a in open_rows}
        self.episodes = store.last_episodes()
        self._clear_since: dict[tuple[str, str], float] = {}

    def observe(self, org: str, snapshots: dict[str, dict[str, Any]], sealed: Iterable[BatchRecord] = (),
                seen: dict[tuple[str, str], dict[str, Any]] | None = None) -> list[AlertRecord]:
        """One sealing of the org: ``snapshots`` of exactly the twin states that ``sealed`` hashed, and ``seen``, the
        conditions that held at some reading since the previous sealing (``twin_alerts`` entries with a ``reading``
        {"prop", "seq"}: a tool in its last minutes may be replaced between two sealings). Opens episodes for new
        conditions (written to the store; returned, to be raised) and closes the ones cleared long enough."""
        now = self.clock()
        sealed = list(sealed)
        active = {(a["asset"], a["kind"]): a for a in twin_alerts(snapshots)}
        active.update(seen or {})  # the first reading a condition was seen at is when it began
        opened = []
        for cond, alert in sorted(active.items()):
            self._clear_since.pop(cond, None)
            if cond in self.open:
                if self.open_model.get(cond) == alert.get("label"):
                    continue
                # another model now asserts the condition (a new federated round was swapped in): the alert on the
                # ledger names the model that made it, so the old model's episode ends and this one opens its own
                self.store.close_alert(self.open.pop(cond), int(now * 1e6))
            episode = self.episodes.get(cond, 0) + 1
            asset, kind = cond
            detail = {"level": alert["level"], "value": alert["value"], "text": alert["detail"],
                      "model": alert.get("label"), "episode": episode}
            if alert.get("model_sha256"):  # the federated model's hash as the ledger committed it (the contract checks it)
                detail["model_sha256"] = alert["model_sha256"]
            detail.update(_evidence(self.store, asset, alert.get("reading"), sealed))
            rec = AlertRecord(f"{asset}/{kind}/{episode}", org, asset, kind, episode, score_text(alert), detail,
                              os.urandom(NONCE_BYTES))
            self.store.open_alert(rec.key, org, asset, kind, episode, rec.score, json.dumps(detail, sort_keys=True),
                                  rec.nonce, int(now * 1e6))
            self.open[cond] = rec.key
            self.open_model[cond] = alert.get("label")
            self.episodes[cond] = episode
            opened.append(rec)
        for cond in [c for c in self.open if c[0] in snapshots and c not in active]:
            since = self._clear_since.setdefault(cond, now)
            if now - since >= self.clear_after_s:
                self.store.close_alert(self.open.pop(cond), int(now * 1e6))
                self.open_model.pop(cond, None)
                del self._clear_since[cond]
        return opened

    def pending(self) -> list[AlertRecord]:
        """Episodes written but not yet on the ledger (a crash between the two): raised again at start."""
        return [AlertRecord.from_row(r) for r in self.store.alerts(pending_only=True)]


def _evidence(store: ReadingStore, asset: str, reading: dict[str, Any] | None,
              sealed: list[BatchRecord]) -> dict[str, Any]:
    """Where the alert's grounds are anchored: the reading it was first seen at and its batch (``twinledger verify
    reading ASSET SEQ --prop PROP`` proves it), else the batch holding the twin state hash it was computed from."""
    if reading is not None:
        out: dict[str, Any] = {"reading": {"prop": reading["prop"], "seq": reading["seq"]}}
        for rec in sealed:
            rng = rec.seq_range(asset, reading["prop"])
            if rng and rng[0] <= reading["seq"] <= rng[1]:
                return dict(out, batch_id=rec.batch_id)
        # sealed with the interval before (it was the last reading of its product when that sealing came)
        stored = store.find_readings(asset, reading["seq"], reading["prop"])
        return dict(out, batch_id=stored[0].batch_id) if stored else out
    for rec in sealed:
        if asset in rec.twin_state_hashes:
            return {"batch_id": rec.batch_id, "twin_state_hash": rec.twin_state_hashes[asset]}
    return {}
