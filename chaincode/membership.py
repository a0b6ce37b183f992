"""Who the caller is in the consortium: identity, role and registered organisation.

The data-governance contracts never take an org from an argument to decide access: the caller's org
is the one the consortium registry lists for the MSP that signed the proposal, and its role is the
``role`` attribute Fabric CA wrote into the enrolment certificate. Other orgs named in arguments
(a grantee, a hospital whose consent is verified) are resolved through the registry's records too,
so a name that no admin registered is refused rather than trusted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chaincode.errors import AccessDenied, NotFound
from chaincode.identity import CallerIdentity, IdentityError, caller_identity
from chaincode.registry import ORG_BY_MSP_OBJECT, ORG_OBJECT, removed_detail
from chaincode.state import get_record

#: The roles Fabric CA issues in TwinLedger (DESIGN: admin, steward, operator or client).
ROLES = frozenset({"admin", "steward", "operator", "client"})
#: The role that governs an org's data: registers data sets, grants and revokes, records consent.
STEWARD_ROLE = "steward"


@dataclass(frozen=True)
class Member:
    """A caller whose MSP owns a registered org."""

    identity: CallerIdentity
    org: str
    kind: str

    @property
    def msp_id(self) -> str:
        return self.identity.msp_id

    @property
    def role(self) -> str | None:
        return self.identity.role


def caller(ctx: Any) -> CallerIdentity:
    try:
        return caller_identity(ctx.get_stub())
    except IdentityError as exc:
        raise AccessDenied(f"access denied: {exc}") from exc


def require_role(identity: CallerIdentity, function: str, role: str) -> None:
    if identity.role != role:
        raise AccessDenied(
            f"access denied: {function} needs role {role!r} in the caller's certificate, found {identity.role!r}"
        )


def require_any_role(identity: CallerIdentity, function: str) -> None:
    # A certificate without a TwinLedger role was not issued for this consortium's users (e.g. a peer's
    # or an orderer's enrolment): it may not act on data even when its MSP is a member.
    if identity.role not in ROLES:
        raise AccessDenied(
            f"access denied: {function} needs a role ({', '.join(sorted(ROLES))}) in the caller's "
            f"certificate, found {identity.role!r}"
        )


async def org_record(stub: Any, name: str) -> dict[str, Any]:
    """The registry's record of org name, a member now; NotFound when no admin registered it, AccessDenied
    when it was removed (no grant, consent or training round may name it any more)."""
    record = await get_record(stub, stub.create_composite_key(ORG_OBJECT, [name]))
    if record is None:
        raise NotFound(f"org {name!r} is not registered in the consortium registry")
    if removed_detail(record):
        raise AccessDenied(f"access denied: {removed_detail(record)}")
    return record


async def member(stub: Any, identity: CallerIdentity) -> Member:
    """The caller's registered org; AccessDenied when its MSP has none or its certificate disagrees."""
    index = await get_record(stub, stub.create_composite_key(ORG_BY_MSP_OBJECT, [identity.msp_id]))
    if index is None:
        raise AccessDenied(
            f"access denied: MSP {identity.msp_id!r} has no org in the consortium registry; "
            "its admin must run RegisterOrg first"
        )
    name = str(index.get("name", ""))
    record = await get_record(stub, stub.create_composite_key(ORG_OBJECT, [name]))
    if record is None or record.get("msp_id") != identity.msp_id:
        raise RuntimeError(f"registry index for MSP {identity.msp_id!r} names org {name!r}, which it does not own")
    if removed_detail(record):
        # Its MSP is gone from the channel too once `org remove` finished; this holds even before.
        raise AccessDenied(f"access denied: {removed_detail(record)}; its members may no longer act")
    kind = str(record.get("kind", ""))
    if identity.org_kind is not None and identity.org_kind != kind:
        # Same rule as RegisterOrg: the attribute is optional, but when the CA sets it, it must agree.
        raise AccessDenied(
            f"access denied: the caller's certificate says org_kind {identity.org_kind!r}, "
            f"but org {name!r} is registered as {kind!r}"
        )
    return Member(identity=identity, org=name, kind=kind)
