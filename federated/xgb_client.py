"""What a ClientApp does with a tree model (``federated.xgb_model``) once the global model is verified.

``federated.clientapp`` runs every governance check first -- the task on the ledger is one it serves,
it is a committed participant, its grants still hold, and the received bytes hash to the announced and
the ledger's committed hash (``_accept_global``) -- and only then hands the verified arrays here. So
XGBoost never parses a model the ledger did not commit.

Which family a task trains is read from the LEDGER's task record (its architecture, ``xgb-...``), not
from the server's message: a node with a ledger trusts what was committed. A node without one (the
ungoverned plain-Flower baseline) goes by the run config's ``model``.
"""

from __future__ import annotations

import logging

import numpy as np
from flwr.app import ConfigRecord, Message, MetricRecord, RecordDict

from federated.site_data import SiteData
from federated.governance import TaskRecord
from federated.hashing import arrays_sha256, arrays_to_record
from federated.metrics import best_f1_threshold, roc_auc, summarize
from federated.xgb_model import XgbParams, boost_local, booster_arrays, booster_bytes, predict_proba

log = logging.getLogger("federated.xgb_client")

MODEL_XGB = "xgb"


def is_tree_task(recorded: TaskRecord | None, cfg: ConfigRecord) -> bool:
    """True when the run trains trees: the ledger's architecture says so (or, with no ledger, the config)."""
    if recorded is not None:
        return recorded.architecture.startswith("xgb-")
    return str(cfg.get("model", "")) == MODEL_XGB


def train_reply(msg: Message, org: str, arrays: dict[str, np.ndarray], base_sha: str, cfg: ConfigRecord,
                site: SiteData, seed: int, threads: int) -> Message:  # fmt: skip
    """This org's bagging update on the verified global booster: its one new tree, hashed."""
    params = XgbParams.from_config(cfg)
    global_model = booster_bytes(arrays)
    trees = boost_local(global_model, site.x_train, site.y_train, params, seed, threads)
    new = booster_arrays(trees)
    update_sha = arrays_sha256(new)
    # validation AUROC of the model the server would build from this update alone (global + this tree)
    metrics = {"num-examples": site.n_train}
    if global_model:
        from flwr.serverapp.strategy.strategy_utils import aggregate_bagging

        p_val = predict_proba(aggregate_bagging(global_model, trees), site.x_val, threads)
    else:
        p_val = predict_proba(trees, site.x_val, threads)
    metrics["val-auroc"] = float(roc_auc(site.y_val, p_val))
    update = ConfigRecord({"sha256": update_sha, "org": org, "base-sha256": base_sha})
    log.info("%s: round %s boosted a tree on %d rows, update %s", org, cfg.get("server-round"), site.n_train,
             update_sha[:12])  # fmt: skip
    return Message(RecordDict({"arrays": arrays_to_record(new), "metrics": MetricRecord(metrics), "update": update}),
                   reply_to=msg)  # fmt: skip


def evaluate_booster(model: bytes, site: SiteData, min_precision: float = 0.6, threads: int = 1) -> dict[str, float]:
    """Test-split figures of a booster at one site; the F1 threshold is chosen on the site's validation split
    (as ``federated.clientapp.evaluate_site`` does for the MLP)."""
    p_val = predict_proba(model, site.x_val, threads)
    p_test = predict_proba(model, site.x_test, threads)
    out = summarize(site.y_test, p_test, best_f1_threshold(site.y_val, p_val), min_precision)
    out["val_auroc"] = roc_auc(site.y_val, p_val)
    return out


def evaluate_reply(msg: Message, org: str, arrays: dict[str, np.ndarray], sha: str, cfg: ConfigRecord,
                   site: SiteData, threads: int) -> Message:  # fmt: skip
    m = evaluate_booster(booster_bytes(arrays), site, float(cfg.get("min-precision", 0.6)), threads)
    metrics = MetricRecord({"num-examples": int(m["n"]), **{k.replace("_", "-"): float(v) for k, v in m.items() if k != "n"}})
    log.info("%s: evaluated trees %s: auroc %.3f", org, sha[:12], m["auroc"])
    return Message(RecordDict({"metrics": metrics, "update": ConfigRecord({"org": org, "base-sha256": sha})}), reply_to=msg)
