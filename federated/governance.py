"""Ledger governance of federated rounds, behind one small interface.

``RoundLedger`` is all that the ServerApp strategy and the ClientApps need from the ledger:

* ``check_grant(org, dataset, purpose)``  -- may this org's data set be used for this purpose (a live grant)?
* ``commit_round_start(task, round, global_sha256, participants)`` -- the global model a round starts from;
* ``commit_round_result(task, round, new_global_sha256, updates, metrics)`` -- each participant's update hash
  and sample count, and the aggregated model's hash;
* ``commit_evaluation(task, round, global_sha256, metrics)`` -- per-org evaluation of a committed model;
* ``get_round`` / ``list_rounds`` -- what was committed (clients check the model they receive against it).

``task`` is the ledger's key for one training run of a task (the ServerApp uses ``<task>/<run id>``), so
a task can be trained many times. Implementations:

* ``InMemoryLedger`` -- for unit tests and the plain-Flower baseline; it enforces the same rules the
  model-registry chaincode must enforce (rounds in order, a round starts from the previous round's result,
  updates only from participants, hashes are 64 hex digits);
* ``JsonFileLedger`` -- the in-memory ledger persisted to one JSON file after every commit (atomic
  replace), so separate processes (ServerApp, ClientApps, a test) share it while Fabric is unavailable;
* ``federated.fabric_ledger.FabricRoundLedger`` -- the real one, calling chaincode through network.gateway.

``open_ledger("memory:" | "file:PATH" | "fabric:CONFIG.json")`` picks one from a run/node config string.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class GovernanceError(RuntimeError):
    """A governance rule was violated (the message is one line saying which and what to do)."""


class GlobalModelRefused(GovernanceError):
    """A ClientApp refuses a global model whose hash is not the announced and committed one."""


@dataclass(frozen=True)
class UpdateRecord:
    org: str
    sha256: str
    num_examples: int


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

    def commit_round_start(self, task: str, round: int, global_sha256: str, participants: Sequence[str]) -> None: ...

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


def _check_hex(name: str, value: str) -> None:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise GovernanceError(f"{name} must be a SHA-256 in 64 lowercase hex digits, got {value!r}")


def _as_update(u: UpdateRecord | tuple[str, str, int]) -> UpdateRecord:
    if isinstance(u, UpdateRecord):
        return u
    org, sha, n = u
    return UpdateRecord(str(org), str(sha), int(n))


@dataclass(frozen=True)
class Grant:
    org: str
    dataset: str
    purpose: str
    expires: float | None = None  # unix time; None = until revoked

    def live(self, now: float) -> bool:
        return self.expires is None or now < self.expires


class InMemoryLedger:
    """A RoundLedger kept in process memory (thread-safe), enforcing the model-registry's rules."""

    def __init__(self, clock=time.time) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.grants: list[Grant] = []
        self.rounds: dict[str, dict[int, RoundRecord]] = {}
        self.audit: list[dict] = []  # every access check, as the data-access contract records them

    # -- grants (what stewards do on chain; here for tests and the baseline) --------------------------
    def grant(self, org: str, dataset: str, purpose: str, expires: float | None = None) -> None:
        with self._lock:
            self.grants.append(Grant(org, dataset, purpose, expires))
            self._changed()

    def revoke(self, org: str, dataset: str, purpose: str) -> None:
        with self._lock:
            self.grants = [g for g in self.grants if (g.org, g.dataset, g.purpose) != (org, dataset, purpose)]
            self._changed()

    def check_grant(self, org: str, dataset: str, purpose: str) -> bool:
        with self._lock:
            self._refresh()
            now = self._clock()
            ok = any(
                g.org == org and g.dataset == dataset and g.purpose == purpose and g.live(now) for g in self.grants
            )
            self.audit.append({"ts": now, "org": org, "dataset": dataset, "purpose": purpose, "granted": ok})
            self._changed()
            return ok

    # -- rounds ----------------------------------------------------------------------------------------
    def commit_round_start(self, task: str, round: int, global_sha256: str, participants: Sequence[str]) -> None:
        _check_hex("global_sha256", global_sha256)
        if round < 1:
            raise GovernanceError(f"round numbers start at 1, got {round}")
        if not participants:
            raise GovernanceError(f"round {round} of {task} has no participants")
        with self._lock:
            self._refresh()
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
            elif task_rounds:
                raise GovernanceError(f"{task} already has rounds; use a new task key for a new run")
            task_rounds[round] = RoundRecord(task, round, global_sha256, sorted(participants), self._clock())
            self._changed()

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
            self._refresh()
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
            rec.updates = ups
            rec.metrics = {k: float(v) for k, v in metrics.items()}
            rec.committed_at = self._clock()
            self._changed()

    def commit_evaluation(
        self, task: str, round: int, global_sha256: str, metrics: Mapping[str, Mapping[str, float]]
    ) -> None:
        _check_hex("global_sha256", global_sha256)
        with self._lock:
            self._refresh()
            rec = self.rounds.get(task, {}).get(round)
            if rec is None or rec.result_sha256 != global_sha256:
                raise GovernanceError(f"{global_sha256} is not the committed result of round {round} of {task}")
            rec.evaluation = {org: {k: float(v) for k, v in m.items()} for org, m in metrics.items()}
            rec.evaluated_sha256 = global_sha256
            self._changed()

    def get_round(self, task: str, round: int) -> RoundRecord | None:
        with self._lock:
            self._refresh()
            rec = self.rounds.get(task, {}).get(round)
            return RoundRecord.from_dict(rec.to_dict()) if rec else None

    def list_rounds(self, task: str) -> list[RoundRecord]:
        with self._lock:
            self._refresh()
            return [RoundRecord.from_dict(r.to_dict()) for _, r in sorted(self.rounds.get(task, {}).items())]

    def tasks(self) -> list[str]:
        with self._lock:
            self._refresh()
            return sorted(self.rounds)

    # -- persistence hooks (no-ops in memory) ----------------------------------------------------------
    def _refresh(self) -> None:
        pass

    def _changed(self) -> None:
        pass

    def to_dict(self) -> dict:
        return {
            "grants": [asdict(g) for g in self.grants],
            "rounds": {t: [r.to_dict() for _, r in sorted(rs.items())] for t, rs in self.rounds.items()},
            "audit": self.audit,
        }

    def _load_dict(self, d: Mapping) -> None:
        self.grants = [Grant(**g) for g in d.get("grants", [])]
        self.rounds = {
            t: {int(r["round"]): RoundRecord.from_dict(r) for r in rs} for t, rs in (d.get("rounds") or {}).items()
        }
        self.audit = list(d.get("audit", []))


class JsonFileLedger(InMemoryLedger):
    """InMemoryLedger whose state lives in one JSON file: re-read before each call, replaced after each change.

    Meant for one writing process (the ServerApp) and any number of readers (ClientApps, tests); a
    writer from another process is detected by the file's mtime and picked up on the next call.
    """

    def __init__(self, path: str | Path, clock=time.time) -> None:
        super().__init__(clock)
        self.path = Path(path)
        self._mtime: int | None = None
        self._refresh()

    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return
        if st.st_mtime_ns == self._mtime:
            return
        self._load_dict(json.loads(self.path.read_text()))
        self._mtime = st.st_mtime_ns

    def _changed(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump(self.to_dict(), f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._mtime = self.path.stat().st_mtime_ns


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
