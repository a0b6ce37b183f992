"""The consortium registry contract: which organisations (hospitals and plants) belong to the network.

Every org record names the MSP that owns it. The MSP ID is taken from the registering admin's
certificate, never from an argument, so an org can only ever be registered by an admin of its own
MSP, and each MSP owns at most one org name.

An org leaves by a majority of the member orgs' admins, as the channel's /Channel/Application/Admins
(MAJORITY Admins) decides the channel config update that removes its MSP: ``RemoveOrg`` records one vote,
made by an admin of a member org that is not removed (its org taken from the certificate's MSP through the
registry, never from an argument); once the votes of more than half of the registered orgs that are not
removed (the org being removed counted, as the channel counts it before the update) are in, the org's record
gets ``removed_at``. The chaincode cannot read the channel config, so this record does not prove the MSP is
gone from the channel; `twinledger org remove` votes only after that config update has committed, with the
same orgs' admins that signed it. A removed org's record stays (its history is the ledger's); its members are
denied by the data-governance contracts (membership.member) and its data sets can no longer be used by
anyone (access.decide).
"""

from __future__ import annotations

from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import Contract, TransactionContext

from chaincode.errors import AccessDenied, AlreadyExists, NotFound
from chaincode.identity import CallerIdentity, IdentityError, caller_identity
from chaincode.state import canonical_json, get_record, list_records, put_record, tx_timestamp
from chaincode.validation import require_choice, require_name

CONTRACT_NAME = "registry"
ORG_KINDS = frozenset({"hospital", "plant"})
#: Only this role may register its organisation.
REGISTRAR_ROLE = "admin"
EVENT_ORG_REGISTERED = "OrgRegistered"
EVENT_ORG_REMOVAL_VOTED = "OrgRemovalVoted"
EVENT_ORG_REMOVED = "OrgRemoved"
#: Composite-key object types: org records by name, and the name owned by each MSP.
ORG_OBJECT = "org"
ORG_BY_MSP_OBJECT = "org_by_msp"


def removed_detail(record: dict[str, Any]) -> str | None:
    """Why org ``record`` no longer belongs to the consortium (None while it does): one line for a person."""
    at = record.get("removed_at")
    return f"org {record.get('name')!r} was removed from the consortium at {at}" if at else None


def _caller(ctx: TransactionContext) -> CallerIdentity:
    try:
        return caller_identity(ctx.get_stub())
    except IdentityError as exc:
        raise AccessDenied(f"access denied: {exc}") from exc


class RegistryContract(Contract):
    """Transaction functions keep Fabric's CamelCase names: clients call them as "RegisterOrg" etc."""

    Name = CONTRACT_NAME

    def get_evaluate_transactions(self) -> list[str]:
        # Tagged EVALUATE in the contract metadata so that Gateway clients query rather than submit.
        return ["ReadOrg", "ListOrgs", "WhoAmI"]

    async def RegisterOrg(self, ctx: TransactionContext, name: str, kind: str) -> str:  # noqa: N802
        """Register the caller's own organisation under name; returns the stored record as JSON."""
        stub = ctx.get_stub()
        name = require_name("org name", name)
        kind = require_choice("org kind", kind, ORG_KINDS)
        caller = _caller(ctx)
        if caller.role != REGISTRAR_ROLE:
            raise AccessDenied(
                f"access denied: RegisterOrg needs role {REGISTRAR_ROLE!r} in the caller's certificate, "
                f"found {caller.role!r}"
            )
        if caller.org_kind is not None and caller.org_kind != kind:
            raise AccessDenied(
                f"access denied: the caller's certificate says org_kind {caller.org_kind!r}, "
                f"cannot register kind {kind!r}"
            )

        org_key = stub.create_composite_key(ORG_OBJECT, [name])
        msp_key = stub.create_composite_key(ORG_BY_MSP_OBJECT, [caller.msp_id])
        if await get_record(stub, org_key) is not None:
            raise AlreadyExists(f"org {name!r} is already registered")
        owned = await get_record(stub, msp_key)
        if owned is not None:
            raise AlreadyExists(f"MSP {caller.msp_id!r} has already registered org {owned.get('name')!r}")

        record: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "msp_id": caller.msp_id,
            "registered_by": caller.id,
            "tx_id": stub.get_txid(),
            "registered_at": tx_timestamp(stub),
        }
        await put_record(stub, org_key, record)
        await put_record(stub, msp_key, {"msp_id": caller.msp_id, "name": name})
        stub.set_event(EVENT_ORG_REGISTERED, canonical_json({"name": name, "kind": kind, "msp_id": caller.msp_id}))
        return canonical_json(record).decode("utf-8")

    async def RemoveOrg(self, ctx: TransactionContext, name: str) -> str:  # noqa: N802
        """The caller's org votes to remove org ``name``; returns the org record (``removed_at`` once the votes
        of a majority of the registered orgs not removed are in)."""
        stub = ctx.get_stub()
        name = require_name("org name", name)
        caller = _caller(ctx)
        if caller.role != REGISTRAR_ROLE:
            raise AccessDenied(
                f"access denied: RemoveOrg needs role {REGISTRAR_ROLE!r} in the caller's certificate, "
                f"found {caller.role!r}"
            )
        index = await get_record(stub, stub.create_composite_key(ORG_BY_MSP_OBJECT, [caller.msp_id]))
        if index is None:
            raise AccessDenied(f"access denied: MSP {caller.msp_id!r} has no org in the consortium registry")
        voter_name = str(index.get("name", ""))
        orgs = {str(r.get("name")): r for r in await list_records(stub, ORG_OBJECT)}
        voter = orgs.get(voter_name)
        if voter is None or voter.get("msp_id") != caller.msp_id:
            raise RuntimeError(f"registry index for MSP {caller.msp_id!r} names org {voter_name!r}, which it does not own")
        if removed_detail(voter):
            raise AccessDenied(f"access denied: {removed_detail(voter)}")
        target = orgs.get(name)
        if target is None:
            raise NotFound(f"org {name!r} is not registered")
        if removed_detail(target):
            raise AlreadyExists(f"{removed_detail(target)}; there is nothing to vote on")
        votes = list(target.get("removal_votes", []))
        if any(v.get("org") == voter_name for v in votes):
            raise AlreadyExists(f"org {voter_name!r} has already voted to remove org {name!r}")

        votes.append({"org": voter_name, "by": caller.id, "at": tx_timestamp(stub), "tx_id": stub.get_txid()})
        active = [n for n, r in orgs.items() if not removed_detail(r)]
        # Votes of orgs removed since they voted no longer count, as their signatures would not on the channel.
        counted = [v for v in votes if v.get("org") in active]
        needed = len(active) // 2 + 1
        record = dict(target, removal_votes=votes)
        if len(counted) >= needed:
            record.update(removed_at=tx_timestamp(stub), removed_tx=stub.get_txid(),
                          removed_by=sorted(str(v["org"]) for v in counted))
        await put_record(stub, stub.create_composite_key(ORG_OBJECT, [name]), record)
        event = {"name": name, "msp_id": target.get("msp_id"), "voter": voter_name, "votes": len(counted),
                 "needed": needed, "of": len(active)}
        if "removed_at" in record:
            stub.set_event(EVENT_ORG_REMOVED, canonical_json(dict(event, removed_at=record["removed_at"])))
        else:
            stub.set_event(EVENT_ORG_REMOVAL_VOTED, canonical_json(event))
        return canonical_json(record).decode("utf-8")

    async def ReadOrg(self, ctx: TransactionContext, name: str) -> str:  # noqa: N802
        """The org record as JSON."""
        name = require_name("org name", name)
        record = await get_record(ctx.get_stub(), ctx.get_stub().create_composite_key(ORG_OBJECT, [name]))
        if record is None:
            raise NotFound(f"org {name!r} is not registered")
        return canonical_json(record).decode("utf-8")

    async def ListOrgs(self, ctx: TransactionContext) -> str:  # noqa: N802
        """All org records as a JSON array, ordered by name."""
        records = await list_records(ctx.get_stub(), ORG_OBJECT)
        return canonical_json(sorted(records, key=lambda r: str(r.get("name", "")))).decode("utf-8")

    async def WhoAmI(self, ctx: TransactionContext) -> str:  # noqa: N802
        """The caller as the chaincode sees it: MSP ID, ID, role and org kind from the certificate."""
        return canonical_json(_caller(ctx).to_dict()).decode("utf-8")
