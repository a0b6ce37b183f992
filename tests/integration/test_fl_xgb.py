"""Federated gradient-boosted trees (``--strategy fedxgb-bagging``) governed on the real network of the test
run (``fabric_net``): Flower's real SuperLink and one SuperNode per plant, Flower's FedXgbBagging inside
our governed loop, every round started and committed on the real peers.

The task's data sets and name are this test's own (``fabric_net.unique``), as in test_fl_cli.py.
"""

from __future__ import annotations

import time

import pytest

from federated.store import ModelStore
from federated.xgb_model import booster_bytes, model_summary, predict_proba
from tests.fabric_net import FabricNet
from tests.integration.test_fl_cli import PLANTS, SPEC, _logs, flower, register_federation, run_live  # noqa: F401

pytestmark = pytest.mark.integration


def test_a_governed_two_round_tree_training_is_committed_on_the_ledger(fabric_net: FabricNet, flower: str) -> None:
    net, port_base = fabric_net, flower
    datasets = register_federation(net)
    d1, d2 = datasets["plant1"], datasets["plant2"]
    task = net.unique("maintenance-xgb")

    t0 = time.monotonic()
    rc, lines, err = run_live(net, "fl", "run", task, "--strategy", "fedxgb-bagging", "--rounds", "2",
                              "--datasets", d1, d2, "--port-base", port_base)  # fmt: skip
    print(f"\nfl run fedxgb-bagging on Fabric (2 rounds, 2 plants, processes started): {time.monotonic() - t0:.1f} s")
    out = "\n".join(text for _, text in lines)
    assert rc == 0, f"{out}\n{err}\n{_logs(net)}"
    assert f"task {task} created on the Fabric ledger (tx " in out and "2 round(s) of fedxgb-bagging" in out
    assert "round 2/2 committed" in out and "evaluated on each org's test split: plant1 AUROC" in out
    assert f"{task}: 7 verified, 0 missing, 0 mismatched" in out  # 3 boosters + 2 x 2 one-tree updates

    # What the ledger holds: the task's architecture is trees, each round names both plants with their
    # own recorded checks, round 2 starts from round 1's committed booster, the final one was evaluated.
    doc = net.ok("fl", "rounds", task)
    assert doc["task"]["aggregation"] == "fedxgb-bagging"
    assert doc["task"]["architecture"].startswith(f"xgb-bagging-{len(SPEC.feature_names)}-")
    r1, r2 = doc["rounds"]
    assert r1["participants"] == r2["participants"] == PLANTS and r2["global_sha256"] == r1["result_sha256"]
    assert set(r1["checks"]) == set(PLANTS) and all(set(c) == {d1, d2} for c in r1["checks"].values())
    assert sorted(u["org"] for u in r2["updates"]) == PLANTS
    assert set(r2["evaluation"]) == set(PLANTS) and all(0.5 < m["auroc"] <= 1.0 for m in r2["evaluation"].values())

    # The committed hashes name the booster bytes in the store: round 1 adds one tree per plant to the
    # empty model, round 2 one more each; the final booster predicts.
    store = ModelStore(net.home / "flower" / "store")
    n_trees = [model_summary(booster_bytes(store.get_arrays(r["result_sha256"])))[0] for r in (r1, r2)]
    assert n_trees == [2, 4]
    assert all(model_summary(booster_bytes(store.get_arrays(u["sha256"])))[0] == 1 for u in r2["updates"])
    final = booster_bytes(store.get_arrays(r2["result_sha256"]))
    p = predict_proba(final, [[0, 1, 0, 300.0, 310.0, 1500.0, 40.0, 100.0, 10.0, 6283.0, 4000.0]])
    assert 0.0 < float(p[0]) < 1.0
