"""The consent contract ("consent"): per-patient consent kept in the hospital's own private data.

A hospital's steward records that the patient behind a pseudonym gave or withdrew consent for a scope
(e.g. "train:cardiac-v1"). Nothing identifying reaches the channel:

* the record travels in the proposal's transient map (arguments and the response are part of the
  transaction, the transient map is not), under the key "consent";
* it is written to the hospital's implicit org collection ``_implicit_org_<MSPID>``; the channel only
  gets the SHA-256 of key and value, and Fabric requires the hospital's own peer to endorse writes to
  that collection;
* the event and the response name the hospital and the value's hash, never the pseudonym, the scope
  or the status, and error messages never repeat them either (peers log endorsement errors).

The record carries a caller-chosen random salt: without it, anyone who knows a pseudonym and a scope
could hash both possible records ("given", "withdrawn") and learn the status from the on-chain hash.
Another org shown the record can check it against the channel (VerifyConsent) but never read it:
reads only ever address the caller's own org's collection.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from chaincode.arguments import limit_arguments, require_id, require_json_object, require_purpose, require_sha256
from chaincode.errors import AccessDenied, ContractError, NotFound, ValidationError
from chaincode.membership import STEWARD_ROLE, Member, caller, member, org_record, require_any_role, require_role
from chaincode.state import canonical_json, decode_record, tx_timestamp
from chaincode.validation import require_name

CONTRACT_NAME = "consent"
CONSENT_OBJECT = "consent"
HOSPITAL_KIND = "hospital"
#: The transient map's key that carries the record, and the record's fields.
TRANSIENT_KEY = "consent"
FIELDS = ("pseudonym", "salt", "scope", "status")
GIVEN = "given"
WITHDRAWN = "withdrawn"
STATUSES = frozenset({GIVEN, WITHDRAWN})
MAX_TRANSIENT_BYTES = 4096
#: 16..64 random bytes, hex-encoded.
_SALT_RE = re.compile(r"[0-9a-f]{32,128}")
EVENT_CONSENT_RECORDED = "ConsentRecorded"


class ConsentStateError(ContractError):
    """The consent already has the requested status, or there is none to withdraw."""


def implicit_collection(msp_id: str) -> str:
    """Fabric's implicit private data collection of an org: members are that org's peers only."""
    return f"_implicit_org_{msp_id}"


def consent_key(stub: Any, pseudonym: str, scope: str) -> str:
    return stub.create_composite_key(CONSENT_OBJECT, [pseudonym, scope])


def _quiet(rule: Any, field: str, value: Any, expected: str) -> str:
    """Apply a rule without repeating the value in the error (it may identify a patient)."""
    try:
        return str(rule(field, value))
    except ValidationError:
        raise ValidationError(f"{field} is not valid: expected {expected}") from None


def _pseudonym(value: Any) -> str:
    return _quiet(require_id, "pseudonym", value, "1..64 letters, digits, '.', '_' or '-'")


def _scope(value: Any) -> str:
    return _quiet(require_purpose, "scope", value, "verb:object, e.g. 'train:cardiac-v1'")


def _transient_record(stub: Any) -> dict[str, str]:
    transient = stub.get_transient() or {}
    if set(transient) != {TRANSIENT_KEY}:
        raise ValidationError(
            f"RecordConsent takes the record in the transient map under {TRANSIENT_KEY!r} and nothing else "
            f"(found keys: {', '.join(sorted(repr(k)[:40] for k in transient)) or 'none'})"
        )
    raw = bytes(transient[TRANSIENT_KEY])
    if len(raw) > MAX_TRANSIENT_BYTES:
        raise ValidationError(f"the consent record is {len(raw)} bytes; the limit is {MAX_TRANSIENT_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError("the consent record is not UTF-8 text") from None
    document = require_json_object("the consent record", text, max_bytes=MAX_TRANSIENT_BYTES, max_depth=1)
    if sorted(document) != sorted(FIELDS):
        raise ValidationError(
            f"the consent record must have exactly the fields {', '.join(FIELDS)}; "
            f"found {len(document)} field(s)"
        )
    status = document["status"]
    if status not in STATUSES:
        raise ValidationError(f"the consent status must be one of: {', '.join(sorted(STATUSES))}")
    salt = document["salt"]
    if not isinstance(salt, str) or not _SALT_RE.fullmatch(salt):
        raise ValidationError("the consent salt must be 32..128 lower-case hexadecimal digits (16..64 random bytes)")
    return {"pseudonym": _pseudonym(document["pseudonym"]), "scope": _scope(document["scope"]),
            "status": status, "salt": salt}


async def _hospital(stub: Any, ctx: TransactionContext, function: str, steward: bool) -> Member:
    identity = caller(ctx)
    if steward:
        require_role(identity, function, STEWARD_ROLE)
    else:
        require_any_role(identity, function)
    who = await member(stub, identity)
    if who.kind != HOSPITAL_KIND:
        raise AccessDenied(f"access denied: {function} is for hospitals; org {who.org!r} is registered as {who.kind!r}")
    return who


class ConsentContract(Contract):
    """Clients call these as "consent:RecordConsent" (with the transient map), "consent:VerifyConsent" ..."""

    Name = CONTRACT_NAME

    def get_evaluate_transactions(self) -> list[str]:
        return ["ReadConsent", "VerifyConsent"]

    def BeforeTransaction(self, ctx: TransactionContext) -> None:  # noqa: N802 - the contract API's hook name
        limit_arguments(ctx.get_stub().get_function_and_parameters()[1])

    async def RecordConsent(self, ctx: TransactionContext) -> str:  # noqa: N802
        """Record the transient "consent" record in the caller's hospital's collection; returns its hash."""
        stub = ctx.get_stub()
        consent = _transient_record(stub)
        hospital = await _hospital(stub, ctx, "RecordConsent", steward=True)
        collection = implicit_collection(hospital.msp_id)
        key = consent_key(stub, consent["pseudonym"], consent["scope"])

        raw = await stub.get_private_data(collection, key)
        current = decode_record(key, raw) if raw else None
        if current is None and consent["status"] == WITHDRAWN:
            raise ConsentStateError("no consent is recorded for this pseudonym and scope; there is nothing to withdraw")
        if current is not None and current.get("status") == consent["status"]:
            raise ConsentStateError(f"the consent for this pseudonym and scope is already {consent['status']!r}")

        record = dict(consent, hospital=hospital.org, recorded_by=hospital.identity.id,
                      recorded_at=tx_timestamp(stub), tx_id=stub.get_txid())
        value = canonical_json(record)
        await stub.put_private_data(collection, key, value)
        stub.set_event(EVENT_CONSENT_RECORDED, canonical_json({"hospital": hospital.org, "collection": collection}))
        return canonical_json({
            "hospital": hospital.org, "collection": collection, "sha256": hashlib.sha256(value).hexdigest(),
            "tx_id": stub.get_txid(),
        }).decode("utf-8")

    async def ReadConsent(self, ctx: TransactionContext, pseudonym: str, scope: str) -> str:  # noqa: N802
        """The caller's own hospital's record (exact stored text) and its SHA-256, to show to a verifier."""
        stub = ctx.get_stub()
        pseudonym, scope = _pseudonym(pseudonym), _scope(scope)
        hospital = await _hospital(stub, ctx, "ReadConsent", steward=False)
        raw = await stub.get_private_data(implicit_collection(hospital.msp_id), consent_key(stub, pseudonym, scope))
        if not raw:
            raise NotFound(f"org {hospital.org!r} has no consent recorded for this pseudonym and scope")
        return canonical_json({"record": bytes(raw).decode("utf-8"), "sha256": hashlib.sha256(raw).hexdigest()}
                              ).decode("utf-8")

    async def VerifyConsent(self, ctx: TransactionContext, hospital_org: str, pseudonym: str,  # noqa: N802
                            scope: str, sha256_hex: str) -> str:
        """Does the record a hospital showed (its SHA-256) match what the hospital committed?"""
        stub = ctx.get_stub()
        hospital_org = require_name("hospital org", hospital_org)
        pseudonym, scope = _pseudonym(pseudonym), _scope(scope)
        digest = require_sha256("record SHA-256", sha256_hex)
        identity = caller(ctx)
        require_any_role(identity, "VerifyConsent")
        await member(stub, identity)
        hospital = await org_record(stub, hospital_org)
        if hospital.get("kind") != HOSPITAL_KIND:
            raise ValidationError(f"org {hospital_org!r} is registered as {hospital.get('kind')!r}; only hospitals record consent")
        stored = bytes(await stub.get_private_data_hash(implicit_collection(str(hospital["msp_id"])),
                                                        consent_key(stub, pseudonym, scope)))
        return canonical_json({
            "hospital": hospital_org, "recorded": bool(stored), "match": bool(stored) and stored.hex() == digest,
        }).decode("utf-8")
