"""The federated models the twins predict with: the ledger's last committed round of each kind's task.

One ``ModelWatcher`` (``twins.model.ledger_watch``) per kind of twin with a configured task reads the ledger
through the anchoring gateway; a newly committed model is swapped into every twin of the kind between two readings.
Kinds without a task (or without a ledger) predict with their labelled fallback rules, and ``models_status``
says which.

``ModelsInUse`` is a part of ``twins.runtime.TwinRuntime``, which sets the attributes annotated below.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from twins.model.federated import FailureModel
from twins.model.ledger_watch import GatewayRoundsReader, ModelsConfig, ModelWatcher
from twins.model.news2 import FALLBACK_LABEL as NEWS2_FALLBACK_LABEL, LABEL as NEWS2_LABEL
from twins.model.twin import MachineTwin, PatientTwin, Twin

if TYPE_CHECKING:
    from twins.anchoring.anchorer import Anchorer

# the runtime's logger: the bridge's log lines keep the name they always had
log = logging.getLogger("twins.runtime")


class ModelsInUse:
    """Which model each kind of twin predicts with, kept in step with the ledger."""

    # set by TwinRuntime.__init__
    anchorer: Anchorer
    twins: dict[str, Twin]
    models_config: ModelsConfig
    model_watchers: dict[str, ModelWatcher]

    def _model_watchers(self) -> dict[str, ModelWatcher]:
        """One watcher per kind of twin with a task, reading the ledger through the anchoring gateway of the first org
        with such twins (any member may read the models contract; the anchorer's contract is bound to the chaincode)."""
        out: dict[str, ModelWatcher] = {}
        for kind, task in sorted(self.models_config.tasks.items()):
            orgs = sorted({t.org for t in self.twins.values() if t.kind == kind})
            if not orgs:
                continue
            by_org = getattr(self.anchorer, "by_org", None) or {}
            contract = next((getattr(by_org.get(o), "contract", None) for o in orgs
                             if getattr(by_org.get(o), "contract", None) is not None), None)
            if contract is None:
                log.warning("%s twins: the %s anchorer has no ledger gateway to read task %s from; they predict with "
                            "the labelled fallback rules", kind, self.anchorer.name, task)
                continue
            out[kind] = ModelWatcher(kind, task, self.models_config.store, GatewayRoundsReader(contract, via=orgs[0]),
                                     on_swap=lambda model, kind=kind: self.swap_model(kind, model))
        return out

    def swap_model(self, kind: str, model: FailureModel | None) -> None:
        """Every twin of ``kind`` predicts with ``model`` from the next reading on. Called on the event loop, which
        also delivers the readings: the swap happens between two readings, for all twins of the kind at once."""
        for t in self.twins.values():
            if t.kind == kind and isinstance(t, (MachineTwin, PatientTwin)):
                t.model = model

    async def _watch_models(self, stop: asyncio.Event) -> None:
        """Ask the ledger for each task's last committed round every ``poll_s``, until ``stop``."""
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.models_config.poll_s)
                return
            except asyncio.TimeoutError:
                pass
            for w in self.model_watchers.values():
                await w.check_once()

    def models_status(self) -> dict[str, Any]:
        out: dict[str, Any] = {kind: w.status() for kind, w in self.model_watchers.items()}
        kinds = {t.kind for t in self.twins.values()}
        if "machine" in kinds and "machine" not in out:
            out["machine"] = {"kind": "machine", "task": None, "state": "fallback", "model": None,
                              "note": "no ledger task configured: the AI4I rules (fallback:ai4i-rules-v1)"}
        if "patient" in kinds and "patient" not in out:
            out["patient"] = {"kind": "patient", "task": None, "state": "fallback", "model": None,
                              "fallback": NEWS2_FALLBACK_LABEL,
                              "note": f"no ledger task read: the NEWS2-like rules ({NEWS2_LABEL}), labelled "
                                      f"{NEWS2_FALLBACK_LABEL}"}
        return out
