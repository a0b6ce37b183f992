"""Which federated model the twins use: the one of the last committed round on the ledger, verified, swapped in live.

``ModelsConfig`` (``<twins home>/models.json``, written by `twinledger twins run`) names, per kind of twin, the
ledger task whose models it uses, the model store to read them from and how often to ask the ledger::

    {"tasks": {"machine": "maintenance-v1", "patient": "sepsis-v1"}, "store": "HOME/flower/store", "poll_s": 2.0}

A kind the file does not name (`twins run --model-task / --patient-model-task` name both) follows its default:
machines ``maintenance-v1`` (`twinledger fl run`'s default plant task), patients
``sepsis-v1`` (`twinledger fl run --task sepsis-v1`: the hospitals' PhysioNet 2019 sepsis early warning on the
bedside vitals the patient twins carry; ``LOADERS``). Without the file the store is ``HOME/flower/store`` (where
`fl run` keeps it, HOME being the parent of the twins home) and the ledger is asked every 2 s. Before a task's first
committed round its twins use the labelled fallback rules: ``fallback:ai4i-rules-v1`` for machines,
``fallback:news2-like-v1`` (the NEWS2-like score) for patients.

``ModelWatcher.check_once`` asks the models contract for the task's rounds (``models:ListRounds`` through the
org's Fabric Gateway, ``GatewayRoundsReader``), takes the last committed one (``federated.latest_committed``) and,
if it is not the model in use, loads ``store/<result_sha256>`` in a worker thread and checks its bytes against
the ledger's hash. A model is handed over (``on_swap``) only when it verifies; otherwise the twins keep the model
they had (the rules before any round) and ONE log line says why, with both hashes for a mismatch (repeated only
when the reason changes). The runtime applies the swap on the event loop between two readings, to every twin of
the kind at once, so no reading is dropped and no prediction mixes two models.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from twins.model import ai4i, news2
from twins.model.federated import (
    CommittedRound, FailureModel, ModelFormatError, ModelHashMismatch, ModelRefused, ai4i_mlp, latest_committed,
    load_committed, sepsis_mlp,
)

log = logging.getLogger("twins.models")

CONFIG_FILE = "models.json"
DEFAULT_TASKS = {"machine": "maintenance-v1", "patient": "sepsis-v1"}
DEFAULT_POLL_S = 2.0
#: The loaders of the kinds of twins that run a federated model: machines the plants' maintenance MLP (AI4I),
#: patients the hospitals' sepsis MLP (PhysioNet 2019).
LOADERS: dict[str, Callable[[bytes, CommittedRound], FailureModel]] = {"machine": ai4i_mlp, "patient": sepsis_mlp}
#: What each kind predicts with before its task's first committed round (named in every prediction and alert).
FALLBACKS = {"machine": ai4i.FALLBACK_LABEL, "patient": news2.FALLBACK_LABEL}
LIST_ROUNDS = "models:ListRounds"


@dataclass(frozen=True)
class ModelsConfig:
    tasks: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_TASKS))
    store: Path | None = None
    poll_s: float = DEFAULT_POLL_S

    @staticmethod
    def load(twins_home: Path) -> ModelsConfig:
        """``twins_home/models.json``, or the defaults (store: ``twins_home/../flower/store``)."""
        path = Path(twins_home) / CONFIG_FILE
        default_store = Path(twins_home).resolve().parent / "flower" / "store"
        base = dict(DEFAULT_TASKS)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return ModelsConfig(base, store=default_store)
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the twins' model config {path}: {exc}") from None
        tasks = {**base, **raw.get("tasks", {})}
        unknown = sorted(set(tasks) - set(LOADERS))
        if unknown:
            raise ValueError(f"{path}: no federated model can drive {', '.join(unknown)} twins (only "
                             f"{', '.join(sorted(LOADERS))})")
        poll = float(raw.get("poll_s", DEFAULT_POLL_S))
        if poll <= 0:
            raise ValueError(f"{path}: poll_s must be > 0")
        return ModelsConfig({str(k): str(v) for k, v in tasks.items()}, Path(raw["store"]) if raw.get("store") else default_store,
                            poll)

    def to_dict(self) -> dict[str, Any]:
        return {"tasks": dict(self.tasks), "store": str(self.store) if self.store else None, "poll_s": self.poll_s}


class RoundsReader(Protocol):
    async def list_rounds(self, task: str) -> list[dict[str, Any]]: ...


class GatewayRoundsReader:
    """``models:ListRounds`` through a ``network.gateway.Contract`` bound to the TwinLedger chaincode (function names
    qualified, as the twins' anchorer's contract is): an evaluate on the org's own peer, nothing is written."""

    def __init__(self, contract: Any, via: str = "") -> None:
        self.contract = contract
        self.via = via

    async def list_rounds(self, task: str) -> list[dict[str, Any]]:
        raw = await self.contract.evaluate(LIST_ROUNDS, task)
        out = json.loads(raw or b"[]")
        if not isinstance(out, list):
            raise ValueError(f"{LIST_ROUNDS} answered {type(out).__name__}, not a list")
        return out


class ModelWatcher:
    """The model of one ledger task for the twins of one kind."""

    def __init__(self, kind: str, task: str, store: Path, reader: RoundsReader,
                 on_swap: Callable[[FailureModel], None], loader: Callable[[bytes, CommittedRound], FailureModel] | None = None) -> None:
        self.kind = kind
        self.task = task
        self.store = Path(store)
        self.reader = reader
        self.on_swap = on_swap
        self.loader = loader or LOADERS[kind]
        self.model: FailureModel | None = None
        self.in_use: CommittedRound | None = None
        self.latest: CommittedRound | None = None  # the last committed round the ledger named
        self.refused: dict[str, Any] | None = None  # why the ledger's latest round is not in use
        self.swaps: list[dict[str, Any]] = []
        self.checks = 0
        self.ledger_errors = 0
        self.last_check: float | None = None
        self._said: str | None = None  # the last refusal or ledger error logged (each logged once)

    def _once(self, level: int, text: str) -> None:
        if text != self._said:
            self._said = text
            log.log(level, "%s", text)

    async def check_once(self) -> bool:
        """Ask the ledger; swap if its last committed round verifies and is not in use. True when swapped."""
        self.checks += 1
        self.last_check = time.time()
        try:
            rounds = await self.reader.list_rounds(self.task)
        except Exception as exc:  # noqa: BLE001 -- the peer may be restarting: keep the model, ask again later
            self.ledger_errors += 1
            self._once(logging.WARNING, f"{self.kind} twins: cannot read the rounds of {self.task} on the ledger "
                                        f"({' '.join(str(exc).split())[:300]}); keeping {self.label()}")
            return False
        latest = latest_committed(self.task, rounds)
        self.latest = latest
        if latest is None or (self.in_use is not None and self.in_use.sha256 == latest.sha256):
            self.refused = None
            return False
        try:
            model = await asyncio.to_thread(load_committed, self.store, latest, self.loader)
        except ModelRefused as exc:
            reason = ("hash-mismatch" if isinstance(exc, ModelHashMismatch) else
                      "format" if isinstance(exc, ModelFormatError) else "unavailable")
            self.refused = {"task": latest.task, "round": latest.round, "sha256": latest.sha256, "reason": reason,
                            "detail": str(exc), "at": time.time()}
            # a tampered or foreign file is an alarm; a file not (yet) in the store is a wait
            level = logging.WARNING if reason == "unavailable" else logging.ERROR
            self._once(level, f"{self.kind} twins: {exc}; keeping {self.label()}")
            return False
        previous = self.label()
        self.model, self.in_use, self.refused, self._said = model, latest, None, None
        self.on_swap(model)
        self.swaps.append({"label": model.label, "sha256": latest.sha256, "round": latest.round, "at": time.time(),
                           "previous": previous})
        log.info("%s twins now predict with %s (task %s round %d, sha256 %s verified against the ledger; commit tx %s; "
                 "was %s)", self.kind, model.label, latest.task, latest.round, latest.sha256, latest.commit_tx_id, previous)
        return True

    def label(self) -> str:
        return self.model.label if self.model is not None else f"the fallback rules ({self.fallback})"

    @property
    def fallback(self) -> str:
        return FALLBACKS.get(self.kind, "fallback")

    def status(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "task": self.task, "store": str(self.store),
            "state": "federated" if self.model is not None else "fallback",
            "model": self.model.label if self.model is not None else None, "fallback": self.fallback,
            "in_use": self.in_use.to_dict() if self.in_use else None,
            "ledger_latest": self.latest.to_dict() if self.latest else None,
            "refused": self.refused, "swaps": self.swaps[-5:], "checks": self.checks,
            "ledger_errors": self.ledger_errors, "last_check": self.last_check,
        }
