"""Server-side history for the simulators: SQLite (WAL), written BEFORE a value is published.

asyncua's own history (``historize_node_data_change``) records values through an internal subscription,
after they were published, and its in-memory store is lost with the process. Here the simulator writes
every sample of a tick into this store and commits (WAL, synchronous=NORMAL: durable against a killed
process) *before* writing the values to the address space. Hence:

- every value a client can ever have seen is in the history, also after a SIGKILL;
- a restarted simulator reads its last sample (and generator state) per variable back from the same file and
  continues after it, with a later source timestamp — never publishing two values under one timestamp;
- the HistoryRead service (``read_raw_history``) is answered from this file, so the bridge reads back any
  gap, including one that spans a simulator restart.

Retention: samples older than ``retention_s`` (default 24 h) are pruned every minute, except each variable's
newest one (it carries the sequence number to continue from).

It plugs into asyncua as the ``HistoryStorageInterface`` of the server's history manager; values are returned
in time order (``ReadRawModifiedDetails`` start ≤ end) as the variable's standard scalar type (``types``: Double,
Float, UInt16, Int32, Boolean, …, the simulator's declared type of each variable). Continuation points are the next
value's source timestamp, which is strictly increasing per variable.

``seq`` in the file is the simulator's own count of a variable's samples (1, 2, 3, …): it is never published (a
standard server numbers nothing), but it lets the tests and ``bench.faults_twins`` compare what was published with
what the bridge stored, whose ordinals count the same values in the same (time) order.
"""

from __future__ import annotations

import json
import sqlite3
import struct
import time
from datetime import datetime, timedelta
from pathlib import Path

from asyncua import ua
from asyncua.server.history import HistoryStorageInterface

from twins.readings import dt_to_us, us_to_dt

_WIN_EPOCH_US = dt_to_us(ua.get_win_epoch())
_MAX_US = 2**62


def read_published(path: str | Path) -> dict[tuple[str, str], dict[int, tuple[int, float]]]:
    """Every sample a simulator has published (each is committed here before it is published): (asset, prop) →
    seq → (source timestamp µs, value). What a client must end up with; readable while the simulator runs (WAL)."""
    db = sqlite3.connect(str(path))
    try:
        out: dict[tuple[str, str], dict[int, tuple[int, float]]] = {}
        for var, seq, ts_us, value in db.execute("SELECT var, seq, ts_us, value FROM samples"):
            asset, prop = var.rsplit(".", 1)
            out.setdefault((asset, prop), {})[int(seq)] = (int(ts_us), float(value))
        return out
    finally:
        db.close()


class SampleDataValue(ua.DataValue):
    """A ``DataValue`` that is never mutated after it is created, so copying it is returning it.

    asyncua's server deep-copies every written value once per monitored item (``MonitoredItemValues``) to keep
    the previous value for change detection; that copy was the simulator's largest cost at 10k values/s
    (cProfile). Our samples are immutable by construction (built here, written once, never modified), so
    sharing them is safe.
    """

    def __deepcopy__(self, memo: dict) -> "SampleDataValue":
        return self

    def __copy__(self) -> "SampleDataValue":
        return self


#: Python value of each standard scalar type the simulators publish (from the float their history stores).
_PY = {ua.VariantType.Boolean: lambda v: v >= 0.5, ua.VariantType.Double: float, ua.VariantType.Float: float}
for _t in (ua.VariantType.SByte, ua.VariantType.Byte, ua.VariantType.Int16, ua.VariantType.UInt16,
           ua.VariantType.Int32, ua.VariantType.UInt32, ua.VariantType.Int64, ua.VariantType.UInt64):
    _PY[_t] = lambda v: int(round(v))


def as_float32(value: float) -> float:
    """The value a Float variable really holds (what a client receives and the history must return)."""
    return struct.unpack(">f", struct.pack(">f", value))[0]


def sample_datavalue(vtype: ua.VariantType, value: float, ts_us: int, server_ts_us: int | None = None,
                     source_dt: datetime | None = None, server_dt: datetime | None = None) -> ua.DataValue:
    """The wire form of one sample: a standard scalar of ``vtype``, status Good, the sample time as SourceTimestamp.

    ``source_dt``/``server_dt`` may pass the timestamps already converted (shared by a tick's samples)."""
    return SampleDataValue(
        ua.Variant(_PY[vtype](value), vtype),
        SourceTimestamp=source_dt or us_to_dt(ts_us),
        ServerTimestamp=server_dt or us_to_dt(server_ts_us if server_ts_us is not None else ts_us),
    )


def no_data_datavalue(vtype: ua.VariantType) -> ua.DataValue:
    """A variable that never had a sample: BadWaitingForInitialData (its value only gives the type)."""
    return ua.DataValue(ua.Variant(_PY[vtype](0.0), vtype),
                        StatusCode=ua.StatusCode(ua.StatusCodes.BadWaitingForInitialData))


class SeqHistoryStore(HistoryStorageInterface):
    def __init__(self, path: str | Path, retention_s: float = 86400.0, max_history_data_response_size: int = 10000) -> None:
        super().__init__(max_history_data_response_size)
        self.retention_s = retention_s
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(
            "CREATE TABLE IF NOT EXISTS samples (var TEXT NOT NULL /* node id string identifier: asset.prop */, seq INTEGER NOT NULL, ts_us INTEGER NOT NULL,"
            " value REAL NOT NULL, server_ts_us INTEGER NOT NULL, PRIMARY KEY (var, seq)) WITHOUT ROWID;"
            "CREATE INDEX IF NOT EXISTS samples_ts ON samples (var, ts_us);"
            "CREATE TABLE IF NOT EXISTS sim_state (asset TEXT PRIMARY KEY, state TEXT NOT NULL);"
        )
        self._last_prune = time.monotonic()
        self.closed = False
        self.rows: int | None = None  # samples held; counted on demand (count_rows), then kept current
        self.reads = 0  # HistoryRead requests served (per node and page)
        self.types: dict[str, ua.VariantType] = {}  # var -> its scalar type (set by the server; Double if unknown)

    def count_rows(self) -> int:
        """Count the samples once (a scan: done at start, for the metrics); append and prune keep it current."""
        self.rows = int(self.db.execute("SELECT COUNT(*) FROM samples").fetchone()[0])
        return self.rows

    # --- simulator side ------------------------------------------------------------------------
    def last_positions(self) -> dict[str, tuple[int, int, float]]:
        """var → (last seq, its ts_us, its value)."""
        rows = self.db.execute("SELECT var, MAX(seq), ts_us, value FROM samples GROUP BY var").fetchall()
        return {v: (int(s), int(t), float(x)) for v, s, t, x in rows}

    def states(self) -> dict[str, dict]:
        return {a: json.loads(s) for a, s in self.db.execute("SELECT asset, state FROM sim_state")}

    def append(self, rows: list[tuple[str, int, int, float, int]], states: dict[str, dict]) -> None:
        """rows: (var, seq, ts_us, value, server_ts_us); committed together with the generator states."""
        db = self.db
        db.execute("BEGIN")
        try:
            db.executemany("INSERT INTO samples VALUES (?,?,?,?,?)", rows)
            db.executemany("INSERT OR REPLACE INTO sim_state VALUES (?,?)", [(a, json.dumps(s)) for a, s in states.items()])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if self.rows is not None:
            self.rows += len(rows)
        if time.monotonic() - self._last_prune > 60.0:
            self._last_prune = time.monotonic()
            cutoff = time.time_ns() // 1000 - int(self.retention_s * 1e6)
            # keep each variable's newest sample, so its sequence never restarts after a long idle period
            pruned = db.execute("DELETE FROM samples WHERE ts_us < ? AND seq < (SELECT MAX(s2.seq) FROM samples s2 "
                                "WHERE s2.var = samples.var)", (cutoff,)).rowcount
            if self.rows is not None and pruned > 0:
                self.rows -= pruned

    # --- asyncua HistoryStorageInterface -------------------------------------------------------
    async def init(self) -> None:
        pass

    async def new_historized_node(self, node_id: ua.NodeId, period: timedelta | None, count: int = 0) -> None:
        pass

    async def save_node_value(self, node_id: ua.NodeId, datavalue: ua.DataValue) -> None:
        var = str(node_id.Identifier)
        row = self.db.execute("SELECT MAX(seq) FROM samples WHERE var=?", (var,)).fetchone()
        ts = dt_to_us(datavalue.SourceTimestamp)  # type: ignore[arg-type]
        self.append([(var, int(row[0] or 0) + 1, ts, float(datavalue.Value.Value), ts)], {})  # type: ignore[union-attr,arg-type]

    async def read_node_history(
        self, node_id: ua.NodeId, start: datetime | None, end: datetime | None, nb_values: int
    ) -> tuple[list[ua.DataValue], datetime | None]:
        lo = dt_to_us(start) if start is not None else _WIN_EPOCH_US
        hi = dt_to_us(end) if end is not None else _WIN_EPOCH_US
        if lo == _WIN_EPOCH_US:
            lo = 0
        if hi == _WIN_EPOCH_US:
            hi = _MAX_US
        if lo > hi:
            lo, hi = hi, lo
        self.reads += 1
        limit = self.max_history_data_response_size
        if nb_values and nb_values < limit:
            limit = nb_values
        rows = self.db.execute(
            "SELECT seq, value, ts_us, server_ts_us FROM samples WHERE var=? AND ts_us BETWEEN ? AND ? ORDER BY seq LIMIT ?",
            (str(node_id.Identifier), lo, hi, limit + 1),
        ).fetchall()
        cont = None
        if len(rows) > limit:
            if not nb_values or nb_values > limit:
                cont = us_to_dt(int(rows[limit][2]))
            rows = rows[:limit]
        vtype = self.types.get(str(node_id.Identifier), ua.VariantType.Double)
        return [sample_datavalue(vtype, float(v), int(t), int(st)) for s, v, t, st in rows], cont

    async def new_historized_event(self, source_id, evtypes, period, count=0):  # type: ignore[no-untyped-def,override]
        raise NotImplementedError("events are not historized by the simulators")

    async def save_event(self, event):  # type: ignore[no-untyped-def]
        raise NotImplementedError

    async def read_event_history(self, source_id, start, end, nb_values, evfilter):  # type: ignore[no-untyped-def]
        return [], None

    async def stop(self) -> None:
        if not self.closed:
            self.closed = True
            self.db.close()
