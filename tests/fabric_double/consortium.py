"""Registering a home's member orgs in the consortium registry, through the double's gateway.

TEST DOUBLE support: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric
binaries can be built here. The data-governance contracts need every org registered (``RegisterOrg``,
by that org's admin) before its stewards can act. With real Fabric this is a step after deployment;
against the double's fresh in-memory ledger, tests (and ``python -m tests.fabric_double
--register-orgs``) do it here with each org's real admin certificate and the project's own client.
"""

from __future__ import annotations

from pathlib import Path

from network.layout import Layout
from network.spec import load_spec
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.membership import register_member_orgs


async def register_orgs(home: Path) -> list[str]:
    """The product's own registration step (what `twinledger up` runs after deploying), against the double."""
    layout = Layout(home)
    spec = load_spec(layout.spec_file)
    await register_member_orgs(spec, layout, CHAINCODE_NAME, progress=lambda _m: None)
    return [org.name for org in spec.member_orgs]
