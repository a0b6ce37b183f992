"""UCI heart (``cardiac``): two remedies for site heterogeneity beside FedAvg, and the heterogeneity itself.

Called by ``bench.quality`` for the cardiac task (``--task cardiac``, alias ``heart``); kept apart from the
table code so other method rows can be added there independently.

* ``fedprox``   -- the same governed run with Flower's ``FedProx`` strategy: each ClientApp adds
                   ``mu/2 * ||w - w_global||^2`` to its local loss (``federated.model.train_local``'s
                   ``prox_mu``), which keeps a site's local epochs from drifting far from the global model.
                   ``PROX_MU`` was chosen on the validation splits (``--split val``) among 0.01, 0.1, 1.0.
* ``finetuned`` -- the FedAvg run's final (committed) model, then trained further at each site alone on its
                   own training split (the federation's scaler kept), 0..``FT_MAX_EPOCHS`` epochs, the number of
                   epochs chosen per site on that site's *validation* AUROC (0 = the federated model as is).
                   Nothing leaves the site; the fine-tuned model is the site's own (not committed to the ledger).

``heterogeneity`` prints, per site, what makes the sites differ: rows, label rate (``num > 0``) and the
share of rows missing each feature that can be missing (from the task's missingness indicators).
"""

from __future__ import annotations

import copy
import math

import numpy as np

from federated import clientapp
from federated.clientapp import evaluate_site
from federated.data import HEART_MAYBE_MISSING, task_spec
from federated.site_data import SiteData, load_site
from federated.local_grid import LocalGrid
from federated.metrics import roc_auc
from federated.model import Scaler, TrainConfig, model_arrays, model_from_arrays, predict_proba, train_local
from federated.serverapp import run_governed
from tests.unit.federated.fake_ledger import FakeLedger, open_fake

TASK = "cardiac"
PROX_MU = 0.1
FT_MAX_EPOCHS = 10
FT_LR_FACTOR = 0.3  # fine-tuning steps are smaller than training's: the global model is a good start
EXTRA_METHODS = ("fedprox", "finetuned")


def federated_final(task: str, orgs: tuple[str, ...], seed: int, s, **extra: object) -> dict[str, np.ndarray]:  # noqa: ANN001
    """The final global model of one in-process governed run (as bench.quality's federated row), with ``extra``
    run-config keys (e.g. ``strategy="fedprox", **{"prox-mu": 0.1}``)."""
    spec = task_spec(task)
    clientapp._ledger = open_fake
    ledger = FakeLedger()
    ledger.grant_federation([spec.dataset_id(o) for o in orgs], spec.purpose)
    grid = LocalGrid({o: {"task": task, "split-seed": seed, "ledger": ledger.spec} for o in orgs}, run_id=seed + 1)
    cfg = {
        "task": task, "orgs": ",".join(orgs), "min-nodes": len(orgs), "num-server-rounds": s.rounds,
        "local-epochs": s.local_epochs, "batch-size": s.batch_size, "lr": s.lr, "weight-decay": s.weight_decay,
        "pos-weight": s.pos_weight, "dropout": s.dropout, "hidden": s.hidden, "seed": seed,
        "standardize": s.standardize, "wait-for-nodes": 0.0, "poll-interval": 0.0, **extra,
    }  # fmt: skip
    result, _ = run_governed(grid, cfg, run_id=f"quality-heart-{seed}", ledger=ledger)
    return {k: v.numpy() for k, v in result.arrays.items()}


def fine_tune(final: dict[str, np.ndarray], site: SiteData, s, seed: int) -> tuple[dict[str, np.ndarray], int]:  # noqa: ANN001
    """The federated model trained further on one site's training split; (arrays, epochs chosen on validation)."""
    scaler = Scaler.from_arrays(final) or Scaler.fit(site.x_train)
    x_tr, x_va = scaler.transform(site.x_train), scaler.transform(site.x_val)
    model = model_from_arrays(final, s.dropout)
    best = (roc_auc(site.y_val, predict_proba(model, x_va)), 0, copy.deepcopy(model))
    cfg = TrainConfig(epochs=1, batch_size=s.batch_size, lr=s.lr * FT_LR_FACTOR, weight_decay=s.weight_decay,
                      pos_weight=s.pos_weight)
    for epoch in range(1, FT_MAX_EPOCHS + 1):
        train_local(model, x_tr, site.y_train, cfg, seed * 1000 + epoch)
        auc = roc_auc(site.y_val, predict_proba(model, x_va))
        if auc > best[0] + 1e-9:
            best = (auc, epoch, copy.deepcopy(model))
    scaler_arrays = {k: v for k, v in final.items() if not k.startswith("net.")}
    return {**model_arrays(best[2]), **scaler_arrays}, best[1]


def heart_variants(orgs: tuple[str, ...], sites: dict[str, SiteData], scored: dict[str, SiteData], s, seed: int,  # noqa: ANN001
                   fedavg_final: dict[str, np.ndarray]) -> dict[str, dict[str, dict[str, float]]]:
    """method -> org -> figures for the FedProx run and the per-site fine-tuned FedAvg model."""
    prox = federated_final(TASK, orgs, seed, s, strategy="fedprox", **{"prox-mu": PROX_MU})
    out: dict[str, dict[str, dict[str, float]]] = {"fedprox": {}, "finetuned": {}}
    for o in orgs:
        out["fedprox"][o] = evaluate_site(prox, scored[o])
        tuned, epochs = fine_tune(fedavg_final, sites[o], s, seed)
        out["finetuned"][o] = {**evaluate_site(tuned, scored[o]), "ft_epochs": float(epochs)}
    return out


def heterogeneity(orgs: tuple[str, ...]) -> list[str]:
    """One line per site: rows, label rate, and % of rows missing each maybe-missing feature (all splits)."""
    spec = task_spec(TASK)
    lines = [f"{'site':24s} {'rows':>5s} {'label%':>7s}  " + " ".join(f"{c[:8]:>8s}" for c in HEART_MAYBE_MISSING)
             + "   (% of rows missing)"]
    for o in orgs:
        d = load_site(TASK, o, seed=0)
        x = np.concatenate([d.x_train, d.x_val, d.x_test])
        y = np.concatenate([d.y_train, d.y_val, d.y_test])
        miss = [100.0 * float(x[:, spec.feature_names.index(f"missing_{c}")].mean()) for c in HEART_MAYBE_MISSING]
        lines.append(f"{o + '(' + d.site + ')':24s} {len(y):5d} {100.0 * float(y.mean()):6.1f}%  "
                     + " ".join(f"{m:8.0f}" for m in miss))
    return lines


def finite(x: float) -> bool:
    return not math.isnan(x)
