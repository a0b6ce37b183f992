"""Key-level (state-based) endorsement policies.

A key's validation parameter overrides the chaincode's endorsement policy for changes to that key.
TwinLedger puts one on each data set record and each of its grants: "a peer of the owner org", so a
grant can only be changed by a transaction the owner's own peer executed and signed — whatever other
orgs' peers run. The bytes are those of fabric-chaincode-go's statebased package
(``NewStateEP(nil)``, ``AddOrgs(RoleTypePeer, msp...)``, ``Policy()``): a marshalled
common.SignaturePolicyEnvelope requiring one signature from each listed org's PEER role (MSP IDs
sorted), which is what the peer's key-level validator unmarshals. Peer roles need NodeOUs, which
TwinLedger's MSPs enable.
"""

from __future__ import annotations

from collections.abc import Iterable

from fabric_protos.common import policies_pb2
from fabric_protos.msp import msp_principal_pb2

PEER = msp_principal_pb2.MSPRole.PEER
MEMBER = msp_principal_pb2.MSPRole.MEMBER


def peers_of(msp_ids: Iterable[str]) -> bytes:
    """A policy that needs an endorsement from a peer of every one of msp_ids."""
    ids = sorted(set(msp_ids))
    return n_of_peers(len(ids) or 1, ids)  # an empty list is refused by n_of_peers with its own message


def policy_orgs(policy: bytes) -> dict[str, str]:
    """The MSP IDs a statebased policy lists, with their role name (e.g. {"Plant1MSP": "PEER"})."""
    envelope = policies_pb2.SignaturePolicyEnvelope.FromString(policy)
    orgs: dict[str, str] = {}
    for identity in envelope.identities:
        if identity.principal_classification == msp_principal_pb2.MSPPrincipal.ROLE:
            role = msp_principal_pb2.MSPRole.FromString(identity.principal)
            orgs[role.msp_identifier] = msp_principal_pb2.MSPRole.MSPRoleType.Name(role.role)
    return orgs


def majority(count: int) -> int:
    """How many of count orgs make a strict majority (2 of 2, 2 of 3, 3 of 4, 3 of 5)."""
    if count < 1:
        raise ValueError("a majority needs at least one org")
    return count // 2 + 1


def n_of_peers(n: int, msp_ids: Iterable[str]) -> bytes:
    """A policy that needs endorsements from peers of any n of msp_ids (MSP IDs sorted, deduplicated).

    The same bytes as fabric-chaincode-go's ``cauthdsl.NOutOf(n, [SignedBy(i)...])`` over one PEER
    principal per org in a SignaturePolicyEnvelope (version 0); ``peers_of`` is the n == len case.
    """
    ids = sorted(set(msp_ids))
    if not ids or any(not msp_id for msp_id in ids):
        raise ValueError("a key-level endorsement policy needs at least one non-empty MSP ID")
    if not 1 <= n <= len(ids):
        raise ValueError(f"an n-out-of policy over {len(ids)} orgs needs 1 <= n <= {len(ids)}, got {n}")
    identities = [
        msp_principal_pb2.MSPPrincipal(
            principal_classification=msp_principal_pb2.MSPPrincipal.ROLE,
            principal=msp_principal_pb2.MSPRole(msp_identifier=msp_id, role=PEER).SerializeToString(),
        )
        for msp_id in ids
    ]
    rule = policies_pb2.SignaturePolicy(
        n_out_of=policies_pb2.SignaturePolicy.NOutOf(
            n=n, rules=[policies_pb2.SignaturePolicy(signed_by=index) for index in range(len(ids))]
        )
    )
    return policies_pb2.SignaturePolicyEnvelope(version=0, rule=rule, identities=identities).SerializeToString()


def majority_of_peers(msp_ids: Iterable[str]) -> bytes:
    """A policy that needs endorsements from peers of a strict majority of msp_ids."""
    ids = sorted(set(msp_ids))
    return n_of_peers(majority(len(ids)) if ids else 1, ids)


def policy_threshold(policy: bytes) -> int:
    """The n of a statebased policy's top-level n-out-of rule."""
    return int(policies_pb2.SignaturePolicyEnvelope.FromString(policy).rule.n_out_of.n)
