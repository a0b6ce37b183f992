"""The twins contract ("twins"): sensor batch anchors, alerts, maintenance decisions, sustainability.

Rules, applied in this order so that a rejected call writes nothing: arguments, then the caller's role
(certificate ``role`` attribute), then the caller's org (registry), then the records involved.

* AnchorSensorBatch: an operator or admin (the bridge runs as either), for the caller's own org only
  (record.org). The record has exactly twins.anchoring.record.BatchRecord's fields; batch_id is
  "<org>:<batch_no, 10 digits>". Anchors are immutable: the same record again is answered with the
  stored anchor and writes nothing; a different record under the same batch ID is refused. When the
  org's previous batch is anchored, prev_record_hash must be its record hash.
* RaiseAlert / DecideMaintenance: an operator; decisions only on alerts of the caller's own org, once. The model
  that made an alert may be named in its detail: ``model`` (a label such as
  ``federated:<task>:round<N>:<12 hex>`` or ``fallback:ai4i-rules-v1``) and, for a federated model,
  ``model_sha256`` (the SHA-256 the models contract committed, whose first 12 digits the label carries). Both
  are checked and copied into the alert record, and the decision on the alert carries them too; an alert that
  names no model (older bridges) is recorded as before, with ``model`` None.
* AckDecision: an admin or an operator of the decision's org, once.
* ReportSustainability: an admin or an operator, for its own org; one report per (org, period).
* Reads (ReadSensorBatch, ReadAlert, ReadDecision, ReadSustainability): any member with a role.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from chaincode.arguments import limit_arguments, require_id, require_json_object, shown
from chaincode.errors import AccessDenied, AlreadyExists, ContractError, NotFound, ValidationError
from chaincode.fields import check_metrics, require_json_int, require_number
from chaincode.membership import Member, caller, member, require_any_role, require_role
from chaincode.state import canonical_json, get_record, put_record, tx_timestamp
from chaincode.validation import require_choice, require_name, require_pattern, require_str

CONTRACT_NAME = "twins"
OPERATOR_ROLE = "operator"
ADMIN_ROLE = "admin"
ANCHOR_ROLES = frozenset({ADMIN_ROLE, OPERATOR_ROLE})
BATCH_OBJECT = "sensorbatch"
ALERT_OBJECT = "alert"
DECISION_OBJECT = "decision"
SUSTAINABILITY_OBJECT = "sustainability"
#: What an operator may decide about an alert.
DECISIONS = frozenset({"repair-now", "schedule", "monitor", "dismiss"})
ALERT_KINDS_RE = re.compile(r"[a-z][a-z0-9_-]{0,31}")
#: Sustainability periods: a year, a month, an ISO week or a day.
PERIOD_RE = re.compile(r"[0-9]{4}(?:-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12][0-9]|3[01]))?|-W(?:0[1-9]|[1-4][0-9]|5[0-3]))?")
_BATCH_ID_RE = re.compile(r"[a-z](?:[a-z0-9-]*[a-z0-9])?:[0-9]{10}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")
_VAR_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")
#: A model label: "federated:<task>:round<N>:<hex>", "fallback:<name>", or a rules label such as the NEWS2-like one.
_MODEL_LABEL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._:/()+,=-]{0,199}")
_FEDERATED_LABEL_RE = re.compile(r"federated:(?P<task>[A-Za-z0-9][A-Za-z0-9._/-]*):round(?P<round>[0-9]{1,4}):(?P<hex>[0-9a-f]{6,64})")
RECORD_FIELDS = frozenset({
    "batch_id", "org", "batch_no", "merkle_root", "count", "seq_ranges", "first_ts_us", "last_ts_us",
    "twin_state_hashes", "prev_record_hash", "sealed_at_us", "leaf_format", "tree_format", "extra",
})
MAX_RECORD_BYTES = 8000
MAX_BATCH_NO = 9_999_999_999
EVENT_BATCH_ANCHORED = "SensorBatchAnchored"
EVENT_ALERT_RAISED = "AlertRaised"
EVENT_MAINTENANCE_DECIDED = "MaintenanceDecided"
EVENT_DECISION_ACKED = "DecisionAcknowledged"
EVENT_SUSTAINABILITY_REPORTED = "SustainabilityReported"


def alert_model(detail: dict[str, Any]) -> tuple[str | None, str | None]:
    """(label, SHA-256) of the model an alert's detail names; ValidationError if they are malformed or disagree."""
    label, digest = detail.get("model"), detail.get("model_sha256")
    if label is not None:
        label = require_pattern("detail.model", label, pattern=_MODEL_LABEL_RE, max_length=200,
                                rule="is not a model label (e.g. 'federated:maintenance-v1:round3:0123456789ab')")
    if digest is None:
        if label is not None and _FEDERATED_LABEL_RE.fullmatch(label):
            raise ValidationError("detail.model names a federated model; detail.model_sha256 must give its SHA-256")
        return label, None
    digest = _lower_hex("detail.model_sha256", digest)
    found = _FEDERATED_LABEL_RE.fullmatch(label) if label is not None else None
    if found is None:
        raise ValidationError("detail.model_sha256 is given, so detail.model must be the federated model's label "
                              "('federated:<task>:round<N>:<hash prefix>')")
    if not digest.startswith(found.group("hex")):
        raise ValidationError(f"detail.model {shown(label)!r} does not name the model of detail.model_sha256 {digest}")
    return label, digest


class TwinStateError(ContractError):
    """The record's state forbids the operation (alert already decided, decision already acknowledged)."""


def _json(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


def record_hash(record: dict[str, Any]) -> str:
    """SHA-256 of the record's canonical JSON: BatchRecord.record_hash() of the same record."""
    return hashlib.sha256(canonical_json(record)).hexdigest()


def _lower_hex(field: str, value: Any) -> str:
    text = require_str(field, value)
    if not _HEX_RE.fullmatch(text):
        raise ValidationError(f"{field} {shown(text)!r} is not a SHA-256 digest (64 lower-case hexadecimal digits)")
    return text


def check_batch_record(batch_id: str, record: dict[str, Any]) -> dict[str, Any]:
    """The record if it is a well-formed BatchRecord for batch_id; ValidationError otherwise."""
    missing = sorted(RECORD_FIELDS - set(record))
    unknown = sorted(set(record) - RECORD_FIELDS)
    if missing or unknown:
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                ([f"unknown {', '.join(shown(u) for u in unknown)}"] if unknown else [])
        raise ValidationError(f"record fields do not match a sensor batch record: {'; '.join(parts)}")
    org = require_name("record.org", record["org"])
    batch_no = require_json_int("record.batch_no", record["batch_no"], 0, MAX_BATCH_NO)
    expected = f"{org}:{batch_no:010d}"
    if record["batch_id"] != expected or batch_id != expected:
        raise ValidationError(f"batch ID {shown(batch_id)!r} does not match the record's org and batch_no "
                              f"({expected!r})")
    _lower_hex("record.merkle_root", record["merkle_root"])
    require_json_int("record.count", record["count"], 1)
    ranges = record["seq_ranges"]
    if not isinstance(ranges, dict) or not ranges:
        raise ValidationError("record.seq_ranges must be a non-empty object of variable -> [first_seq, last_seq]")
    for name, pair in ranges.items():
        if not _VAR_RE.fullmatch(name):
            raise ValidationError(f"record.seq_ranges: variable {shown(name)!r} is not valid")
        if not isinstance(pair, list) or len(pair) != 2:
            raise ValidationError(f"record.seq_ranges[{name!r}] must be [first_seq, last_seq]")
        first = require_json_int(f"record.seq_ranges[{name!r}] first", pair[0], 0)
        last = require_json_int(f"record.seq_ranges[{name!r}] last", pair[1], 0)
        if first > last:
            raise ValidationError(f"record.seq_ranges[{name!r}] starts at {first} after it ends at {last}")
    first_ts = require_json_int("record.first_ts_us", record["first_ts_us"], 0)
    last_ts = require_json_int("record.last_ts_us", record["last_ts_us"], 0)
    if first_ts > last_ts:
        raise ValidationError(f"record.first_ts_us {first_ts} is after record.last_ts_us {last_ts}")
    sealed = require_json_int("record.sealed_at_us", record["sealed_at_us"], 0)
    if sealed < last_ts:
        raise ValidationError(f"record.sealed_at_us {sealed} is before its last reading {last_ts}")
    hashes = record["twin_state_hashes"]
    if not isinstance(hashes, dict):
        raise ValidationError("record.twin_state_hashes must be an object of asset -> SHA-256")
    for asset, digest in hashes.items():
        if not _VAR_RE.fullmatch(asset):
            raise ValidationError(f"record.twin_state_hashes: asset {shown(asset)!r} is not valid")
        _lower_hex(f"record.twin_state_hashes[{asset!r}]", digest)
    if record["prev_record_hash"] != "":
        _lower_hex("record.prev_record_hash", record["prev_record_hash"])
    for field in ("leaf_format", "tree_format"):
        require_pattern(f"record.{field}", record[field], pattern=re.compile(r"[A-Za-z0-9._-]+"), max_length=32,
                        rule="is not valid")
    if not isinstance(record["extra"], dict):
        raise ValidationError("record.extra must be an object")
    return record


async def _with_roles(ctx: TransactionContext, function: str, roles: frozenset[str]) -> Member:
    identity = caller(ctx)
    if identity.role not in roles:
        raise AccessDenied(f"access denied: {function} needs role {' or '.join(repr(r) for r in sorted(roles))} "
                           f"in the caller's certificate, found {identity.role!r}")
    return await member(ctx.get_stub(), identity)


async def _operator(ctx: TransactionContext, function: str) -> Member:
    identity = caller(ctx)
    require_role(identity, function, OPERATOR_ROLE)
    return await member(ctx.get_stub(), identity)


async def _reader(ctx: TransactionContext, function: str) -> Member:
    identity = caller(ctx)
    require_any_role(identity, function)
    return await member(ctx.get_stub(), identity)


async def _load(stub: Any, object_type: str, key_id: str, what: str) -> tuple[str, dict[str, Any]]:
    key = stub.create_composite_key(object_type, [key_id])
    record = await get_record(stub, key)
    if record is None:
        raise NotFound(f"{what} {key_id!r} not found")
    return key, record


class TwinsContract(Contract):
    """Clients call these as "twins:AnchorSensorBatch", "twins:RaiseAlert" and so on."""

    Name = CONTRACT_NAME

    def get_evaluate_transactions(self) -> list[str]:
        return ["ReadSensorBatch", "ReadAlert", "ReadDecision", "ReadSustainability"]

    def BeforeTransaction(self, ctx: TransactionContext) -> None:  # noqa: N802
        limit_arguments(ctx.get_stub().get_function_and_parameters()[1])

    # --- sensor batch anchors ---------------------------------------------------------------------

    async def AnchorSensorBatch(self, ctx: TransactionContext, batch_id: str, record_json: str) -> str:  # noqa: N802
        """Anchor one sealed batch; returns {"batch_id", "record", "record_hash", "tx_id", ...}."""
        stub = ctx.get_stub()
        batch_id = require_pattern("batch ID", batch_id, pattern=_BATCH_ID_RE, max_length=80,
                                   rule="is not of the form '<org>:<batch number, 10 digits>'")
        record = check_batch_record(batch_id, require_json_object("record", record_json, max_bytes=MAX_RECORD_BYTES,
                                                                  max_depth=3))
        who = await _with_roles(ctx, "AnchorSensorBatch", ANCHOR_ROLES)
        if record["org"] != who.org:
            raise AccessDenied(f"access denied: the caller anchors batches of its own org {who.org!r}, "
                               f"not of {record['org']!r}")
        digest = record_hash(record)
        key = stub.create_composite_key(BATCH_OBJECT, [batch_id])
        existing = await get_record(stub, key)
        if existing is not None:
            if existing.get("record_hash") == digest:
                return _json(existing)  # idempotent: the same record again writes nothing
            raise AlreadyExists(f"batch {batch_id!r} is already anchored with a different record "
                                f"(record hash {existing.get('record_hash')}); anchors never change")
        if record["batch_no"] > 0:
            prev_id = f"{record['org']}:{record['batch_no'] - 1:010d}"
            previous = await get_record(stub, stub.create_composite_key(BATCH_OBJECT, [prev_id]))
            if previous is not None and previous.get("record_hash") != record["prev_record_hash"]:
                raise ValidationError(f"record.prev_record_hash {shown(record['prev_record_hash'])!r} is not the "
                                      f"record hash of batch {prev_id!r} ({previous.get('record_hash')})")
        stored = {"batch_id": batch_id, "record": record, "record_hash": digest, "tx_id": stub.get_txid(),
                  "anchored_at": tx_timestamp(stub), "anchored_by": who.identity.id}
        await put_record(stub, key, stored)
        stub.set_event(EVENT_BATCH_ANCHORED, canonical_json({
            "batch_id": batch_id, "org": record["org"], "merkle_root": record["merkle_root"],
            "count": record["count"], "record_hash": digest,
        }))
        return _json(stored)

    async def ReadSensorBatch(self, ctx: TransactionContext, batch_id: str) -> str:  # noqa: N802
        batch_id = require_pattern("batch ID", batch_id, pattern=_BATCH_ID_RE, max_length=80,
                                   rule="is not of the form '<org>:<batch number, 10 digits>'")
        await _reader(ctx, "ReadSensorBatch")
        return _json((await _load(ctx.get_stub(), BATCH_OBJECT, batch_id, "sensor batch"))[1])

    # --- alerts, decisions, acknowledgements ------------------------------------------------------

    async def RaiseAlert(self, ctx: TransactionContext, asset: str, kind: str, score: str,  # noqa: N802
                         detail_json: str) -> str:
        """An operator raises an alert on one of its org's assets; the alert's ID is the transaction ID."""
        stub = ctx.get_stub()
        asset = require_id("asset", asset)
        kind = require_pattern("alert kind", kind, pattern=ALERT_KINDS_RE, max_length=32,
                               rule="is not valid: use lower-case letters, digits, '_' and '-'")
        score_value = _score(score)
        detail = require_json_object("detail", detail_json)
        model, model_sha256 = alert_model(detail)
        who = await _operator(ctx, "RaiseAlert")
        alert_id = stub.get_txid()
        key = stub.create_composite_key(ALERT_OBJECT, [alert_id])
        record = {"id": alert_id, "org": who.org, "asset": asset, "kind": kind, "score": score_value,
                  "detail": detail, "model": model, "model_sha256": model_sha256, "status": "open",
                  "raised_by": who.identity.id, "raised_at": tx_timestamp(stub)}
        await put_record(stub, key, record)
        stub.set_event(EVENT_ALERT_RAISED, canonical_json({"id": alert_id, "org": who.org, "asset": asset,
                                                           "kind": kind, "score": score_value, "model": model,
                                                           "model_sha256": model_sha256}))
        return _json(record)

    async def ReadAlert(self, ctx: TransactionContext, alert_id: str) -> str:  # noqa: N802
        alert_id = require_id("alert ID", alert_id)
        await _reader(ctx, "ReadAlert")
        return _json((await _load(ctx.get_stub(), ALERT_OBJECT, alert_id, "alert"))[1])

    async def DecideMaintenance(self, ctx: TransactionContext, alert_id: str, decision: str) -> str:  # noqa: N802
        """An operator of the alert's org decides what to do about it, once; the decision's ID is the tx ID."""
        stub = ctx.get_stub()
        alert_id = require_id("alert ID", alert_id)
        decision = require_choice("decision", decision, DECISIONS)
        who = await _operator(ctx, "DecideMaintenance")
        alert_key, alert = await _load(stub, ALERT_OBJECT, alert_id, "alert")
        if alert.get("org") != who.org:
            raise AccessDenied(f"access denied: alert {alert_id!r} belongs to org {alert.get('org')!r}; "
                               f"the caller is an operator of org {who.org!r}")
        if alert.get("status") != "open":
            raise TwinStateError(f"alert {alert_id!r} was already decided ({alert.get('decision_id')})")
        decision_id = stub.get_txid()
        record = {"id": decision_id, "alert": alert_id, "org": who.org, "asset": alert.get("asset"),
                  "decision": decision, "status": "pending", "decided_by": who.identity.id,
                  "decided_at": tx_timestamp(stub),
                  # the model whose alert this decision answers (None for alerts that named none)
                  "model": alert.get("model"), "model_sha256": alert.get("model_sha256")}
        await put_record(stub, alert_key, dict(alert, status="decided", decision_id=decision_id))
        await put_record(stub, stub.create_composite_key(DECISION_OBJECT, [decision_id]), record)
        stub.set_event(EVENT_MAINTENANCE_DECIDED, canonical_json({"id": decision_id, "alert": alert_id,
                                                                  "org": who.org, "decision": decision}))
        return _json(record)

    async def ReadDecision(self, ctx: TransactionContext, decision_id: str) -> str:  # noqa: N802
        decision_id = require_id("decision ID", decision_id)
        await _reader(ctx, "ReadDecision")
        return _json((await _load(ctx.get_stub(), DECISION_OBJECT, decision_id, "decision"))[1])

    async def AckDecision(self, ctx: TransactionContext, decision_id: str) -> str:  # noqa: N802
        """An admin or operator of the decision's org acknowledges it (it has been acted on), once."""
        stub = ctx.get_stub()
        decision_id = require_id("decision ID", decision_id)
        who = await _with_roles(ctx, "AckDecision", ANCHOR_ROLES)
        key, decision = await _load(stub, DECISION_OBJECT, decision_id, "decision")
        if decision.get("org") != who.org:
            raise AccessDenied(f"access denied: decision {decision_id!r} belongs to org {decision.get('org')!r}; "
                               f"the caller is of org {who.org!r}")
        if decision.get("status") != "pending":
            raise TwinStateError(f"decision {decision_id!r} was already acknowledged at {decision.get('acked_at')}")
        record = dict(decision, status="acknowledged", acked_by=who.identity.id, acked_at=tx_timestamp(stub))
        await put_record(stub, key, record)
        stub.set_event(EVENT_DECISION_ACKED, canonical_json({"id": decision_id, "org": who.org}))
        return _json(record)

    # --- sustainability ---------------------------------------------------------------------------

    async def ReportSustainability(self, ctx: TransactionContext, org: str, period: str,  # noqa: N802
                                   metrics_json: str) -> str:
        """An admin or operator attests its own org's metrics (non-negative numbers) for one period, once."""
        stub = ctx.get_stub()
        org = require_name("org", org)
        period = require_pattern("period", period, pattern=PERIOD_RE, max_length=10,
                                 rule="is not a period like '2026', '2026-01', '2026-W03' or '2026-01-31'")
        metrics = check_metrics("metrics", require_json_object("metrics", metrics_json, max_depth=1),
                                non_negative=True)
        if not metrics:
            raise ValidationError("metrics must hold at least one metric")
        who = await _with_roles(ctx, "ReportSustainability", ANCHOR_ROLES)
        if org != who.org:
            raise AccessDenied(f"access denied: ReportSustainability reports the caller's own org {who.org!r}, "
                               f"not {org!r}")
        key = stub.create_composite_key(SUSTAINABILITY_OBJECT, [org, period])
        if await get_record(stub, key) is not None:
            raise AlreadyExists(f"org {org!r} has already reported period {period!r}; reports never change")
        record = {"org": org, "period": period, "metrics": metrics, "reported_by": who.identity.id,
                  "reported_at": tx_timestamp(stub), "tx_id": stub.get_txid()}
        await put_record(stub, key, record)
        stub.set_event(EVENT_SUSTAINABILITY_REPORTED, canonical_json({"org": org, "period": period}))
        return _json(record)

    async def ReadSustainability(self, ctx: TransactionContext, org: str, period: str) -> str:  # noqa: N802
        org = require_name("org", org)
        period = require_pattern("period", period, pattern=PERIOD_RE, max_length=10,
                                 rule="is not a period like '2026', '2026-01', '2026-W03' or '2026-01-31'")
        await _reader(ctx, "ReadSustainability")
        stub = ctx.get_stub()
        record = await get_record(stub, stub.create_composite_key(SUSTAINABILITY_OBJECT, [org, period]))
        if record is None:
            raise NotFound(f"org {org!r} has no sustainability report for period {period!r}")
        return _json(record)


def _score(value: Any) -> float:
    """An alert score: a decimal number in 0..1."""
    text = require_str("score", value)
    if not re.fullmatch(r"(?:0|1)(?:\.[0-9]{1,9})?", text):
        raise ValidationError(f"score {shown(text)!r} is not a number between 0 and 1 (e.g. '0.87')")
    number = float(text)
    require_number("score", number)
    if number > 1:
        raise ValidationError(f"score {text!r} is not a number between 0 and 1 (e.g. '0.87')")
    return number
