"""Each org's ClientApp records its own data use before it trains (admission), and a run creates its task
once and resumes it from the ledger -- in process (LocalGrid: our ServerApp logic and ClientApps)."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from federated import clientapp
from federated.data import task_spec
from federated.governance import GovernanceError, JsonFileLedger, TaskRecord
from federated.hashing import arrays_sha256, arrays_to_record
from federated.local_grid import LocalGrid
from federated.serverapp import initial_arrays, run_governed
from federated.store import ModelStore

CARDIAC = task_spec("cardiac")
ORGS = ["hospital1", "hospital2"]
FAST = {"task": "cardiac", "local-epochs": 1, "hidden": "8", "wait-for-nodes": 0.0, "poll-interval": 0.0,
        "orgs": ",".join(ORGS)}  # fmt: skip


def _context(org: str, ledger_path=None) -> Context:
    nc = {"org": org, "task": "cardiac", **({"ledger": f"file:{ledger_path}"} if ledger_path else {})}
    return Context(run_id=1, node_id=7, node_config=nc, state=RecordDict(), run_config={})


def _message(message_type: str, cfg: dict, arrays=None) -> Message:
    content = RecordDict({"config": ConfigRecord(cfg)})
    if arrays is not None:
        content["arrays"] = arrays_to_record(arrays)
    msg = Message(content, dst_node_id=7, message_type=message_type)
    msg.metadata.__dict__["_message_id"] = "m1"
    return msg


def _query(phase: str) -> Message:
    return _message(MessageType.QUERY, {"task": "cardiac", "phase": phase, "server-round": 1, "ledger-task": "cardiac/a"})


@pytest.fixture
def led(tmp_path):
    LocalGrid({})  # sets Flower's task identity, as the SuperNode runtime does
    return JsonFileLedger(tmp_path / "ledger.json")


def test_admission_records_the_org_s_own_use_and_answers_with_the_decision(led):
    denied = clientapp.handle_query(_query("stats"), _context("hospital1", led.path))
    adm = denied.content["admission"]
    assert not denied.has_error() and adm["org"] == "hospital1" and adm["allowed"] is False
    assert adm["reason"] == "no_grant" and "hospital1.heart_disease_uci" in adm["detail"]
    assert "metrics" not in denied.content  # a denied org sends nothing computed from its data
    led.grant("hospital1", CARDIAC.dataset_id("hospital1"), CARDIAC.purpose)
    allowed = clientapp.handle_query(_query("stats"), _context("hospital1", led.path))
    assert allowed.content["admission"]["allowed"] is True
    assert allowed.content["metrics"]["num-examples"] == clientapp._site("cardiac", "hospital1", None, None, 0).n_train
    admit_only = clientapp.handle_query(_query("admit"), _context("hospital1", led.path))
    assert admit_only.content["admission"]["allowed"] is True and "metrics" not in admit_only.content
    audit = JsonFileLedger(led.path).audit
    assert [(a["org"], a["granted"]) for a in audit] == [("hospital1", False), ("hospital1", True), ("hospital1", True)]
    assert adm["tx-id"] == audit[0]["tx_id"]
    # without a ledger a node cannot record its use, so it takes part in no governed round
    reply = clientapp.handle_query(_query("admit"), _context("hospital1"))
    assert reply.has_error() and "cannot record the use of its data" in reply.error.reason


def test_client_refuses_to_train_outside_its_round_or_after_a_revocation(led):
    model = initial_arrays("cardiac", "8", seed=0)
    sha = arrays_sha256(model)
    led.create_task(TaskRecord("cardiac/a", "mlp", CARDIAC.purpose, tuple(CARDIAC.dataset_id(o) for o in ORGS), 3, "fedavg"))
    led.commit_round_start("cardiac/a", 1, sha, ["hospital1"])
    for org in ORGS:
        led.grant(org, CARDIAC.dataset_id(org), CARDIAC.purpose)
    cfg = {"task": "cardiac", "ledger-task": "cardiac/a", "global-sha256": sha, "server-round": 1, "local-epochs": 1}
    reply = clientapp.handle_train(_message(MessageType.TRAIN, cfg, model), _context("hospital2", led.path))
    assert reply.has_error() and "hospital2 is not one of its committed participants (hospital1)" in reply.error.reason
    # a ledger task for another purpose (or over other data sets) is not one this node serves
    led.create_task(TaskRecord("other", "mlp", "fl:maintenance", (CARDIAC.dataset_id("hospital1"),), 3, "fedavg"))
    reply = clientapp.handle_train(_message(MessageType.TRAIN, {**cfg, "ledger-task": "other"}, model),
                                   _context("hospital1", led.path))  # fmt: skip
    assert reply.has_error() and "ledger task 'other' is for fl:maintenance" in reply.error.reason
    led.revoke("hospital1", CARDIAC.dataset_id("hospital1"), CARDIAC.purpose)  # after admission, before training
    reply = clientapp.handle_train(_message(MessageType.TRAIN, cfg, model), _context("hospital1", led.path))
    assert reply.has_error() and "is no longer allowed" in reply.error.reason


class CrashInRound:
    """The ClientApps fail every training of one round (a crash of the federation mid-run)."""

    def __init__(self, rnd: int):
        self.rnd = rnd

    def __call__(self, msg: Message, context: Context) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN and int(msg.content["config"]["server-round"]) == self.rnd:
            raise RuntimeError("node lost")
        return clientapp.app(msg, context)


def test_a_run_creates_its_task_once_and_resumes_where_the_ledger_stands(tmp_path, led):
    for org in ORGS:
        led.grant(org, CARDIAC.dataset_id(org), CARDIAC.purpose)
    store = ModelStore(tmp_path / "store")
    cfg = {**FAST, "num-server-rounds": 2, "ledger": f"file:{led.path}", "ledger-task": "cardiac-v1",
           "store": str(store.root), "standardize": "federated"}  # fmt: skip
    nodes = {o: {"task": "cardiac", "ledger": f"file:{led.path}"} for o in ORGS}

    with pytest.raises(GovernanceError, match="round 2: 0 valid update"):
        run_governed(LocalGrid(nodes, app=CrashInRound(2)), cfg)
    task = led.get_task("cardiac-v1")
    r1, r2 = led.list_rounds("cardiac-v1")
    assert task.rounds == 2 and r1.complete and not r2.complete  # round 2 started, never committed

    grid = LocalGrid(nodes)
    _, info = run_governed(grid, cfg)  # the same command again: resumes round 2, creates nothing
    assert led.get_task("cardiac-v1") == task
    r1b, r2b = led.list_rounds("cardiac-v1")
    assert r1b == r1  # round 1 untouched
    assert r2b.start_tx_id == r2.start_tx_id and r2b.global_sha256 == r1.result_sha256 and r2b.complete
    assert list(info.participants) == [2] and r2b.evaluated_sha256 == r2b.result_sha256 == info.final_sha256
    # resumed from the stored model, which carries round 1's federated scaler: no statistics asked again
    assert all(m.content["config"]["phase"] == "admit" for m in grid.sent if m.metadata.message_type == MessageType.QUERY)
    assert store.verify_ledger(led, "cardiac-v1").passed

    grid = LocalGrid(nodes)
    _, info = run_governed(grid, cfg)  # everything committed and evaluated: nothing to do
    assert grid.sent == [] and info.final_sha256 == r2b.result_sha256
    with pytest.raises(GovernanceError, match="already on the ledger with aggregation fedavg \\(this run: fedmedian\\)"):
        run_governed(LocalGrid(nodes), {**cfg, "strategy": "fedmedian"})
