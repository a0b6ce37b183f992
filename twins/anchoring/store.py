"""Append-only local store of readings, sealed batches (with their Merkle trees), twin states and anchors.

SQLite in WAL mode (readers never block the writer; a crash loses at most the transaction in flight).
Append-only is enforced by the database itself: triggers abort every UPDATE and DELETE. Editing the file
by other means (or dropping the triggers) is what ``verify_reading`` exists to detect.

A reading is unique twice over, by the database's own keys: by ``(asset, prop, source_ts_us)``, its identity (the
OPC-UA source time, see ``twins.readings``), and by ``(asset, prop, seq)``, the bridge's ordinal. So no reading can
be stored twice, even by a bridge that would take one value twice.

A batch is written in ONE transaction with all of its readings, its tree and the twin states it
anchors, so the store never holds a reading that is not in a sealed batch. The anchor (ledger tx id)
is inserted afterwards into ``anchors``; a batch without an anchors row is "pending" and is resubmitted
on the next start (outbox pattern).

Alerts follow the same outbox pattern (``twins.anchoring.alert_outbox``): an alert episode is written to
``alerts`` (with the nonce that fixes its ledger transaction id) before it is submitted, its tx id to
``alert_anchors`` after the commit, and its end to ``alert_closes``. Sustainability reports land in
``sustainability_reports`` once on the ledger (one per org and period, as the contract allows).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from twins.anchoring.merkle import pack_levels
from twins.anchoring.record import BatchRecord
from twins.readings import Reading

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, org TEXT NOT NULL, batch_no INTEGER NOT NULL,
    record_json TEXT NOT NULL, record_hash TEXT NOT NULL, root BLOB NOT NULL, count INTEGER NOT NULL,
    tree BLOB NOT NULL, UNIQUE (org, batch_no));
CREATE TABLE IF NOT EXISTS readings (
    asset TEXT NOT NULL, prop TEXT NOT NULL, seq INTEGER NOT NULL, org TEXT NOT NULL,
    source_ts_us INTEGER NOT NULL, value REAL /* NULL: no value (a Bad or Uncertain reading without one) */,
    batch_id TEXT NOT NULL, leaf_index INTEGER NOT NULL, status INTEGER NOT NULL,
    PRIMARY KEY (asset, prop, seq));
CREATE INDEX IF NOT EXISTS readings_by_asset_seq ON readings (asset, seq);
CREATE UNIQUE INDEX IF NOT EXISTS readings_by_time ON readings (asset, prop, source_ts_us);
CREATE TABLE IF NOT EXISTS twin_states (
    batch_id TEXT NOT NULL, asset TEXT NOT NULL, state_json TEXT NOT NULL, state_hash TEXT NOT NULL,
    PRIMARY KEY (batch_id, asset));
CREATE TABLE IF NOT EXISTS anchors (
    batch_id TEXT PRIMARY KEY, tx_id TEXT NOT NULL, anchored_at_us INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS twin_states_by_asset ON twin_states (asset, batch_id);
CREATE INDEX IF NOT EXISTS batches_by_sealed ON batches (org, json_extract(record_json, '$.sealed_at_us'));
CREATE TABLE IF NOT EXISTS alerts (
    alert_key TEXT PRIMARY KEY, org TEXT NOT NULL, asset TEXT NOT NULL, kind TEXT NOT NULL, episode INTEGER NOT NULL,
    score TEXT NOT NULL, detail_json TEXT NOT NULL, nonce BLOB NOT NULL, opened_at_us INTEGER NOT NULL,
    UNIQUE (asset, kind, episode));
CREATE TABLE IF NOT EXISTS alert_anchors (
    alert_key TEXT PRIMARY KEY, tx_id TEXT NOT NULL, anchored_at_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS alert_closes (
    alert_key TEXT PRIMARY KEY, closed_at_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS sustainability_reports (
    org TEXT NOT NULL, period TEXT NOT NULL, metrics_json TEXT NOT NULL, tx_id TEXT NOT NULL,
    reported_at_us INTEGER NOT NULL, PRIMARY KEY (org, period));
"""
_TABLES = ("batches", "readings", "twin_states", "anchors", "alerts", "alert_anchors", "alert_closes",
           "sustainability_reports")


def _triggers() -> str:
    out = []
    for t in _TABLES:
        for op in ("UPDATE", "DELETE"):
            out.append(
                f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
                f"BEGIN SELECT RAISE(ABORT, '{t} is append-only'); END;"
            )
    return "\n".join(out)


def _db_value(value: float) -> float | None:
    return value if value == value else None  # NaN (no value) as NULL: SQLite has no NaN


def _reading(org: str, asset: str, prop: str, seq: int, ts: int, value: float | None, status: int) -> Reading:
    return Reading(org, asset, prop, int(seq), int(ts), float("nan") if value is None else float(value), int(status))


@dataclass(frozen=True)
class StoredReading:
    reading: Reading
    batch_id: str
    leaf_index: int


@dataclass(frozen=True)
class StoredBatch:
    record: BatchRecord
    record_hash: str
    root: bytes
    count: int
    tree: bytes


class ReadingStore:
    """Thread-safe (one connection guarded by a lock); open one per process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        cols = [r[1] for r in self._db.execute("PRAGMA table_info(readings)")]
        if cols and "status" not in cols:
            self._db.close()
            raise ValueError(f"{self.path} holds readings of the earlier leaf format TLR1 (sequence numbers received "
                             "from the simulators, no status); readings are now identified by their source time "
                             "(TLR2): start a new twins state (another --home)")
        self._db.executescript(_SCHEMA + _triggers())

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- writing -------------------------------------------------------------------------------
    def append_batch(
        self,
        record: BatchRecord,
        readings: Sequence[Reading],
        levels: Sequence[Sequence[bytes]],
        twin_states: dict[str, tuple[str, str]],
    ) -> None:
        """Write a sealed batch atomically. ``twin_states``: asset → (state_json, state_hash)."""
        bid = record.batch_id
        rows = [(r.asset, r.prop, r.seq, r.org, r.source_ts_us, _db_value(r.value), bid, i, r.status)
                for i, r in enumerate(readings)]
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute(
                    "INSERT INTO batches VALUES (?,?,?,?,?,?,?,?)",
                    (bid, record.org, record.batch_no, record.canonical().decode(), record.record_hash(),
                     levels[-1][0], record.count, pack_levels(levels)),
                )
                db.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?,?,?,?)", rows)
                db.executemany(
                    "INSERT INTO twin_states VALUES (?,?,?,?)",
                    [(bid, a, sj, sh) for a, (sj, sh) in sorted(twin_states.items())],
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def record_anchor(self, batch_id: str, tx_id: str, anchored_at_us: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO anchors VALUES (?,?,?)", (batch_id, tx_id, anchored_at_us))

    def open_alert(self, key: str, org: str, asset: str, kind: str, episode: int, score: str, detail_json: str,
                   nonce: bytes, at_us: int) -> None:
        with self._lock:
            self._db.execute("INSERT INTO alerts VALUES (?,?,?,?,?,?,?,?,?)",
                             (key, org, asset, kind, episode, score, detail_json, nonce, at_us))

    def record_alert_anchor(self, key: str, tx_id: str, at_us: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO alert_anchors VALUES (?,?,?)", (key, tx_id, at_us))

    def close_alert(self, key: str, at_us: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO alert_closes VALUES (?,?)", (key, at_us))

    def record_report(self, org: str, period: str, metrics_json: str, tx_id: str, at_us: int) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO sustainability_reports VALUES (?,?,?,?,?)",
                             (org, period, metrics_json, tx_id, at_us))

    # --- reading -------------------------------------------------------------------------------
    def last_positions(self) -> dict[tuple[str, str], tuple[int, int]]:
        """(asset, prop) → (last stored seq, its source_ts_us): where a restarted bridge resumes."""
        with self._lock:
            rows = self._db.execute(
                "SELECT asset, prop, MAX(seq), source_ts_us FROM readings GROUP BY asset, prop"
            ).fetchall()
        return {(a, p): (int(s), int(t)) for a, p, s, t in rows}

    def last_batch(self, org: str) -> tuple[int, str] | None:
        """(batch_no, record_hash) of the org's latest batch."""
        with self._lock:
            row = self._db.execute(
                "SELECT batch_no, record_hash FROM batches WHERE org=? ORDER BY batch_no DESC LIMIT 1", (org,)
            ).fetchone()
        return (int(row[0]), row[1]) if row else None

    def first_batch_no(self, org: str) -> int | None:
        """The org's first batch number in this store (not 1 when the store joined an existing chain)."""
        with self._lock:
            row = self._db.execute("SELECT MIN(batch_no) FROM batches WHERE org=?", (org,)).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def pending_batches(self) -> list[BatchRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT record_json FROM batches b WHERE NOT EXISTS "
                "(SELECT 1 FROM anchors a WHERE a.batch_id = b.batch_id) ORDER BY org, batch_no"
            ).fetchall()
        return [BatchRecord.from_dict(json.loads(r[0])) for r in rows]

    def anchor_of(self, batch_id: str) -> tuple[str, int] | None:
        with self._lock:
            row = self._db.execute("SELECT tx_id, anchored_at_us FROM anchors WHERE batch_id=?", (batch_id,)).fetchone()
        return (row[0], int(row[1])) if row else None

    def recent_anchors(self, limit: int = 5) -> list[dict]:
        """The latest anchored batches, newest first: batch id, org, count, root, tx id, anchored time."""
        with self._lock:
            rows = self._db.execute(
                "SELECT b.batch_id, b.org, b.batch_no, b.count, lower(hex(b.root)), a.tx_id, a.anchored_at_us "
                "FROM anchors a JOIN batches b ON b.batch_id = a.batch_id "
                "ORDER BY a.anchored_at_us DESC, b.batch_id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [{"batch_id": bid, "org": org, "batch_no": int(no), "count": int(n), "merkle_root": root,
                 "tx_id": tx, "anchored_at_us": int(at)} for bid, org, no, n, root, tx, at in rows]

    def latest_twin_states(self) -> dict[str, str]:
        """asset → state JSON of its most recent sealed batch."""
        with self._lock:
            rows = self._db.execute(
                "SELECT t.asset, t.state_json FROM twin_states t JOIN batches b ON b.batch_id = t.batch_id "
                "ORDER BY b.org, b.batch_no"
            ).fetchall()
        out: dict[str, str] = {}
        for asset, sj in rows:
            out[asset] = sj
        return out

    def alerts(self, *, pending_only: bool = False, open_only: bool = False) -> list[dict]:
        """Alert episodes, oldest first: key, org, asset, kind, episode, score, detail (parsed), nonce, opened time,
        ledger tx id and time (None while pending), closed time (None while open). Episodes are few (one per
        condition, not per reading), so callers slice the list themselves."""
        q = ("SELECT a.alert_key, a.org, a.asset, a.kind, a.episode, a.score, a.detail_json, a.nonce, a.opened_at_us, "
             "n.tx_id, n.anchored_at_us, c.closed_at_us FROM alerts a "
             "LEFT JOIN alert_anchors n ON n.alert_key = a.alert_key LEFT JOIN alert_closes c ON c.alert_key = a.alert_key")
        where = (["n.tx_id IS NULL"] if pending_only else []) + (["c.closed_at_us IS NULL"] if open_only else [])
        q += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY a.opened_at_us, a.alert_key"
        with self._lock:
            rows = self._db.execute(q).fetchall()
        keys = ("key", "org", "asset", "kind", "episode", "score", "detail", "nonce", "opened_at_us", "tx_id",
                "anchored_at_us", "closed_at_us")
        out = []
        for row in rows:
            d = dict(zip(keys, row))
            d["detail"], d["nonce"] = json.loads(d["detail"]), bytes(d["nonce"])
            out.append(d)
        return out

    def last_episodes(self) -> dict[tuple[str, str], int]:
        """(asset, kind) -> the number of its latest alert episode."""
        with self._lock:
            rows = self._db.execute("SELECT asset, kind, MAX(episode) FROM alerts GROUP BY asset, kind").fetchall()
        return {(a, k): int(n) for a, k, n in rows}

    def reports(self) -> dict[tuple[str, str], dict]:
        """(org, period) -> {"metrics", "tx_id", "reported_at_us"} of the reports on the ledger."""
        with self._lock:
            rows = self._db.execute("SELECT org, period, metrics_json, tx_id, reported_at_us FROM sustainability_reports").fetchall()
        return {(o, p): {"metrics": json.loads(m), "tx_id": t, "reported_at_us": int(at)} for o, p, m, t, at in rows}

    def sealed_span(self, org: str) -> tuple[int, int] | None:
        """(first, last) sealed_at_us of the org's batches."""
        ends = []
        for order in ("ASC", "DESC"):  # one indexed look-up each (MIN and MAX together would scan)
            with self._lock:
                row = self._db.execute(
                    "SELECT json_extract(record_json, '$.sealed_at_us') FROM batches WHERE org=? "
                    f"ORDER BY json_extract(record_json, '$.sealed_at_us') {order} LIMIT 1", (org,)).fetchone()
            if row is None:
                return None
            ends.append(int(row[0]))
        return ends[0], ends[1]

    def last_batch_before(self, org: str, sealed_before_us: int) -> int | None:
        """batch_no of the org's last batch sealed before the time (one indexed look-up)."""
        with self._lock:
            row = self._db.execute(
                "SELECT batch_no FROM batches WHERE org=? AND json_extract(record_json, '$.sealed_at_us') < ? "
                "ORDER BY json_extract(record_json, '$.sealed_at_us') DESC LIMIT 1", (org, sealed_before_us)).fetchone()
        return int(row[0]) if row else None

    def twin_state_at(self, asset: str, batch_id: str) -> str | None:
        """The asset's state JSON as sealed with batch_id or, failing that, its latest earlier batch of the same org
        (batch ids are zero-padded, so their text order is their number order)."""
        org = batch_id.rpartition(":")[0]
        with self._lock:
            row = self._db.execute(
                "SELECT state_json FROM twin_states WHERE asset=? AND batch_id<=? AND batch_id>=? "
                "ORDER BY batch_id DESC LIMIT 1", (asset, batch_id, f"{org}:")).fetchone()
        return row[0] if row else None

    def find_readings(self, asset: str, seq: int, prop: str | None = None) -> list[StoredReading]:
        q = ("SELECT org, asset, prop, seq, source_ts_us, value, status, batch_id, leaf_index FROM readings "
             "WHERE asset=? AND seq=?")
        args: tuple = (asset, seq)
        if prop is not None:
            q += " AND prop=?"
            args += (prop,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY prop", args).fetchall()
        return [
            StoredReading(_reading(o, a, p, s, t, v, st), b, int(i)) for o, a, p, s, t, v, st, b, i in rows
        ]

    def batch(self, batch_id: str) -> StoredBatch | None:
        with self._lock:
            row = self._db.execute(
                "SELECT record_json, record_hash, root, count, tree FROM batches WHERE batch_id=?", (batch_id,)
            ).fetchone()
        if row is None:
            return None
        return StoredBatch(BatchRecord.from_dict(json.loads(row[0])), row[1], bytes(row[2]), int(row[3]), bytes(row[4]))

    def batch_ids(self) -> list[str]:
        """Every sealed batch, by org and number."""
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT batch_id FROM batches ORDER BY org, batch_no")]

    def batch_readings(self, batch_id: str) -> list[tuple[int, Reading]]:
        """(leaf index, reading) of every reading stored for ``batch_id``, in leaf order."""
        with self._lock:
            rows = self._db.execute("SELECT leaf_index, org, asset, prop, seq, source_ts_us, value, status FROM readings "
                                    "WHERE batch_id=? ORDER BY leaf_index", (batch_id,)).fetchall()
        return [(int(i), _reading(o, a, p, s, t, v, st)) for i, o, a, p, s, t, v, st in rows]

    def iter_readings(self, asset: str | None = None) -> Iterable[Reading]:
        q = "SELECT org, asset, prop, seq, source_ts_us, value, status FROM readings"
        args: tuple = ()
        if asset is not None:
            q += " WHERE asset=?"
            args = (asset,)
        with self._lock:
            rows = self._db.execute(q + " ORDER BY asset, prop, seq", args).fetchall()
        return [_reading(*row) for row in rows]

    def count(self, table: str = "readings") -> int:
        if table not in _TABLES:
            raise ValueError(table)
        with self._lock:
            return int(self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])
