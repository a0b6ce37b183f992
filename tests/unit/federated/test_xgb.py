"""Federated gradient-boosted trees (federated.xgb_*), in process: the booster's bytes hashed and committed
like an MLP's arrays, Flower's bagging aggregation round trip through the governed loop, the server's
structural check of updates, and the ClientApp refusing an unverified global booster."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_bagging

from federated import clientapp
from federated.data import task_spec
from federated.governance import TaskRecord
from federated.hashing import MAGIC, arrays_sha256, arrays_to_record, canonical_bytes, record_to_arrays
from federated.local_grid import LocalGrid
from federated.serverapp import run_governed, task_record, resolve_config
from federated.store import ModelStore
from federated.xgb_model import (
    ARRAY_NAME,
    BoosterFormError,
    XgbParams,
    boost_local,
    boost_pooled,
    booster_arrays,
    booster_bytes,
    empty_model,
    model_summary,
    predict_proba,
)
from federated.xgb_strategy import GovernedXgbStrategy, make_xgb_strategy
from tests.unit.federated.fake_ledger import FakeLedger

AI4I = task_spec("maintenance")
ORGS = ("plant1", "plant2")
SMALL = XgbParams(eta=0.3, max_depth=3, subsample=1.0)
FAST = {"task": "maintenance", "strategy": "fedxgb-bagging", "num-server-rounds": 2, "wait-for-nodes": 0.0,
        "poll-interval": 0.0, **SMALL.config()}  # fmt: skip


def _site(org: str):
    return clientapp._site("maintenance", org, None, None, 0)


def _ledger() -> FakeLedger:
    led = FakeLedger()
    led.grant_federation([AI4I.dataset_id(o) for o in ORGS], AI4I.purpose)
    return led


# -- the model bytes are what is hashed ----------------------------------------------------------------


def test_a_booster_is_hashed_as_its_json_model_bytes_and_stored_byte_for_byte(tmp_path):
    s = _site("plant1")
    model = boost_local(b"", s.x_train, s.y_train, SMALL, seed=1)
    assert model_summary(model) == (1, len(AI4I.feature_names))  # one boosting iteration: one tree
    arrays = booster_arrays(model)
    canon = canonical_bytes(arrays)
    # the canonical form is a fixed header naming one uint8 array of len(model) bytes, then the bytes
    assert canon.startswith(MAGIC) and canon.endswith(model)
    assert arrays_sha256(arrays) == hashlib.sha256(canon).hexdigest()
    flipped = bytearray(model)
    flipped[len(flipped) // 2] ^= 1
    assert arrays_sha256(booster_arrays(bytes(flipped))) != arrays_sha256(arrays)
    store = ModelStore(tmp_path / "store")
    sha = store.put_arrays(arrays)
    assert sha == arrays_sha256(arrays) and booster_bytes(store.get_arrays(sha)) == model
    # the same training gives the same bytes, hence the same hash (every node can re-derive nothing else)
    assert boost_local(b"", s.x_train, s.y_train, SMALL, seed=1) == model


def test_only_one_uint8_array_of_a_json_booster_is_a_tree_model():
    with pytest.raises(BoosterFormError, match="one array named"):
        booster_bytes({"0": np.zeros(3, np.uint8), "1": np.zeros(3, np.uint8)})
    with pytest.raises(BoosterFormError, match="1-D uint8"):
        booster_bytes({ARRAY_NAME: np.zeros(3, np.float32)})
    with pytest.raises(BoosterFormError, match="not an XGBoost JSON tree model"):
        model_summary(b'{"learner": {}}')
    with pytest.raises(BoosterFormError, match="empty model"):
        predict_proba(b"", np.zeros((1, 11)))
    assert booster_bytes(empty_model()) == b""


# -- bagging: local trees on the global model, aggregated by Flower -------------------------------------


def test_bagging_appends_each_sites_new_trees_to_the_global_model():
    s1, s2 = _site("plant1"), _site("plant2")
    first = aggregate_bagging(aggregate_bagging(b"", boost_local(b"", s1.x_train, s1.y_train, SMALL, 1)),
                              boost_local(b"", s2.x_train, s2.y_train, SMALL, 2))  # fmt: skip
    assert model_summary(first)[0] == 2
    u1 = boost_local(first, s1.x_train, s1.y_train, SMALL, 3)
    assert model_summary(u1)[0] == 1  # only the new tree travels
    second = aggregate_bagging(first, u1)
    assert model_summary(second)[0] == 3
    # Flower's aggregate_bagging appends only an update's first tree (num_parallel_tree): why an update is
    # one tree and the server refuses more (test below)
    assert model_summary(aggregate_bagging(first, boost_pooled(s1.x_train, s1.y_train, SMALL, 4, 1)))[0] == 3
    # the aggregate's margin is the global model's plus the new trees' (the base score counted once)
    x = s1.x_test[:50]
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    base = json.loads(u1)["learner"]["learner_model_param"]["base_score"]
    b = float(base.strip("[]").split(",")[0])
    np.testing.assert_allclose(logit(predict_proba(second, x)),
                               logit(predict_proba(first, x)) + logit(predict_proba(u1, x)) - np.log(b / (1 - b)),
                               rtol=1e-4, atol=1e-4)  # fmt: skip


def test_governed_bagging_commits_every_round_and_the_final_booster_is_the_stored_one(tmp_path):
    led = _ledger()
    grid = LocalGrid({o: {"task": "maintenance", "ledger": led.spec} for o in ORGS})
    store = ModelStore(tmp_path / "store")
    cfg = {**FAST, "ledger": led.spec, "store": str(store.root), "ledger-task": "maintenance-xgb/t"}
    result, info = run_governed(grid, cfg)

    task = led.get_task("maintenance-xgb/t")
    assert task.aggregation == "fedxgb-bagging"
    assert task.architecture == SMALL.architecture(len(AI4I.feature_names)) == "xgb-bagging-11-d3-eta0.3-ss1"
    rounds = led.list_rounds("maintenance-xgb/t")
    assert [r.round for r in rounds] == [1, 2]
    assert rounds[0].global_sha256 == arrays_sha256(empty_model())  # round 1 starts from no tree
    assert rounds[1].global_sha256 == rounds[0].result_sha256
    for r in rounds:
        assert r.participants == list(ORGS) and sorted(u.org for u in r.updates) == list(ORGS)
        for u in r.updates:  # every update is stored under its committed hash, and is one tree
            assert model_summary(booster_bytes(store.get_arrays(u.sha256)))[0] == 1
        assert model_summary(booster_bytes(store.get_arrays(r.result_sha256)))[0] == 2 * r.round
    final = record_to_arrays(result.arrays)
    assert arrays_sha256(final) == rounds[-1].result_sha256 == info.final_sha256
    assert store.verify_ledger(led, "maintenance-xgb/t").passed
    # the participants evaluated the committed final booster on their test splits
    assert rounds[-1].evaluated_sha256 == rounds[-1].result_sha256
    assert set(rounds[-1].evaluation) == set(ORGS)
    assert all(0.8 < m["auroc"] <= 1.0 for m in rounds[-1].evaluation.values())


class _OversizedUpdate:
    """A ClientApp whose org sends more trees than a round asks for (honestly hashed)."""

    def __init__(self, org: str) -> None:
        self.org = org

    def __call__(self, msg, ctx):  # noqa: ANN001,ANN204
        reply = clientapp.app(msg, ctx)
        if ctx.node_config["org"] == self.org and msg.metadata.message_type == MessageType.TRAIN:
            s = _site(self.org)
            trees = boost_pooled(s.x_train, s.y_train, SMALL, 7, 5)
            arrays = booster_arrays(trees)
            reply.content["arrays"] = arrays_to_record(arrays)
            reply.content["update"]["sha256"] = arrays_sha256(arrays)
        return reply


def test_the_server_rejects_an_update_that_is_not_the_trees_a_round_asks_for(tmp_path):
    led = _ledger()
    grid = LocalGrid({o: {"task": "maintenance", "ledger": led.spec} for o in ORGS}, app=_OversizedUpdate("plant2"))
    _, info = run_governed(grid, {**FAST, "num-server-rounds": 1, "min-nodes": 1, "ledger": led.spec,
                                  "ledger-task": "maintenance-xgb/o"})  # fmt: skip
    assert info.rejected[1] == ["plant2: update holds 7 trees, a round adds 1 per participant"]
    assert [u.org for u in led.get_round("maintenance-xgb/o", 1).updates] == ["plant1"]
    strat = GovernedXgbStrategy(make_xgb_strategy("fedxgb-bagging", 2), params=SMALL, n_features=11,
                                task="maintenance", ledger_task="x", ledger=led, orgs=ORGS)  # fmt: skip
    assert strat.check_update({"0": np.frombuffer(b"not json", np.uint8)}).startswith("update is not a tree model")


def test_a_tree_task_refuses_differential_privacy():
    led = _ledger()
    with pytest.raises(Exception, match="does not apply to fedxgb-bagging"):
        run_governed(LocalGrid({o: {"task": "maintenance", "ledger": led.spec} for o in ORGS}),
                     {**FAST, "ledger": led.spec, "dp": "server-fixed", "dp-noise-multiplier": 0.1,
                      "dp-clipping-norm": 1.0})  # fmt: skip
    assert task_record(resolve_config({"task": "maintenance"}), "m").architecture.startswith("mlp-11-")


# -- the ClientApp refuses an unverified global booster -------------------------------------------------


def _train_message(arrays, *, announced, ledger_task="maintenance-xgb/c", rnd=1):
    cfg = ConfigRecord({"task": "maintenance", "ledger-task": ledger_task, "global-sha256": announced,
                        "server-round": rnd, "phase": "train", **SMALL.config()})  # fmt: skip
    msg = Message(RecordDict({"arrays": arrays_to_record(arrays), "config": cfg}), dst_node_id=7,
                  message_type=MessageType.TRAIN)  # fmt: skip
    msg.metadata.__dict__["_message_id"] = "m1"
    return msg


def _started(sha: str, ledger_task="maintenance-xgb/c") -> FakeLedger:
    """A ledger on which round 2 of a tree task over plant1's data set starts from ``sha``."""
    led = FakeLedger()
    led.create_task(TaskRecord(ledger_task, SMALL.architecture(11), AI4I.purpose, (AI4I.dataset_id("plant1"),), 3,
                               "fedxgb-bagging"))  # fmt: skip
    led.commit_round_start(ledger_task, 1, arrays_sha256(empty_model()), led.admit(ledger_task, "plant1"))
    led.commit_round_result(ledger_task, 1, sha, [("plant1", sha, 10)], {})
    led.commit_round_start(ledger_task, 2, sha, led.admit(ledger_task, "plant1"))
    return led


def _context(led: FakeLedger | None) -> Context:
    nc = {"org": "plant1", "task": "maintenance", **({"ledger": led.spec} if led else {})}
    return Context(run_id=1, node_id=7, node_config=nc, state=RecordDict(), run_config={})


def test_the_client_refuses_a_global_booster_the_ledger_did_not_commit():
    LocalGrid({})  # Flower's task identity, as the SuperNode runtime sets it
    s = _site("plant1")
    committed = booster_arrays(boost_local(b"", s.x_train, s.y_train, SMALL, 1))
    other = booster_arrays(boost_local(b"", s.x_train, s.y_train, XgbParams(eta=0.3, max_depth=2, subsample=1.0), 1))
    assert arrays_sha256(other) != arrays_sha256(committed)
    led = _started(arrays_sha256(committed))
    # announced == received, but not what the ledger committed for round 2
    reply = clientapp.handle_train(_train_message(other, announced=arrays_sha256(other), rnd=2), _context(led))
    assert reply.has_error() and "but the ledger committed" in reply.error.reason
    # a booster that does not hash to the announced hash
    reply = clientapp.handle_train(_train_message(other, announced=arrays_sha256(committed), rnd=2), _context(led))
    assert reply.has_error() and "but the server announced" in reply.error.reason
    # the committed booster is accepted: the reply is SMALL.local_rounds new trees, hashed, on that base
    reply = clientapp.handle_train(_train_message(committed, announced=arrays_sha256(committed), rnd=2), _context(led))
    assert not reply.has_error(), reply.error.reason if reply.has_error() else ""
    update = record_to_arrays(reply.content["arrays"])
    assert reply.content["update"]["sha256"] == arrays_sha256(update)
    assert reply.content["update"]["base-sha256"] == arrays_sha256(committed)
    assert model_summary(booster_bytes(update))[0] == 1


def test_a_tree_task_on_the_ledger_refuses_arrays_that_are_not_a_booster():
    LocalGrid({})
    mlp_like = {"net.0.weight": np.ones((2, 11), np.float32)}
    led = _started(arrays_sha256(mlp_like))
    reply = clientapp.handle_train(_train_message(mlp_like, announced=arrays_sha256(mlp_like), rnd=2), _context(led))
    assert reply.has_error() and "a tree model is one array named '0'" in reply.error.reason
