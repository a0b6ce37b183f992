"""Model quality per site: federated vs centralized (pooled) vs local-only training.

    .venv/bin/python -m bench.quality                      # both tasks (5 / 10 seeds), test split
    .venv/bin/python -m bench.quality --task cardiac --seeds 3 --split val   # for choosing settings

* federated   -- FedAvg over the sites, run in process: our ServerApp logic (``run_governed``: grants,
                 hashes; the unit tests' in-memory fake of the ledger, tests/unit/federated/fake_ledger.py,
                 since what is measured here is model quality, not the ledger) on ``federated.local_grid.LocalGrid``, Flower's own ``FedAvg``
                 aggregation, our ClientApp at every site. The figures are the ones each ClientApp reports
                 in the final evaluation round (the committed final model on the site's own test split).
* centralized -- one model trained on the pooled training splits of all sites (same preprocessing, a
                 scaler fitted on the pool), for as many epochs as the federated run's rounds x local epochs.
* local-only  -- each site trains on its own training split only (its own scaler), same epochs.

Every site keeps a stratified test split (maintenance 20 %, cardiac 25 %) and a validation split; the
F1 threshold is chosen on the site's validation split, AUROC and recall at precision >= 0.6 are
threshold-free. Seed s sets both the data split and the training seed; figures are medians over seeds.
Settings were chosen with ``--split val`` (validation figures only); the test split is only reported.
The last line holds ``key=value`` figures (``.`` separates the site).
"""

from __future__ import annotations

import argparse
import logging
import math
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace

import numpy as np
import torch

from federated import clientapp
from federated.clientapp import evaluate_site
from federated.data import SiteData, load_site, task_spec
from federated.local_grid import LocalGrid
from federated.model import Scaler, TrainConfig, model_arrays, new_model, train_local
from federated.serverapp import TUNED, run_governed
from tests.unit.federated.fake_ledger import FakeLedger, open_fake


@dataclass(frozen=True)
class Settings:
    rounds: int
    local_epochs: int
    hidden: str
    lr: float
    batch_size: int
    weight_decay: float
    pos_weight: float
    dropout: float
    standardize: str

    @staticmethod
    def tuned(task: str) -> Settings:
        t = TUNED[task]
        return Settings(rounds=int(t["rounds"]), local_epochs=int(t["local-epochs"]), hidden=str(t["hidden"]),
                        lr=float(t["lr"]), batch_size=int(t["batch-size"]), weight_decay=float(t["weight-decay"]),
                        pos_weight=float(t["pos-weight"]), dropout=float(t["dropout"]), standardize=str(t["standardize"]))  # fmt: skip


# federated.serverapp.TUNED, chosen by the federated model's mean validation AUROC over the sites
# (``--split val``; maintenance 4 seeds, cardiac 10 seeds) among: rounds x local epochs 10x1/20x1/20x2/30x2/
# 40x1/40x3, hidden 16/32,16/64,32, lr 3e-3/1e-2, weight decay 1e-4/1e-3/1e-2, pos-weight 1/auto, local vs
# federated standardization. Never on the test split.
SETTINGS = {task: Settings.tuned(task) for task in TUNED}

SITES = {"maintenance": ("plant1", "plant2"), "cardiac": ("hospital1", "hospital2", "hospital3", "hospital4")}
METHODS = ("federated", "centralized", "local")
DEFAULT_SEEDS = {"maintenance": 5, "cardiac": 10}  # cardiac test splits are tiny (Switzerland: 2 negatives)


def _as_val(site: SiteData) -> SiteData:
    """Score on the validation split instead of the test split (for choosing settings)."""
    return replace(site, x_test=site.x_val, y_test=site.y_val)


def _train_cfg(s: Settings) -> TrainConfig:
    return TrainConfig(epochs=s.rounds * s.local_epochs, batch_size=s.batch_size, lr=s.lr,
                       weight_decay=s.weight_decay, pos_weight=s.pos_weight)  # fmt: skip


def _fit(sites: list[SiteData], s: Settings, seed: int, in_dim: int) -> dict[str, np.ndarray]:
    x = np.concatenate([d.x_train for d in sites])
    y = np.concatenate([d.y_train for d in sites])
    scaler = Scaler.fit(x)
    model = new_model(in_dim, [int(h) for h in s.hidden.split(",")], seed, s.dropout)
    train_local(model, scaler.transform(x), y, _train_cfg(s), seed)
    return {**model_arrays(model), **scaler.arrays()}


def run_task(task: str, seed: int, s: Settings, split: str) -> dict[str, dict[str, dict[str, float]]]:
    """method -> org -> metrics."""
    spec = task_spec(task)
    orgs = SITES[task]
    sites = {o: load_site(task, o, seed=seed) for o in orgs}
    scored = {o: (_as_val(d) if split == "val" else d) for o, d in sites.items()}
    out: dict[str, dict[str, dict[str, float]]] = {}

    # federated: the governed ServerApp loop + Flower's FedAvg + our ClientApps, in process
    # One in-memory ledger the ServerApp logic and every ClientApp (all in this process) share: each org
    # records its own data use; the ClientApps open it by its spec.
    clientapp._ledger = open_fake
    ledger = FakeLedger()
    ledger.grant_federation([spec.dataset_id(o) for o in orgs], spec.purpose)  # each steward grants the others
    grid = LocalGrid({o: {"task": task, "split-seed": seed, "ledger": ledger.spec} for o in orgs},
                     run_id=seed + 1)  # fmt: skip
    cfg = {
        "task": task, "orgs": ",".join(orgs), "min-nodes": len(orgs), "num-server-rounds": s.rounds,
        "local-epochs": s.local_epochs, "batch-size": s.batch_size, "lr": s.lr, "weight-decay": s.weight_decay,
        "pos-weight": s.pos_weight, "dropout": s.dropout, "hidden": s.hidden, "seed": seed,
        "standardize": s.standardize, "wait-for-nodes": 0.0, "poll-interval": 0.0,
    }  # fmt: skip
    result, _info = run_governed(grid, cfg, run_id=f"quality-{seed}", ledger=ledger)
    final = {k: v.numpy() for k, v in result.arrays.items()}
    if split == "val":
        out["federated"] = {o: evaluate_site(final, scored[o]) for o in orgs}
    else:  # the figures the ClientApps reported for the committed final model
        out["federated"] = {o: {k.replace("-", "_"): v for k, v in m.items()} for o, m in _info.evaluation.items()}

    in_dim = len(spec.feature_names)
    pooled = _fit(list(sites.values()), s, seed, in_dim)
    out["centralized"] = {o: evaluate_site(pooled, scored[o]) for o in orgs}
    out["local"] = {o: evaluate_site(_fit([sites[o]], s, seed, in_dim), scored[o]) for o in orgs}
    return out


def _median(xs: list[float]) -> float:
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["maintenance", "cardiac", "both"], default="both")
    ap.add_argument("--seeds", type=int, help="seeds per task (default: maintenance 5, cardiac 10)")
    ap.add_argument("--split", choices=["test", "val"], default="test")
    ap.add_argument("--rounds", type=int, help="override the number of federated rounds")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    logging.getLogger("flwr").setLevel(logging.WARNING)  # Flower's per-round INFO lines
    logging.getLogger("federated").setLevel(logging.ERROR)
    tasks = ["maintenance", "cardiac"] if args.task == "both" else [args.task]

    # task -> method -> org -> metric -> [per seed]
    figs: dict = defaultdict(lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(list))))
    t0 = time.time()
    for task in tasks:
        s = SETTINGS[task] if args.rounds is None else replace(SETTINGS[task], rounds=args.rounds)
        for seed in range(args.seeds or DEFAULT_SEEDS[task]):
            res = run_task(task, seed, s, args.split)
            for method, per_org in res.items():
                for org, m in per_org.items():
                    for k in ("auroc", "f1", "recall_at_p"):
                        figs[task][method][org][k].append(float(m[k]))
            print(f"# {task} seed {seed} done ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)

    seeds = {t: args.seeds or DEFAULT_SEEDS[t] for t in tasks}
    print("federated = FedAvg in process: our governed ServerApp loop + Flower's FedAvg aggregation + our ClientApps "
          "on federated.local_grid.LocalGrid (no SuperLink); centralized = pooled training splits; local = own split")
    print(f"split={args.split}  seeds={seeds}  median over seeds  (R@P60 = recall at precision >= 0.6)")
    print(f"{'task':12s} {'site':22s} {'method':12s} {'AUROC':>7s} {'F1':>7s} {'R@P60':>7s}")
    kv: dict[str, str] = {}
    goals: dict[str, bool] = {}
    for task in tasks:
        for org in SITES[task]:
            site = f"{org}({task_spec(task).sites[org]})"
            med = {m: {k: _median(figs[task][m][org][k]) for k in ("auroc", "f1", "recall_at_p")} for m in METHODS}
            for m in METHODS:
                print(f"{task:12s} {site:22s} {m:12s} {med[m]['auroc']:7.3f} {med[m]['f1']:7.3f} {med[m]['recall_at_p']:7.3f}")
                kv[f"{m}_auroc.{org}"] = f"{med[m]['auroc']:.3f}"
            kv[f"federated_f1.{org}"] = f"{med['federated']['f1']:.3f}"
            kv[f"federated_recall_p60.{org}"] = f"{med['federated']['recall_at_p']:.3f}"
            fa, ca, la = med["federated"]["auroc"], med["centralized"]["auroc"], med["local"]["auroc"]
            goals[f"fed_ge_central_minus_0.01.{org}"] = fa >= ca - 0.01
            goals[f"fed_gt_local.{org}"] = fa > la
            if task == "maintenance":
                goals[f"recall_p60_ge_0.92.{org}"] = med["federated"]["recall_at_p"] >= 0.92
        print()
    for k, v in goals.items():
        print(f"goal {k}: {'met' if v else 'NOT met'}")
    kv["goals_met"] = f"{sum(goals.values())}/{len(goals)}"
    kv["seconds"] = f"{time.time() - t0:.0f}"
    print(" ".join(f"{k}={v}" for k, v in kv.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
