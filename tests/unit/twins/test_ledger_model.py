"""The machine twins' federated model: chosen from the ledger's last committed round, verified by hash, swapped live.

Models here are real ones of ``federated.model`` (an MLP with the federation's scaler, as a governed run commits it),
written to a real ``federated.store.ModelStore``; the ledger's rounds are the models contract's ``ListRounds``
records (the integration test reads them from the real network: tests/integration/test_twins_ledger_model.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import numpy as np
import pytest
import torch

from federated.data import AI4I_FEATURES
from federated.model import Scaler, model_arrays, new_model, predict_proba
from federated.store import ModelStore
from tests.unit.twins.fakes import MemoryAnchorer
from twins.alerts import twin_alerts
from twins.anchoring.alert_outbox import AlertTracker
from twins.bridge.mapping import parse_mapping
from twins.model.federated import (
    Ai4iMlp, CommittedRound, ModelFormatError, ModelHashMismatch, ModelUnavailable, ai4i_mlp, latest_committed,
    load_committed,
)
from twins.model.ledger_watch import ModelsConfig, ModelWatcher
from twins.model.twin import MachineTwin
from twins.readings import Reading
from twins.runtime import TwinRuntime

torch.set_num_threads(1)
TASK = "maintenance-v1"


def arrays(seed: int = 0, scaler: bool = True, in_dim: int = len(AI4I_FEATURES)) -> dict[str, np.ndarray]:
    out = model_arrays(new_model(in_dim, (16, 8), seed))
    if scaler:
        rng = np.random.default_rng(seed)
        x = np.column_stack([rng.integers(0, 2, (500, 3)), rng.normal(300, 2, 500), rng.normal(310, 1.5, 500),
                             rng.normal(1500, 150, 500), rng.normal(40, 10, 500), rng.uniform(0, 240, 500),
                             rng.normal(10, 1, 500), rng.normal(6000, 1500, 500), rng.normal(8000, 3000, 500)])[:, :in_dim]
        out.update(Scaler.fit(x).arrays())
    return out


def rnd(n: int, sha: str | None, status: str = "committed", task: str = TASK) -> dict[str, Any]:
    return {"task": task, "round": n, "status": status, "result_sha256": sha, "commit_tx_id": f"tx{n}",
            "committed_at_utc": "2026-01-01T00:00:00Z"}


def test_the_last_committed_round_of_the_task_is_chosen() -> None:
    a, b, c = "a" * 64, "b" * 64, "c" * 64
    assert latest_committed(TASK, []) is None
    assert latest_committed(TASK, [rnd(1, None, "started")]) is None
    chosen = latest_committed(TASK, [rnd(1, a), rnd(3, c, "started"), rnd(2, b), rnd(9, "f" * 64, task="other")])
    assert (chosen.round, chosen.sha256, chosen.commit_tx_id) == (2, b, "tx2")
    assert chosen.label == f"federated:{TASK}:round2:{b[:12]}"
    # a result that is not a SHA-256 is never a model to look for
    assert latest_committed(TASK, [rnd(1, a), rnd(2, "B" * 64), rnd(3, "../etc")]).round == 1


def test_a_committed_model_is_loaded_only_if_its_bytes_hash_to_the_ledgers(tmp_path) -> None:
    store = ModelStore(tmp_path / "store")
    sha = store.put_arrays(arrays())
    committed = CommittedRound(TASK, 1, sha)
    model = load_committed(store.root, committed)
    assert isinstance(model, Ai4iMlp) and model.sha256 == sha and model.label == f"federated:{TASK}:round1:{sha[:12]}"

    # the ledger names a hash the store does not hold
    with pytest.raises(ModelUnavailable, match="no model file"):
        load_committed(store.root, CommittedRound(TASK, 2, "d" * 64))
    # bytes changed after the commit: refused, naming both hashes
    path = store.path(sha)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelHashMismatch) as exc:
        load_committed(store.root, committed)
    import hashlib

    assert sha in str(exc.value) and hashlib.sha256(bytes(data)).hexdigest() in str(exc.value)


def test_models_a_machine_twin_cannot_run_are_refused(tmp_path) -> None:
    store = ModelStore(tmp_path / "store")
    for bad, why in ((arrays(scaler=False), "carries no federated scaler"), (arrays(in_dim=23), "maps 23 inputs")):
        sha = store.put_arrays(bad)
        with pytest.raises(ModelFormatError, match=why):
            load_committed(store.root, CommittedRound(TASK, 1, sha))
    sha = store.put_bytes(b"not canonical arrays")
    with pytest.raises(ModelFormatError, match="not a canonical array file"):
        load_committed(store.root, CommittedRound(TASK, 1, sha))


def test_the_numpy_mlp_predicts_what_the_training_code_predicts() -> None:
    arr = arrays(seed=4)
    model = ai4i_mlp(__import__("federated.hashing", fromlist=["canonical_bytes"]).canonical_bytes(arr),
                     CommittedRound(TASK, 1, "e" * 64))
    from federated.model import model_from_arrays

    net = model_from_arrays(arr)
    scaler = Scaler.from_arrays(arr)
    rng = np.random.default_rng(1)
    x = np.column_stack([np.eye(3)[rng.integers(0, 3, 64)], rng.normal(300, 2, 64), rng.normal(310, 1.5, 64),
                         rng.normal(1500, 150, 64), rng.normal(40, 10, 64), rng.uniform(0, 240, 64),
                         rng.normal(10, 1, 64), rng.normal(6000, 1500, 64), rng.normal(8000, 3000, 64)])
    np.testing.assert_allclose(model.predict_rows(x), predict_proba(net, scaler.transform(x)), rtol=1e-5, atol=1e-7)
    # a twin's prediction: the model's probability per product type, weighted by the observed mix
    f = {"air_k": 300.0, "process_k": 310.0, "rpm": 1500.0, "torque_nm": 40.0, "wear_min": 100.0, "temp_diff_k": 10.0,
         "power_w": 40.0 * 1500 * 2 * np.pi / 60, "strain_min_nm": 4000.0}
    rows = np.array([[1.0 * (t == "L"), 1.0 * (t == "M"), 1.0 * (t == "H"), 300, 310, 1500, 40, 100, 10,
                      f["power_w"], 4000] for t in "LMH"])
    pl, pm, ph = predict_proba(net, scaler.transform(rows))
    assert model.predict(f, {"L": 0.5, "M": 0.3, "H": 0.2}) == pytest.approx(0.5 * pl + 0.3 * pm + 0.2 * ph, rel=1e-5)


class Rounds:
    """The models contract's answers to ListRounds, as the test sets them (unit tests only)."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []
        self.error: Exception | None = None

    async def list_rounds(self, task: str) -> list[dict[str, Any]]:
        if self.error is not None:
            raise self.error
        return [r for r in self.rounds if r["task"] == task]


def test_the_watcher_swaps_to_a_verified_new_round_and_keeps_its_model_otherwise(tmp_path, caplog) -> None:
    store = ModelStore(tmp_path / "store")
    ledger, swapped = Rounds(), []
    w = ModelWatcher("machine", TASK, store.root, ledger, on_swap=swapped.append)
    caplog.set_level(logging.INFO, logger="twins.models")

    async def check() -> bool:
        return await w.check_once()

    assert asyncio.run(check()) is False and w.status()["state"] == "fallback"  # no round yet: the rules
    sha1 = store.put_arrays(arrays(1))
    ledger.rounds.append(rnd(1, sha1))
    assert asyncio.run(check()) is True and swapped[-1].sha256 == sha1
    assert asyncio.run(check()) is False and len(swapped) == 1  # the same round: nothing to do

    # round 2 committed, its file altered after the commit: refused once, loudly, round 1 stays
    sha2 = store.put_arrays(arrays(2))
    good = store.path(sha2).read_bytes()
    store.path(sha2).write_bytes(good[:-4] + b"\0\0\0\0")
    ledger.rounds.append(rnd(2, sha2))
    caplog.clear()
    for _ in range(3):
        assert asyncio.run(check()) is False
    refusals = [r for r in caplog.records if "REFUSED" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert sha2 in refusals[0].getMessage() and f"keeping federated:{TASK}:round1:{sha1[:12]}" in refusals[0].getMessage()
    st = w.status()
    assert st["model"].endswith(sha1[:12]) and st["refused"]["reason"] == "hash-mismatch" and st["refused"]["round"] == 2
    assert st["ledger_latest"]["round"] == 2

    # the ledger cannot be read for a while: keep the model
    ledger.error = ConnectionError("peer0.plant1 unavailable")
    assert asyncio.run(check()) is False and w.model.sha256 == sha1 and w.ledger_errors == 1
    ledger.error = None
    # the store gets the true bytes back: round 2 verifies and is swapped in
    store.path(sha2).write_bytes(good)
    assert asyncio.run(check()) is True and swapped[-1].sha256 == sha2 and w.status()["refused"] is None
    assert [s["round"] for s in w.status()["swaps"]] == [1, 2]


MAPPING = parse_mapping({
    "assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}, "plant1.m2": {"org": "plant1", "kind": "machine"},
               "hospital1.bed1": {"org": "hospital1", "kind": "patient"}},
    "nodes": {f"ns=2;s={a}.{p}": {"asset": a, "property": p} for a in ("plant1.m1", "plant1.m2")
              for p in ("AirTemperature", "ProcessTemperature", "RotationalSpeed", "Torque", "ToolWear")},
})


def feed(rt: TwinRuntime, seq: int, wear: float = 230.0) -> int:
    n = 0
    ts = time.time_ns() // 1000
    for asset in ("plant1.m1", "plant1.m2"):
        for i, (prop, v) in enumerate({"AirTemperature": 300.0, "ProcessTemperature": 310.0, "RotationalSpeed": 1500.0,
                                       "Torque": 40.0, "ToolWear": wear}.items()):
            rt.on_reading(Reading("plant1", asset, prop, seq, ts + i, v))
            n += 1
    return n


def test_the_runtime_swaps_between_readings_and_every_record_names_the_model(tmp_path) -> None:
    store = ModelStore(tmp_path / "store")
    cfg = ModelsConfig(tasks={"machine": TASK}, store=store.root, poll_s=0.02)
    rt = TwinRuntime(MAPPING, tmp_path / "r.sqlite", MemoryAnchorer(), interval=0.05, report_every=0, models=cfg)
    # the in-memory anchorer has no ledger gateway: no watcher, and the twins say they use the rules
    assert rt.model_watchers == {} and rt.models_status()["machine"]["state"] == "fallback"
    assert rt.models_status()["patient"]["state"] == "fallback"
    assert rt.models_status()["patient"]["fallback"] == "fallback:news2-like-v1"
    ledger = Rounds()
    rt.model_watchers["machine"] = ModelWatcher("machine", TASK, store.root, ledger,
                                                on_swap=lambda m: rt.swap_model("machine", m))
    sha = store.put_arrays(arrays(3))

    async def go() -> tuple[int, list[dict[str, Any]]]:
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run_anchoring(stop))
        fed, labels = 0, []
        for seq in range(1, 41):
            fed += feed(rt, seq)
            if seq == 10:
                ledger.rounds.append(rnd(1, sha))
            labels.append(rt.twins["plant1.m1"].predict())
            await asyncio.sleep(0.01)
        stop.set()
        await task
        return fed, labels

    fed, preds = asyncio.run(go())
    assert rt.readings == fed and rt.store.count("readings") == fed  # no reading dropped by the swap
    kinds = [p["model"].split(":")[0] for p in preds]
    first_fed = kinds.index("federated")
    assert set(kinds[:first_fed]) == {"fallback"} and set(kinds[first_fed:]) == {"federated"}  # one switch, no mix
    assert preds[-1]["model"] == f"federated:{TASK}:round1:{sha[:12]}" and preds[-1]["model_sha256"] == sha
    assert all(rt.twins[a].model is rt.model_watchers["machine"].model for a in ("plant1.m1", "plant1.m2"))
    st = rt.status()
    assert st["models"]["machine"]["in_use"]["sha256"] == sha
    assert st["twins"]["plant1.m2"]["prediction"]["model_sha256"] == sha
    # the anchored twin state names the model that predicts from it
    import json

    assert json.loads(rt.store.latest_twin_states()["plant1.m1"])["model"] == preds[-1]["model"]
    rt.close()


def test_alerts_carry_the_model_hash_to_the_ledger_record(tmp_path) -> None:
    store = ModelStore(tmp_path / "store")
    sha = store.put_arrays(arrays(5))
    twin = MachineTwin("plant1.m1", "plant1")
    for i, (prop, v) in enumerate({"AirTemperature": 300.0, "ProcessTemperature": 310.0, "RotationalSpeed": 1500.0,
                                   "Torque": 40.0, "ToolWear": 230.0}.items()):
        twin.update(Reading("plant1", twin.asset, prop, 1, 1000 + i, v))

    class Always:  # a model that sees a failure coming, to open an alert (the hash is what is under test)
        label, sha256 = f"federated:{TASK}:round1:{sha[:12]}", sha

        def predict(self, features: dict[str, float], type_mix: Any = None) -> float:
            return 0.9

    twin.model = Always()
    (alert,) = twin_alerts({twin.asset: twin.snapshot()})
    assert alert["label"] == Always.label and alert["model_sha256"] == sha
    from twins.anchoring.store import ReadingStore

    rs = ReadingStore(tmp_path / "r.sqlite")
    (rec,) = AlertTracker(rs).observe("plant1", {twin.asset: twin.snapshot()})
    assert rec.detail["model"] == Always.label and rec.detail["model_sha256"] == sha
    # the contract's own check accepts exactly this detail (chaincode/twins.py)
    from chaincode.twins import alert_model

    assert alert_model(rec.detail) == (Always.label, sha)
    rs.close()


def test_a_new_model_opens_its_own_alert_for_a_condition_that_still_holds(tmp_path) -> None:
    from twins.anchoring.store import ReadingStore

    rs = ReadingStore(tmp_path / "r.sqlite")
    twin = MachineTwin("plant1.m1", "plant1")
    for i, (prop, v) in enumerate({"AirTemperature": 300.0, "ProcessTemperature": 310.0, "RotationalSpeed": 1500.0,
                                   "Torque": 40.0, "ToolWear": 236.0}.items()):
        twin.update(Reading("plant1", twin.asset, prop, 1, 1000 + i, v))
    tracker = AlertTracker(rs)
    (first,) = tracker.observe("plant1", {twin.asset: twin.snapshot()})
    assert first.detail["model"] == "fallback:ai4i-rules-v1" and "model_sha256" not in first.detail
    assert tracker.observe("plant1", {twin.asset: twin.snapshot()}) == []  # same model, same episode

    class Round1:
        label, sha256 = f"federated:{TASK}:round1:{'cd' * 6}", "cd" * 32

        def predict(self, features: dict[str, float], type_mix: Any = None) -> float:
            return 0.7

    twin.model = Round1()
    (second,) = tracker.observe("plant1", {twin.asset: twin.snapshot()})
    assert (second.episode, second.detail["model"], second.detail["model_sha256"]) == (2, Round1.label, Round1.sha256)
    assert [a["key"] for a in rs.alerts(open_only=True)] == [second.key]  # the rules' episode ended
    # after a restart the open episode's model comes back from the store: nothing new while it holds
    assert AlertTracker(rs).observe("plant1", {twin.asset: twin.snapshot()}) == []
    rs.close()
