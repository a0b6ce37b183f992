"""The model-registry contract ("models"): federated-learning tasks, rounds and SuperNode keys.

Rules, applied in this order so that a rejected call writes nothing: arguments, then the caller's role
(the certificate's ``role`` attribute), then the caller's org (the registry, via membership.member),
then the records involved.

* CreateTask: an operator of an org that owns at least one of the task's data sets (a participating
  org); every data set must be registered with the data contract.
* StartRound: the caller names each participant with the transactions of its recorded access checks
  (``data:Check``, one per data set of the task). Every participant must be an org of the task (an org
  owning one of its data sets, the task record's ``orgs``), and the contract reads each named check back
  from the ledger (the access record data:Check wrote): it must be that org's own check of that data set,
  for the task's purpose, allowed, and recorded after the previous round was committed (round 1: after
  the task was created), so a check made before a revocation cannot start a later round. Every data set
  of the task needs such a check. The caller must be an operator of one of the participants. Nothing the
  caller asserts about another org is believed: only what that org's own recorded checks say.
* CommitRound / RecordEvaluation: an operator of one of the round's participant orgs. Rounds are
  strictly consecutive from 1 up to the task's round count; round r starts only after round r-1 was
  committed and from r-1's result hash; a round is committed once, with updates only from its
  participants; it is evaluated once, against the hash it committed.
* RegisterNodeKey: an admin, for its own org only (org argument must be the caller's registered org).
* Reads (ReadTask, ReadRound, ListRounds, ListNodeKeys): any member of a registered org with a role.

Every round key carries a key-level endorsement policy requiring peers of a majority of the round's
participant orgs (endorsement.majority_of_peers): once started, a round can only be committed or
evaluated in a transaction most of its participants' peers endorsed.
"""

from __future__ import annotations

import re
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from chaincode.access import access_key
from chaincode.arguments import (
    MAX_ARGUMENT_BYTES, limit_arguments, require_id, require_json_object, require_purpose, require_sha256,
)
from chaincode.datasets import load_dataset
from chaincode.endorsement import majority_of_peers
from chaincode.errors import AccessDenied, AlreadyExists, ContractError, NotFound, ValidationError
from chaincode.fields import (
    check_metrics, require_int_text, require_json_array, require_json_int, require_metrics, require_unique_list,
)
from chaincode.membership import Member, caller, member, org_record, require_any_role, require_role
from chaincode.state import canonical_json, get_record, list_records, put_record, tx_timestamp
from chaincode.timestamps import NANOS_PER_SECOND, parse_utc, tx_nanos
from chaincode.validation import require_choice, require_name, require_pattern

CONTRACT_NAME = "models"
OPERATOR_ROLE = "operator"
ADMIN_ROLE = "admin"
AGGREGATIONS = frozenset({"fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum", "fedxgb-bagging"})  # last: trees (federated/xgb_strategy.py)
MAX_ROUNDS = 1000
MAX_DATASETS = 32
MAX_PARTICIPANTS = 64
TASK_OBJECT = "fltask"
ROUND_OBJECT = "flround"
NODE_KEY_OBJECT = "nodekey"
STARTED = "started"
COMMITTED = "committed"
EVENT_TASK_CREATED = "TaskCreated"
EVENT_ROUND_STARTED = "RoundStarted"
EVENT_ROUND_COMMITTED = "RoundCommitted"
EVENT_ROUND_EVALUATED = "RoundEvaluated"
EVENT_NODE_KEY_REGISTERED = "NodeKeyRegistered"


#: Task IDs: ID segments joined by '/', so that a run of a task can be named "maintenance/run-7".
_TASK_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")
MAX_TASK_ID_LENGTH = 128


def require_task_id(value: Any) -> str:
    return require_pattern("task ID", value, pattern=_TASK_ID_RE, max_length=MAX_TASK_ID_LENGTH,
                           rule="is not valid: use letters, digits, '.', '_' and '-' in segments joined by '/'")


class RoundStateError(ContractError):
    """The round's current state forbids the operation (out of order, already committed ...)."""


def _json(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


def task_key(stub: Any, task_id: str) -> str:
    return stub.create_composite_key(TASK_OBJECT, [task_id])


def round_key(stub: Any, task_id: str, round_no: int) -> str:
    # Zero-padded so that a range query lists rounds in numeric order.
    return stub.create_composite_key(ROUND_OBJECT, [task_id, f"{round_no:04d}"])


async def _with_role(ctx: TransactionContext, function: str, role: str) -> Member:
    identity = caller(ctx)
    require_role(identity, function, role)
    return await member(ctx.get_stub(), identity)


async def _reader(ctx: TransactionContext, function: str) -> Member:
    identity = caller(ctx)
    require_any_role(identity, function)
    return await member(ctx.get_stub(), identity)


async def _load_task(stub: Any, task_id: str) -> dict[str, Any]:
    record = await get_record(stub, task_key(stub, task_id))
    if record is None:
        raise NotFound(f"task {task_id!r} is not registered; create it with CreateTask")
    return record


async def _load_round(stub: Any, task_id: str, round_no: int) -> dict[str, Any]:
    record = await get_record(stub, round_key(stub, task_id, round_no))
    if record is None:
        raise NotFound(f"round {round_no} of task {task_id!r} not found")
    return record


def require_checks(value: Any) -> dict[str, dict[str, str]]:
    """StartRound's participants: {org: {data set ID: transaction ID of the org's data:Check of it}}."""
    document = require_json_object("participants' checks", value, max_bytes=MAX_ARGUMENT_BYTES, max_depth=2)
    if not document:
        raise ValidationError("participants' checks must name at least one org")
    if len(document) > MAX_PARTICIPANTS:
        raise ValidationError(f"participants' checks name {len(document)} orgs; the limit is {MAX_PARTICIPANTS}")
    checks: dict[str, dict[str, str]] = {}
    for org, per_dataset in document.items():
        org = require_name("participant org", org)
        if not isinstance(per_dataset, dict) or not per_dataset:
            raise ValidationError(f"the checks of {org!r} must be a non-empty object of data set ID -> "
                                  "transaction ID of its data:Check")
        checks[org] = {require_id("data set ID", ds): require_id(f"check transaction of {org!r}", tx)
                       for ds, tx in per_dataset.items()}
    return checks


async def _require_admitted(stub: Any, task: dict[str, Any], org: str, checks: dict[str, str], since: str,
                            since_what: str) -> None:
    """``org``'s own recorded checks allowed every data set of the task for its purpose, after ``since``."""
    task_id, purpose = task["id"], task["purpose"]
    denied = f"access denied: {org!r} may not take part in task {task_id!r}"
    missing = [d for d in task["datasets"] if d not in checks]
    if missing:
        raise AccessDenied(f"{denied}: no recorded check of {', '.join(missing)} is named (every data set of the "
                           "task needs the org's own allowed data:Check)")
    extra = sorted(set(checks) - set(task["datasets"]))
    if extra:
        raise ValidationError(f"the checks of {org!r} name {', '.join(extra)}, which are not data sets of task "
                              f"{task_id!r}")
    bound = parse_utc(since_what, since)
    for dataset in task["datasets"]:
        tx_id = checks[dataset]
        record = await get_record(stub, access_key(stub, dataset, tx_id))
        if record is None:
            raise AccessDenied(f"{denied}: transaction {tx_id} recorded no check of {dataset!r}")
        if record.get("org") != org:
            raise AccessDenied(f"{denied}: the check of {dataset!r} in transaction {tx_id} is org "
                               f"{record.get('org')!r}'s, not {org!r}'s")
        if record.get("purpose") != purpose:
            raise AccessDenied(f"{denied}: its check of {dataset!r} in transaction {tx_id} was for purpose "
                               f"{record.get('purpose')!r}, not the task's {purpose!r}")
        if record.get("allowed") is not True:
            raise AccessDenied(f"{denied}: its check of {dataset!r} in transaction {tx_id} was denied "
                               f"({record.get('reason')})")
        if parse_utc("check time", record.get("at")) < bound:
            raise AccessDenied(f"{denied}: its check of {dataset!r} in transaction {tx_id} was recorded at "
                               f"{record.get('at')}, before {since_what} {since}; check again")


def _require_participant(who: Member, participants: list[str], function: str, round_no: int, task_id: str) -> None:
    if who.org not in participants:
        raise AccessDenied(
            f"access denied: {function} is for operators of round {round_no}'s participants of task "
            f"{task_id!r} ({', '.join(participants)}); the caller is an operator of org {who.org!r}"
        )


def _seconds(stub: Any) -> float:
    return tx_nanos(stub) / NANOS_PER_SECOND


class ModelRegistryContract(Contract):
    """Clients call these as "models:CreateTask", "models:StartRound" and so on."""

    Name = CONTRACT_NAME

    def get_evaluate_transactions(self) -> list[str]:
        return ["ReadTask", "ReadRound", "ListRounds", "ListNodeKeys"]

    def BeforeTransaction(self, ctx: TransactionContext) -> None:  # noqa: N802
        limit_arguments(ctx.get_stub().get_function_and_parameters()[1])

    # --- tasks ------------------------------------------------------------------------------------

    async def CreateTask(self, ctx: TransactionContext, task_id: str, architecture: str, purpose: str,  # noqa: N802
                         datasets_json: str, rounds: str, aggregation: str, privacy_json: str) -> str:
        """Register a federated task over registered data sets; returns the stored record."""
        stub = ctx.get_stub()
        task_id = require_task_id(task_id)
        architecture = require_id("architecture", architecture)
        purpose = require_purpose("purpose", purpose)
        dataset_ids = require_unique_list("data sets", datasets_json, noun="data set", max_items=MAX_DATASETS,
                                          item=lambda d: require_id("data set ID", d))
        round_count = require_int_text("rounds", rounds, 1, MAX_ROUNDS)
        aggregation = require_choice("aggregation", aggregation, AGGREGATIONS)
        privacy = require_json_object("privacy", privacy_json)
        creator = await _with_role(ctx, "CreateTask", OPERATOR_ROLE)

        datasets = [await load_dataset(stub, d) for d in dataset_ids]
        owners = sorted({str(d.get("owner")) for d in datasets})
        if creator.org not in owners:
            raise AccessDenied(
                f"access denied: CreateTask is for operators of an org that owns one of the task's data sets "
                f"({', '.join(owners)}); the caller is an operator of org {creator.org!r}"
            )
        key = task_key(stub, task_id)
        if await get_record(stub, key) is not None:
            raise AlreadyExists(f"task {task_id!r} already exists; use a new task ID for a new run")
        record: dict[str, Any] = {
            "id": task_id,
            "architecture": architecture,
            "purpose": purpose,
            "datasets": dataset_ids,
            "orgs": owners,
            "rounds": round_count,
            "aggregation": aggregation,
            "privacy": privacy,
            "created_by": creator.identity.id,
            "created_by_org": creator.org,
            "created_at": tx_timestamp(stub),
            "tx_id": stub.get_txid(),
        }
        await put_record(stub, key, record)
        stub.set_event(EVENT_TASK_CREATED, canonical_json({
            "task": task_id, "purpose": purpose, "datasets": dataset_ids, "rounds": round_count,
            "aggregation": aggregation,
        }))
        return _json(record)

    async def ReadTask(self, ctx: TransactionContext, task_id: str) -> str:  # noqa: N802
        task_id = require_task_id(task_id)
        await _reader(ctx, "ReadTask")
        return _json(await _load_task(ctx.get_stub(), task_id))

    # --- rounds -----------------------------------------------------------------------------------

    async def StartRound(self, ctx: TransactionContext, task_id: str, round: str,  # noqa: N802,A002
                         global_sha256: str, checks_json: str) -> str:
        """Start round `round` from the global model global_sha256 with the orgs checks_json names:
        {org: {data set ID: transaction ID of that org's allowed data:Check of it}} (see the rules above)."""
        stub = ctx.get_stub()
        task_id = require_task_id(task_id)
        round_no = require_int_text("round", round, 1, MAX_ROUNDS)
        global_sha256 = require_sha256("global SHA-256", global_sha256)
        checks = require_checks(checks_json)
        participants = sorted(checks)
        who = await _with_role(ctx, "StartRound", OPERATOR_ROLE)

        task = await _load_task(stub, task_id)
        task_orgs = list(task.get("orgs", []))
        outsiders = [p for p in participants if p not in task_orgs]
        if outsiders:
            raise AccessDenied(f"access denied: {', '.join(outsiders)} {'is' if len(outsiders) == 1 else 'are'} not "
                               f"an org of task {task_id!r} ({', '.join(task_orgs)}): only orgs owning one of its "
                               "data sets take part in its rounds")
        msp_ids = [str((await org_record(stub, p))["msp_id"]) for p in participants]
        _require_participant(who, participants, "StartRound", round_no, task_id)
        if round_no > int(task["rounds"]):
            raise RoundStateError(f"task {task_id!r} has {task['rounds']} rounds; round {round_no} is beyond it")
        key = round_key(stub, task_id, round_no)
        if await get_record(stub, key) is not None:
            raise RoundStateError(f"round {round_no} of task {task_id!r} was already started")
        if round_no > 1:
            previous = await get_record(stub, round_key(stub, task_id, round_no - 1))
            if previous is None:
                raise RoundStateError(
                    f"round {round_no} of task {task_id!r} cannot start: round {round_no - 1} was never started"
                )
            if previous.get("status") != COMMITTED:
                raise RoundStateError(
                    f"round {round_no} of task {task_id!r} cannot start: round {round_no - 1} has no result yet"
                )
            if previous.get("result_sha256") != global_sha256:
                raise RoundStateError(
                    f"round {round_no} of task {task_id!r} must start from round {round_no - 1}'s result "
                    f"{previous.get('result_sha256')}, not {global_sha256}"
                )
            since, since_what = str(previous.get("committed_at_utc")), f"round {round_no - 1}'s commit"
        else:
            since, since_what = str(task.get("created_at")), "the task's creation"
        for org in participants:
            await _require_admitted(stub, task, org, checks[org], since, since_what)
        record: dict[str, Any] = {
            "task": task_id,
            "round": round_no,
            "status": STARTED,
            "global_sha256": global_sha256,
            "participants": participants,
            "checks": {org: dict(sorted(checks[org].items())) for org in participants},
            "participant_msps": sorted(set(msp_ids)),
            "started_at": _seconds(stub),
            "started_at_utc": tx_timestamp(stub),
            "started_by": who.identity.id,
            "started_by_org": who.org,
            "start_tx_id": stub.get_txid(),
            "result_sha256": None,
            "updates": [],
            "metrics": {},
            "committed_at": None,
            "evaluation": {},
            "evaluated_sha256": None,
        }
        await put_record(stub, key, record)
        await stub.set_state_validation_parameter(key, majority_of_peers(msp_ids))
        stub.set_event(EVENT_ROUND_STARTED, canonical_json({
            "task": task_id, "round": round_no, "global_sha256": global_sha256, "participants": participants,
        }))
        return _json(record)

    async def CommitRound(self, ctx: TransactionContext, task_id: str, round: str,  # noqa: N802,A002
                          new_global_sha256: str, updates_json: str, metrics_json: str) -> str:
        """Record round `round`'s aggregated result, the participants' update hashes and its metrics."""
        stub = ctx.get_stub()
        task_id = require_task_id(task_id)
        round_no = require_int_text("round", round, 1, MAX_ROUNDS)
        new_global_sha256 = require_sha256("new global SHA-256", new_global_sha256)
        raw_updates = require_json_array("updates", updates_json)
        updates = []
        for index, update in enumerate(raw_updates):
            field = f"updates[{index}]"
            if not isinstance(update, dict) or set(update) != {"org", "sha256", "num_examples"}:
                raise ValidationError(f"{field} must be an object with exactly org, sha256 and num_examples")
            updates.append({
                "org": require_name(f"{field}.org", update["org"]),
                "sha256": require_sha256(f"{field}.sha256", update["sha256"]),
                "num_examples": require_json_int(f"{field}.num_examples", update["num_examples"], 1),
            })
        if not updates:
            raise ValidationError("updates must list at least one participant's update")
        orgs = [u["org"] for u in updates]
        if len(set(orgs)) != len(orgs):
            raise ValidationError("updates lists an org more than once")
        metrics = require_metrics("metrics", metrics_json)
        who = await _with_role(ctx, "CommitRound", OPERATOR_ROLE)

        await _load_task(stub, task_id)
        key = round_key(stub, task_id, round_no)
        record = await get_record(stub, key)
        if record is None:
            raise RoundStateError(f"round {round_no} of task {task_id!r} was never started; call StartRound first")
        participants = list(record.get("participants", []))
        _require_participant(who, participants, "CommitRound", round_no, task_id)
        if record.get("status") == COMMITTED:
            raise RoundStateError(f"round {round_no} of task {task_id!r} already has a result "
                                  f"{record.get('result_sha256')}")
        outsiders = sorted(set(orgs) - set(participants))
        if outsiders:
            raise ValidationError(f"updates from {', '.join(outsiders)}, which are not participants of round "
                                  f"{round_no} of task {task_id!r}")
        record = dict(record, status=COMMITTED, result_sha256=new_global_sha256,
                      updates=sorted(updates, key=lambda u: u["org"]), metrics=metrics,
                      committed_at=_seconds(stub), committed_at_utc=tx_timestamp(stub),
                      committed_by=who.identity.id, committed_by_org=who.org, commit_tx_id=stub.get_txid())
        await put_record(stub, key, record)
        stub.set_event(EVENT_ROUND_COMMITTED, canonical_json({
            "task": task_id, "round": round_no, "global_sha256": record["global_sha256"],
            "result_sha256": new_global_sha256, "updates": record["updates"],
        }))
        return _json(record)

    async def RecordEvaluation(self, ctx: TransactionContext, task_id: str, round: str,  # noqa: N802,A002
                               global_sha256: str, metrics_json: str) -> str:
        """Record the participants' evaluation ({org: {metric: number}}) of round `round`'s result."""
        stub = ctx.get_stub()
        task_id = require_task_id(task_id)
        round_no = require_int_text("round", round, 1, MAX_ROUNDS)
        global_sha256 = require_sha256("global SHA-256", global_sha256)
        document = require_json_object("evaluation", metrics_json, max_depth=2)
        if not document:
            raise ValidationError("evaluation must hold at least one org's metrics")
        evaluation = {require_name("evaluation org", org): check_metrics(f"evaluation of {org}", m)
                      for org, m in document.items()}
        who = await _with_role(ctx, "RecordEvaluation", OPERATOR_ROLE)

        key = round_key(stub, task_id, round_no)
        record = await _load_round(stub, task_id, round_no)
        participants = list(record.get("participants", []))
        _require_participant(who, participants, "RecordEvaluation", round_no, task_id)
        if record.get("status") != COMMITTED:
            raise RoundStateError(f"round {round_no} of task {task_id!r} has no result to evaluate yet")
        if record.get("result_sha256") != global_sha256:
            raise RoundStateError(f"round {round_no} of task {task_id!r} committed {record.get('result_sha256')}, "
                                  f"not {global_sha256}")
        if record.get("evaluated_sha256"):
            raise RoundStateError(f"round {round_no} of task {task_id!r} was already evaluated")
        outsiders = sorted(set(evaluation) - set(participants))
        if outsiders:
            raise ValidationError(f"evaluation from {', '.join(outsiders)}, which are not participants of round "
                                  f"{round_no} of task {task_id!r}")
        record = dict(record, evaluation=evaluation, evaluated_sha256=global_sha256,
                      evaluated_at_utc=tx_timestamp(stub), evaluation_tx_id=stub.get_txid())
        await put_record(stub, key, record)
        stub.set_event(EVENT_ROUND_EVALUATED, canonical_json({
            "task": task_id, "round": round_no, "sha256": global_sha256, "orgs": sorted(evaluation),
        }))
        return _json(record)

    async def ReadRound(self, ctx: TransactionContext, task_id: str, round: str) -> str:  # noqa: N802,A002
        task_id = require_task_id(task_id)
        round_no = require_int_text("round", round, 1, MAX_ROUNDS)
        await _reader(ctx, "ReadRound")
        return _json(await _load_round(ctx.get_stub(), task_id, round_no))

    async def ListRounds(self, ctx: TransactionContext, task_id: str) -> str:  # noqa: N802
        """Every round of the task, in round order (an empty list when it has none, or does not exist)."""
        task_id = require_task_id(task_id)
        await _reader(ctx, "ListRounds")
        return _json(await list_records(ctx.get_stub(), ROUND_OBJECT, [task_id]))

    # --- SuperNode keys ---------------------------------------------------------------------------

    async def RegisterNodeKey(self, ctx: TransactionContext, org: str, public_key_sha256: str) -> str:  # noqa: N802
        """Record the SHA-256 of the caller's org's SuperNode public key (an admin, own org only)."""
        stub = ctx.get_stub()
        org = require_name("org", org)
        public_key_sha256 = require_sha256("public key SHA-256", public_key_sha256)
        admin = await _with_role(ctx, "RegisterNodeKey", ADMIN_ROLE)
        if org != admin.org:
            raise AccessDenied(f"access denied: RegisterNodeKey records keys of the caller's own org "
                               f"{admin.org!r}, not of {org!r}")
        key = stub.create_composite_key(NODE_KEY_OBJECT, [org, public_key_sha256])
        if await get_record(stub, key) is not None:
            raise AlreadyExists(f"org {org!r} has already registered node key {public_key_sha256}")
        record = {"org": org, "msp_id": admin.msp_id, "public_key_sha256": public_key_sha256,
                  "registered_by": admin.identity.id, "registered_at": tx_timestamp(stub), "tx_id": stub.get_txid()}
        await put_record(stub, key, record)
        stub.set_event(EVENT_NODE_KEY_REGISTERED, canonical_json({"org": org, "public_key_sha256": public_key_sha256}))
        return _json(record)

    async def ListNodeKeys(self, ctx: TransactionContext) -> str:  # noqa: N802
        """Every registered SuperNode key fingerprint, ordered by org then fingerprint."""
        await _reader(ctx, "ListNodeKeys")
        return _json(await list_records(ctx.get_stub(), NODE_KEY_OBJECT))
