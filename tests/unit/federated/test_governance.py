"""What product code decides on top of a RoundLedger (task creation, resume point, the client-side hash
check, the content-addressed store against the ledger) -- on the in-memory fake -- and how the Fabric
RoundLedger encodes its calls for the contracts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from federated.fabric_ledger import FabricRoundLedger
from federated.governance import (
    GlobalModelRefused,
    GovernanceError,
    ResumePoint,
    RoundLedger,
    TaskExists,
    TaskRecord,
    UpdateRecord,
    ensure_task,
    verify_global_model,
)
from federated.hashing import arrays_sha256
from federated.store import ModelStore, StoreError
from tests.unit.federated.fake_ledger import FakeLedger

H = [f"{i:064x}" for i in range(1, 10)]


def _task(led, task: str = "t/1", rounds: int = 3):
    """The ledger with task registered (as models:CreateTask must precede any round), each plant granted
    the other's data set."""
    datasets = ("plant1.ai4i2020", "plant2.ai4i2020")
    led.create_task(TaskRecord(task, "mlp-11-64-32-1", "fl:maintenance", datasets, rounds, "fedavg"))
    led.grant_federation(datasets, "fl:maintenance")
    return led


def test_the_fake_is_a_round_ledger_and_starts_rounds_only_on_recorded_allowed_checks():
    led = _task(FakeLedger())
    assert isinstance(led, RoundLedger)
    with pytest.raises(GovernanceError, match="not an org of task"):
        led.commit_round_start("t/1", 1, H[0], {"hospital1": {"plant1.ai4i2020": "fake-x"}})
    with pytest.raises(GovernanceError, match="names no recorded check of 'plant2.ai4i2020'"):
        led.commit_round_start("t/1", 1, H[0], {"plant1": {"plant1.ai4i2020": led.admit("t/1", "plant1")["plant1"]["plant1.ai4i2020"]}})
    led.revoke("plant1", "plant2.ai4i2020", "fl:maintenance")
    with pytest.raises(GovernanceError, match="does not allow it"):
        led.commit_round_start("t/1", 1, H[0], led.admit("t/1", "plant1"))
    checks = led.admit("t/1", "plant2")
    led.commit_round_start("t/1", 1, H[0], checks)
    assert led.get_round("t/1", 1).checks == checks and led.get_round("t/1", 1).participants == ["plant2"]


def test_tasks_are_created_once_and_bound_their_rounds():
    led = FakeLedger()
    wanted = TaskRecord("t/1", "mlp-11-8-1", "fl:maintenance", ("plant1.ai4i2020", "plant2.ai4i2020"), 1, "fedavg",
                        {"dp": "server-fixed", "noise_multiplier": 0.5, "clipping_norm": 1.0})  # fmt: skip
    rec, created = ensure_task(led, wanted)
    assert created and rec.tx_id and rec.created_at and rec.rounds == 1
    # idempotent: the same settings (data sets in any order) find the task, never create a second one
    again, created = ensure_task(led, TaskRecord(**{**wanted.to_dict(), "datasets": wanted.datasets[::-1]}))
    assert not created and again == rec
    with pytest.raises(TaskExists, match="already exists"):
        led.create_task(wanted)
    with pytest.raises(GovernanceError, match=r"aggregation fedavg \(this run: krum\); rounds 1 \(this run: 5\)"):
        ensure_task(led, TaskRecord(**{**wanted.to_dict(), "rounds": 5, "aggregation": "krum"}))
    with pytest.raises(GovernanceError, match="data sets plant1.ai4i2020, plant2.ai4i2020 \\(this run: plant1.ai4i2020\\)"):
        ensure_task(led, TaskRecord(**{**wanted.to_dict(), "datasets": ("plant1.ai4i2020",)}))


def test_resume_point_from_the_rounds_on_the_ledger():
    led = _task(FakeLedger(), rounds=2)
    assert ResumePoint.of(led.list_rounds("t/1"), 2) == ResumePoint(1, None, None, None, False)
    led.commit_round_start("t/1", 1, H[0], led.admit("t/1", "plant1"))
    at = ResumePoint.of(led.list_rounds("t/1"), 2)  # started, never committed: re-run round 1 from its start
    assert (at.first_round, at.start_sha256, at.pending.round, at.previous, at.done) == (1, H[0], 1, None, False)
    led.commit_round_result("t/1", 1, H[1], [("plant1", H[2], 3)], {})
    at = ResumePoint.of(led.list_rounds("t/1"), 2)
    assert (at.first_round, at.start_sha256, at.pending, at.previous.round, at.resuming) == (2, H[1], None, 1, True)
    led.commit_round_start("t/1", 2, H[1], led.admit("t/1", "plant1"))
    led.commit_round_result("t/1", 2, H[3], [UpdateRecord("plant1", H[4], 3)], {})
    at = ResumePoint.of(led.list_rounds("t/1"), 2)  # trained, not evaluated: only the evaluation is left
    assert (at.first_round, at.start_sha256, at.done) == (3, H[3], False)
    led.commit_evaluation("t/1", 2, H[3], {"plant1": {"auroc": 0.7}})
    assert ResumePoint.of(led.list_rounds("t/1"), 2).done


def test_client_check_announced_and_committed_hash():
    led = _task(FakeLedger())
    led.commit_round_start("t/1", 1, H[0], led.admit("t/1", "plant1"))
    rec = led.get_round("t/1", 1)
    verify_global_model(received_sha256=H[0], announced_sha256=H[0], committed=rec, phase="train", task="t", round=1)
    with pytest.raises(GlobalModelRefused, match="server announced"):
        verify_global_model(received_sha256=H[1], announced_sha256=H[0], committed=rec, phase="train", task="t", round=1)
    with pytest.raises(GlobalModelRefused, match="ledger committed"):
        verify_global_model(received_sha256=H[1], announced_sha256=H[1], committed=rec, phase="train", task="t", round=1)
    with pytest.raises(GlobalModelRefused, match="no committed result"):
        verify_global_model(received_sha256=H[0], announced_sha256=H[0], committed=rec, phase="evaluate", task="t", round=1)
    # without a ledger only the announcement is checked
    verify_global_model(received_sha256=H[5], announced_sha256=H[5], committed=None, phase="train", task="t", round=1)


def test_store_is_content_addressed_and_verify_finds_missing_and_tampered(tmp_path):
    store = ModelStore(tmp_path / "store")
    a = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    b = {"w": np.ones(3, dtype=np.float32)}
    sa, sb = store.put_arrays(a), store.put_arrays(b)
    assert sa == arrays_sha256(a) and store.path(sa).name == sa
    assert store.put_arrays(a) == sa and store.list() == sorted([sa, sb])
    np.testing.assert_array_equal(store.get_arrays(sa)["w"], a["w"])
    store.path(sb).write_bytes(store.path(sb).read_bytes()[:-1] + b"\x01")  # tamper
    rep = store.verify([sa, sb, H[0]])
    assert rep.ok == [sa] and rep.mismatched == [sb] and rep.missing == [H[0]] and not rep.passed
    with pytest.raises(StoreError, match="corrupt"):
        store.get_arrays(sb)
    led = _task(FakeLedger())
    led.commit_round_start("t/1", 1, sa, led.admit("t/1", "plant1"))
    led.commit_round_result("t/1", 1, sa, [("plant1", sa, 1)], {})
    assert store.verify_ledger(led, "t/1").passed


class FakeContract:
    def __init__(self, answers=None):
        self.calls = []
        self.answers = answers or {}

    def evaluate(self, fn, *args):
        self.calls.append(("evaluate", fn, args))
        ans = self.answers.get(fn, b"")
        if isinstance(ans, Exception):
            raise ans
        return ans

    def submit(self, fn, *args):
        self.calls.append(("submit", fn, args))
        return b""


def test_fabric_ledger_encodes_calls_for_the_contracts():
    rec = {"task": "t/1", "round": 1, "global_sha256": H[0], "participants": ["a"], "started_at": 1.0}
    registry = FakeContract({"ReadRound": json.dumps(rec).encode(), "ListRounds": json.dumps([rec]).encode()})
    access = FakeContract({"CheckReadOnly": b'{"org": "plant1", "allowed": true}'})
    led = FabricRoundLedger(registry, access)
    assert isinstance(led, RoundLedger)
    assert led.check_grant("plant1", "plant1.ai4i2020", "fl:maintenance")
    assert access.calls == [("evaluate", "CheckReadOnly", ("plant1.ai4i2020", "fl:maintenance"))]
    led.commit_round_start("t/1", 1, H[0], {"b": {"d1": "tx2"}, "a": {"d1": "tx1"}})
    led.commit_round_result("t/1", 1, H[1], [("a", H[2], 3)], {"loss": 0.25})
    led.commit_evaluation("t/1", 1, H[1], {"a": {"auroc": 0.5}})
    assert registry.calls == [
        ("submit", "StartRound", ("t/1", "1", H[0], '{"a":{"d1":"tx1"},"b":{"d1":"tx2"}}')),
        ("submit", "CommitRound", ("t/1", "1", H[1], f'[{{"num_examples":3,"org":"a","sha256":"{H[2]}"}}]', '{"loss":0.25}')),
        ("submit", "RecordEvaluation", ("t/1", "1", H[1], '{"a":{"auroc":0.5}}')),
    ]
    assert led.get_round("t/1", 1).global_sha256 == H[0]
    assert [r.round for r in led.list_rounds("t/1")] == [1]
    missing = FabricRoundLedger(FakeContract({"ReadRound": RuntimeError("round 9 of t/1 not found")}), access)
    assert missing.get_round("t/1", 9) is None


def test_open_ledger_is_fabric_only(tmp_path):
    from federated.fabric_ledger import open_ledger

    for spec in ("memory:", f"file:{tmp_path / 'ledger.json'}", "etcd:x", ""):
        with pytest.raises(GovernanceError, match="the ledger is Fabric, named as fabric:CONFIG.json"):
            open_ledger(spec)
    with pytest.raises(GovernanceError, match="cannot read the Fabric ledger config"):
        open_ledger(f"fabric:{tmp_path / 'none.json'}")
