"""The data-access contract ("data"): data sets, grants, revocations, access checks and the audit trail.

Rules, in the order every transaction applies them so that a rejected call writes nothing:
arguments first (arguments.py), then the caller's role from the certificate, then the caller's org
from the registry, then the records involved; only when everything holds are keys written and one
event set.

* RegisterDataset: a steward, for the steward's own org (owner from the certificate via the registry).
* Grant / Revoke: a steward of the data set's owner org; the grantee is a registered org other than
  the owner; an expiry, when given, lies after the transaction's timestamp.
* Check (recorded) / CheckReadOnly: any member of a registered org, for its own org only; a data set whose
  owner org was removed from the consortium (registry.RemoveOrg) is denied to everyone, with the time.
* A member of a removed org is refused by every function (membership.member).
* Reads (ReadDataset, ListDatasets, ListGrants, Audit): any member of a registered org.

Data set records, grant keys and each data set's grant register carry a key-level endorsement policy
naming the owner org's peers (endorsement.py), so they can only change in transactions the owner's peer
endorsed; a grant that creates a new key also writes the register, so it needs the owner's peer too.
"""

from __future__ import annotations

from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from chaincode.access import access_key, decide
from chaincode.arguments import (
    limit_arguments,
    require_id,
    require_json_object,
    require_purpose,
    require_sha256,
)
from chaincode.audit import trail
from chaincode.datasets import DATASET_OBJECT, SENSITIVITIES, dataset_key, load_dataset
from chaincode.endorsement import peers_of
from chaincode.errors import AccessDenied, AlreadyExists, NotFound, ValidationError
from chaincode.grants import (
    ACTION_GRANTED,
    ACTION_REVOKED,
    ACTIVE,
    EXPIRED,
    REVOKED,
    GrantStateError,
    grant_key,
    grant_register_key,
    grant_state,
    grants_of,
)
from chaincode.membership import STEWARD_ROLE, Member, caller, member, org_record, require_any_role, require_role
from chaincode.registry import ORG_OBJECT
from chaincode.state import canonical_json, get_record, list_records, put_record, tx_timestamp
from chaincode.timestamps import format_utc, parse_utc, tx_nanos
from chaincode.validation import require_choice, require_name

CONTRACT_NAME = "data"
EVENT_DATASET_REGISTERED = "DatasetRegistered"
EVENT_GRANT_ISSUED = "GrantIssued"
EVENT_GRANT_REVOKED = "GrantRevoked"
EVENT_ACCESS_CHECKED = "AccessChecked"


def _json(value: Any) -> str:
    return canonical_json(value).decode("utf-8")


async def _reader(ctx: TransactionContext, function: str) -> Member:
    identity = caller(ctx)
    require_any_role(identity, function)
    return await member(ctx.get_stub(), identity)


async def _steward(ctx: TransactionContext, function: str) -> Member:
    identity = caller(ctx)
    require_role(identity, function, STEWARD_ROLE)
    return await member(ctx.get_stub(), identity)


def _require_owner(dataset: dict[str, Any], who: Member, function: str) -> None:
    if dataset.get("owner_msp") != who.msp_id:
        raise AccessDenied(
            f"access denied: {function} is for stewards of org {dataset.get('owner')!r}, which owns data set "
            f"{dataset.get('id')!r}; the caller is a steward of org {who.org!r}"
        )


def _optional_expiry(value: Any) -> int | None:
    if value == "":
        return None  # no expiry: the grant holds until revoked
    return parse_utc("expires_at", value)


async def _count_new_grant_key(stub: Any, dataset: dict[str, Any]) -> None:
    """Write the data set's grant register (see grants.grant_register_key), creating it with the owner's
    policy for a data set registered before registers existed."""
    key = grant_register_key(stub, dataset["id"])
    register = await get_record(stub, key) or {"dataset": dataset["id"], "grant_keys": 0}
    register["grant_keys"] = int(register.get("grant_keys", 0)) + 1
    await put_record(stub, key, register)
    await stub.set_state_validation_parameter(key, peers_of([dataset["owner_msp"]]))


class DataAccessContract(Contract):
    """Clients call these as "data:RegisterDataset", "data:Grant", "data:Check" and so on."""

    Name = CONTRACT_NAME

    def get_evaluate_transactions(self) -> list[str]:
        return ["ReadDataset", "ListDatasets", "ListGrants", "CheckReadOnly", "Audit"]

    def BeforeTransaction(self, ctx: TransactionContext) -> None:  # noqa: N802 - the contract API's hook name
        # Before any argument is parsed: bounds what one call can make every endorser process.
        limit_arguments(ctx.get_stub().get_function_and_parameters()[1])

    # --- data sets --------------------------------------------------------------------------------

    async def RegisterDataset(self, ctx: TransactionContext, dataset_id: str, kind: str,  # noqa: N802
                              schema_summary: str, manifest_sha256: str, sensitivity: str) -> str:
        """Register a data set of the caller's org; returns the stored record."""
        stub = ctx.get_stub()
        dataset_id = require_id("data set ID", dataset_id)
        kind = require_id("data set kind", kind)
        schema = require_json_object("schema summary", schema_summary)
        manifest_sha256 = require_sha256("manifest SHA-256", manifest_sha256)
        sensitivity = require_choice("sensitivity", sensitivity, SENSITIVITIES)
        owner = await _steward(ctx, "RegisterDataset")

        key = dataset_key(stub, dataset_id)
        existing = await get_record(stub, key)
        if existing is not None:
            raise AlreadyExists(f"data set {dataset_id!r} is already registered by org {existing.get('owner')!r}")

        record: dict[str, Any] = {
            "id": dataset_id,
            "kind": kind,
            "schema": schema,
            "manifest_sha256": manifest_sha256,
            "sensitivity": sensitivity,
            "owner": owner.org,
            "owner_msp": owner.msp_id,
            "registered_by": owner.identity.id,
            "registered_at": tx_timestamp(stub),
            "tx_id": stub.get_txid(),
        }
        await put_record(stub, key, record)
        await stub.set_state_validation_parameter(key, peers_of([owner.msp_id]))
        register = grant_register_key(stub, dataset_id)
        await put_record(stub, register, {"dataset": dataset_id, "grant_keys": 0})
        await stub.set_state_validation_parameter(register, peers_of([owner.msp_id]))
        stub.set_event(EVENT_DATASET_REGISTERED, canonical_json({
            "id": dataset_id, "owner": owner.org, "kind": kind, "manifest_sha256": manifest_sha256,
            "sensitivity": sensitivity,
        }))
        return _json(record)

    async def ReadDataset(self, ctx: TransactionContext, dataset_id: str) -> str:  # noqa: N802
        dataset_id = require_id("data set ID", dataset_id)
        await _reader(ctx, "ReadDataset")
        return _json(await load_dataset(ctx.get_stub(), dataset_id))

    async def ListDatasets(self, ctx: TransactionContext) -> str:  # noqa: N802
        """Every data set record, ordered by ID."""
        await _reader(ctx, "ListDatasets")
        return _json(await list_records(ctx.get_stub(), DATASET_OBJECT))

    # --- grants -----------------------------------------------------------------------------------

    async def Grant(self, ctx: TransactionContext, dataset_id: str, grantee_org: str, purpose: str,  # noqa: N802
                    expires_at: str) -> str:
        """Let grantee_org use the data set for purpose, until expires_at (RFC 3339 UTC) or, if "", until revoked."""
        stub = ctx.get_stub()
        dataset_id = require_id("data set ID", dataset_id)
        grantee_org = require_name("grantee org", grantee_org)
        purpose = require_purpose("purpose", purpose)
        expiry = _optional_expiry(expires_at)
        granter = await _steward(ctx, "Grant")
        dataset = await load_dataset(stub, dataset_id)
        _require_owner(dataset, granter, "Grant")
        grantee = await org_record(stub, grantee_org)
        if grantee_org == dataset.get("owner"):
            raise ValidationError(f"org {grantee_org!r} owns data set {dataset_id!r} and needs no grant")
        now = tx_nanos(stub)
        if expiry is not None and expiry <= now:
            raise ValidationError(
                f"expires_at {format_utc(expiry)} is not in the future (the transaction's time is {format_utc(now)})"
            )

        key = grant_key(stub, dataset_id, grantee_org, purpose)
        existing = await get_record(stub, key)
        if existing is not None and grant_state(existing, now) == ACTIVE:
            until = f"until {existing['expires_at']}" if existing.get("expires_at") else "without expiry"
            raise GrantStateError(
                f"data set {dataset_id!r} is already granted to {grantee_org!r} for {purpose!r} ({until}); "
                "revoke it first to change the grant"
            )
        record: dict[str, Any] = {
            "dataset": dataset_id,
            "owner": dataset["owner"],
            "grantee": grantee_org,
            "grantee_msp": grantee["msp_id"],
            "purpose": purpose,
            "expires_at": None if expiry is None else format_utc(expiry),
            "status": ACTIVE,
            "action": ACTION_GRANTED,
            "granted_by": granter.identity.id,
            "granted_at": tx_timestamp(stub),
            "tx_id": stub.get_txid(),
        }
        await put_record(stub, key, record)
        # Re-set on every grant (not only the first) so that every version of the key names the owner.
        await stub.set_state_validation_parameter(key, peers_of([dataset["owner_msp"]]))
        if existing is None:
            # A new key has no policy of its own yet: the register makes the owner's peer necessary.
            await _count_new_grant_key(stub, dataset)
        stub.set_event(EVENT_GRANT_ISSUED, canonical_json({
            "dataset": dataset_id, "grantee": grantee_org, "purpose": purpose, "expires_at": record["expires_at"],
        }))
        return _json(record)

    async def Revoke(self, ctx: TransactionContext, dataset_id: str, grantee_org: str,  # noqa: N802
                     purpose: str) -> str:
        """End a grant now; the record stays (status revoked) and its history keeps every version."""
        stub = ctx.get_stub()
        dataset_id = require_id("data set ID", dataset_id)
        grantee_org = require_name("grantee org", grantee_org)
        purpose = require_purpose("purpose", purpose)
        revoker = await _steward(ctx, "Revoke")
        dataset = await load_dataset(stub, dataset_id)
        _require_owner(dataset, revoker, "Revoke")

        key = grant_key(stub, dataset_id, grantee_org, purpose)
        existing = await get_record(stub, key)
        if existing is None:
            raise NotFound(f"data set {dataset_id!r} has no grant to {grantee_org!r} for {purpose!r}")
        state = grant_state(existing, tx_nanos(stub))
        if state == REVOKED:
            raise GrantStateError(
                f"the grant of {dataset_id!r} to {grantee_org!r} for {purpose!r} was already revoked at "
                f"{existing.get('revoked_at')}"
            )
        if state == EXPIRED:
            raise GrantStateError(
                f"the grant of {dataset_id!r} to {grantee_org!r} for {purpose!r} expired at "
                f"{existing.get('expires_at')}; there is nothing to revoke"
            )
        record = dict(existing, status=REVOKED, action=ACTION_REVOKED, revoked_by=revoker.identity.id,
                      revoked_at=tx_timestamp(stub), tx_id=stub.get_txid())
        await put_record(stub, key, record)
        stub.set_event(EVENT_GRANT_REVOKED, canonical_json({
            "dataset": dataset_id, "grantee": grantee_org, "purpose": purpose,
        }))
        return _json(record)

    async def ListGrants(self, ctx: TransactionContext, dataset_id: str) -> str:  # noqa: N802
        """Every grant of the data set with its state (active, revoked, expired) at the transaction's time."""
        stub = ctx.get_stub()
        dataset_id = require_id("data set ID", dataset_id)
        await _reader(ctx, "ListGrants")
        await load_dataset(stub, dataset_id)
        now = tx_nanos(stub)
        return _json([dict(g, state=grant_state(g, now)) for g in await grants_of(stub, dataset_id)])

    # --- access checks ----------------------------------------------------------------------------

    async def _decide(self, ctx: TransactionContext, function: str, dataset_id: str, purpose: str
                      ) -> tuple[Member, dict[str, Any]]:
        stub = ctx.get_stub()
        dataset_id = require_id("data set ID", dataset_id)
        purpose = require_purpose("purpose", purpose)
        who = await _reader(ctx, function)
        dataset = await load_dataset(stub, dataset_id)
        owner = await get_record(stub, stub.create_composite_key(ORG_OBJECT, [str(dataset.get("owner", ""))]))
        decision = decide(dataset, who.org, purpose, await grants_of(stub, dataset_id, who.org), tx_nanos(stub),
                          owner_removed_at=(owner or {}).get("removed_at"))
        answer = dict(decision.to_dict(), tx_id=stub.get_txid(), at=tx_timestamp(stub))
        return who, answer

    async def Check(self, ctx: TransactionContext, dataset_id: str, purpose: str) -> str:  # noqa: N802
        """May the caller's org use the data set for purpose? Allowed or denied, the check is recorded."""
        stub = ctx.get_stub()
        who, answer = await self._decide(ctx, "Check", dataset_id, purpose)
        event: dict[str, Any] = {
            "dataset": answer["dataset"],
            "org": who.org,
            "msp_id": who.msp_id,
            "caller": who.identity.id,
            "role": who.role,
            "purpose": answer["purpose"],
            "allowed": answer["allowed"],
            "reason": answer["reason"],
            "tx_id": answer["tx_id"],
            "at": answer["at"],
        }
        await put_record(stub, access_key(stub, answer["dataset"], answer["tx_id"]), event)
        stub.set_event(EVENT_ACCESS_CHECKED, canonical_json(event))
        return _json(answer)

    async def CheckReadOnly(self, ctx: TransactionContext, dataset_id: str, purpose: str) -> str:  # noqa: N802
        """The same answer as Check, not recorded (for dashboards; evaluate, never submit)."""
        _, answer = await self._decide(ctx, "CheckReadOnly", dataset_id, purpose)
        return _json(answer)

    # --- audit ------------------------------------------------------------------------------------

    async def Audit(self, ctx: TransactionContext, dataset_id: str) -> str:  # noqa: N802
        """The data set's registration, grants, revocations and access checks, oldest first."""
        stub = ctx.get_stub()
        dataset_id = require_id("data set ID", dataset_id)
        await _reader(ctx, "Audit")
        dataset = await load_dataset(stub, dataset_id)
        return _json({"dataset": dataset_id, "owner": dataset.get("owner"), "entries": await trail(stub, dataset_id)})
