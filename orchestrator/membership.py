"""Registering the consortium's member orgs in the chaincode's registry, the last step of `twinledger up`.

The data-governance contracts refuse a steward whose org is not registered, so a fresh ledger is
useless until each hospital and plant has called ``RegisterOrg`` -- by its own admin, because the
chaincode takes the org's MSP ID and kind from the caller's certificate, never from an argument.
Idempotent: orgs already on the ledger (``ListOrgs``) are skipped, so `up` on an existing ledger
submits nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from network.layout import Layout
from network.spec import Spec
from orchestrator.connect import connect

async def register_member_orgs(spec: Spec, layout: Layout, chaincode: str,
                               progress: Callable[[str], None] = print) -> list[str]:
    """RegisterOrg for every hospital and plant not yet registered; returns the names newly registered."""
    members = spec.member_orgs
    if not members:
        return []
    async with connect(spec, layout, members[0].name, "admin") as gateway:
        listed = await gateway.network(spec.channel).contract(chaincode).evaluate("ListOrgs")
    known = {record["name"] for record in json.loads(listed)}
    missing = [org for org in members if org.name not in known]

    async def register(org) -> str:
        # Each org's admin registers its own org (the chaincode reads MSP ID and kind from the
        # certificate); the orgs' keys are disjoint, so the submits go side by side into one block.
        async with connect(spec, layout, org.name, "admin") as gateway:
            await gateway.network(spec.channel).contract(chaincode).submit("RegisterOrg", org.name, org.kind)
        progress(f"  registered org {org.name} ({org.kind})")
        return org.name

    return list(await asyncio.gather(*(register(org) for org in missing)))
