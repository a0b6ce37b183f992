"""The model registry (contract "models"): federated tasks, rounds, evaluations and SuperNode keys."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest

from chaincode.endorsement import majority, majority_of_peers, n_of_peers, peers_of, policy_orgs, policy_threshold
from chaincode.models import EVENT_ROUND_COMMITTED, EVENT_ROUND_STARTED, EVENT_TASK_CREATED
from federated.governance import RoundRecord

H = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(10)]
ROUND1_KEY = "\x00flround\x00maintenance\x000001\x00"
PRIVACY = json.dumps({"dp": {"epsilon": 3.0, "delta": 1e-5}, "clip": 1.0})


@pytest.fixture
def c(consortium: Any) -> Any:
    consortium.ok(consortium.user("plant1"), "data:RegisterDataset", "ai4i-p1", "tabular", "{}", "ab" * 32, "internal")
    consortium.ok(consortium.user("plant2"), "data:RegisterDataset", "ai4i-p2", "tabular", "{}", "cd" * 32, "internal")
    return consortium


def op(c: Any, org: str = "plant1") -> Any:
    return c.user(org, role="operator")


def create(c: Any, who: Any = None, task: str = "maintenance", datasets: str = '["ai4i-p1","ai4i-p2"]',
           rounds: str = "3", aggregation: str = "fedavg", purpose: str = "train:maintenance-v1",
           privacy: str = PRIVACY) -> Any:
    return c.call(who or op(c), "models:CreateTask", task, "mlp-64", purpose, datasets, rounds, aggregation, privacy)


PURPOSE = "train:maintenance-v1"
DATASETS = ("ai4i-p1", "ai4i-p2")


def grant_each_other(c: Any, purpose: str = PURPOSE) -> None:
    """Each plant's steward lets the other plant use its data set for purpose."""
    c.ok(c.user("plant1"), "data:Grant", "ai4i-p1", "plant2", purpose, "")
    c.ok(c.user("plant2"), "data:Grant", "ai4i-p2", "plant1", purpose, "")


def admit(c: Any, org: str, purpose: str = PURPOSE, datasets: tuple[str, ...] = DATASETS,
          at: dt.datetime | None = None) -> dict[str, str]:
    """org's operator records its use of each data set (data:Check); data set -> the check's transaction."""
    return {ds: c.ok(op(c, org), "data:Check", ds, purpose, at=at)["tx_id"] for ds in datasets}


def checks(c: Any, *orgs: str, at: dt.datetime | None = None) -> str:
    """StartRound's participants argument: each org with its freshly recorded checks."""
    return json.dumps({o: admit(c, o, at=at) for o in orgs})


def start(c: Any, rnd: int = 1, sha: str = H[0], participants: str | None = None, who: Any = None) -> Any:
    participants = participants if participants is not None else checks(c, "plant2", "plant1")
    return c.call(who or op(c), "models:StartRound", "maintenance", str(rnd), sha, participants)


def updates(*orgs: str, sha: str = H[2]) -> str:
    return json.dumps([{"org": o, "sha256": sha, "num_examples": 10} for o in orgs])


def commit(c: Any, rnd: int = 1, new: str = H[1], ups: str | None = None, metrics: str = '{"loss":0.25}',
           who: Any = None) -> Any:
    return c.call(who or op(c), "models:CommitRound", "maintenance", str(rnd), new,
                  ups if ups is not None else updates("plant1", "plant2"), metrics)


@pytest.fixture
def task(c: Any) -> Any:
    """Task "maintenance" over both plants' data sets; each plant's steward granted the other its use."""
    response, _ = create(c)
    assert response.status == 200, response.message
    grant_each_other(c)
    return c


def test_create_task(c: Any) -> None:
    response, stub = create(c)
    assert response.status == 200, response.message
    record = json.loads(response.payload)
    assert record["orgs"] == ["plant1", "plant2"] and record["rounds"] == 3 and record["aggregation"] == "fedavg"
    assert record["privacy"] == json.loads(PRIVACY) and record["created_by_org"] == "plant1"
    assert record["created_at"] == "2025-03-01T12:00:00Z" and record["tx_id"] == stub.txid
    assert json.loads(c.ledger.state["\x00fltask\x00maintenance\x00"]) == record
    assert [e.event_name for e in stub.events] == [EVENT_TASK_CREATED]
    assert c.ok(c.user("hospital1", role="client"), "models:ReadTask", "maintenance") == record


@pytest.mark.parametrize("role", ["admin", "steward", "client", None])
def test_only_operators_create_tasks(c: Any, role: str | None) -> None:
    c.rejected(c.user("plant1", role=role), "models:CreateTask", "t", "mlp", "train:x", '["ai4i-p1"]', "3", "fedavg",
               "{}", fragment="access denied: CreateTask needs role 'operator'")


def test_task_rules(c: Any) -> None:
    def bad(fragment: str, **kwargs: Any) -> None:
        before = c.ledger.world()
        response, stub = create(c, **kwargs)
        assert response.status == 500 and fragment in response.message, response.message
        assert "\n" not in response.message and not stub.has_writes() and c.ledger.world() == before

    bad("data set 'nope' is not registered", datasets='["ai4i-p1","nope"]')
    bad("data sets must name at least one", datasets="[]")
    bad("data sets must be a JSON array", datasets='{"a":1}')
    bad("data sets lists a data set more than once", datasets='["ai4i-p1","ai4i-p1"]')
    bad("data set ID '../x' is not valid", datasets='["../x"]')
    bad("is not of the form verb:object", purpose="maintenance")
    for rounds in ("0", "1001", "-1", "1.5", "three", ""):
        bad("rounds", rounds=rounds)
    bad("aggregation 'fedsgd' is not one of: fedavg, fedmedian, fedprox, fedtrimmedavg, fedxgb-bagging, krum", aggregation="fedsgd")
    bad("privacy must be a JSON object", privacy="[]")
    bad("access denied: CreateTask is for operators of an org that owns one of the task's data sets (plant1)",
        datasets='["ai4i-p1"]', who=op(c, "hospital1"))
    assert create(c)[0].status == 200
    bad("task 'maintenance' already exists", who=op(c, "plant2"))


def test_rounds_in_order_with_majority_endorsement(task: Any) -> None:
    named = checks(task, "plant2", "plant1")
    response, stub = start(task, participants=named)
    assert response.status == 200, response.message
    record = json.loads(response.payload)
    assert record["participants"] == ["plant1", "plant2"] and record["status"] == "started"
    assert record["checks"] == json.loads(named)  # the recorded checks the round was admitted on
    assert [e.event_name for e in stub.events] == [EVENT_ROUND_STARTED]
    # Key-level endorsement: a majority (2 of 2) of the participants' peers.
    policy = task.ledger.metadata[ROUND1_KEY]
    assert policy_orgs(policy) == {"Plant1MSP": "PEER", "Plant2MSP": "PEER"} and policy_threshold(policy) == 2
    response, stub = commit(task, who=op(task, "plant2"))
    assert response.status == 200, response.message
    record = json.loads(response.payload)
    assert record["status"] == "committed" and record["result_sha256"] == H[1] and record["metrics"] == {"loss": 0.25}
    assert [e.event_name for e in stub.events] == [EVENT_ROUND_COMMITTED]
    read = task.ok(task.user("hospital2", role="client"), "models:ReadRound", "maintenance", "1")
    assert read == record
    parsed = RoundRecord.from_dict(read)  # the federated side reads the same record
    assert parsed.complete and parsed.updates[0].org == "plant1" and parsed.started_at == 1740830400.0
    # Round 2 must start from round 1's result.
    named = checks(task, "plant1", "plant2")
    task.rejected(op(task), "models:StartRound", "maintenance", "2", H[0], named,
                  fragment=f"round 2 of task 'maintenance' must start from round 1's result {H[1]}, not {H[0]}")
    assert start(task, 2, H[1], named)[0].status == 200
    assert policy_threshold(task.ledger.metadata["\x00flround\x00maintenance\x000002\x00"]) == 2
    rounds = task.ok(task.user("plant1", role="client"), "models:ListRounds", "maintenance")
    assert [r["round"] for r in rounds] == [1, 2]


def test_round_order_rules(task: Any) -> None:
    plant1 = checks(task, "plant1")
    task.rejected(op(task), "models:StartRound", "maintenance", "2", H[0], plant1,
                  fragment="round 2 of task 'maintenance' cannot start: round 1 was never started")
    task.rejected(op(task), "models:CommitRound", "maintenance", "1", H[1], updates("plant1"), "{}",
                  fragment="round 1 of task 'maintenance' was never started; call StartRound first")
    start(task)
    task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], plant1,
                  fragment="round 1 of task 'maintenance' was already started")
    task.rejected(op(task), "models:StartRound", "maintenance", "2", H[0], plant1,
                  fragment="round 2 of task 'maintenance' cannot start: round 1 has no result yet")
    task.rejected(op(task), "models:StartRound", "maintenance", "4", H[0], plant1,
                  fragment="task 'maintenance' has 3 rounds; round 4 is beyond it")
    commit(task)
    task.rejected(op(task), "models:CommitRound", "maintenance", "1", H[3], updates("plant1"), "{}",
                  fragment=f"round 1 of task 'maintenance' already has a result {H[1]}")
    task.rejected(op(task), "models:StartRound", "nope", "1", H[0], plant1,
                  fragment="task 'nope' is not registered")
    task.rejected(task.user("plant1", role="client"), "models:ReadRound", "maintenance", "7",
                  fragment="round 7 of task 'maintenance' not found")


def test_round_argument_and_role_rules(task: Any) -> None:
    plant1 = checks(task, "plant1")
    for role in ("admin", "steward", "client"):
        task.rejected(task.user("plant1", role=role), "models:StartRound", "maintenance", "1", H[0], plant1,
                      fragment="access denied: StartRound needs role 'operator'")
    one = json.dumps(json.loads(plant1)["plant1"])
    for bad, fragment in [
        ('["plant1","plant2"]', "participants' checks must be a JSON object, got an array"),
        ("{}", "participants' checks must name at least one org"),
        ('{"plant1":%s,"plant1":%s}' % (one, one), "duplicate key 'plant1'"),
        ('{"plant1":["tx-1"]}', "the checks of 'plant1' must be a non-empty object of data set ID -> transaction ID"),
        ('{"plant1":{}}', "the checks of 'plant1' must be a non-empty object"),
        ('{"Plant1":{"ai4i-p1":"tx-1"}}', "participant org 'Plant1' is not valid"),
        ('{"plant1":{"../x":"tx-1"}}', "data set ID '../x' is not valid"),
        ('{"plant1":{"ai4i-p1":"tx 1"}}', "check transaction of 'plant1' 'tx 1' is not valid"),
    ]:
        task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], bad, fragment=fragment)
    task.rejected(op(task), "models:StartRound", "maintenance", "1", "xyz", plant1,
                  fragment="global SHA-256 'xyz' is not a SHA-256 digest")
    task.rejected(op(task), "models:StartRound", "maintenance", "0", H[0], plant1,
                  fragment="round 0 is out of range 1..1000")
    start(task)
    for ups, fragment in [
        (updates("plant1", "hospital1"), "updates from hospital1, which are not participants of round 1"),
        (updates("plant1", "plant1"), "updates lists an org more than once"),
        ("[]", "updates must list at least one"),
        ('[{"org":"plant1","sha256":"%s"}]' % H[2], "updates[0] must be an object with exactly org, sha256 and num_examples"),
        ('[{"org":"plant1","sha256":"%s","num_examples":0}]' % H[2], "updates[0].num_examples 0 is out of range"),
        ('[{"org":"plant1","sha256":"%s","num_examples":true}]' % H[2], "updates[0].num_examples must be a whole number"),
        ('[{"org":"plant1","sha256":"nothex","num_examples":3}]', "updates[0].sha256 'nothex' is not a SHA-256"),
    ]:
        task.rejected(op(task), "models:CommitRound", "maintenance", "1", H[1], ups, "{}", fragment=fragment)
    for metrics, fragment in [
        ('{"loss":"low"}', "metric 'loss' must be a finite number"),
        ('{"loss":true}', "metric 'loss' must be a finite number"),
        ('{"loss":NaN}', "metrics is not valid"),
        ('{"loss":1e999}', "out of range"),
        ('{"loss":{"a":1}}', "nested more than 1 levels deep"),
        ("[1]", "metrics must be a JSON object"),
    ]:
        task.rejected(op(task), "models:CommitRound", "maintenance", "1", H[1], updates("plant1"), metrics,
                      fragment=fragment)
    task.rejected(op(task, "hospital1"), "models:CommitRound", "maintenance", "1", H[1], updates("plant1"), "{}",
                  fragment="access denied: CommitRound is for operators of round 1's participants")


# --- StartRound admits only orgs of the task whose own recorded checks allowed every data set (issue 11) ---


def test_start_round_refuses_an_org_that_is_not_an_org_of_the_task(c: Any) -> None:
    """The reported bug: one org's operator started a round of another org's task naming only itself."""
    c.ok(op(c, "plant2"), "models:CreateTask", "p2-only", "mlp", PURPOSE, '["ai4i-p2"]', "3", "fedavg", "{}")
    c.ok(c.user("plant2"), "data:Grant", "ai4i-p2", "plant1", PURPOSE, "")  # plant1 may even use the data
    own = json.dumps({"plant1": admit(c, "plant1", datasets=("ai4i-p2",))})
    c.rejected(op(c, "plant1"), "models:StartRound", "p2-only", "1", H[0], own,
               fragment="access denied: plant1 is not an org of task 'p2-only' (plant2): only orgs owning one of its "
                        "data sets take part in its rounds")
    # and an org outside the sector, granted everything, is still no org of the task
    c.ok(c.user("plant2"), "data:Grant", "ai4i-p2", "hospital1", PURPOSE, "")
    theirs = json.dumps({"hospital1": admit(c, "hospital1", datasets=("ai4i-p2",))})
    c.rejected(op(c, "hospital1"), "models:StartRound", "p2-only", "1", H[0], theirs,
               fragment="access denied: hospital1 is not an org of task 'p2-only' (plant2)")
    assert c.ok(op(c, "plant2"), "models:StartRound", "p2-only", "1", H[0],
                json.dumps({"plant2": admit(c, "plant2", datasets=("ai4i-p2",))}))["participants"] == ["plant2"]


def test_start_round_needs_a_recorded_allowed_check(task: Any) -> None:
    own = admit(task, "plant1")
    for tx in ("tx-9999", own["ai4i-p1"]):  # no transaction of that ID; a check of the other data set
        forged = json.dumps({"plant1": {"ai4i-p1": own["ai4i-p1"], "ai4i-p2": tx}})
        task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], forged,
                      fragment=f"access denied: 'plant1' may not take part in task 'maintenance': transaction {tx} "
                               "recorded no check of 'ai4i-p2'")
    # plant2's allowed check, presented as plant1's own
    borrowed = json.dumps({"plant1": {"ai4i-p1": own["ai4i-p1"], "ai4i-p2": admit(task, "plant2")["ai4i-p2"]}})
    task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], borrowed,
                  fragment="the check of 'ai4i-p2' in transaction tx-")
    # a recorded check that was denied: plant2's steward revoked plant1's grant
    task.ok(task.user("plant2"), "data:Revoke", "ai4i-p2", "plant1", PURPOSE)
    denied = admit(task, "plant1")
    task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], json.dumps({"plant1": denied}),
                  fragment=f"access denied: 'plant1' may not take part in task 'maintenance': its check of 'ai4i-p2' "
                           f"in transaction {denied['ai4i-p2']} was denied (revoked)")
    # the check made before the revocation still names an allowed decision, but the revocation is on the
    # ledger: only plant2 can start the round now, and only with its own checks
    assert start(task, participants=checks(task, "plant2"), who=op(task, "plant2"))[0].status == 200


def test_start_round_refuses_a_check_recorded_for_another_purpose(task: Any) -> None:
    grant_each_other(task, "train:other")
    other = admit(task, "plant1", purpose="train:other")
    task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], json.dumps({"plant1": other}),
                  fragment=f"its check of 'ai4i-p1' in transaction {other['ai4i-p1']} was for purpose "
                           "'train:other', not the task's 'train:maintenance-v1'")


def test_start_round_refuses_checks_of_only_some_data_sets(task: Any) -> None:
    some = admit(task, "plant1", datasets=("ai4i-p1",))
    task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], json.dumps({"plant1": some}),
                  fragment="access denied: 'plant1' may not take part in task 'maintenance': no recorded check of "
                           "ai4i-p2 is named")
    extra = {**admit(task, "plant1"), "ai4i-p9": "tx-0001"}
    task.rejected(op(task), "models:StartRound", "maintenance", "1", H[0], json.dumps({"plant1": extra}),
                  fragment="the checks of 'plant1' name ai4i-p9, which are not data sets of task 'maintenance'")


def test_start_round_caller_must_be_a_participant(task: Any) -> None:
    plant1 = checks(task, "plant1")  # valid checks of plant1, submitted by plant2's operator
    task.rejected(op(task, "plant2"), "models:StartRound", "maintenance", "1", H[0], plant1,
                  fragment="access denied: StartRound is for operators of round 1's participants of task "
                           "'maintenance' (plant1); the caller is an operator of org 'plant2'")
    task.rejected(op(task, "hospital1"), "models:StartRound", "maintenance", "1", H[0], plant1,
                  fragment="access denied: StartRound is for operators of round 1's participants")


def test_start_round_needs_checks_made_since_the_previous_round(task: Any) -> None:
    t0 = dt.datetime(2025, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc)
    stale = checks(task, "plant1", "plant2", at=t0 + dt.timedelta(minutes=1))
    assert start(task, participants=stale)[0].status == 200
    assert task.call(op(task), "models:CommitRound", "maintenance", "1", H[1], updates("plant1", "plant2"), "{}",
                     at=t0 + dt.timedelta(minutes=5))[0].status == 200
    # round 2 cannot reuse round 1's checks: a grant revoked in between would not count
    task.rejected(op(task), "models:StartRound", "maintenance", "2", H[1], stale,
                  fragment="was recorded at 2025-03-01T12:01:00Z, before round 1's commit 2025-03-01T12:05:00Z; "
                           "check again")
    fresh = checks(task, "plant1", "plant2", at=t0 + dt.timedelta(minutes=6))
    response, _ = task.call(op(task), "models:StartRound", "maintenance", "2", H[1], fresh, at=t0 + dt.timedelta(minutes=7))
    assert response.status == 200, response.message


def test_record_evaluation(task: Any) -> None:
    start(task)
    evaluation = json.dumps({"plant1": {"auroc": 0.9}, "plant2": {"auroc": 0.8}})
    task.rejected(op(task), "models:RecordEvaluation", "maintenance", "1", H[1], evaluation,
                  fragment="round 1 of task 'maintenance' has no result to evaluate yet")
    commit(task)
    task.rejected(op(task), "models:RecordEvaluation", "maintenance", "1", H[5], evaluation,
                  fragment=f"round 1 of task 'maintenance' committed {H[1]}, not {H[5]}")
    task.rejected(op(task), "models:RecordEvaluation", "maintenance", "1", H[1], '{"hospital1":{"auroc":1}}',
                  fragment="evaluation from hospital1, which are not participants")
    record = task.ok(op(task), "models:RecordEvaluation", "maintenance", "1", H[1], evaluation)
    assert record["evaluated_sha256"] == H[1] and RoundRecord.from_dict(record).evaluation["plant2"] == {"auroc": 0.8}
    task.rejected(op(task), "models:RecordEvaluation", "maintenance", "1", H[1], evaluation,
                  fragment="round 1 of task 'maintenance' was already evaluated")


def test_node_keys(c: Any) -> None:
    admin = c.user("plant1", role="admin", cn="admin2.plant1")
    record = c.ok(admin, "models:RegisterNodeKey", "plant1", H[7].upper())
    assert record["public_key_sha256"] == H[7] and record["msp_id"] == "Plant1MSP"
    c.rejected(admin, "models:RegisterNodeKey", "plant1", H[7], fragment="org 'plant1' has already registered node key")
    c.rejected(admin, "models:RegisterNodeKey", "plant2", H[8],
               fragment="access denied: RegisterNodeKey records keys of the caller's own org 'plant1', not of 'plant2'")
    for role in ("operator", "steward", "client"):
        c.rejected(c.user("plant1", role=role), "models:RegisterNodeKey", "plant1", H[8],
                   fragment="access denied: RegisterNodeKey needs role 'admin'")
    c.rejected(c.make_creator("OutsiderMSP", role="admin"), "models:RegisterNodeKey", "plant1", H[8],
               fragment="MSP 'OutsiderMSP' has no org in the consortium registry")
    c.rejected(admin, "models:RegisterNodeKey", "plant1", "abc", fragment="public key SHA-256 'abc' is not a SHA-256")
    c.ok(c.user("hospital1", role="admin"), "models:RegisterNodeKey", "hospital1", H[9])
    keys = c.ok(c.user("plant2", role="client"), "models:ListNodeKeys")
    assert [(k["org"], k["public_key_sha256"]) for k in keys] == [("hospital1", H[9]), ("plant1", H[7])]


def test_reads_need_a_member_with_a_role(task: Any) -> None:
    task.rejected(task.user("plant1", role=None), "models:ReadTask", "maintenance", fragment="access denied: ReadTask needs a role")
    task.rejected(task.make_creator("OutsiderMSP", role="client"), "models:ListRounds", "maintenance",
                  fragment="has no org in the consortium registry")


def test_rounds_use_the_transaction_time(task: Any) -> None:
    later = dt.datetime(2025, 3, 2, 0, 0, 0, tzinfo=dt.timezone.utc)
    response, _ = start(task)
    response, _ = task.call(op(task), "models:CommitRound", "maintenance", "1", H[1], updates("plant1"), "{}", at=later)
    assert json.loads(response.payload)["committed_at"] == later.timestamp()


def test_majority_policy_bytes() -> None:
    assert [majority(n) for n in (1, 2, 3, 4, 5)] == [1, 2, 2, 3, 3]
    policy = majority_of_peers(["C", "A", "B", "A"])
    assert policy_threshold(policy) == 2 and list(policy_orgs(policy)) == ["A", "B", "C"]
    # n == all is exactly the statebased all-orgs policy; the bytes are fabric-chaincode-go's cauthdsl
    # NOutOf(2, [SignedBy(0), SignedBy(1), SignedBy(2)]) over PEER principals of A, B, C.
    assert n_of_peers(3, ["B", "A", "C"]) == peers_of(["A", "B", "C"])
    def principal(msp: bytes) -> bytes:
        role = b"\x0a" + bytes([len(msp)]) + msp + b"\x10\x03"  # MSPRole{msp_identifier, role=PEER(3)}
        return b"\x12" + bytes([len(role)]) + role  # MSPPrincipal{classification=ROLE(0), principal}
    rules = b"".join(b"\x12\x02\x08" + bytes([i]) for i in range(3))  # SignaturePolicy{signed_by=i}
    n_out_of = b"\x08\x02" + rules
    rule = b"\x12" + bytes([len(n_out_of)]) + n_out_of
    identities = b"".join(b"\x1a" + bytes([len(principal(m))]) + principal(m) for m in (b"A", b"B", b"C"))
    assert policy == b"\x12" + bytes([len(rule)]) + rule + identities
    with pytest.raises(ValueError):
        n_of_peers(4, ["A", "B", "C"])
    with pytest.raises(ValueError):
        majority_of_peers([])


class ChaincodeContract:
    """network.gateway_sync.SyncContract's shape, bound to one contract, over the in-memory chaincode."""

    def __init__(self, c: Any, who: Any, contract: str) -> None:
        self.c, self.who, self.contract = c, who, contract

    def _call(self, function: str, *args: str) -> bytes:
        response, _ = self.c.call(self.who, f"{self.contract}:{function}", *args)
        if response.status != 200:
            raise RuntimeError(response.message)  # as the gateway's EvaluateError/EndorseError
        return bytes(response.payload)

    evaluate = submit = _call


def test_fabric_round_ledger_drives_the_contract(task: Any) -> None:
    """federated.fabric_ledger.FabricRoundLedger's calls, end to end against the real contracts."""
    from federated.fabric_ledger import DATAACCESS_CONTRACT, REGISTRY_CONTRACT, FabricRoundLedger

    def ledger(org: str) -> Any:
        return FabricRoundLedger(ChaincodeContract(task, op(task, org), REGISTRY_CONTRACT),
                                 ChaincodeContract(task, op(task, org), DATAACCESS_CONTRACT))

    led = ledger("plant1")
    led.commit_round_start("maintenance", 1, H[0], {"plant2": admit(task, "plant2"), "plant1": admit(task, "plant1")})
    led.commit_round_result("maintenance", 1, H[1], [("plant1", H[2], 5), ("plant2", H[3], 7)], {"loss": 0.5})
    led.commit_evaluation("maintenance", 1, H[1], {"plant1": {"auroc": 0.9}})
    record = led.get_round("maintenance", 1)
    assert record is not None and record.result_sha256 == H[1] and [u.num_examples for u in record.updates] == [5, 7]
    assert record.evaluation == {"plant1": {"auroc": 0.9}} and led.get_round("maintenance", 2) is None
    assert [r.round for r in led.list_rounds("maintenance")] == [1] and led.list_rounds("other") == []
    with pytest.raises(RuntimeError, match="must start from round 1's result"):
        led.commit_round_start("maintenance", 2, H[0], {"plant1": admit(task, "plant1")})
    # Grants: its own org through data:CheckReadOnly, another org through data:ListGrants / ReadDataset.
    task.ok(task.user("plant1"), "data:Grant", "ai4i-p1", "hospital1", "train:maintenance-v1", "")
    assert led.check_grant("plant1", "ai4i-p1", "train:x")  # owner
    assert led.check_grant("hospital1", "ai4i-p1", "train:maintenance-v1")
    assert not led.check_grant("hospital1", "ai4i-p1", "train:other")
    assert led.check_grant("plant2", "ai4i-p1", "train:maintenance-v1")  # the task fixture granted it
    assert not led.check_grant("plant2", "ai4i-p1", "train:other")
    assert ledger("hospital1").check_grant("hospital1", "ai4i-p1", "train:maintenance-v1")
    assert not ledger("hospital2").check_grant("hospital2", "ai4i-p1", "train:maintenance-v1")
