"""Federated gradient-boosted trees under the same governance as the MLP.

``GovernedXgbStrategy`` is ``federated.strategy.GovernedStrategy`` wrapping Flower's ``FedXgbBagging``:
admission by each org's own recorded checks, the global booster's hash committed when each round starts,
every update hashed, stored and committed with the round's result, the final model evaluated by the
participants and the figures committed -- all of it the MLP's code, since a booster is one array (its
JSON model bytes, ``federated.xgb_model``). What trees add is a structural check of each update before
Flower's ``aggregate_bagging`` parses it: a participant's update must be a JSON booster over the task's
features holding exactly one tree (one boosting iteration: ``aggregate_bagging`` appends only the first
``num_parallel_tree`` trees of an update, so the committed update hash would otherwise name trees the
global model silently lacks), so a malformed or oversized update is rejected with a reason (and left out
of the committed round) instead of breaking or skewing the aggregation. Clients refuse an unverified global booster exactly as they refuse an unverified MLP
(``federated.clientapp._accept_global``), before XGBoost ever parses it.

Only bagging is offered: Flower's ``FedXgbCyclic`` trains on one org per round, so a round's committed
updates would come from one org while the governed loop requires ``min-nodes`` valid updates, and it was
weaker at plant2 on the validation splits (see ``federated.xgb_model.XGB_TUNED``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from flwr.serverapp.strategy import FedXgbBagging

from federated.strategy import GovernedStrategy
from federated.xgb_model import BoosterFormError, XgbParams, booster_bytes, model_summary

#: The run config's ``strategy`` value (and the ledger task's aggregation) of federated trees.
XGB_BAGGING = "fedxgb-bagging"
XGB_STRATEGIES = (XGB_BAGGING,)
#: What Flower's aggregate_bagging appends of an update (num_parallel_tree = 1): one boosting iteration.
TREES_PER_UPDATE = 1


def is_xgb_strategy(name: object) -> bool:
    return str(name).strip().lower() in XGB_STRATEGIES


def make_xgb_strategy(name: str, n_orgs: int) -> FedXgbBagging:
    """Flower's bagging strategy sized for n_orgs admitted orgs (every one trains every round)."""
    if str(name).strip().lower() != XGB_BAGGING:
        raise ValueError(f"unknown tree strategy {name!r}; use {XGB_BAGGING}")
    return FedXgbBagging(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n_orgs,
                         min_evaluate_nodes=n_orgs, min_available_nodes=n_orgs)  # fmt: skip


class GovernedXgbStrategy(GovernedStrategy):
    """GovernedStrategy over FedXgbBagging, with each update checked to be one tree over ``n_features``
    features."""

    def __init__(self, inner: FedXgbBagging, *, params: XgbParams, n_features: int, **kw: object) -> None:
        super().__init__(inner, **kw)  # type: ignore[arg-type]
        self.params = params
        self.n_features = n_features

    def check_update(self, arrays: Mapping[str, np.ndarray]) -> str | None:
        try:
            n_trees, n_features = model_summary(booster_bytes(arrays))
        except BoosterFormError as exc:
            return f"update is not a tree model: {exc}"
        if n_features != self.n_features:
            return f"update's trees are over {n_features} features, the task has {self.n_features}"
        if n_trees != TREES_PER_UPDATE:
            return f"update holds {n_trees} trees, a round adds {TREES_PER_UPDATE} per participant"
        return None
