"""What each dashboard panel shows, read from the parts that own the data (nothing here recomputes their logic).

* network     -- ``orchestrator.cli.status_nodes`` (supervisor state, health, block height) and the spec;
* governance  -- the data contract through the gateway (``data:ListDatasets``, ``ListGrants``, ``Audit``;
                 ``Grant`` / ``Revoke`` submitted as the one local identity chosen with `--as`);
* federated   -- the models contract through ``FabricRoundLedger`` (``models:ListRounds``, ``ReadTask``) and
                 ``models:ListNodeKeys``; each model hash the ledger names re-hashed by
                 ``federated.store.ModelStore.verify`` (the model store is local: weights stay off chain);
* twins       -- the ``status.json`` the twins bridge rewrites every interval and its sealed-batch store (both
                 local to the bridge), and for the verify box ``twins.anchoring.verify_reading`` against the
                 anchor the twins contract holds (``FabricAnchorer``, ``twins:ReadSensorBatch``).

Only the ledger is asked for what is on the ledger; the local sources are the ones that really are local
(the twins' status and store, the model store, the runs' reports that name their ledger tasks).

A panel whose source is missing or failing answers ``{"available": false, "reason": "..."}`` in one
line (``PanelUnavailable``) instead of failing the page; the server counts those per panel.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from federated.fabric_ledger import FabricRoundLedger
from federated.store import ModelStore
from network.layout import Layout
from orchestrator.cli_common import UserError
from orchestrator.cli_twins_views import KEY_SIGNALS
from network.processes.control import supervisor_pid
from orchestrator.dashboard.ledger import (
    DATA_CONTRACT,
    MODELS_CONTRACT,
    AsyncContractAdapter,
    LedgerClient,
    LedgerRefused,
    LedgerUnavailable,
)
from twins.anchoring.anchorer import FabricAnchorer
from twins.anchoring.store import ReadingStore
from twins.anchoring.verify import VerificationError, verify_reading

#: At most this many data sets (the newest) are listed with their grants per poll (each is one evaluate).
MAX_DATASETS = 50
#: A status.json older than this is shown as stale: the bridge rewrites it every interval (1 s default).
TWINS_STALE_S = 10.0
#: Chart history kept per series (one point per new status.json, ~1 s): 10 minutes.
HISTORY_POINTS = 600
# Signals charted per twin kind: KEY_SIGNALS, the ones `twinledger twins status` shows.
PLANT_SERIES = ("energy_kwh", "co2_kg")


class PanelUnavailable(Exception):
    """The panel's source cannot be read; the message is what the page shows."""


# --- network -------------------------------------------------------------------------------------------


def network_panel(home: Path, ledger: LedgerClient) -> dict[str, Any]:
    # Imported here: orchestrator.cli imports this package's CLI module at start-up, so a top-level import
    # would be circular. status_nodes is the same function `twinledger status` prints.
    from orchestrator.cli import status_nodes

    try:
        nodes = status_nodes(home)
    except UserError as exc:
        raise PanelUnavailable(f"network unavailable: {exc}") from None
    spec = ledger.spec()
    layout = Layout(home)
    orgs = []
    for org in spec.orgs:
        org_nodes = [n for n in nodes if n["org"] == org.name]
        orgs.append({
            "name": org.name, "kind": org.kind, "msp_id": org.msp_id,
            "enrolled": [u for u in ("admin", "steward", "operator", "client") if layout.user_msp(org.name, u).exists()],
            "nodes": len(org_nodes), "healthy": sum(1 for n in org_nodes if n["healthy"]),
        })
    heights = [n["height"] for n in nodes if n["height"] is not None]
    return {
        "available": True,
        "network": spec.name, "channel": spec.channel, "home": str(home),
        "supervisor": supervisor_pid(home) is not None,
        "orgs": orgs, "nodes": nodes,
        "healthy": sum(1 for n in nodes if n["healthy"]), "total": len(nodes),
        "height": max(heights) if heights else None,
    }


# --- governance ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Acting:
    """The one identity grants and revocations are signed as: ORG:USER from `--as`, fixed at start.

    No dashboard without `--as` has one (it is read-only), and no request can name another: the page shows
    this identity, it does not offer a choice.
    """

    org: str
    user: str

    @property
    def label(self) -> str:
        return f"{self.org}:{self.user}"


#: Fields a grant or revocation may carry; anything else is refused rather than silently ignored.
_ACTION_FIELDS = {"dataset", "grantee", "purpose", "expires_at"}
#: Fields by which a request might try to pick who signs; refused with 403, naming the fixed identity.
_IDENTITY_FIELDS = {"as", "as_org", "as_user", "org", "user", "identity", "msp_id", "mspid", "certificate", "cert", "key"}


def governance_panel(ledger: LedgerClient, acting: Acting | None, dataset: str | None) -> dict[str, Any]:
    try:
        # Newest first: on a consortium's ledger the data sets just registered are the ones being acted on.
        datasets = sorted(ledger.evaluate(DATA_CONTRACT, "ListDatasets") or [],
                          key=lambda d: str(d.get("registered_at") or ""), reverse=True)
        chosen = dataset if dataset and any(d["id"] == dataset for d in datasets) else (datasets[0]["id"] if datasets else None)
        rows = []
        for i, d in enumerate(datasets):
            if i < MAX_DATASETS or d["id"] == chosen:  # the chosen one always, even beyond the limit
                rows.append(dict(d, grants=ledger.evaluate(DATA_CONTRACT, "ListGrants", d["id"]) or []))
        audit = ledger.evaluate(DATA_CONTRACT, "Audit", chosen) if chosen else None
    except (LedgerUnavailable, LedgerRefused) as exc:
        raise PanelUnavailable(str(exc)) from None
    reader = ledger.reader()
    return {
        "available": True,
        "source": f"Fabric ledger via the gateway, channel {ledger.spec().channel}, read as {reader[0]}:{reader[1]}",
        "datasets": rows, "truncated": len(datasets) > len(rows), "dataset_ids": [d["id"] for d in datasets],
        "audit": audit, "audit_dataset": chosen,
        "orgs": [o.name for o in ledger.spec().member_orgs],
        "acting": {"org": acting.org, "user": acting.user, "identity": acting.label} if acting else None,
    }


def governance_action(ledger: LedgerClient, acting: Acting | None, action: str, body: dict[str, Any]) -> dict[str, Any]:
    """Grant or revoke as the identity chosen with `--as`; the request names what, never who."""
    if acting is None:
        raise PermissionError("this dashboard is read-only; start it with --as ORG[:USER] to grant and revoke")
    who = sorted(set(body) & _IDENTITY_FIELDS)
    if who:
        raise PermissionError(f"this dashboard acts only as {acting.label}, chosen with --as at start; a request "
                              f"cannot choose who signs (remove {', '.join(who)})")
    unknown = sorted(set(body) - _ACTION_FIELDS)
    if unknown:
        raise ValueError(f"unexpected field(s) {', '.join(unknown)}; send {', '.join(sorted(_ACTION_FIELDS))}")
    org = acting.org
    if org not in ledger.enrolled(acting.user):
        raise PermissionError(f"{acting.label} is no longer enrolled in this home")
    fields = {k: body.get(k) for k in ("dataset", "grantee", "purpose")}
    for name, value in fields.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{name} is required")
    args = [fields["dataset"].strip(), fields["grantee"].strip(), fields["purpose"].strip()]
    if action == "grant":
        expires = body.get("expires_at") or ""
        if not isinstance(expires, str):
            raise ValueError("expires_at must be an RFC 3339 UTC time or empty")
        function = "Grant"
        args.append(expires.strip())
    elif action == "revoke":
        function = "Revoke"
    else:
        raise ValueError(f"unknown action {action!r}")
    # The chaincode checks the steward role and the data set's owner from this identity's certificate.
    record = ledger.submit(DATA_CONTRACT, function, *args, as_=(org, acting.user))
    return {"ok": True, "as": f"{org}:{acting.user}", "record": record}


# --- federated learning --------------------------------------------------------------------------------


class FederatedSource:
    """Rounds as the models contract holds them; every hash they name re-hashed in the local model store."""

    def __init__(self, fl_home: Path, ledger: LedgerClient) -> None:
        self.fl_home = fl_home
        self.ledger = ledger

    def _report_tasks(self) -> list[str]:
        # The model registry has no "list tasks" query; the runs this home made name their ledger keys in
        # their reports (federated.serverapp writes "ledger_task").
        keys = set()
        for p in sorted((self.fl_home / "reports").glob("*.json")):
            try:
                key = json.loads(p.read_text()).get("ledger_task")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(key, str):
                keys.add(key)
        return sorted(keys)

    def panel(self) -> dict[str, Any]:
        try:
            rounds_ledger = FabricRoundLedger(self.ledger.read_contract(MODELS_CONTRACT), self.ledger.read_contract(DATA_CONTRACT))
            # Asked even when this home has run nothing yet, so the panel always says whether the ledger answers.
            node_keys = self.ledger.evaluate(MODELS_CONTRACT, "ListNodeKeys") or []
            store_dir = self.fl_home / "store"
            # ModelStore creates its folder; a dashboard must not, so without one every hash is "missing".
            store = ModelStore(store_dir) if store_dir.is_dir() else None
            out = []
            for task in self._report_tasks():
                rounds = rounds_ledger.list_rounds(task)
                hashes = [h for r in rounds for h in r.hashes()]
                status = {h: "missing" for h in hashes}
                if store is not None:
                    report = store.verify(hashes)  # re-hashes every stored artefact the ledger names
                    status.update({h: "ok" for h in report.ok})
                    status.update({h: "mismatched" for h in report.mismatched})
                counts = {s: sum(1 for v in status.values() if v == s) for s in ("ok", "missing", "mismatched")}
                record = rounds_ledger.get_task(task)
                out.append({"task": task, "record": record.to_dict() if record is not None else None,
                            "rounds": [r.to_dict() for r in rounds], "verified": status, "counts": counts})
        except (LedgerUnavailable, LedgerRefused) as exc:
            raise PanelUnavailable(str(exc)) from None
        except (OSError, ValueError) as exc:
            raise PanelUnavailable(f"federated unavailable: {exc}") from None
        reader = self.ledger.reader()
        label = (f"Fabric ledger (models contract), channel {self.ledger.spec().channel}, "
                 f"read as {reader[0]}:{reader[1]}")
        return {"available": True, "source": {"label": label}, "store": str(store_dir),
                "store_present": store is not None, "tasks": out,
                "node_keys": [{"org": k.get("org"), "public_key_sha256": k.get("public_key_sha256"), "tx_id": k.get("tx_id")}
                              for k in node_keys]}


# --- twins ---------------------------------------------------------------------------------------------


@dataclass
class _History:
    t: deque = field(default_factory=lambda: deque(maxlen=HISTORY_POINTS))
    series: dict[str, deque] = field(default_factory=dict)

    def add(self, t: float, values: dict[str, float | None]) -> None:
        n = len(self.t)
        self.t.append(t)
        for key in set(self.series) | set(values):
            s = self.series.get(key)
            if s is None:
                # A series that appears late is padded so that every series lines up with ``t``.
                s = self.series[key] = deque([None] * n, maxlen=HISTORY_POINTS)
            s.append(values.get(key))

    def to_dict(self, last: int) -> dict[str, Any]:
        return {"t": list(self.t)[-last:], "series": {k: list(v)[-last:] for k, v in sorted(self.series.items())}}


class TwinsSource:
    """The twins bridge's status file, sampled into chart history, plus its store (anchors, verification)."""

    def __init__(self, twins_home: Path, ledger: LedgerClient) -> None:
        self.home = twins_home
        self.ledger = ledger
        self._lock = threading.Lock()
        self._mtime: int | None = None
        self._status: dict[str, Any] | None = None
        self._error: str | None = None
        self.history: dict[str, _History] = {}
        self._store: ReadingStore | None = None

    @property
    def status_path(self) -> Path:
        return self.home / "status.json"

    def sample(self) -> None:
        """Read status.json if it changed and append one point per series (called every second)."""
        try:
            st = self.status_path.stat()
        except FileNotFoundError:
            with self._lock:
                self._error = (f"twins unavailable: no status at {self.status_path} "
                               "(start the twins with `twinledger twins run`)")
            return
        if st.st_mtime_ns == self._mtime:
            return
        try:
            status = json.loads(self.status_path.read_text())
        except (OSError, ValueError) as exc:  # the bridge replaces it atomically; this is a real fault
            with self._lock:
                self._error = f"twins unavailable: status unreadable: {exc}"
            return
        t = float(status.get("time") or st.st_mtime)
        with self._lock:
            self._mtime, self._status, self._error = st.st_mtime_ns, status, None
            for asset, snap in (status.get("twins") or {}).items():
                self.history.setdefault(f"asset:{asset}", _History()).add(t, _asset_point(snap))
            for org, totals in (status.get("plants") or {}).items():
                self.history.setdefault(f"plant:{org}", _History()).add(
                    t, {k: totals.get(k) for k in PLANT_SERIES})

    def panel(self, points: int = 120) -> dict[str, Any]:
        self.sample()
        with self._lock:
            status, error = self._status, self._error
            if status is None:
                raise PanelUnavailable(error or f"twins unavailable: no status at {self.status_path}")
            history = {k: h.to_dict(points) for k, h in self.history.items()}
            mtime = (self._mtime or 0) / 1e9
        snaps = status.get("twins") or {}
        assets = []
        for asset, s in sorted(snaps.items()):
            kind = s.get("kind")
            assets.append({
                "asset": asset, "org": s.get("org"), "kind": kind, "updates": s.get("updates"),
                "signals": {k: (s.get("estimates") or {}).get(k, {}).get("value") for k in KEY_SIGNALS.get(kind, ())},
                "risk": _risk(s), "last_seq": s.get("last_seq") or {},
                "sustainability": s.get("sustainability"),
            })
        alerts = status.get("alerts")
        alerts_label = "from the twins bridge"
        if alerts is None:
            # Older bridges do not write alerts; the twins' own alert rules give the same answer from snapshots.
            from twins.alerts import twin_alerts

            alerts, alerts_label = twin_alerts(snaps), "computed by twins.alerts from the snapshots"
        age = time.time() - mtime
        return {
            "available": True, "home": str(self.home), "updated_at": mtime, "age_s": age,
            "stale": age > TWINS_STALE_S, "error": error,
            "counters": status.get("counters"), "bridge": status.get("bridge"), "latency_ms": status.get("latency_ms"),
            "assets": assets, "plants": status.get("plants") or {}, "alerts": alerts, "alerts_source": alerts_label,
            # which model each kind of twin predicts with, verified against the ledger (twins.runtime.models_status)
            "models": status.get("models") or {},
            "anchors": self._recent_anchors(), "ledger_alerts": self._ledger_alerts(), "anchorer": self._anchorer_label(),
            "history": history,
        }

    # --- store, anchors, verification ------------------------------------------------------------------
    def _open_store(self) -> ReadingStore:
        path = self.home / "readings.sqlite"
        if not path.exists():  # ReadingStore would create an empty one
            raise PanelUnavailable(f"twins store unavailable: no {path} (the bridge has not sealed anything yet)")
        with self._lock:
            if self._store is None:
                self._store = ReadingStore(path)
            return self._store

    def _recent_anchors(self) -> list[dict[str, Any]]:
        try:
            store = self._open_store()
        except PanelUnavailable:
            return []
        recent = getattr(store, "recent_anchors", None)
        return recent(8) if recent else []

    def _ledger_alerts(self) -> list[dict[str, Any]]:
        """The bridge's alert episodes with the id of the twins:RaiseAlert transaction (None while it waits)."""
        try:
            store = self._open_store()
        except PanelUnavailable:
            return []
        return [{"key": e["key"], "asset": e["asset"], "kind": e["kind"], "score": e["score"], "tx_id": e["tx_id"],
                 "open": e["closed_at_us"] is None, "model": (e["detail"] or {}).get("model"),
                 "model_sha256": (e["detail"] or {}).get("model_sha256")} for e in store.alerts()[-8:]]

    def _anchor_record(self) -> dict[str, Any] | None:
        """Where `twinledger twins run` recorded that this twins state anchors (``anchor.json``), if it did."""
        try:
            record = json.loads((self.home / "anchor.json").read_text())
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) else None

    def _anchorer_label(self) -> str:
        recorded = self._anchor_record()
        if recorded and recorded.get("kind") == "ledger":
            # the words `twinledger twins status` uses for the same target
            return f"ledger channel {recorded.get('channel')} (chaincode {recorded.get('chaincode')})"
        if recorded:
            return f"not the ledger: {self.home / 'anchor.json'} names {recorded.get('kind')!r}"
        return "Fabric ledger (twins contract)"  # a bare `python -m twins.bridge run` records nothing

    def _anchorer(self) -> FabricAnchorer:
        recorded = self._anchor_record()
        if recorded and recorded.get("kind") != "ledger":
            # State written by an older `twins run --anchor file`: its batch chains were never on the ledger.
            raise PanelUnavailable(f"anchors unavailable: {self.home} anchored to {recorded.get('kind')!r}, not the "
                                   "ledger; its readings cannot be verified on Fabric")
        # The anchorer is bound to the chaincode without a contract name: its function names are qualified.
        return FabricAnchorer(AsyncContractAdapter(self.ledger.read_contract(None)))

    def verify(self, asset: str, seq: int, prop: str | None) -> dict[str, Any]:
        """``twins.anchoring.verify_reading`` for one reading; a failed check is an answer, not an error."""
        store = self._open_store()
        try:
            anchorer = self._anchorer()
        except LedgerUnavailable as exc:
            raise PanelUnavailable(str(exc)) from None
        try:
            results = asyncio.run(verify_reading(store, anchorer, asset, seq, prop or None))
        except VerificationError as exc:
            return {"verified": False, "asset": asset, "seq": seq, "prop": prop, "reason": str(exc),
                    "anchorer": self._anchorer_label()}
        except LedgerRefused as exc:  # the twins contract answered, e.g. that it holds no such batch
            return {"verified": False, "asset": asset, "seq": seq, "prop": prop, "reason": f"ledger refused: {exc}",
                    "anchorer": self._anchorer_label()}
        except LedgerUnavailable as exc:
            raise PanelUnavailable(str(exc)) from None
        return {"verified": True, "asset": asset, "seq": seq, "prop": prop, "anchorer": self._anchorer_label(),
                "readings": [{"reading": v.reading.to_dict(), "batch_id": v.batch_id, "leaf_index": v.leaf_index,
                              "proof_length": len(v.proof), "merkle_root": v.merkle_root,
                              "tx_id": v.anchor.get("tx_id")} for v in results]}

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None


def _risk(snap: dict[str, Any]) -> dict[str, Any] | None:
    if snap.get("prediction"):
        p = snap["prediction"]
        # A machine twin predicts a failure, a patient twin sepsis onset within 6 h (twins.model.twin).
        unit = "P(sepsis within 6 h)" if snap.get("kind") == "patient" else "P(failure)"
        return {"value": p.get("probability"), "label": p.get("model"), "unit": unit}
    if snap.get("risk"):
        r = snap["risk"]
        return {"value": r.get("score"), "band": r.get("risk"), "label": r.get("label"), "unit": "NEWS2-like score"}
    return None


def _asset_point(snap: dict[str, Any]) -> dict[str, float | None]:
    est = snap.get("estimates") or {}
    point: dict[str, float | None] = {k: est.get(k, {}).get("value") for k in KEY_SIGNALS.get(snap.get("kind"), ())}
    risk = _risk(snap)
    point["risk"] = risk["value"] if risk else None
    sus = snap.get("sustainability") or {}
    for k in PLANT_SERIES:
        if k in sus:
            point[k] = sus[k]
    return point
