"""Ledger governance of federated rounds, behind one small interface.

``RoundLedger`` is all that the ServerApp strategy, the ClientApps and the CLI need from the ledger:

* ``get_task`` / ``create_task(TaskRecord)`` -- a training run's task (``models:CreateTask``): purpose,
  data sets, round count, aggregation, privacy settings; created once, before its first round;
* ``record_use(org, dataset, purpose)`` -- the *recorded* access check (``data:Check``) an org's own
  ClientApp makes, with its own identity, before it trains: allowed or denied, the decision is audited.
  ``record_admission`` makes one per data set of the task (see "Admission" below);
* ``check_grant(org, dataset, purpose)`` -- the same decision, read-only and unrecorded (dashboards);
* ``commit_round_start(task, round, global_sha256, participants, excluded)`` -- the global model a round
  starts from, the orgs admitted to it and why the others were not;
* ``commit_round_result(task, round, new_global_sha256, updates, metrics)`` -- each participant's update hash
  and sample count, and the aggregated model's hash;
* ``commit_evaluation(task, round, global_sha256, metrics)`` -- per-org evaluation of a committed model;
* ``get_round`` / ``list_rounds`` -- what was committed (clients check the model they receive against it).

``task`` is the ledger's key for one training run (``twinledger fl run maintenance-v1`` uses
``maintenance-v1``; the ServerApp's default is ``<task>/run-<run id>``). Implementations:

* ``InMemoryLedger`` -- for unit tests and in-process benchmarks; it enforces the rules the chaincode
  enforces (the task exists, rounds in order up to the task's round count, a round starts from the
  previous round's result, updates only from participants, hashes are 64 hex digits) and decides data
  use with the chaincode's own decision function (``chaincode.access.decide``), so reasons and wording
  are the same. A data set's owner is the org its ``register_dataset`` names, else the org its ID
  starts with (``<org>.<dataset>``, federated/data.py's convention); as in the chaincode the owner
  needs no grant (reason "owner") and cannot be granted one, every other org needs a live grant;
* ``JsonFileLedger`` -- the in-memory ledger persisted to one JSON file. Every change happens under an
  exclusive ``flock`` on ``<file>.lock`` after re-reading the file, and replaces it atomically, so the
  ServerApp and every org's ClientApp (separate processes) can all write to it -- the local stand-in
  while Fabric cannot run (``twinledger fl run --ledger-file``: "local JSON ledger, not Fabric");
* ``federated.fabric_ledger.FabricRoundLedger`` -- the real one, calling chaincode through network.gateway.

``open_ledger("memory:" | "file:PATH" | "fabric:CONFIG.json")`` picks one from a run/node config string.

Admission. A task lists the data sets of its orgs, and the global model of every round is derived from
all of them (a round's model carries what earlier rounds learnt from every participant's data). So
taking part in a round is using every data set of the task: ``record_admission`` records one check per
data set of the task, with the org's own identity -- its own data set (allowed as the owner) and each
other org's (allowed only under a live grant from that org's steward for the task's purpose) -- and
admits the org only if every one is allowed. A task whose org never grants the others therefore admits
nobody else: the task names its data sets, so a federation without that org is a new task.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class GovernanceError(RuntimeError):
    """A governance rule was violated (the message is one line saying which and what to do)."""


class GlobalModelRefused(GovernanceError):
    """A ClientApp refuses a global model whose hash is not the announced and committed one."""


class TaskExists(GovernanceError):
    """create_task for a task ID the ledger already holds (``ensure_task`` treats it as "read it back")."""


@dataclass(frozen=True)
class UpdateRecord:
    org: str
    sha256: str
    num_examples: int


@dataclass(frozen=True)
class UseDecision:
    """The answer of a recorded access check (the chaincode's ``data:Check`` answer, same fields)."""

    org: str
    dataset: str
    purpose: str
    allowed: bool
    reason: str  # owner | granted | no_grant | wrong_purpose | revoked | expired (chaincode.access)
    detail: str  # the same for a person
    tx_id: str | None = None

    @staticmethod
    def from_dict(d: Mapping) -> UseDecision:
        return UseDecision(org=str(d.get("org", "")), dataset=str(d.get("dataset", "")),
                           purpose=str(d.get("purpose", "")), allowed=bool(d.get("allowed", False)),
                           reason=str(d.get("reason", "")), detail=str(d.get("detail", "")),
                           tx_id=d.get("tx_id"))  # fmt: skip


def owner_by_id(dataset: str) -> str | None:
    """The org a data-set ID names as its owner (``plant1.ai4i2020`` -> ``plant1``), None for an ID that
    does not follow the ``<org>.<dataset>`` convention of federated/data.py."""
    org, dot, rest = dataset.partition(".")
    return org if dot and org and rest else None


@dataclass(frozen=True)
class Admission:
    """An org's recorded checks for one round: one ``UseDecision`` per data set of the task."""

    org: str
    purpose: str
    decisions: tuple[UseDecision, ...]

    @property
    def allowed(self) -> bool:
        return bool(self.decisions) and all(d.allowed for d in self.decisions)

    @property
    def denials(self) -> list[UseDecision]:
        return [d for d in self.decisions if not d.allowed]

    @property
    def first_denial(self) -> UseDecision | None:
        return next(iter(self.denials), None)

    @property
    def reason(self) -> str:
        """The first denial's reason (no_grant, revoked, ...); when allowed, "granted" if any other org's
        data set is used under a grant, else "owner"."""
        denied = self.first_denial
        if denied is not None:
            return denied.reason
        return "granted" if any(d.reason != "owner" for d in self.decisions) else "owner"

    @property
    def detail(self) -> str:
        """Every denial's wording when denied (a steward fixing grants sees all that are missing at once),
        else each data set with why it is allowed."""
        denials = self.denials
        if denials:
            return "; ".join(d.detail for d in denials)
        return "; ".join(f"{d.dataset}: {d.reason}" for d in self.decisions)


@dataclass(frozen=True)
class TaskRecord:
    """A federated training run on the ledger (``models:CreateTask``'s arguments, plus what it records)."""

    id: str
    architecture: str
    purpose: str
    datasets: tuple[str, ...]
    rounds: int
    aggregation: str
    privacy: Mapping[str, Any] = field(default_factory=dict)
    created_by_org: str | None = None
    created_at: str | None = None
    tx_id: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["datasets"] = list(self.datasets)
        d["privacy"] = dict(self.privacy)
        return d

    @staticmethod
    def from_dict(d: Mapping) -> TaskRecord:
        return TaskRecord(id=str(d["id"]), architecture=str(d["architecture"]), purpose=str(d["purpose"]),
                          datasets=tuple(str(x) for x in d.get("datasets", ())), rounds=int(d["rounds"]),
                          aggregation=str(d["aggregation"]), privacy=dict(d.get("privacy") or {}),
                          created_by_org=d.get("created_by_org"), created_at=d.get("created_at"),
                          tx_id=d.get("tx_id"))  # fmt: skip

    def differences(self, other: TaskRecord) -> list[str]:
        """What a run asking for ``self`` disagrees with on the recorded ``other`` (empty: the same task)."""
        out = []
        for name in ("purpose", "architecture", "aggregation", "rounds"):
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine != theirs:
                out.append(f"{name} {theirs} (this run: {mine})")
        if sorted(self.datasets) != sorted(other.datasets):
            out.append(f"data sets {', '.join(sorted(other.datasets))} (this run: {', '.join(sorted(self.datasets))})")
        if json.dumps(dict(self.privacy), sort_keys=True) != json.dumps(dict(other.privacy), sort_keys=True):
            out.append(f"privacy {dict(other.privacy)} (this run: {dict(self.privacy)})")
        return out


@dataclass
class RoundRecord:
    task: str
    round: int
    global_sha256: str
    participants: list[str]
    started_at: float
    result_sha256: str | None = None
    updates: list[UpdateRecord] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    committed_at: float | None = None
    evaluation: dict[str, dict[str, float]] = field(default_factory=dict)
    evaluated_sha256: str | None = None
    #: org -> why it is not a participant (its own recorded check denied it, no reply ...). The Fabric
    #: contract's round record has no such field: there the denial is the org's own data:Check record.
    excluded: dict[str, str] = field(default_factory=dict)
    start_tx_id: str | None = None
    commit_tx_id: str | None = None
    evaluation_tx_id: str | None = None

    @property
    def complete(self) -> bool:
        return self.result_sha256 is not None

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping) -> RoundRecord:
        return RoundRecord(
            task=d["task"], round=int(d["round"]), global_sha256=d["global_sha256"],
            participants=list(d["participants"]), started_at=float(d["started_at"]),
            result_sha256=d.get("result_sha256"),
            updates=[UpdateRecord(u["org"], u["sha256"], int(u["num_examples"])) for u in d.get("updates", [])],
            metrics={k: float(v) for k, v in (d.get("metrics") or {}).items()},
            committed_at=d.get("committed_at"),
            evaluation={o: {k: float(v) for k, v in m.items()} for o, m in (d.get("evaluation") or {}).items()},
            evaluated_sha256=d.get("evaluated_sha256"),
            excluded={str(o): str(r) for o, r in (d.get("excluded") or {}).items()},
            start_tx_id=d.get("start_tx_id"), commit_tx_id=d.get("commit_tx_id"),
            evaluation_tx_id=d.get("evaluation_tx_id"),
        )  # fmt: skip

    def hashes(self) -> list[str]:
        """Every artefact hash this record names (global, updates, result)."""
        out = [self.global_sha256, *(u.sha256 for u in self.updates)]
        if self.result_sha256:
            out.append(self.result_sha256)
        return out


@runtime_checkable
class RoundLedger(Protocol):
    def check_grant(self, org: str, dataset: str, purpose: str) -> bool: ...

    def record_use(self, org: str, dataset: str, purpose: str) -> UseDecision: ...

    def get_task(self, task: str) -> TaskRecord | None: ...

    def create_task(self, task: TaskRecord) -> TaskRecord: ...

    def commit_round_start(
        self,
        task: str,
        round: int,
        global_sha256: str,
        participants: Sequence[str],
        excluded: Mapping[str, str] | None = None,
    ) -> None: ...

    def commit_round_result(
        self,
        task: str,
        round: int,
        new_global_sha256: str,
        updates: Sequence[UpdateRecord | tuple[str, str, int]],
        metrics: Mapping[str, float],
    ) -> None: ...

    def commit_evaluation(
        self, task: str, round: int, global_sha256: str, metrics: Mapping[str, Mapping[str, float]]
    ) -> None: ...

    def get_round(self, task: str, round: int) -> RoundRecord | None: ...

    def list_rounds(self, task: str) -> list[RoundRecord]: ...


def ensure_task(ledger: RoundLedger, wanted: TaskRecord) -> tuple[TaskRecord, bool]:
    """The task on the ledger, created if it is not there yet: (record, created now?).

    Idempotent, so that a re-run or a resumed run of the same task ID does not fail on creation; a task
    recorded with other settings is an error naming each difference (a new run needs a new task ID)."""
    existing = ledger.get_task(wanted.id)
    if existing is None:
        try:
            return ledger.create_task(wanted), True
        except TaskExists:  # created by another process since we looked
            existing = ledger.get_task(wanted.id)
            if existing is None:
                raise
    diffs = wanted.differences(existing)
    if diffs:
        raise GovernanceError(
            f"task {wanted.id} is already on the ledger with {'; '.join(diffs)}; "
            "run it with those settings or give the new run another task name"
        )
    return existing, False


def record_admission(ledger: RoundLedger, org: str, task: TaskRecord) -> Admission:
    """``org``'s recorded checks of every data set of ``task`` for its purpose (see "Admission" above).

    Its own data set first, then the others in the task's order. Every data set is checked even after a
    denial: each check is one recorded transaction, so this is one ledger call per data set per org per
    round, and the audit of every data set shows the attempt."""
    ordered = sorted(task.datasets, key=lambda ds: owner_by_id(ds) != org)  # stable: the task's order otherwise
    return Admission(org, task.purpose, tuple(ledger.record_use(org, ds, task.purpose) for ds in ordered))


def no_longer_allowed(ledger: RoundLedger, org: str, task: TaskRecord) -> list[str]:
    """The task's data sets ``org`` may no longer use (read-only checks, nothing recorded)."""
    return [ds for ds in task.datasets if not ledger.check_grant(org, ds, task.purpose)]


@dataclass(frozen=True)
class ResumePoint:
    """Where a run of a task picks up, from the rounds the ledger already holds."""

    first_round: int  # the round to train next
    start_sha256: str | None  # the model it starts from (None: a fresh initial model)
    pending: RoundRecord | None  # a round started but never committed: re-run, not re-started
    previous: RoundRecord | None  # the last committed round
    done: bool  # every round committed and the final model evaluated: nothing left to do

    @staticmethod
    def of(rounds: Sequence[RoundRecord], total_rounds: int) -> ResumePoint:
        complete = [r for r in rounds if r.complete]
        pending = rounds[-1] if rounds and not rounds[-1].complete else None
        previous = complete[-1] if complete else None
        if pending is not None:
            first, start = pending.round, pending.global_sha256
        elif previous is not None:
            first, start = previous.round + 1, previous.result_sha256
        else:
            first, start = 1, None
        done = previous is not None and previous.round >= total_rounds and previous.evaluated_sha256 is not None
        return ResumePoint(first, start, pending, previous, done)

    @property
    def resuming(self) -> bool:
        return self.start_sha256 is not None


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
    revoked_at: float | None = None  # kept, as the chaincode keeps a revoked grant (its audit needs it)

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires is None or now < self.expires)

    def chaincode_record(self) -> dict[str, Any]:
        """This grant in the data contract's record shape, for chaincode.access.decide."""
        return {
            "dataset": self.dataset, "grantee": self.org, "purpose": self.purpose,
            "status": "revoked" if self.revoked_at is not None else "active",
            "expires_at": None if self.expires is None else _utc(self.expires),
            "revoked_at": None if self.revoked_at is None else _utc(self.revoked_at),
        }  # fmt: skip


def grant_federation(ledger: InMemoryLedger, datasets: Sequence[str], purpose: str) -> list[tuple[str, str]]:
    """Each data set's owner grants every other owner of ``datasets`` its use for ``purpose``, where that
    org holds no live grant yet -- what each org's steward does on Fabric before a task can admit anyone
    (see "Admission"). For local JSON ledgers, tests and benchmarks. Returns the (grantee, data set)
    pairs granted now."""
    owners = {ds: ledger.owner_of(ds) for ds in datasets}
    unowned = sorted(ds for ds, o in owners.items() if o is None)
    if unowned:
        raise GovernanceError(
            f"no owner known for data set(s) {', '.join(unowned)}: register them or name them <org>.<dataset>"
        )
    done = []
    for grantee in dict.fromkeys(owners.values()):
        for ds, owner in owners.items():
            if owner != grantee and not ledger.check_grant(str(grantee), ds, purpose):
                ledger.grant(str(grantee), ds, purpose)
                done.append((str(grantee), ds))
    return done


class InMemoryLedger:
    """A RoundLedger kept in process memory (thread-safe), enforcing the chaincode's rules."""

    def __init__(self, clock=time.time) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.grants: list[Grant] = []
        self.datasets: dict[str, str] = {}  # data set -> owner org, where registered (else from the ID)
        self.task_records: dict[str, TaskRecord] = {}
        self.rounds: dict[str, dict[int, RoundRecord]] = {}
        self.audit: list[dict] = []  # every recorded access check, as the data contract records them

    # -- transactions: JsonFileLedger re-reads and locks the file around them ----------------------------
    @contextmanager
    def _reading(self) -> Iterator[None]:
        with self._lock:
            self._refresh()
            yield

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            yield

    def _refresh(self) -> None:
        pass

    @staticmethod
    def _tx_id() -> str:
        # Marked "local-" so that nobody mistakes it for a Fabric transaction ID.
        return f"local-{uuid.uuid4().hex[:24]}"

    # -- data sets and grants (what stewards do on chain; here for tests and local runs) ---------------
    def register_dataset(self, dataset: str, owner: str) -> None:
        """Record ``owner`` as the data set's owner (``data:RegisterDataset``); without it the owner is the
        org the ID starts with. A data set registered by another org stays that org's."""
        with self._writing():
            held = self.datasets.get(dataset)
            if held is not None and held != owner:
                raise GovernanceError(f"data set {dataset!r} is already registered by org {held!r}")
            self.datasets[dataset] = owner

    def owner_of(self, dataset: str) -> str | None:
        with self._reading():
            return self._owner(dataset)

    def _owner(self, dataset: str) -> str | None:
        return self.datasets.get(dataset) or owner_by_id(dataset)

    def grant(self, org: str, dataset: str, purpose: str, expires: float | None = None) -> None:
        """Grant (or renew) one (org, data set, purpose), as the chaincode keeps one grant record per key."""
        with self._writing():
            if org == self._owner(dataset):
                # The contract refuses it the same way (data:Grant): an owner's use needs no grant.
                raise GovernanceError(f"org {org!r} owns data set {dataset!r} and needs no grant")
            self.grants = [g for g in self.grants if (g.org, g.dataset, g.purpose) != (org, dataset, purpose)]
            self.grants.append(Grant(org, dataset, purpose, expires))

    def revoke(self, org: str, dataset: str, purpose: str) -> None:
        with self._writing():
            self.grants = [
                Grant(g.org, g.dataset, g.purpose, g.expires, self._clock())
                if (g.org, g.dataset, g.purpose) == (org, dataset, purpose) and g.revoked_at is None else g
                for g in self.grants
            ]  # fmt: skip

    def _decide(self, org: str, dataset: str, purpose: str) -> UseDecision:
        # The data contract's own decision function: same rules, same reasons, same wording.
        from chaincode.access import decide

        mine = [g.chaincode_record() for g in self.grants if g.org == org and g.dataset == dataset]
        now = int(self._clock() * 1_000_000_000)
        d = decide({"id": dataset, "owner": self._owner(dataset)}, org, purpose, mine, now)
        return UseDecision(d.org, d.dataset, d.purpose, d.allowed, d.reason, d.detail)

    def check_grant(self, org: str, dataset: str, purpose: str) -> bool:
        """Read-only (``data:CheckReadOnly``): nothing is recorded."""
        with self._reading():
            return self._decide(org, dataset, purpose).allowed

    def record_use(self, org: str, dataset: str, purpose: str) -> UseDecision:
        """The recorded check (``data:Check``): allowed or denied, it goes into the audit trail."""
        with self._writing():
            d = self._decide(org, dataset, purpose)
            d = UseDecision(d.org, d.dataset, d.purpose, d.allowed, d.reason, d.detail, self._tx_id())
            self.audit.append({"ts": self._clock(), "org": org, "dataset": dataset, "purpose": purpose,
                               "granted": d.allowed, "reason": d.reason, "detail": d.detail, "tx_id": d.tx_id})  # fmt: skip
            return d

    # -- tasks -----------------------------------------------------------------------------------------
    def get_task(self, task: str) -> TaskRecord | None:
        with self._reading():
            return self.task_records.get(task)

    def create_task(self, task: TaskRecord) -> TaskRecord:
        if not task.datasets:
            raise GovernanceError(f"task {task.id} names no data set")
        if task.rounds < 1:
            raise GovernanceError(f"task {task.id} needs at least 1 round, not {task.rounds}")
        with self._writing():
            if task.id in self.task_records:
                raise TaskExists(f"task {task.id!r} already exists; use a new task ID for a new run")
            rec = TaskRecord(**{**task.to_dict(), "datasets": tuple(task.datasets),
                                "created_at": _utc(self._clock()), "tx_id": self._tx_id()})  # fmt: skip
            self.task_records[task.id] = rec
            return rec

    # -- rounds ----------------------------------------------------------------------------------------
    def commit_round_start(
        self,
        task: str,
        round: int,
        global_sha256: str,
        participants: Sequence[str],
        excluded: Mapping[str, str] | None = None,
    ) -> None:
        _check_hex("global_sha256", global_sha256)
        if round < 1:
            raise GovernanceError(f"round numbers start at 1, got {round}")
        if not participants:
            raise GovernanceError(f"round {round} of {task} has no participants")
        with self._writing():
            spec = self.task_records.get(task)
            if spec is None:
                raise GovernanceError(f"task {task!r} is not registered; create it with create_task")
            if round > spec.rounds:
                raise GovernanceError(f"task {task!r} has {spec.rounds} rounds; round {round} is beyond it")
            task_rounds = self.rounds.setdefault(task, {})
            if round in task_rounds:
                raise GovernanceError(f"round {round} of {task} was already started")
            if round > 1:
                prev = task_rounds.get(round - 1)
                if prev is None or not prev.complete:
                    raise GovernanceError(f"round {round} of {task} cannot start: round {round - 1} has no result")
                if prev.result_sha256 != global_sha256:
                    raise GovernanceError(
                        f"round {round} of {task} must start from round {round - 1}'s result "
                        f"{prev.result_sha256}, not {global_sha256}"
                    )
            task_rounds[round] = RoundRecord(task, round, global_sha256, sorted(participants), self._clock(),
                                             excluded=dict(sorted((excluded or {}).items())),
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
        with self._writing():
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
        with self._writing():
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
        with self._reading():
            rec = self.rounds.get(task, {}).get(round)
            return RoundRecord.from_dict(rec.to_dict()) if rec else None

    def list_rounds(self, task: str) -> list[RoundRecord]:
        with self._reading():
            return [RoundRecord.from_dict(r.to_dict()) for _, r in sorted(self.rounds.get(task, {}).items())]

    def tasks(self) -> list[str]:
        with self._reading():
            return sorted(set(self.rounds) | set(self.task_records))

    # -- persistence ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {
            "grants": [asdict(g) for g in self.grants],
            "datasets": dict(sorted(self.datasets.items())),
            "tasks": {t: r.to_dict() for t, r in sorted(self.task_records.items())},
            "rounds": {t: [r.to_dict() for _, r in sorted(rs.items())] for t, rs in self.rounds.items()},
            "audit": self.audit,
        }

    def _load_dict(self, d: Mapping) -> None:
        self.grants = [Grant(**g) for g in d.get("grants", [])]
        self.datasets = {str(k): str(v) for k, v in (d.get("datasets") or {}).items()}
        self.task_records = {t: TaskRecord.from_dict(r) for t, r in (d.get("tasks") or {}).items()}
        self.rounds = {
            t: {int(r["round"]): RoundRecord.from_dict(r) for r in rs} for t, rs in (d.get("rounds") or {}).items()
        }
        self.audit = list(d.get("audit", []))


class JsonFileLedger(InMemoryLedger):
    """InMemoryLedger whose state lives in one JSON file, shared by any number of processes.

    Reads re-load the file when it changed (its inode, size or mtime; every write is a new file moved
    into place, so the inode changes). Writes hold an exclusive ``flock`` on ``<file>.lock``, re-read the
    file unconditionally, change it and replace it atomically -- several writers (the ServerApp and the
    ClientApps recording their data use) never lose each other's changes. A failed change writes nothing.
    """

    def __init__(self, path: str | Path, clock=time.time) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None
        self._refresh()

    @property
    def lock_path(self) -> Path:
        return self.path.with_name(self.path.name + ".lock")

    def _refresh(self, force: bool = False) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if force:
                self._load_dict({})
                self._seen = None
            return
        seen = (st.st_ino, st.st_size, st.st_mtime_ns)
        if seen == self._seen and not force:
            return
        try:
            self._load_dict(json.loads(self.path.read_text()))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GovernanceError(f"{self.path} is not a readable TwinLedger JSON ledger ({exc})") from None
        self._seen = seen

    @contextmanager
    def _writing(self) -> Iterator[None]:
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.lock_path, "a") as lock:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
                try:
                    self._refresh(force=True)
                    try:
                        yield
                    except BaseException:
                        self._seen = None  # the in-memory copy may be half changed: re-read next time
                        raise
                    self._save()
                finally:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _save(self) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        st = self.path.stat()
        self._seen = (st.st_ino, st.st_size, st.st_mtime_ns)


def open_ledger(spec: str | None) -> RoundLedger:
    """A ledger from a config string: ``memory:``, ``file:PATH`` or ``fabric:CONFIG.json``."""
    spec = (spec or "memory:").strip()
    kind, _, arg = spec.partition(":")
    if kind == "memory":
        return InMemoryLedger()
    if kind == "file" and arg:
        return JsonFileLedger(arg)
    if kind == "fabric" and arg:
        from federated.fabric_ledger import FabricRoundLedger

        return FabricRoundLedger.from_config_file(arg)
    raise GovernanceError(f"bad ledger spec {spec!r}; use memory:, file:PATH or fabric:CONFIG.json")


def verify_global_model(
    *,
    received_sha256: str,
    announced_sha256: str,
    committed: RoundRecord | None,
    phase: str,
    task: str,
    round: int,
) -> None:
    """What a ClientApp checks before using a global model; raises GlobalModelRefused with the reason.

    ``committed`` is the ledger's record of the round (None when the client runs without a ledger, in
    which case only the announced hash is checked). For ``train`` the received model must be the
    round's committed start model; for ``evaluate`` the round's committed result.
    """
    if received_sha256 != announced_sha256:
        raise GlobalModelRefused(
            f"refusing the global model of {task} round {round}: it hashes to {received_sha256}, "
            f"but the server announced {announced_sha256}"
        )
    if committed is None:
        return
    expected = committed.global_sha256 if phase == "train" else committed.result_sha256
    if expected is None:
        raise GlobalModelRefused(
            f"refusing the global model of {task} round {round}: the ledger has no committed "
            f"{'start' if phase == 'train' else 'result'} model for that round"
        )
    if received_sha256 != expected:
        raise GlobalModelRefused(
            f"refusing the global model of {task} round {round}: it hashes to {received_sha256}, "
            f"but the ledger committed {expected}"
        )
