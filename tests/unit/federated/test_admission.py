"""Each org's ClientApp records its use of every data set of the task before it trains (admission), and a
run creates its task once and resumes it from the ledger -- in process (LocalGrid: our ServerApp logic and
ClientApps)."""

from __future__ import annotations

import pytest
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

from federated import clientapp
from federated.data import task_spec
from federated.governance import GovernanceError, TaskRecord
from federated.hashing import arrays_sha256, arrays_to_record
from federated.local_grid import LocalGrid
from federated.serverapp import initial_arrays, run_governed
from federated.store import ModelStore
from tests.unit.federated.fake_ledger import FakeLedger

CARDIAC = task_spec("cardiac")
ORGS = ["hospital1", "hospital2"]
DATASETS = tuple(CARDIAC.dataset_id(o) for o in ORGS)
FAST = {"task": "cardiac", "local-epochs": 1, "hidden": "8", "wait-for-nodes": 0.0, "poll-interval": 0.0,
        "orgs": ",".join(ORGS)}  # fmt: skip


def _context(org: str, ledger=None) -> Context:
    nc = {"org": org, "task": "cardiac", **({"ledger": ledger.spec} if ledger else {})}
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
def led():
    LocalGrid({})  # sets Flower's task identity, as the SuperNode runtime does
    return FakeLedger()


def _task(led, task_id="cardiac/a", datasets=DATASETS) -> TaskRecord:
    return led.create_task(TaskRecord(task_id, "mlp", CARDIAC.purpose, datasets, 3, "fedavg"))


def test_admission_records_a_check_of_every_data_set_of_the_task(led):
    h1, h2 = DATASETS
    _task(led)
    denied = clientapp.handle_query(_query("stats"), _context("hospital1", led))
    adm = denied.content["admission"]
    # its own data set is allowed (owner), hospital2's is not: hospital2's steward granted nothing
    assert not denied.has_error() and adm["org"] == "hospital1" and adm["allowed"] is False
    assert (adm["reason"], adm["dataset"]) == ("no_grant", h2) and adm["detail"] == f"org 'hospital1' has no grant of data set '{h2}'"
    assert list(adm["datasets"]) == [h1, h2] and list(adm["reasons"]) == ["owner", "no_grant"]
    assert "metrics" not in denied.content  # a denied org sends nothing computed from its data
    led.grant("hospital1", h2, CARDIAC.purpose)  # hospital2's steward grants hospital1
    allowed = clientapp.handle_query(_query("stats"), _context("hospital1", led))
    adm2 = allowed.content["admission"]
    assert adm2["allowed"] is True and adm2["reason"] == "granted" and adm2["dataset"] == ""
    assert list(adm2["reasons"]) == ["owner", "granted"]
    assert allowed.content["metrics"]["num-examples"] == clientapp._site("cardiac", "hospital1", None, None, 0).n_train
    admit_only = clientapp.handle_query(_query("admit"), _context("hospital1", led))
    assert admit_only.content["admission"]["allowed"] is True and "metrics" not in admit_only.content
    # one recorded check per data set per admission, each with the org's own identity, own data set first
    audit = led.audit
    assert [(a["org"], a["dataset"], a["reason"]) for a in audit] == [
        ("hospital1", h1, "owner"), ("hospital1", h2, "no_grant"),
        ("hospital1", h1, "owner"), ("hospital1", h2, "granted"),
        ("hospital1", h1, "owner"), ("hospital1", h2, "granted")]  # fmt: skip
    assert adm["tx-id"] == audit[1]["tx_id"] and list(adm2["tx-ids"]) == [audit[2]["tx_id"], audit[3]["tx_id"]]
    # without a ledger a node cannot record its use, and a task the ledger does not hold admits nobody
    reply = clientapp.handle_query(_query("admit"), _context("hospital1"))
    assert reply.has_error() and "cannot record the use of its data" in reply.error.reason
    msg = _query("admit")
    msg.content["config"]["ledger-task"] = "cardiac/none"
    reply = clientapp.handle_query(msg, _context("hospital1", led))
    assert reply.has_error() and "the ledger has no task 'cardiac/none'" in reply.error.reason
    assert len(led.audit) == 6  # neither recorded anything


def test_client_refuses_to_train_outside_its_round_or_after_a_revocation(led):
    model = initial_arrays("cardiac", "8", seed=0)
    sha = arrays_sha256(model)
    _task(led)
    led.grant_federation(DATASETS, CARDIAC.purpose)
    led.commit_round_start("cardiac/a", 1, sha, led.admit("cardiac/a", "hospital1"))
    cfg = {"task": "cardiac", "ledger-task": "cardiac/a", "global-sha256": sha, "server-round": 1, "local-epochs": 1}
    reply = clientapp.handle_train(_message(MessageType.TRAIN, cfg, model), _context("hospital2", led))
    assert reply.has_error() and "hospital2 is not one of its committed participants (hospital1)" in reply.error.reason
    # a ledger task for another purpose (or over other data sets) is not one this node serves
    led.create_task(TaskRecord("other", "mlp", "fl:maintenance", (CARDIAC.dataset_id("hospital1"),), 3, "fedavg"))
    reply = clientapp.handle_train(_message(MessageType.TRAIN, {**cfg, "ledger-task": "other"}, model),
                                   _context("hospital1", led))  # fmt: skip
    assert reply.has_error() and "ledger task 'other' is for fl:maintenance" in reply.error.reason
    trained = clientapp.handle_train(_message(MessageType.TRAIN, cfg, model), _context("hospital1", led))
    assert not trained.has_error()
    # hospital2's steward revokes hospital1's grant after admission, before training: no training on it
    led.revoke("hospital1", DATASETS[1], CARDIAC.purpose)
    reply = clientapp.handle_train(_message(MessageType.TRAIN, cfg, model), _context("hospital1", led))
    assert reply.has_error() and (f"hospital1's use of {DATASETS[1]} for fl:cardiac is no longer allowed"
                                  in reply.error.reason)  # fmt: skip


class CrashInRound:
    """The ClientApps fail every training of one round (a crash of the federation mid-run)."""

    def __init__(self, rnd: int):
        self.rnd = rnd

    def __call__(self, msg: Message, context: Context) -> Message:
        if msg.metadata.message_type == MessageType.TRAIN and int(msg.content["config"]["server-round"]) == self.rnd:
            raise RuntimeError("node lost")
        return clientapp.app(msg, context)


def test_a_run_creates_its_task_once_and_resumes_where_the_ledger_stands(tmp_path, led):
    led.grant_federation(DATASETS, CARDIAC.purpose)
    store = ModelStore(tmp_path / "store")
    cfg = {**FAST, "num-server-rounds": 2, "ledger": led.spec, "ledger-task": "cardiac-v1",
           "store": str(store.root), "standardize": "federated"}  # fmt: skip
    nodes = {o: {"task": "cardiac", "ledger": led.spec} for o in ORGS}

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
