"""An in-memory fake of ``federated.governance.RoundLedger``, for unit tests only.

Product code talks to Fabric only (``federated.fabric_ledger``). These tests run the ServerApp logic and
the ClientApps in one process (``federated.local_grid.LocalGrid``), so they need a ledger that lives in
the process: this fake enforces the rules the chaincode enforces -- the task exists, rounds in order up to
the task's round count, a round starts from the previous round's result, updates only from participants,
hashes are 64 hex digits, and (models:StartRound) each participant is an org of the task named with its
own allowed recorded checks of every data set of the task, made since the previous round's commit -- and
decides data use with the chaincode's own decision function (``chaincode.access.decide``), so reasons and
wording are the same. A data set's owner is the org its ``register_dataset`` names, else the org its ID
starts with (``<org>.<dataset>``); as in the chaincode the owner needs no grant and cannot be granted one.

Node and run configs name a fake as ``fake.spec`` ("fake:<id>"); tests/unit/federated/conftest.py makes
the ClientApp's and the ServerApp's ``open_ledger`` resolve it (``open_fake``).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from federated.governance import (
    GovernanceError,
    RoundRecord,
    TaskExists,
    TaskRecord,
    UpdateRecord,
    UseDecision,
    owner_by_id,
)

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_FAKES: dict[str, FakeLedger] = {}


def open_fake(spec: str) -> FakeLedger:
    """The fake a ``fake:<id>`` spec names (what the patched ``open_ledger`` returns)."""
    try:
        return _FAKES[spec]
    except KeyError:
        raise GovernanceError(f"no fake ledger {spec!r} in this test") from None


def forget_fakes() -> None:
    _FAKES.clear()


def _check_hex(name: str, value: str) -> None:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise GovernanceError(f"{name} must be a SHA-256 in 64 lowercase hex digits, got {value!r}")


def _as_update(u: UpdateRecord | tuple[str, str, int]) -> UpdateRecord:
    if isinstance(u, UpdateRecord):
        return u
    org, sha, n = u
    return UpdateRecord(str(org), str(sha), int(n))


def _utc(seconds: float) -> str:
    from chaincode.timestamps import format_utc

    return format_utc(int(seconds * 1_000_000_000))


@dataclass(frozen=True)
class Grant:
    org: str
    dataset: str
    purpose: str
    expires: float | None = None  # unix time; None = until revoked
    revoked_at: float | None = None  # kept, as the chaincode keeps a revoked grant

    def chaincode_record(self) -> dict[str, Any]:
        """This grant in the data contract's record shape, for chaincode.access.decide."""
        return {
            "dataset": self.dataset, "grantee": self.org, "purpose": self.purpose,
            "status": "revoked" if self.revoked_at is not None else "active",
            "expires_at": None if self.expires is None else _utc(self.expires),
            "revoked_at": None if self.revoked_at is None else _utc(self.revoked_at),
        }  # fmt: skip


class FakeLedger:
    """A RoundLedger kept in process memory (thread-safe)."""

    def __init__(self, clock=time.time) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.spec = f"fake:{uuid.uuid4().hex[:12]}"
        self.grants: list[Grant] = []
        self.datasets: dict[str, str] = {}  # data set -> owner org, where registered (else from the ID)
        self.task_records: dict[str, TaskRecord] = {}
        self.task_created: dict[str, float] = {}
        self.rounds: dict[str, dict[int, RoundRecord]] = {}
        self.audit: list[dict] = []  # every recorded access check, as the data contract records them
        _FAKES[self.spec] = self

    @staticmethod
    def _tx_id() -> str:
        return f"fake-{uuid.uuid4().hex[:24]}"

    # -- data sets and grants (what stewards do on chain) ------------------------------------------------
    def register_dataset(self, dataset: str, owner: str) -> None:
        with self._lock:
            held = self.datasets.get(dataset)
            if held is not None and held != owner:
                raise GovernanceError(f"data set {dataset!r} is already registered by org {held!r}")
            self.datasets[dataset] = owner

    def owner_of(self, dataset: str) -> str | None:
        return self.datasets.get(dataset) or owner_by_id(dataset)

    def grant(self, org: str, dataset: str, purpose: str, expires: float | None = None) -> None:
        with self._lock:
            if org == self.owner_of(dataset):
                raise GovernanceError(f"org {org!r} owns data set {dataset!r} and needs no grant")
            self.grants = [g for g in self.grants if (g.org, g.dataset, g.purpose) != (org, dataset, purpose)]
            self.grants.append(Grant(org, dataset, purpose, expires))

    def revoke(self, org: str, dataset: str, purpose: str) -> None:
        with self._lock:
            self.grants = [
                Grant(g.org, g.dataset, g.purpose, g.expires, self._clock())
                if (g.org, g.dataset, g.purpose) == (org, dataset, purpose) and g.revoked_at is None else g
                for g in self.grants
            ]  # fmt: skip

    def grant_federation(self, datasets: Sequence[str], purpose: str) -> list[tuple[str, str]]:
        """Each data set's owner grants every other owner of ``datasets`` its use for ``purpose`` (what each
        org's steward does on Fabric before a task can admit anyone). Returns the pairs granted now."""
        owners = {ds: self.owner_of(ds) for ds in datasets}
        done = []
        for grantee in dict.fromkeys(owners.values()):
            for ds, owner in owners.items():
                if grantee is not None and owner != grantee and not self.check_grant(grantee, ds, purpose):
                    self.grant(grantee, ds, purpose)
                    done.append((grantee, ds))
        return done

    def _decide(self, org: str, dataset: str, purpose: str) -> UseDecision:
        from chaincode.access import decide

        mine = [g.chaincode_record() for g in self.grants if g.org == org and g.dataset == dataset]
        now = int(self._clock() * 1_000_000_000)
        d = decide({"id": dataset, "owner": self.owner_of(dataset)}, org, purpose, mine, now)
        return UseDecision(d.org, d.dataset, d.purpose, d.allowed, d.reason, d.detail)

    def check_grant(self, org: str, dataset: str, purpose: str) -> bool:
        with self._lock:
            return self._decide(org, dataset, purpose).allowed

    def record_use(self, org: str, dataset: str, purpose: str) -> UseDecision:
        with self._lock:
            d = self._decide(org, dataset, purpose)
            d = UseDecision(d.org, d.dataset, d.purpose, d.allowed, d.reason, d.detail, self._tx_id())
            self.audit.append({"ts": self._clock(), "org": org, "dataset": dataset, "purpose": purpose,
                               "granted": d.allowed, "reason": d.reason, "detail": d.detail, "tx_id": d.tx_id})  # fmt: skip
            return d

    # -- tasks -----------------------------------------------------------------------------------------
    def get_task(self, task: str) -> TaskRecord | None:
        with self._lock:
            return self.task_records.get(task)

    def create_task(self, task: TaskRecord) -> TaskRecord:
        if not task.datasets:
            raise GovernanceError(f"task {task.id} names no data set")
        if task.rounds < 1:
            raise GovernanceError(f"task {task.id} needs at least 1 round, not {task.rounds}")
        with self._lock:
            if task.id in self.task_records:
                raise TaskExists(f"task {task.id!r} already exists; use a new task ID for a new run")
            now = self._clock()
            rec = TaskRecord(**{**task.to_dict(), "datasets": tuple(task.datasets), "created_at": _utc(now),
                                "tx_id": self._tx_id()})  # fmt: skip
            self.task_records[task.id] = rec
            self.task_created[task.id] = now
            return rec

    # -- rounds ----------------------------------------------------------------------------------------
    def _require_admitted(self, spec: TaskRecord, org: str, checks: Mapping[str, str], since: float) -> None:
        """models:StartRound's rule: org's own allowed checks of every data set of the task, since ``since``."""
        by_tx = {a["tx_id"]: a for a in self.audit}
        for ds in spec.datasets:
            entry = by_tx.get(checks.get(ds, ""))
            if entry is None or entry["dataset"] != ds:
                raise GovernanceError(f"access denied: {org!r} names no recorded check of {ds!r}")
            if entry["org"] != org or entry["purpose"] != spec.purpose or not entry["granted"]:
                raise GovernanceError(f"access denied: {org!r}'s check of {ds!r} ({entry['tx_id']}) does not allow it")
            if entry["ts"] < since:
                raise GovernanceError(f"access denied: {org!r}'s check of {ds!r} was recorded before the previous round")

    def commit_round_start(self, task: str, round: int, global_sha256: str,
                           checks: Mapping[str, Mapping[str, str]]) -> None:  # fmt: skip
        _check_hex("global_sha256", global_sha256)
        if round < 1:
            raise GovernanceError(f"round numbers start at 1, got {round}")
        if not checks:
            raise GovernanceError(f"round {round} of {task} has no participants")
        with self._lock:
            spec = self.task_records.get(task)
            if spec is None:
                raise GovernanceError(f"task {task!r} is not registered; create it with create_task")
            outsiders = sorted(set(checks) - {self.owner_of(ds) for ds in spec.datasets})
            if outsiders:
                raise GovernanceError(f"access denied: {', '.join(outsiders)} not an org of task {task!r}")
            if round > spec.rounds:
                raise GovernanceError(f"task {task!r} has {spec.rounds} rounds; round {round} is beyond it")
            task_rounds = self.rounds.setdefault(task, {})
            if round in task_rounds:
                raise GovernanceError(f"round {round} of {task} was already started")
            since = self.task_created[task]
            if round > 1:
                prev = task_rounds.get(round - 1)
                if prev is None or not prev.complete:
                    raise GovernanceError(f"round {round} of {task} cannot start: round {round - 1} has no result")
                if prev.result_sha256 != global_sha256:
                    raise GovernanceError(
                        f"round {round} of {task} must start from round {round - 1}'s result "
                        f"{prev.result_sha256}, not {global_sha256}"
                    )
                since = float(prev.committed_at or 0.0)
            for org, org_checks in checks.items():
                self._require_admitted(spec, org, org_checks, since)
            task_rounds[round] = RoundRecord(task, round, global_sha256, sorted(checks), self._clock(),
                                             checks={o: dict(c) for o, c in sorted(checks.items())},
                                             start_tx_id=self._tx_id())  # fmt: skip

    def commit_round_result(
        self,
        task: str,
        round: int,
        new_global_sha256: str,
        updates: Sequence[UpdateRecord | tuple[str, str, int]],
        metrics: Mapping[str, float],
    ) -> None:
        _check_hex("new_global_sha256", new_global_sha256)
        ups = [_as_update(u) for u in updates]
        for u in ups:
            _check_hex(f"update hash of {u.org}", u.sha256)
            if u.num_examples <= 0:
                raise GovernanceError(f"update of {u.org} reports {u.num_examples} examples")
        with self._lock:
            rec = self.rounds.get(task, {}).get(round)
            if rec is None:
                raise GovernanceError(f"round {round} of {task} was never started")
            if rec.complete:
                raise GovernanceError(f"round {round} of {task} already has a result")
            outsiders = sorted({u.org for u in ups} - set(rec.participants))
            if outsiders:
                raise GovernanceError(f"updates from non-participants {outsiders} in round {round} of {task}")
            if len({u.org for u in ups}) != len(ups):
                raise GovernanceError(f"more than one update per org in round {round} of {task}")
            if not ups:
                raise GovernanceError(f"round {round} of {task} has no updates")
            rec.result_sha256 = new_global_sha256
            rec.updates = sorted(ups, key=lambda u: u.org)
            rec.metrics = {k: float(v) for k, v in metrics.items()}
            rec.committed_at = self._clock()
            rec.commit_tx_id = self._tx_id()

    def commit_evaluation(
        self, task: str, round: int, global_sha256: str, metrics: Mapping[str, Mapping[str, float]]
    ) -> None:
        _check_hex("global_sha256", global_sha256)
        with self._lock:
            rec = self.rounds.get(task, {}).get(round)
            if rec is None or rec.result_sha256 != global_sha256:
                raise GovernanceError(f"{global_sha256} is not the committed result of round {round} of {task}")
            if rec.evaluated_sha256:
                raise GovernanceError(f"round {round} of {task} was already evaluated")
            outsiders = sorted(set(metrics) - set(rec.participants))
            if outsiders:
                raise GovernanceError(f"evaluation from non-participants {outsiders} in round {round} of {task}")
            rec.evaluation = {org: {k: float(v) for k, v in m.items()} for org, m in metrics.items()}
            rec.evaluated_sha256 = global_sha256
            rec.evaluation_tx_id = self._tx_id()

    def get_round(self, task: str, round: int) -> RoundRecord | None:
        with self._lock:
            rec = self.rounds.get(task, {}).get(round)
            return RoundRecord.from_dict(rec.to_dict()) if rec else None

    def list_rounds(self, task: str) -> list[RoundRecord]:
        with self._lock:
            return [RoundRecord.from_dict(r.to_dict()) for _, r in sorted(self.rounds.get(task, {}).items())]

    # -- for tests that start rounds by hand ---------------------------------------------------------------
    def admit(self, task: str, *orgs: str) -> dict[str, dict[str, str]]:
        """Each org records its use of every data set of the task now; their checks, as StartRound takes them."""
        spec = self.task_records[task]
        return {o: {ds: str(self.record_use(o, ds, spec.purpose).tx_id) for ds in spec.datasets} for o in orgs}
