"""The Flower ServerApp: a ledger-governed run of one task with a Flower strategy inside.

Run-config keys (defaults in ``federated/app/pyproject.toml``; override with ``flwr run -c 'k=v ...'``):

=================  ===========================================================================
task               ``maintenance`` | ``cardiac`` | ``sepsis``
num-server-rounds  training rounds
strategy           ``fedavg`` | ``fedprox`` | ``fedmedian`` | ``fedtrimmedavg`` | ``krum`` (Flower's own; the
                   last three are robust to poisoned updates, see ``federated.robustness``) | ``fedxgb-bagging``
                   (gradient-boosted trees with Flower's FedXgbBagging, ``federated.xgb_strategy``; settings
                   ``xgb-local-rounds``, ``xgb-eta``, ``xgb-max-depth``, ``xgb-subsample``, "" = the task's
                   ``federated.xgb_model.XGB_TUNED``; the MLP keys below do not apply)
orgs               comma-separated orgs of the federation (default: the task's default consortium)
min-nodes          fewest admitted orgs (each recorded its own data use) a round may run with
local-epochs, batch-size, lr, weight-decay, pos-weight, dropout, hidden ("64,32"), standardize
                   ("local" | "federated", see ``federated.model``): "" = the task's tuned value (``TUNED``)
prox-mu, seed      FedProx's mu (strategy fedprox), the seed of the initial model and of local training
trim-beta          FedTrimmedAvg's beta: int(beta * n) updates are cut at each end (0.2 cuts none below 5 orgs)
ledger             ``fabric:CONFIG.json``: the Fabric identity the server acts as (an operator of a
                   participant org); required for a governed run
datasets           comma-separated data set IDs of the task, one per org, each named ``<org>.<name>``
                   ("" = ``<org>.<task's data set>`` for every org)
store              folder of the content-addressed model store ("" = do not store)
members            JSON file {org: public-key fingerprint}; nodes are mapped to orgs by the key they
                   authenticated with ("" = by the name they were registered under)
ledger-task        ledger task ID of this run (default ``<task>/run-<run id>``). The run creates the task on
                   the ledger (``models:CreateTask``) unless it exists with the same settings; when the
                   ledger already holds rounds of it, the run resumes after the last committed round
poll-interval      seconds between reply polls (Flower's Grid.send_and_receive sleeps 3 s)
round-timeout      seconds to wait for replies in one round
wait-for-nodes     seconds to wait for the SuperNodes of all orgs to connect before a round
governed           false = plain Flower baseline: the strategy's own ``start`` loop (federated
                   evaluation every round, Grid polling every 3 s), no ledger, no hashes, no grants
report             JSON file to write a run summary to ("" = none)
dp, dp-noise-multiplier, dp-clipping-norm
                   Flower's differential-privacy wrappers (``federated.privacy``): "" (off) |
                   ``server-fixed`` | ``client-fixed`` | ``server-adaptive``, noise multiplier z, clipping norm C
=================  ===========================================================================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, FedMedian, FedProx, FedTrimmedAvg, Krum, Strategy

from federated.data import task_spec
from federated.fabric_ledger import open_ledger
from federated.governance import GovernanceError, ResumePoint, RoundLedger, TaskRecord, ensure_task, owner_by_id
from federated.hashing import arrays_to_record
from federated.model import model_arrays, new_model
from federated.participants import OrgResolver
from federated.privacy import NOT_NOISED, DPSettings, dp_round_metrics, wrap_dp
from federated.store import ModelStore, StoreError
from federated.strategy import GovernedRun, GovernedStrategy
from federated.xgb_client import MODEL_XGB
from federated.xgb_model import XgbParams, empty_model, tuned_params
from federated.xgb_strategy import XGB_STRATEGIES, GovernedXgbStrategy, is_xgb_strategy, make_xgb_strategy
from network.files import write_private

log = logging.getLogger("federated.serverapp")

#: Per-task training settings, chosen on validation splits (see bench/quality.py); a run-config value of ""
#: (the app's default) means "the task's value from here". ``rounds`` is what bench/quality.py trains for.
TUNED: dict[str, dict[str, object]] = {
    "maintenance": {"local-epochs": 2, "batch-size": 64, "lr": 0.01, "weight-decay": 0.0001, "pos-weight": 1.0,
                    "dropout": 0.1, "hidden": "64,32", "standardize": "federated", "rounds": 30},
    "cardiac": {"local-epochs": 1, "batch-size": 16, "lr": 0.003, "weight-decay": 0.01, "pos-weight": 1.0,
                "dropout": 0.2, "hidden": "16", "standardize": "federated", "rounds": 10},
    "sepsis": {"local-epochs": 1, "batch-size": 256, "lr": 0.003, "weight-decay": 0.001, "pos-weight": 0.0,
               "dropout": 0.1, "hidden": "32,16", "standardize": "federated", "rounds": 10},
}  # fmt: skip
_TUNED_KEYS = ("local-epochs", "batch-size", "lr", "weight-decay", "pos-weight", "dropout", "hidden", "standardize")

DEFAULTS: dict[str, object] = {
    "task": "maintenance", "num-server-rounds": 3, "strategy": "fedavg", "orgs": "", "min-nodes": 2,
    **{k: "" for k in _TUNED_KEYS}, "prox-mu": 0.0, "seed": 0,
    "ledger": "", "datasets": "", "store": "", "members": "", "ledger-task": "", "poll-interval": 0.2,
    "round-timeout": 600.0, "report": "", "min-precision": 0.6, "wait-for-nodes": 30.0, "governed": True,
    "trim-beta": 0.2, "dp": "", "dp-noise-multiplier": 0.0, "dp-clipping-norm": 0.0,
}  # fmt: skip


def make_strategy(name: str, n_orgs: int, prox_mu: float = 0.0, trim_beta: float = 0.2) -> Strategy:
    """Flower's strategy by name, sized for n_orgs granted orgs (every org trains every round)."""
    common = dict(
        fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n_orgs, min_evaluate_nodes=n_orgs,
        min_available_nodes=n_orgs,
    )
    name = name.lower()
    if name == "fedavg":
        return FedAvg(**common)
    if name == "fedprox":
        return FedProx(proximal_mu=prox_mu, **common)
    if name == "fedmedian":
        return FedMedian(**common)
    if name == "fedtrimmedavg":
        return FedTrimmedAvg(beta=trim_beta, **common)
    if name == "krum":
        return Krum(num_malicious_nodes=0, **common)
    if is_xgb_strategy(name):
        return make_xgb_strategy(name, n_orgs)
    raise ValueError(f"unknown strategy {name!r}; use fedavg, fedprox, fedmedian, fedtrimmedavg, krum or "
                     f"{', '.join(XGB_STRATEGIES)}")


def initial_arrays(task: str, hidden: str, seed: int, dropout: float = 0.1) -> dict:
    spec = task_spec(task)
    sizes = [int(h) for h in str(hidden).split(",") if h.strip()]
    return model_arrays(new_model(len(spec.feature_names), sizes, seed, dropout))


def _write_json(path: str, data: object) -> None:
    write_private(path, json.dumps(data, indent=1, sort_keys=True))  # 0600, as it was through mkstemp


def resolve_config(run_config: Mapping[str, object]) -> dict[str, object]:
    """The run config with defaults and the task's tuned values filled in."""
    cfg = {**DEFAULTS, **dict(run_config)}
    spec = task_spec(str(cfg["task"]))
    for k in _TUNED_KEYS:
        if cfg[k] == "":
            cfg[k] = TUNED[spec.name][k]
    return cfg


def run_orgs(cfg: Mapping[str, object]) -> list[str]:
    return [o.strip() for o in str(cfg["orgs"]).split(",") if o.strip()] or list(task_spec(str(cfg["task"])).default_orgs)


def run_datasets(cfg: Mapping[str, object]) -> dict[str, str]:
    """org -> its data set ID on the ledger: the run config's ``datasets`` (each ``<org>.<name>``, one per
    org of the run), else ``<org>.<task's data set>``."""
    spec = task_spec(str(cfg["task"]))
    orgs = run_orgs(cfg)
    named = [d.strip() for d in str(cfg.get("datasets", "") or "").split(",") if d.strip()]
    if not named:
        return {o: spec.dataset_id(o) for o in orgs}
    by_org: dict[str, str] = {}
    for ds in named:
        org = owner_by_id(ds)
        if org not in orgs:
            raise GovernanceError(f"data set {ds!r} does not name an org of the run ({', '.join(orgs)}): "
                                  "name each as <org>.<name>")
        if org in by_org:
            raise GovernanceError(f"org {org} has two data sets in the run ({by_org[org]}, {ds}); name one per org")
        by_org[org] = ds
    missing = [o for o in orgs if o not in by_org]
    if missing:
        raise GovernanceError(f"no data set named for {', '.join(missing)}; name one per org as <org>.<name>")
    return {o: by_org[o] for o in orgs}


def task_record(cfg: Mapping[str, object], ledger_task: str) -> TaskRecord:
    """What ``models:CreateTask`` records for this run (``cfg`` from ``resolve_config``)."""
    spec = task_spec(str(cfg["task"]))
    hidden = [h.strip() for h in str(cfg["hidden"]).split(",") if h.strip()]
    dp = DPSettings.from_config(cfg)
    privacy = {"dp": dp.mode, "noise_multiplier": dp.noise_multiplier, "clipping_norm": dp.clipping_norm} if dp.enabled else {}
    architecture = "-".join(["mlp", str(len(spec.feature_names)), *hidden, "1"])
    if is_xgb_strategy(cfg["strategy"]):
        architecture = xgb_params(cfg).architecture(len(spec.feature_names))
    return TaskRecord(
        id=ledger_task, architecture=architecture,
        purpose=spec.purpose, datasets=tuple(run_datasets(cfg).values()),
        rounds=int(cfg["num-server-rounds"]), aggregation=str(cfg["strategy"]).lower(), privacy=privacy,
    )  # fmt: skip


def xgb_params(cfg: Mapping[str, object]) -> XgbParams:
    """The tree settings of a run: the run config's ``xgb-*`` keys over the task's tuned ones."""
    return XgbParams.from_config(cfg, tuned_params(str(cfg["task"])))


def run_governed(
    grid: Grid, run_config: Mapping[str, object], run_id: int | str = 0, ledger: RoundLedger | None = None
) -> tuple[object, GovernedRun]:
    """One governed training run on ``grid`` (a deployment Grid or ``federated.local_grid.LocalGrid``).

    ``ledger`` overrides the run config's ``ledger`` (in-process callers pass their own)."""
    cfg = resolve_config(run_config)
    spec = task_spec(str(cfg["task"]))
    orgs = run_orgs(cfg)
    members = None
    if cfg["members"]:
        members = json.loads(Path(str(cfg["members"])).read_text())
    governed_run = _truthy(cfg["governed"])
    if ledger is None and governed_run:
        if not cfg["ledger"]:
            raise GovernanceError("a governed run needs the ledger: set the run config's ledger to "
                                  "fabric:CONFIG.json (`twinledger fl run` does)")
        ledger = open_ledger(str(cfg["ledger"]))
    store = ModelStore(str(cfg["store"])) if cfg["store"] else None
    ledger_task = str(cfg["ledger-task"]) or f"{spec.name}/run-{run_id}"
    min_nodes = int(cfg["min-nodes"])
    n_sampled = min(len(orgs), max(min_nodes, 1))
    inner = make_strategy(str(cfg["strategy"]), n_sampled, float(cfg["prox-mu"]), float(cfg["trim-beta"]))
    dp = DPSettings.from_config(cfg)
    if dp.enabled:
        inner = wrap_dp(inner, dp, n_sampled)
    dp_extra: dict = {"keep_global": NOT_NOISED, "round_metrics": lambda: dp_round_metrics(inner)} if dp.enabled else {}
    trees = is_xgb_strategy(cfg["strategy"])
    if trees and dp.enabled:
        raise GovernanceError(f"dp={dp.mode} clips and noises arrays of weights; it does not apply to "
                              f"{cfg['strategy']} (tree models)")
    common = dict(task=spec.name, ledger_task=ledger_task, ledger=ledger, orgs=orgs, store=store,
                  node_org=OrgResolver(members), min_nodes=min_nodes, poll_interval=float(cfg["poll-interval"]),
                  wait_for_nodes=float(cfg["wait-for-nodes"]))  # fmt: skip
    if trees:
        governed: GovernedStrategy = GovernedXgbStrategy(inner, params=xgb_params(cfg),  # type: ignore[arg-type]
                                                         n_features=len(spec.feature_names), **common)  # fmt: skip
    else:
        governed = GovernedStrategy(inner, **common, **dp_extra)  # type: ignore[arg-type]
    train_keys = ("local-epochs", "batch-size", "lr", "weight-decay", "pos-weight", "prox-mu", "dropout", "seed")
    train_config = ConfigRecord({k: cfg[k] for k in train_keys})  # type: ignore[misc]
    eval_config = ConfigRecord({"min-precision": cfg["min-precision"], "dropout": cfg["dropout"]})  # type: ignore[misc]
    init = initial_arrays(spec.name, str(cfg["hidden"]), int(cfg["seed"]), float(cfg["dropout"]))
    if trees:  # the nodes read the family from the ledger's task; "model" is for nodes without a ledger
        train_config = ConfigRecord({"seed": cfg["seed"], "model": MODEL_XGB, **xgb_params(cfg).config()})  # type: ignore[arg-type]
        eval_config["model"] = MODEL_XGB
        init = empty_model()
    if not governed_run:
        return _run_plain(grid, inner, cfg, spec.name, init, train_config, eval_config, ledger_task)
    task, created = ensure_task(ledger, task_record(cfg, ledger_task))
    at = ResumePoint.of(ledger.list_rounds(ledger_task), task.rounds)
    log.info("task %s %s on the ledger (%d rounds)", ledger_task, "created" if created else "found", task.rounds)
    if at.done:
        log.info("task %s: all %d rounds are committed and evaluated; nothing to do", ledger_task, task.rounds)
        governed.run_info.final_sha256 = at.previous.result_sha256 if at.previous else None
        _report(cfg, spec.name, ledger_task, governed.run_info, at)
        return None, governed.run_info
    if at.resuming:
        # The model to go on from is the one the ledger committed, read back from the store by its hash.
        if store is None:
            raise GovernanceError(f"cannot resume {ledger_task} at round {at.first_round}: the run has no model store")
        try:
            init = store.get_arrays(str(at.start_sha256))
        except StoreError as exc:
            raise GovernanceError(f"cannot resume {ledger_task} at round {at.first_round}: {exc}") from None
        log.info("task %s: resuming at round %d of %d from %s", ledger_task, at.first_round, task.rounds,
                 str(at.start_sha256)[:12])  # fmt: skip
    result = governed.start(
        grid, arrays_to_record(init), num_rounds=task.rounds,  # type: ignore[arg-type]
        timeout=float(cfg["round-timeout"]), train_config=train_config, evaluate_config=eval_config,
        standardize="local" if trees else str(cfg["standardize"]), first_round=at.first_round, pending=at.pending, previous=at.previous,
    )  # fmt: skip
    _report(cfg, spec.name, ledger_task, governed.run_info, at)
    return result, governed.run_info


def _report(cfg: Mapping[str, object], task: str, ledger_task: str, info: GovernedRun, at: ResumePoint) -> None:
    if not cfg["report"]:
        return
    _write_json(str(cfg["report"]), {
        "task": task, "ledger_task": ledger_task, "rounds": int(cfg["num-server-rounds"]),
        "first_round": at.first_round, "resumed": at.resuming, "nothing_to_do": at.done,
        "participants": {str(k): v for k, v in info.participants.items()},
        "excluded": {str(k): v for k, v in info.excluded.items()},
        "denied": {str(k): v for k, v in info.denied.items()},
        "rejected": {str(k): v for k, v in info.rejected.items()},
        "round_seconds": [t.seconds for t in info.timings],
        "round_times": [[t.started, t.finished] for t in info.timings],
        "global_hashes": info.global_hashes, "final_sha256": info.final_sha256,
        "evaluation": info.evaluation,
    })  # fmt: skip


def _truthy(v: object) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("1", "true", "yes", "on")


def _run_plain(grid, inner, cfg, task, init, train_config, eval_config, ledger_task):  # noqa: ANN001,ANN202
    """Flower's own loop, untouched: the plain-Flower baseline (no ledger, no hashes, no grant checks)."""
    import time

    from federated.strategy import GovernedRun, RoundTiming

    train_config["task"] = task
    eval_config["task"] = task
    t0 = time.time()
    result = inner.start(grid=grid, initial_arrays=arrays_to_record(init), num_rounds=int(cfg["num-server-rounds"]),
                         timeout=float(cfg["round-timeout"]), train_config=train_config, evaluate_config=eval_config)  # fmt: skip
    t1 = time.time()
    n = int(cfg["num-server-rounds"])
    info = GovernedRun(ledger_task)
    info.timings = [RoundTiming(r, t0 + (t1 - t0) * (r - 1) / n, t0 + (t1 - t0) * r / n) for r in range(1, n + 1)]
    if cfg["report"]:
        _write_json(str(cfg["report"]), {"task": task, "governed": False, "rounds": n, "seconds": t1 - t0,
                                         "round_seconds": [t.seconds for t in info.timings]})  # fmt: skip
    return result, info


app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        _, info = run_governed(grid, dict(context.run_config), context.run_id)
    except Exception as exc:
        # The one line that says why (e.g. which orgs were refused), for whoever waits on the report;
        # Flower's run status only says "failed".
        if context.run_config.get("report"):
            _write_json(str(context.run_config["report"]), {"error": str(exc), "error_type": type(exc).__name__})
        raise
    log.info("run %s finished: %d rounds, final model %s", info.ledger_task, len(info.timings), info.final_sha256)
