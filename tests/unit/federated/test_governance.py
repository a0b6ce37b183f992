"""The RoundLedger rules (in memory, JSON file, Fabric via a fake contract), the client-side hash check
and the content-addressed store."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from federated.fabric_ledger import FabricRoundLedger
from federated.governance import (
    GlobalModelRefused,
    GovernanceError,
    InMemoryLedger,
    JsonFileLedger,
    ResumePoint,
    RoundLedger,
    TaskExists,
    TaskRecord,
    UpdateRecord,
    ensure_task,
    open_ledger,
    verify_global_model,
)
from federated.hashing import arrays_sha256
from federated.store import ModelStore, StoreError

H = [f"{i:064x}" for i in range(1, 10)]


def _task(led, task: str = "t/1", rounds: int = 3):
    """The ledger with task registered (as models:CreateTask must precede any round)."""
    led.create_task(TaskRecord(task, "mlp-11-64-32-1", "fl:maintenance", ("plant1.ai4i2020", "plant2.ai4i2020"),
                               rounds, "fedavg"))  # fmt: skip
    return led


def _two_rounds(led: InMemoryLedger, task: str = "maintenance/run-1") -> None:
    if led.get_task(task) is None:
        _task(led, task)
    led.commit_round_start(task, 1, H[0], ["plant2", "plant1"])
    led.commit_round_result(task, 1, H[1], [("plant1", H[2], 10), UpdateRecord("plant2", H[3], 5)], {"loss": 0.5})
    led.commit_round_start(task, 2, H[1], ["plant1", "plant2"])
    led.commit_round_result(task, 2, H[4], [("plant1", H[5], 10), ("plant2", H[6], 5)], {})


def test_in_memory_ledger_records_rounds_in_order():
    led = InMemoryLedger()
    assert isinstance(led, RoundLedger)
    _two_rounds(led)
    r1, r2 = led.list_rounds("maintenance/run-1")
    assert r1.participants == ["plant1", "plant2"] and r1.result_sha256 == H[1] and r1.metrics == {"loss": 0.5}
    assert [(u.org, u.sha256, u.num_examples) for u in r1.updates] == [("plant1", H[2], 10), ("plant2", H[3], 5)]
    assert r2.global_sha256 == r1.result_sha256
    assert led.get_round("maintenance/run-1", 3) is None
    led.commit_evaluation("maintenance/run-1", 2, H[4], {"plant1": {"auroc": 0.9}})
    assert led.get_round("maintenance/run-1", 2).evaluation == {"plant1": {"auroc": 0.9}}


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda l: l.commit_round_start("t/1", 2, H[0], ["a"]), "round 1 has no result"),
        (lambda l: l.commit_round_start("t/1", 1, "abc", ["a"]), "64 lowercase hex"),
        (lambda l: l.commit_round_start("t/1", 1, H[0], []), "no participants"),
        (lambda l: l.commit_round_result("t/1", 1, H[1], [("a", H[2], 1)], {}), "never started"),
    ],
)
def test_ledger_refuses_out_of_order_or_malformed_commits(bad, match):
    with pytest.raises(GovernanceError, match=match):
        bad(_task(InMemoryLedger()))


def test_ledger_refuses_outsiders_duplicates_and_a_broken_chain():
    led = _task(InMemoryLedger())
    led.commit_round_start("t/1", 1, H[0], ["a", "b"])
    with pytest.raises(GovernanceError, match="non-participants"):
        led.commit_round_result("t/1", 1, H[1], [("c", H[2], 1)], {})
    with pytest.raises(GovernanceError, match="more than one update"):
        led.commit_round_result("t/1", 1, H[1], [("a", H[2], 1), ("a", H[3], 1)], {})
    with pytest.raises(GovernanceError, match="examples"):
        led.commit_round_result("t/1", 1, H[1], [("a", H[2], 0)], {})
    led.commit_round_result("t/1", 1, H[1], [("a", H[2], 1)], {})
    with pytest.raises(GovernanceError, match="already has a result"):
        led.commit_round_result("t/1", 1, H[1], [("a", H[2], 1)], {})
    with pytest.raises(GovernanceError, match="must start from round 1's result"):
        led.commit_round_start("t/1", 2, H[7], ["a"])
    with pytest.raises(GovernanceError, match="already started"):
        led.commit_round_start("t/1", 1, H[0], ["a"])
    with pytest.raises(GovernanceError, match="not the committed result"):
        led.commit_evaluation("t/1", 1, H[0], {})
    with pytest.raises(GovernanceError, match="non-participants"):
        led.commit_evaluation("t/1", 1, H[1], {"c": {"auroc": 0.5}})
    led.commit_evaluation("t/1", 1, H[1], {"a": {"auroc": 0.5}})
    with pytest.raises(GovernanceError, match="already evaluated"):
        led.commit_evaluation("t/1", 1, H[1], {"a": {"auroc": 0.5}})


def test_grants_expire_and_are_revoked_and_only_recorded_uses_are_audited():
    now = [1000.0]
    led = InMemoryLedger(clock=lambda: now[0])
    # plant2's steward lets plant1 use plant2's data set; plant2 itself is its owner
    led.grant("plant1", "plant2.ai4i2020", "fl:maintenance", expires=2000.0)
    assert led.check_grant("plant1", "plant2.ai4i2020", "fl:maintenance")
    assert not led.check_grant("plant1", "plant2.ai4i2020", "fl:cardiac")  # other purpose
    assert not led.check_grant("hospital1", "plant2.ai4i2020", "fl:maintenance")  # other org
    assert led.check_grant("plant2", "plant2.ai4i2020", "fl:anything")  # the owner, without a grant
    assert led.audit == []  # check_grant is the read-only check: nothing recorded
    now[0] = 2500.0
    assert not led.check_grant("plant1", "plant2.ai4i2020", "fl:maintenance")  # expired
    led.grant("plant1", "plant2.ai4i2020", "fl:maintenance")
    assert led.check_grant("plant1", "plant2.ai4i2020", "fl:maintenance")
    led.revoke("plant1", "plant2.ai4i2020", "fl:maintenance")
    assert not led.check_grant("plant1", "plant2.ai4i2020", "fl:maintenance")


def test_recorded_use_gives_the_chaincode_decision_and_is_audited():
    now = [1000.0]
    led = InMemoryLedger(clock=lambda: now[0])
    ds, fl = "plant2.ai4i2020", "fl:maintenance"
    first = led.record_use("plant1", ds, fl)
    assert (first.allowed, first.reason) == (False, "no_grant") and first.detail == f"org 'plant1' has no grant of data set '{ds}'"
    led.grant("plant1", ds, "fl:other", expires=1500.0)
    assert led.record_use("plant1", ds, fl).reason == "wrong_purpose"
    led.grant("plant1", ds, fl, expires=2000.0)
    allowed = led.record_use("plant1", ds, fl)
    assert allowed.allowed and allowed.reason == "granted" and "until 1970-01-01T00:33:20Z" in allowed.detail
    now[0] = 2000.0  # expiry is exclusive, as in the contract
    assert led.record_use("plant1", ds, fl).reason == "expired"
    led.grant("plant1", ds, fl)  # renewed without expiry: one grant per (org, data set, purpose)
    assert len(led.grants) == 2 and led.record_use("plant1", ds, fl).allowed
    led.revoke("plant1", ds, fl)
    revoked = led.record_use("plant1", ds, fl)
    assert revoked.reason == "revoked" and "was revoked at 1970-01-01T00:33:20Z" in revoked.detail
    own = led.record_use("plant2", ds, fl)  # the owner's use is recorded too, allowed without a grant
    assert own.allowed and own.detail == f"org 'plant2' owns data set '{ds}'"
    assert [(a["org"], a["granted"], a["reason"]) for a in led.audit] == [
        ("plant1", False, "no_grant"), ("plant1", False, "wrong_purpose"), ("plant1", True, "granted"),
        ("plant1", False, "expired"), ("plant1", True, "granted"), ("plant1", False, "revoked"),
        ("plant2", True, "owner")]  # fmt: skip
    tx = [a["tx_id"] for a in led.audit]
    assert len(set(tx)) == len(tx) and all(t.startswith("local-") for t in tx) and revoked.tx_id == tx[-2]


def test_tasks_are_created_once_and_bound_their_rounds():
    led = InMemoryLedger()
    with pytest.raises(GovernanceError, match="task 't/1' is not registered"):
        led.commit_round_start("t/1", 1, H[0], ["plant1"])
    wanted = TaskRecord("t/1", "mlp-11-8-1", "fl:maintenance", ("plant1.ai4i2020", "plant2.ai4i2020"), 1, "fedavg",
                        {"dp": "server-fixed", "noise_multiplier": 0.5, "clipping_norm": 1.0})  # fmt: skip
    rec, created = ensure_task(led, wanted)
    assert created and rec.tx_id.startswith("local-") and rec.created_at and rec.rounds == 1
    # idempotent: the same settings (data sets in any order) find the task, never create a second one
    again, created = ensure_task(led, TaskRecord(**{**wanted.to_dict(), "datasets": wanted.datasets[::-1]}))
    assert not created and again == rec
    with pytest.raises(TaskExists, match="already exists"):
        led.create_task(wanted)
    with pytest.raises(GovernanceError, match=r"aggregation fedavg \(this run: krum\); rounds 1 \(this run: 5\)"):
        ensure_task(led, TaskRecord(**{**wanted.to_dict(), "rounds": 5, "aggregation": "krum"}))
    with pytest.raises(GovernanceError, match="data sets plant1.ai4i2020, plant2.ai4i2020 \\(this run: plant1.ai4i2020\\)"):
        ensure_task(led, TaskRecord(**{**wanted.to_dict(), "datasets": ("plant1.ai4i2020",)}))
    led.commit_round_start("t/1", 1, H[0], ["plant1"], {"plant2": "refused"})
    assert led.get_round("t/1", 1).excluded == {"plant2": "refused"}
    led.commit_round_result("t/1", 1, H[1], [("plant1", H[2], 3)], {})
    with pytest.raises(GovernanceError, match="has 1 rounds; round 2 is beyond it"):
        led.commit_round_start("t/1", 2, H[1], ["plant1"])


def test_resume_point_from_the_rounds_on_the_ledger():
    led = _task(InMemoryLedger(), rounds=2)
    assert ResumePoint.of(led.list_rounds("t/1"), 2) == ResumePoint(1, None, None, None, False)
    led.commit_round_start("t/1", 1, H[0], ["a"])
    at = ResumePoint.of(led.list_rounds("t/1"), 2)  # started, never committed: re-run round 1 from its start
    assert (at.first_round, at.start_sha256, at.pending.round, at.previous, at.done) == (1, H[0], 1, None, False)
    led.commit_round_result("t/1", 1, H[1], [("a", H[2], 3)], {})
    at = ResumePoint.of(led.list_rounds("t/1"), 2)
    assert (at.first_round, at.start_sha256, at.pending, at.previous.round, at.resuming) == (2, H[1], None, 1, True)
    led.commit_round_start("t/1", 2, H[1], ["a"])
    led.commit_round_result("t/1", 2, H[3], [("a", H[4], 3)], {})
    at = ResumePoint.of(led.list_rounds("t/1"), 2)  # trained, not evaluated: only the evaluation is left
    assert (at.first_round, at.start_sha256, at.done) == (3, H[3], False)
    led.commit_evaluation("t/1", 2, H[3], {"a": {"auroc": 0.7}})
    assert ResumePoint.of(led.list_rounds("t/1"), 2).done


def test_json_file_ledger_keeps_every_writer_s_changes(tmp_path):
    """The ServerApp and each org's ClientApp write the same file from their own processes."""
    path = tmp_path / "ledger.json"
    _task(JsonFileLedger(path), task="t/1", rounds=3)
    for org, other in (("plant1", "plant2"), ("plant2", "plant1")):
        JsonFileLedger(path).grant(org, f"{other}.ai4i2020", "fl:maintenance")
    script = (
        "import sys; from federated.governance import JsonFileLedger\n"
        "org, other = sys.argv[2], sys.argv[3]\n"
        "for _ in range(25):\n"
        "    JsonFileLedger(sys.argv[1]).record_use(org, other + '.ai4i2020', 'fl:maintenance')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(path), org, other])
             for org, other in (("plant1", "plant2"), ("plant2", "plant1"))]  # fmt: skip
    server = JsonFileLedger(path)  # meanwhile the server commits rounds through its own long-lived instance
    for rnd in range(1, 4):
        server.commit_round_start("t/1", rnd, H[rnd - 1], ["plant1", "plant2"])
        server.commit_round_result("t/1", rnd, H[rnd], [("plant1", H[8], 1)], {})
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    final = JsonFileLedger(path)
    assert sorted(a["org"] for a in final.audit) == ["plant1"] * 25 + ["plant2"] * 25
    assert all(a["reason"] == "granted" for a in final.audit) and [r.round for r in final.list_rounds("t/1")] == [1, 2, 3]
    # a change the rules refuse writes nothing
    before = path.read_bytes()
    with pytest.raises(GovernanceError):
        final.commit_round_start("t/1", 1, H[0], ["plant1"])
    assert path.read_bytes() == before


def test_json_file_ledger_is_shared_between_instances(tmp_path):
    path = tmp_path / "ledger.json"
    writer = JsonFileLedger(path)
    reader = open_ledger(f"file:{path}")
    writer.grant("plant1", "d", "p")
    assert reader.check_grant("plant1", "d", "p")
    _two_rounds(writer)
    assert reader.get_round("maintenance/run-1", 2).result_sha256 == H[4]
    assert json.loads(path.read_text())["rounds"]["maintenance/run-1"][0]["participants"] == ["plant1", "plant2"]
    assert isinstance(open_ledger("memory:"), InMemoryLedger)
    with pytest.raises(GovernanceError, match="bad ledger spec"):
        open_ledger("etcd:x")


def test_client_check_announced_and_committed_hash():
    led = _task(InMemoryLedger())
    led.commit_round_start("t/1", 1, H[0], ["a"])
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
    led = _task(InMemoryLedger())
    led.commit_round_start("t/1", 1, sa, ["a"])
    led.commit_round_result("t/1", 1, sa, [("a", sa, 1)], {})
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
    led.commit_round_start("t/1", 1, H[0], ["b", "a"])
    led.commit_round_result("t/1", 1, H[1], [("a", H[2], 3)], {"loss": 0.25})
    led.commit_evaluation("t/1", 1, H[1], {"a": {"auroc": 0.5}})
    assert registry.calls == [
        ("submit", "StartRound", ("t/1", "1", H[0], '["a","b"]')),
        ("submit", "CommitRound", ("t/1", "1", H[1], f'[{{"num_examples":3,"org":"a","sha256":"{H[2]}"}}]', '{"loss":0.25}')),
        ("submit", "RecordEvaluation", ("t/1", "1", H[1], '{"a":{"auroc":0.5}}')),
    ]
    assert led.get_round("t/1", 1).global_sha256 == H[0]
    assert [r.round for r in led.list_rounds("t/1")] == [1]
    missing = FabricRoundLedger(FakeContract({"ReadRound": RuntimeError("round 9 of t/1 not found")}), access)
    assert missing.get_round("t/1", 9) is None
