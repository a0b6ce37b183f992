"""The governed strategy and the ClientApp, in process (LocalGrid: our ServerApp logic, Flower's strategies,
our ClientApp, no SuperLink)."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module

from federated import clientapp
from federated.data import task_spec
from federated.governance import GovernanceError, TaskRecord
from federated.hashing import arrays_sha256, arrays_to_record, record_to_arrays
from federated.local_grid import LocalGrid
from federated.model import SCALER_MEAN, Scaler
from federated.participants import OrgResolver
from federated.pki import make_node_key
from federated.serverapp import initial_arrays, run_governed
from federated.store import ModelStore
from tests.unit.federated.fake_ledger import FakeLedger

FAST = {"local-epochs": 1, "num-server-rounds": 2, "hidden": "8", "wait-for-nodes": 0.0, "poll-interval": 0.0}
CARDIAC = task_spec("cardiac")


def _ledger(orgs, task=CARDIAC):
    """A ledger on which every org of ``orgs`` was granted every other one's data set for the task."""
    led = FakeLedger()
    led.grant_federation([task.dataset_id(o) for o in orgs], task.purpose)
    return led


def _grid(led, orgs, task="cardiac", **extra):
    return LocalGrid({o: {"task": task, "ledger": led.spec, **extra.get(o, {})} for o in orgs})


def test_only_granted_orgs_take_part_and_rounds_are_committed(tmp_path):
    orgs = ["hospital1", "hospital2", "hospital3"]
    led = _ledger(["hospital1", "hospital2"])
    ds = {o: CARDIAC.dataset_id(o) for o in orgs}
    for org in ("hospital1", "hospital2"):  # hospital3's steward lets them use its data; they grant it nothing
        led.grant(org, ds["hospital3"], CARDIAC.purpose)
    grid = _grid(led, orgs)
    cfg = {**FAST, "task": "cardiac", "orgs": ",".join(orgs), "ledger": led.spec,
           "store": str(tmp_path / "store"), "ledger-task": "cardiac/run-t"}  # fmt: skip
    _, info = run_governed(grid, cfg)

    h3 = grid.node_id_of("hospital3")
    # hospital3 was only asked to record its own data use (admission), never sent a model
    assert {m.metadata.message_type for m in grid.sent if m.metadata.dst_node_id == h3} == {MessageType.QUERY}
    rounds = led.list_rounds("cardiac/run-t")
    assert [r.round for r in rounds] == [1, 2]
    for r in rounds:
        assert r.participants == ["hospital1", "hospital2"]
        assert sorted(u.org for u in r.updates) == ["hospital1", "hospital2"]
        # each participant is on the round record with the transactions of its own recorded checks
        assert set(r.checks) == {"hospital1", "hospital2"} and all(set(c) == set(ds.values()) for c in r.checks.values())
        # why hospital3 is not a participant is in the run's report: its own check of the first data set it
        # may not use was denied
        assert list(info.excluded[r.round]) == ["hospital3"]
        assert info.excluded[r.round]["hospital3"].startswith(f"refused to train: its recorded check of {ds['hospital1']} "
                                                              "was denied (no_grant: org 'hospital3' has no grant")
    assert rounds[0].global_sha256 == info.global_hashes[0]
    assert rounds[1].global_sha256 == rounds[0].result_sha256 == info.global_hashes[1]
    assert rounds[1].result_sha256 == info.final_sha256
    assert set(rounds[1].evaluation) == {"hospital1", "hospital2"}
    # every org recorded its use of each of the task's data sets once per round, allowed or denied
    uses = [(a["org"], a["dataset"], a["reason"]) for a in led.audit]
    assert len(uses) == 2 * 3 * 3 and sorted(set(uses)) == sorted([
        ("hospital1", ds["hospital1"], "owner"), ("hospital1", ds["hospital2"], "granted"),
        ("hospital1", ds["hospital3"], "granted"), ("hospital2", ds["hospital2"], "owner"),
        ("hospital2", ds["hospital1"], "granted"), ("hospital2", ds["hospital3"], "granted"),
        ("hospital3", ds["hospital3"], "owner"), ("hospital3", ds["hospital1"], "no_grant"), ("hospital3", ds["hospital2"], "no_grant")])
    task = led.get_task("cardiac/run-t")
    assert task.rounds == 2 and task.purpose == "fl:cardiac" and task.aggregation == "fedavg"
    assert sorted(task.datasets) == [CARDIAC.dataset_id(o) for o in orgs] and task.architecture == f"mlp-{len(CARDIAC.feature_names)}-8-1"
    # the store holds every model the ledger names, under its hash
    assert ModelStore(tmp_path / "store").verify_ledger(led, "cardiac/run-t").passed
    # the update sample counts are each site's training rows
    assert {u.org: u.num_examples for u in rounds[0].updates} == {
        o: clientapp._site("cardiac", o, None, None, 0).n_train for o in ("hospital1", "hospital2")
    }


def test_too_few_granted_orgs_is_a_clear_error(tmp_path):
    led = _ledger([])
    led.grant("hospital1", CARDIAC.dataset_id("hospital2"), CARDIAC.purpose)  # hospital1 granted nothing back
    grid = _grid(led, ["hospital1", "hospital2"])
    with pytest.raises(GovernanceError, match=r"only 1 org\(s\) admitted.*hospital2: refused to train: its recorded "
                                              r"check of hospital1.heart_disease_uci was denied \(no_grant"):
        run_governed(grid, {**FAST, "task": "cardiac", "ledger": led.spec})
    assert led.list_rounds("cardiac/run-0") == []  # nothing was committed


def test_wrapper_works_around_other_flower_strategies(tmp_path):
    led = _ledger(["hospital1", "hospital2"])
    for name in ("fedmedian", "fedtrimmedavg", "krum", "fedprox"):
        grid = _grid(led, ["hospital1", "hospital2"])
        _, info = run_governed(grid, {**FAST, "num-server-rounds": 1, "task": "cardiac", "strategy": name,
                                      "ledger": led.spec, "ledger-task": f"cardiac/{name}"})  # fmt: skip
        assert led.get_round(f"cardiac/{name}", 1).result_sha256 == info.final_sha256


class TamperingApp:
    """plant2's ClientApp changes its update after hashing it (or a man in the middle does)."""

    def __init__(self, victim: str):
        self.victim = victim

    def __call__(self, msg: Message, context: Context) -> Message:
        reply = clientapp.app(msg, context)
        if context.node_config["org"] == self.victim and msg.metadata.message_type == MessageType.TRAIN:
            arrays = record_to_arrays(reply.content["arrays"])
            k = next(iter(arrays))
            arrays[k] = arrays[k] + 1.0
            reply.content["arrays"] = arrays_to_record(arrays)
        return reply


def test_server_rejects_an_update_that_does_not_hash_to_its_declared_sha(tmp_path):
    orgs = ["hospital1", "hospital2", "hospital3"]
    led = _ledger(orgs)
    grid = LocalGrid({o: {"task": "cardiac", "ledger": led.spec} for o in orgs}, app=TamperingApp("hospital2"))
    _, info = run_governed(grid, {**FAST, "num-server-rounds": 1, "task": "cardiac", "orgs": ",".join(orgs),
                                  "ledger": led.spec, "ledger-task": "cardiac/x"})  # fmt: skip
    assert any(r.startswith("hospital2: update hashes to") for r in info.rejected[1])
    assert sorted(u.org for u in led.get_round("cardiac/x", 1).updates) == ["hospital1", "hospital3"]


def test_federated_standardization_pools_feature_statistics(tmp_path):
    led = _ledger(["hospital1", "hospital2"])
    grid = _grid(led, ["hospital1", "hospital2"])
    store = ModelStore(tmp_path / "store")
    _, info = run_governed(grid, {**FAST, "num-server-rounds": 1, "task": "cardiac", "standardize": "federated",
                                  "ledger": led.spec, "store": str(store.root)})  # fmt: skip
    first = store.get_arrays(info.global_hashes[0])
    pooled = np.concatenate([clientapp._site("cardiac", o, None, None, 0).x_train for o in ("hospital1", "hospital2")])
    np.testing.assert_allclose(first[SCALER_MEAN], Scaler.fit(pooled).mean, rtol=1e-5, atol=1e-4)
    assert [m.metadata.message_type for m in grid.sent[:2]] == [MessageType.QUERY] * 2


# -- the ClientApp's checks ------------------------------------------------------------------------


def _train_message(arrays, *, announced, ledger_task="cardiac/run-c", rnd=1, task="cardiac"):
    cfg = ConfigRecord({"task": task, "ledger-task": ledger_task, "global-sha256": announced, "server-round": rnd,
                        "local-epochs": 1, "phase": "train"})  # fmt: skip
    msg = Message(RecordDict({"arrays": arrays_to_record(arrays), "config": cfg}), dst_node_id=7,
                  message_type=MessageType.TRAIN)  # fmt: skip
    msg.metadata.__dict__["_message_id"] = "m1"
    return msg


def _started(sha, participants, task="cardiac/run-c"):
    """A ledger on which round 1 of task started from sha with these participants."""
    led = FakeLedger()
    datasets = tuple(CARDIAC.dataset_id(o) for o in participants)
    led.create_task(TaskRecord(task, "mlp", CARDIAC.purpose, datasets, 3, "fedavg"))
    led.grant_federation(datasets, CARDIAC.purpose)
    led.commit_round_start(task, 1, sha, led.admit(task, *participants))
    return led


def _context(org, ledger=None):
    nc = {"org": org, "task": "cardiac"}
    if ledger:
        nc["ledger"] = ledger.spec
    return Context(run_id=1, node_id=7, node_config=nc, state=RecordDict(), run_config={})


@pytest.fixture
def global_model():
    LocalGrid({})  # sets Flower's task identity, as the SuperNode runtime does
    return initial_arrays("cardiac", "8", seed=0)


def test_client_refuses_a_model_whose_hash_is_not_the_announced_one(global_model):
    sha = arrays_sha256(global_model)
    tampered = {k: v.copy() for k, v in global_model.items()}
    tampered["net.0.bias"][0] += 0.01
    reply = clientapp.handle_train(_train_message(tampered, announced=sha), _context("hospital1"))
    assert reply.has_error()
    assert "refusing the global model of cardiac round 1" in reply.error.reason
    assert f"but the server announced {sha}" in reply.error.reason


def test_client_refuses_a_model_that_is_not_the_committed_one(tmp_path, global_model):
    committed = {k: v * 0 for k, v in global_model.items()}
    path = _started(arrays_sha256(committed), ["hospital1"])
    sha = arrays_sha256(global_model)  # announced and received agree, but the ledger committed another model
    reply = clientapp.handle_train(_train_message(global_model, announced=sha), _context("hospital1", path))
    assert reply.has_error() and "but the ledger committed" in reply.error.reason
    # a round the ledger never saw, and a run without any announced hash, are refused too
    reply = clientapp.handle_train(_train_message(global_model, announced=sha, rnd=5), _context("hospital1", path))
    assert reply.has_error() and "ledger has no such round" in reply.error.reason
    msg = _train_message(global_model, announced=sha)
    del msg.content["config"]["global-sha256"]
    reply = clientapp.handle_train(msg, _context("hospital1", path))
    assert reply.has_error() and "ungoverned" in reply.error.reason
    # a model for another task is refused before anything else
    reply = clientapp.handle_train(_train_message(global_model, announced=sha, task="maintenance"), _context("hospital1"))
    assert reply.has_error() and "serves task 'cardiac'" in reply.error.reason


def test_client_trains_on_the_committed_model_and_declares_its_update_hash(tmp_path, global_model):
    sha = arrays_sha256(global_model)
    path = _started(sha, ["hospital1"])  # a task over hospital1's data set only: its owner needs no grant
    reply = clientapp.handle_train(_train_message(global_model, announced=sha), _context("hospital1", path))
    assert not reply.has_error()
    update = record_to_arrays(reply.content["arrays"])
    assert reply.content["update"]["sha256"] == arrays_sha256(update) != sha
    assert reply.content["update"]["base-sha256"] == sha and reply.content["update"]["org"] == "hospital1"
    assert reply.content["metrics"]["num-examples"] == clientapp._site("cardiac", "hospital1", None, None, 0).n_train


def _pem(key) -> bytes:
    """The public key as the SuperLink reports it in NodeInfo (PEM SubjectPublicKeyInfo)."""
    pub = serialization.load_ssh_public_key(key.public.read_bytes())
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_nodes_map_to_orgs_by_authenticated_key_fingerprint(tmp_path):
    k1, k2, rogue = (make_node_key(tmp_path, n) for n in ("plant1", "plant2", "rogue"))
    resolve = OrgResolver({"plant1": k1.fingerprint, "plant2": k2.fingerprint})
    assert resolve(NodeInfo(node_id=1, public_key=_pem(k1), name="plant2")) == "plant1"  # the key decides, not the name
    assert resolve(NodeInfo(node_id=2, public_key=_pem(k2))) == "plant2"
    assert resolve(NodeInfo(node_id=3, public_key=_pem(rogue), name="plant1")) is None
    assert resolve(NodeInfo(node_id=4, name="plant1")) is None
    assert OrgResolver()(NodeInfo(node_id=5, name="plant1")) == "plant1"  # no members map: registered name
