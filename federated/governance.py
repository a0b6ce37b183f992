"""Ledger governance of federated rounds, behind one small interface.

``RoundLedger`` is all that the ServerApp strategy, the ClientApps and the CLI need from the ledger:

* ``get_task`` / ``create_task(TaskRecord)`` -- a training run's task (``models:CreateTask``): purpose,
  data sets, round count, aggregation, privacy settings; created once, before its first round;
* ``record_use(org, dataset, purpose)`` -- the *recorded* access check (``data:Check``) an org's own
  ClientApp makes, with its own identity, before it trains: allowed or denied, the decision is audited.
  ``record_admission`` makes one per data set of the task (see "Admission" below);
* ``check_grant(org, dataset, purpose)`` -- the same decision, read-only and unrecorded;
* ``commit_round_start(task, round, global_sha256, checks)`` -- the global model a round starts from and
  its participants, each named with the transactions of its own recorded checks
  (``{org: {data set: check tx ID}}``): the contract admits an org only on what those records say;
* ``commit_round_result(task, round, new_global_sha256, updates, metrics)`` -- each participant's update hash
  and sample count, and the aggregated model's hash;
* ``commit_evaluation(task, round, global_sha256, metrics)`` -- per-org evaluation of a committed model;
* ``get_round`` / ``list_rounds`` -- what was committed (clients check the model they receive against it).

``task`` is the ledger's key for one training run (``twinledger fl run maintenance-v1`` uses
``maintenance-v1``; the ServerApp's default is ``<task>/run-<run id>``). The one implementation is
``federated.fabric_ledger.FabricRoundLedger``, calling the chaincode through network.gateway; unit tests
use an in-memory fake of this protocol (tests/unit/federated/fake_ledger.py).

Admission. A task lists the data sets of its orgs, and the global model of every round is derived from
all of them (a round's model carries what earlier rounds learnt from every participant's data). So
taking part in a round is using every data set of the task: ``record_admission`` records one check per
data set of the task, with the org's own identity -- its own data set (allowed as the owner) and each
other org's (allowed only under a live grant from that org's steward for the task's purpose) -- and
admits the org only if every one is allowed. ``models:StartRound`` re-reads those recorded checks on the
ledger, so a server cannot name an org whose own checks did not allow it. A task whose org never grants
the others therefore admits nobody else: the task names its data sets, so a federation without that
org is a new task.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable


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

    def checks(self) -> dict[str, str]:
        """Data set -> the transaction of this org's recorded check of it (what models:StartRound reads)."""
        return {d.dataset: d.tx_id or "" for d in self.decisions}


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
    #: participant -> {data set: transaction of its own recorded data:Check}, as StartRound verified them
    checks: dict[str, dict[str, str]] = field(default_factory=dict)
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
            checks={str(o): {str(ds): str(tx) for ds, tx in c.items()} for o, c in (d.get("checks") or {}).items()},
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

    def commit_round_start(self, task: str, round: int, global_sha256: str,
                           checks: Mapping[str, Mapping[str, str]]) -> None: ...

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

    ``committed`` is the ledger's record of the round (None for an ungoverned plain-Flower round, in
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
