"""The Flower ClientApp every org runs on its own SuperNode (Message API, flwr 1.41).

The org and task come from the SuperNode's node config, e.g.
``flower-supernode ... --node-config "org='plant1' task='maintenance' ledger='fabric:/x/plant1.json'"``.
Keys: ``org`` and ``task`` (required); ``dataset`` (this org's data set ID on the ledger, default
``<org>.<task's data set>``), ``site`` (override the org's default site), ``data-root``, ``ledger``
(``fabric:CONFIG.json``: the org's own Fabric identity; without it only the server's announced hash is
checked, and an ungoverned plain-Flower run is accepted -- the baseline of ``bench/fl.py``),
``split-seed`` (default 0), ``threads`` (torch threads, default 1), ``attack`` (TESTS ONLY: poison this
org's updates, ``scale:K``/``signflip``, see ``federated.robustness``).

Before its data is used, the client records the use itself (admission, a QUERY message from the
ServerApp each round). Taking part in a round uses every data set of the ledger task -- the global
model is derived from all of them -- so the client records one check per data set the task lists
(``governance.record_admission``: ``ledger.record_use(org, dataset, "fl:<task>")``, on Fabric
``data:Check`` with this org's own identity, so the decisions and the audit records are its org's): its
own data set (allowed as its owner) and each other org's (allowed only under that org's live grant).
It is admitted only if every check allows it. The reply carries the outcome (allowed, reason, detail,
the first denied data set, and every data set's reason and transaction); a denied org answers without
touching its data and the ServerApp records it as not a participant, with the reason. A node without a
ledger cannot record its use and refuses governed rounds.

Before it touches a global model the client checks (``federated.governance.verify_global_model``):
SHA-256 of the received arrays == the hash the ServerApp announced == the hash the ledger committed for
that round (its start model for ``train``, its result for ``evaluate``), and its org is one of the
round's committed participants. Otherwise it replies with an error ("refusing ...") and trains on
nothing. It only ever loads its own org's data, and only after these checks.

Replies carry the arrays, a MetricRecord (``num-examples`` is the sample count FedAvg weights by) and a
ConfigRecord ``update`` with the update's SHA-256, the org and the base model's SHA-256.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode

from federated.data import DataError, task_spec
from federated.site_data import SiteData, load_site
from federated.governance import (
    Admission,
    GlobalModelRefused,
    GovernanceError,
    RoundLedger,
    TaskRecord,
    no_longer_allowed,
    record_admission,
    verify_global_model,
)
from federated.fabric_ledger import open_ledger
from federated.hashing import arrays_sha256, arrays_to_record, record_to_arrays
from federated.metrics import best_f1_threshold, roc_auc, summarize
from federated.privacy import KEY_CLIPPING_NORM, clip_update
from federated.robustness import poison_update
from federated import xgb_client
from federated.xgb_model import BoosterFormError
from federated.model import FeatureStats, Scaler, TrainConfig, model_arrays, model_from_arrays, predict_proba, train_local

log = logging.getLogger("federated.clientapp")

PHASE_TRAIN = "train"
PHASE_EVALUATE = "evaluate"
PHASE_STATS = "stats"  # admission + this site's feature statistics (federated standardization)
PHASE_ADMIT = "admit"  # admission only


@dataclass(frozen=True)
class ClientSettings:
    org: str
    task: str
    site: str | None
    data_root: str | None
    ledger: str | None
    split_seed: int
    threads: int
    attack: str | None = None  # tests only: poison this org's updates (see federated.robustness)
    dataset: str | None = None  # this org's data set ID on the ledger (None: the task's default ID)

    @property
    def dataset_id(self) -> str:
        return self.dataset or task_spec(self.task).dataset_id(self.org)

    @staticmethod
    def from_context(context: Context) -> ClientSettings:
        nc = dict(context.node_config)
        missing = [k for k in ("org", "task") if not nc.get(k)]
        if missing:
            raise DataError(
                f"SuperNode node config lacks {', '.join(missing)}; start it with "
                "--node-config \"org='plant1' task='maintenance'\""
            )
        return ClientSettings(
            org=str(nc["org"]), task=str(nc["task"]), site=(str(nc["site"]) if nc.get("site") else None),
            data_root=(str(nc["data-root"]) if nc.get("data-root") else None),
            ledger=(str(nc["ledger"]) if nc.get("ledger") else None),
            split_seed=int(nc.get("split-seed", 0)), threads=int(nc.get("threads", 1)),
            attack=(str(nc["attack"]) if nc.get("attack") else None),
            dataset=(str(nc["dataset"]) if nc.get("dataset") else None),
        )  # fmt: skip


@functools.lru_cache(maxsize=16)
def _site(task: str, org: str, site: str | None, root: str | None, split_seed: int) -> SiteData:
    return load_site(task, org, site=site, root=root, seed=split_seed)


@functools.lru_cache(maxsize=8)
def _ledger(spec: str) -> RoundLedger:
    return open_ledger(spec)


def _trace(phase: str, context: Context, t0: float, **extra: object) -> None:
    """Append one JSON line per handled message to $TL_FL_TRACE (latency analysis in bench/fl.py)."""
    path = os.environ.get("TL_FL_TRACE")
    if not path:
        return
    rec = {"phase": phase, "org": context.node_config.get("org"), "pid": os.getpid(), "t0": t0, "t1": time.time(), **extra}
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")


def _error_reply(msg: Message, reason: str) -> Message:
    log.error("%s", reason)
    return Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason), reply_to=msg)


def _served_task(s: ClientSettings, ledger: RoundLedger, ledger_task: str, rnd: object) -> TaskRecord:
    """The run's task on the ledger, which must be one this node serves: its purpose, over this org's data
    set among others. Raises GlobalModelRefused."""
    spec = task_spec(s.task)
    recorded = ledger.get_task(ledger_task) if ledger_task else None
    if recorded is None:
        raise GlobalModelRefused(f"refusing {s.task} round {rnd}: the ledger has no task {ledger_task!r}")
    if recorded.purpose != spec.purpose or s.dataset_id not in recorded.datasets:
        raise GlobalModelRefused(
            f"refusing {s.task} round {rnd}: ledger task {ledger_task!r} is for {recorded.purpose} over "
            f"{', '.join(recorded.datasets)}, not {spec.purpose} over {s.dataset_id}"
        )
    return recorded


def _accept_global(
    msg: Message, s: ClientSettings, phase: str
) -> tuple[dict[str, np.ndarray], str, ConfigRecord, TaskRecord | None]:
    """The received arrays, their hash, the config and the ledger task (None without a ledger), after
    the governance checks; raises GlobalModelRefused."""
    cfg = msg.content["config"]
    task = str(cfg.get("task", ""))
    if task != s.task:
        raise GlobalModelRefused(f"this SuperNode serves task {s.task!r}, the server sent task {task!r}")
    rnd = int(cfg["server-round"])
    arrays = record_to_arrays(msg.content["arrays"])
    received = arrays_sha256(arrays)
    if "global-sha256" not in cfg:
        if s.ledger:
            raise GlobalModelRefused(
                f"refusing an ungoverned {s.task} round {rnd}: the server announced no model hash"
            )
        return arrays, received, cfg, None  # plain Flower (baseline): a node without a ledger accepts it
    committed = recorded = None
    if s.ledger:
        ledger_task = str(cfg.get("ledger-task", ""))
        ledger = _ledger(s.ledger)
        recorded = _served_task(s, ledger, ledger_task, rnd)
        committed = ledger.get_round(ledger_task, rnd)
        if committed is None:
            raise GlobalModelRefused(
                f"refusing the global model of {s.task} round {rnd}: the ledger has no such round ({ledger_task})"
            )
    verify_global_model(
        received_sha256=received, announced_sha256=str(cfg.get("global-sha256", "")), committed=committed,
        phase=phase, task=s.task, round=rnd,
    )  # fmt: skip
    if committed is not None and s.org not in committed.participants:
        # Admission recorded this org's use for the round's participants only.
        raise GlobalModelRefused(
            f"refusing to {phase} in {s.task} round {rnd}: {s.org} is not one of its committed participants "
            f"({', '.join(committed.participants)})"
        )
    return arrays, received, cfg, recorded


def _seed(cfg: ConfigRecord, org: str, rnd: int) -> int:
    return (int(cfg.get("seed", 0)) * 1_000_003 + rnd * 7919 + zlib.crc32(org.encode())) % (2**31 - 1)


def _train_config(cfg: ConfigRecord) -> TrainConfig:
    d = TrainConfig()
    return TrainConfig(
        epochs=int(cfg.get("local-epochs", d.epochs)), batch_size=int(cfg.get("batch-size", d.batch_size)),
        lr=float(cfg.get("lr", d.lr)), weight_decay=float(cfg.get("weight-decay", d.weight_decay)),
        pos_weight=float(cfg.get("pos-weight", d.pos_weight)), prox_mu=float(cfg.get("proximal-mu", cfg.get("prox-mu", d.prox_mu))),
    )  # fmt: skip


def _scaler(arrays: dict[str, np.ndarray], site: SiteData) -> Scaler:
    """The federation's scaler when the model carries one, else this site's own (local standardization)."""
    return Scaler.from_arrays(arrays) or Scaler.fit(site.x_train)


def _still_granted(s: ClientSettings, task: TaskRecord | None, rnd: int) -> None:
    """A grant revoked between this round's admission and its training stops the training. Read-only
    checks of every data set of the task: the use was recorded at admission."""
    if not s.ledger or task is None:
        return
    lost = no_longer_allowed(_ledger(s.ledger), s.org, task)
    if lost:
        raise GovernanceError(
            f"refusing to train in {s.task} round {rnd}: {s.org}'s use of {', '.join(lost)} for "
            f"{task.purpose} is no longer allowed"
        )


def _settings(context: Context) -> ClientSettings:
    s = ClientSettings.from_context(context)
    task_spec(s.task)
    torch.set_num_threads(max(1, s.threads))
    return s


def _load(s: ClientSettings) -> SiteData:
    return _site(s.task, s.org, s.site, s.data_root, s.split_seed)


def handle_train(msg: Message, context: Context) -> Message:
    try:
        s = _settings(context)
        arrays, base_sha, cfg, task = _accept_global(msg, s, PHASE_TRAIN)
        _still_granted(s, task, int(cfg["server-round"]))
        site = _load(s)
    except (GovernanceError, DataError, KeyError, ValueError) as exc:
        return _error_reply(msg, str(exc))
    rnd = int(cfg["server-round"])
    if xgb_client.is_tree_task(task, cfg):  # gradient-boosted trees (federated.xgb_client), same checks above
        try:
            return xgb_client.train_reply(msg, s.org, arrays, base_sha, cfg, site, _seed(cfg, s.org, rnd), s.threads)
        except BoosterFormError as exc:
            return _error_reply(msg, f"refusing to train in {s.task} round {rnd}: {exc}")
    scaler = _scaler(arrays, site)
    model = model_from_arrays(arrays, dropout=float(cfg.get("dropout", 0.1)))
    loss = train_local(model, scaler.transform(site.x_train), site.y_train, _train_config(cfg), _seed(cfg, s.org, rnd))
    new = model_arrays(model)
    for k, v in arrays.items():  # carry non-trainable arrays (the federation's scaler) unchanged
        new.setdefault(k, v)
    if s.attack:  # tests only: a poisoned update, hashed like an honest one
        new = poison_update(new, arrays, s.attack)
    if KEY_CLIPPING_NORM in cfg:  # client-side DP clipping (federated.privacy), before hashing
        new = clip_update(new, arrays, float(cfg[KEY_CLIPPING_NORM]))  # type: ignore[arg-type]
    update_sha = arrays_sha256(new)
    val_auroc = roc_auc(site.y_val, predict_proba(model, scaler.transform(site.x_val)))
    metrics = MetricRecord(
        {"num-examples": site.n_train, "train-loss": float(loss), "val-auroc": float(val_auroc)}
    )
    update = ConfigRecord({"sha256": update_sha, "org": s.org, "base-sha256": base_sha})
    log.info("%s: round %s trained on %d rows, update %s", s.org, rnd, site.n_train, update_sha[:12])
    return Message(RecordDict({"arrays": arrays_to_record(new), "metrics": metrics, "update": update}), reply_to=msg)


def evaluate_site(model_arrays_: dict[str, np.ndarray], site: SiteData, min_precision: float = 0.6) -> dict[str, float]:
    """Test-split figures of a model at one site; the F1 threshold is chosen on the site's validation split."""
    scaler = _scaler(model_arrays_, site)
    model = model_from_arrays(model_arrays_)
    p_val = predict_proba(model, scaler.transform(site.x_val))
    p_test = predict_proba(model, scaler.transform(site.x_test))
    thr = best_f1_threshold(site.y_val, p_val)
    out = summarize(site.y_test, p_test, thr, min_precision)
    out["val_auroc"] = roc_auc(site.y_val, p_val)
    return out


def handle_evaluate(msg: Message, context: Context) -> Message:
    try:
        s = _settings(context)
        arrays, sha, cfg, task = _accept_global(msg, s, PHASE_EVALUATE)
        site = _load(s)
        if xgb_client.is_tree_task(task, cfg):
            return xgb_client.evaluate_reply(msg, s.org, arrays, sha, cfg, site, s.threads)
    except (GovernanceError, DataError, KeyError, ValueError) as exc:  # BoosterFormError is a ValueError
        return _error_reply(msg, str(exc))
    m = evaluate_site(arrays, site, float(cfg.get("min-precision", 0.6)))
    metrics = MetricRecord(
        {"num-examples": int(m["n"]), **{k.replace("_", "-"): float(v) for k, v in m.items() if k != "n"}}
    )
    update = ConfigRecord({"org": s.org, "base-sha256": sha})
    log.info("%s: evaluated %s: auroc %.3f", s.org, sha[:12], m["auroc"])
    return Message(RecordDict({"metrics": metrics, "update": update}), reply_to=msg)


def admit(s: ClientSettings, ledger_task: str, rnd: object) -> Admission:
    """This org records its use of every data set of the ledger task, with its own ledger identity.

    Asked every round, not once per run: a steward's revocation then takes effect at the next round,
    and each round's use is on the record."""
    if not s.ledger:
        raise GovernanceError(
            f"{s.org} has no ledger in its node config, so it cannot record the use of its data; "
            "start its SuperNode with --node-config \"... ledger='fabric:CONFIG.json'\" (its org's Fabric identity)"
        )
    ledger = _ledger(s.ledger)
    return record_admission(ledger, s.org, _served_task(s, ledger, ledger_task, rnd))


def _admission_record(a: Admission) -> ConfigRecord:
    denied = a.first_denial
    return ConfigRecord({
        "org": a.org, "allowed": a.allowed, "reason": a.reason, "detail": a.detail,
        # The first denied data set and its transaction (what the ServerApp reports), then every check.
        "dataset": denied.dataset if denied else "", "tx-id": (denied.tx_id if denied else a.decisions[0].tx_id) or "",
        "datasets": [d.dataset for d in a.decisions], "reasons": [d.reason for d in a.decisions],
        "tx-ids": [d.tx_id or "" for d in a.decisions],
    })  # fmt: skip


def handle_query(msg: Message, context: Context) -> Message:
    """Admission: record this org's use of every data set of the task (allowed or denied) and answer with
    the outcome; for ``phase="stats"`` add the per-feature count / sum / sum of squares of the site's
    training split."""
    try:
        s = _settings(context)
        cfg = msg.content["config"]
        if str(cfg.get("task", "")) != s.task:
            raise GlobalModelRefused(f"this SuperNode serves task {s.task!r}, the server asked about {cfg.get('task')!r}")
        phase = str(cfg.get("phase", PHASE_STATS))
        if phase not in (PHASE_ADMIT, PHASE_STATS):
            raise GlobalModelRefused(f"unknown query phase {phase!r}")
        admission = admit(s, str(cfg.get("ledger-task", "")), cfg.get("server-round"))
    except (GovernanceError, DataError, KeyError, ValueError) as exc:
        return _error_reply(msg, str(exc))
    content = RecordDict({"admission": _admission_record(admission)})
    if not admission.allowed:
        log.warning("%s: not taking part in %s round %s: %s", s.org, s.task, cfg.get("server-round"), admission.detail)
        return Message(content, reply_to=msg)
    if phase == PHASE_STATS:
        try:
            site = _load(s)
        except DataError as exc:
            return _error_reply(msg, str(exc))
        st = FeatureStats.of(site.x_train)
        clean = lambda a: [float(v) if math.isfinite(v) else 0.0 for v in a]  # noqa: E731
        content["metrics"] = MetricRecord(
            {"num-examples": site.n_train, "count": clean(st.count), "sum": clean(st.total), "sumsq": clean(st.total_sq)}
        )
    return Message(content, reply_to=msg)


app = ClientApp()


def _traced(name: str, handler: Callable[[Message, Context], Message]) -> Callable[[Message, Context], Message]:
    """The handler with one trace line per message (timing from the message's creation)."""

    def run(msg: Message, context: Context) -> Message:
        t0 = time.time()
        reply = handler(msg, context)
        _trace(name, context, t0, created=msg.metadata.created_at)
        return reply

    return run


app.train()(_traced("train", handle_train))
app.evaluate()(_traced("evaluate", handle_evaluate))
app.query()(_traced("query", handle_query))
