"""`twinledger org remove NAME`: a hospital or plant leaves the running consortium.

The reverse of `org add` (orchestrator/org_add.py), with the same tools (network/channel_config.py): the
channel's latest config block is fetched and decoded, the org's group deleted from /Channel/Application, the
update computed and signed by a majority of the current member orgs' admins, each with its own admin identity,
and submitted. /Channel/Application/Admins is MAJORITY Admins evaluated on the config *before* the update, so
removing one of n orgs needs n // 2 + 1 signatures -- 3 of 4 -- and by default they are the staying orgs' own
(the leaving org's admin is not asked; `--signers` may name it). Afterwards MAJORITY is counted over n - 1
(2 of 3), which the delta prints. Removing one of two orgs is refused: MAJORITY of 2 is 2, so it would need the
leaving org's own consent on the channel and a vote the registry could no longer get from it.

Once the channel no longer holds its MSP, nothing signed by its identities passes the channel's policies
(Readers, Writers, Endorsement are ImplicitMeta over the application orgs' own), so its users can no longer
submit, evaluate or endorse, and its peer can no longer pull blocks. Then, in this order:

* the registry records it removed (registry contract ``RemoveOrg``: one vote per member org, by that org's
  admin, the org taken from the certificate; removed once a majority of the registered orgs voted). The data
  contract then denies its data sets to everyone, "owner org X was removed from the consortium at <time>", and
  refuses its members. The chaincode cannot read the channel config, so the vote comes after the config update
  committed: what the ledger records as removed is removed from the channel. Between the two its data sets could
  still be checked by others for a few seconds, but no one of the org itself can act any more.
* its peers, chaincode servers and CA stop and leave the supervisor's manifest. The CA stops too: it only
  issues identities for a channel member, and any certificate it issued now is worthless on the channel, so
  keeping it running is only an open port and a signing key online. Its files (MSPs, CA database, the peer's
  ledger copy) stay on disk for inspection; `up` never starts them again.

Its history stays on the ledger: every block, and every record it wrote (data sets, grants, checks) in
`twinledger data audit`, which other members can still read.

Resumable: the spec marks the org ``leaving`` first, ``removed`` right after the channel update committed (from
then on `up` treats it as gone), and a ``removed`` mark in its org folder last. Each step skips what is done:
the channel update when the config no longer holds the group, votes already on the ledger, processes already
stopped. A stale config block is fetched again and the update retried once, as in `org add`.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from network import channel_config as cc
from network.files import write_atomic
from network.layout import Layout
from network.processes.control import read_state, start_supervisor, supervisor_pid
from network.processes.procspec import load_manifest, save_manifest
from network.spec import Spec, SpecError, dump_spec, load_spec, parse_spec
from network.spec_model import Org
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.cli_common import UserError
from orchestrator.connect import connect
from orchestrator.org_add import Progress, admin_of, choose_signers, joined_mark, signatures_line
from peers.binaries import fabric_bin_dir

REMOVED_MARK = "removed"


@dataclass
class OrgRemoveResult:
    org: str
    msp_id: str
    delta: list[str]
    signers: list[str] = field(default_factory=list)  # orgs whose admins signed the channel update
    voters: list[str] = field(default_factory=list)  # orgs whose admins voted RemoveOrg in this run
    stopped: list[str] = field(default_factory=list)  # processes stopped in this run
    removed_at: str | None = None  # the registry's time of removal
    done: str = "removed"  # removed | resumed | already removed | dry run


def removed_mark(layout: Layout, org: str) -> Path:
    return layout.org_dir(org) / REMOVED_MARK


def _with_mark(spec: Spec, name: str, mark: str) -> Spec:
    """The spec with org ``name`` marked ``leaving`` or ``removed`` (wherever it is listed)."""
    data = spec.to_dict()
    for key in ("orgs", "added_orgs"):
        data[key] = [{**{k: v for k, v in o.items() if k not in ("leaving", "removed")}, mark: True}
                     if o["name"] == name else o for o in data.get(key, [])]
    if not data["added_orgs"]:
        del data["added_orgs"]
    return parse_spec(data)


def _registry_record(spec: Spec, layout: Layout, reader: str, name: str) -> dict | None:
    """The registry's record of ``name`` (None: never registered), read as ``reader``'s admin."""
    async def read() -> dict | None:
        async with connect(spec, layout, reader, "admin") as gateway:
            listed = await gateway.network(spec.channel).contract(CHAINCODE_NAME).evaluate("ListOrgs")
        return next((r for r in json.loads(listed) if r.get("name") == name), None)
    return asyncio.run(read())


def _active_registered(spec: Spec, layout: Layout, reader: str) -> list[str]:
    async def read() -> list[str]:
        async with connect(spec, layout, reader, "admin") as gateway:
            listed = await gateway.network(spec.channel).contract(CHAINCODE_NAME).evaluate("ListOrgs")
        return [r["name"] for r in json.loads(listed) if not r.get("removed_at")]
    return asyncio.run(read())


def remove_org(home: Path, name: str, *, signers: list[str] | None = None, dry_run: bool = False,
               progress: Progress = print, timeout: float = 120.0) -> OrgRemoveResult:
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"no network in {home}; `twinledger up --home {home}` first")
    spec = load_spec(layout.spec_file)
    try:
        org = spec.org(name)
    except SpecError as exc:
        raise UserError(f"cannot remove org {name!r}: {exc}") from None
    if org.kind == "orderer":
        raise UserError(f"{name} is the orderer org; `twinledger orderer remove` removes orderers one at a time")
    if org.removed and removed_mark(layout, name).exists():
        progress(f"org {name} ({org.msp_id}) was already removed from channel {spec.channel}: nothing to do")
        return OrgRemoveResult(name, org.msp_id, [], done="already removed")
    if supervisor_pid(home) is None:
        raise UserError(f"the network in {home} is not running; `twinledger up --home {home}` first")
    if org.joining:
        raise UserError(f"org {name} has not finished joining; `twinledger org add {name} --kind {org.kind}` first")

    staying = [o for o in spec.member_orgs if o.name != name]
    if not staying:
        raise UserError(f"{name} is the last hospital or plant of channel {spec.channel}; a channel without one has "
                        "no use -- `twinledger down` stops the network")
    bin_dir = fabric_bin_dir()
    work = layout.channel_dir / "updates" / f"remove-{name}"
    before = cc.fetch_config(bin_dir, spec.channel, admin_of(spec, layout, staying[0].name), work)
    channel_orgs = cc.application_orgs(before)
    in_channel = org.msp_id in channel_orgs
    delta, chosen = [], []
    if in_channel:
        if cc.majority(len(channel_orgs)) > len(channel_orgs) - 1:
            raise UserError(f"channel {spec.channel} has {len(channel_orgs)} member orgs: MAJORITY Admins is "
                            f"{cc.majority(len(channel_orgs))} of them, so removing {name} would need its own admin's "
                            "signature and the registry vote it can no longer give; nothing was changed")
        chosen = choose_signers(spec, layout, channel_orgs, signers, exclude=name)
        delta = cc.describe_delta(before, cc.without_org(before, org.msp_id))
    record = _registry_record(spec, layout, staying[0].name, name)
    result = OrgRemoveResult(name, org.msp_id, delta, [o.name for o in chosen],
                             removed_at=(record or {}).get("removed_at"))
    ours = [p.name for p in load_manifest(layout.run) if p.org == name]

    if dry_run:
        progress(f"would {'resume removing' if org.leaving or org.removed else 'remove'} org {name} "
                 f"({org.kind}, {org.msp_id})")
        progress(f"config delta for channel {spec.channel}:" if delta else f"channel {spec.channel} no longer holds {org.msp_id}")
        for line in delta:
            progress(f"  {line}")
        if chosen:
            progress(f"signatures: {', '.join(f'admin@{o.name}' for o in chosen)} "
                     f"({len(chosen)} of {len(channel_orgs)}, MAJORITY Admins)")
        progress(f"registry: {name} " + (f"removed at {result.removed_at}" if result.removed_at else
                                        "to be voted removed (RemoveOrg) by a majority of the member orgs' admins"
                                        if record else "is not registered"))
        progress(f"would stop: {', '.join(ours) if ours else 'nothing (stopped)'}")
        result.done = "dry run"
        return result

    t0 = time.monotonic()
    if org.leaving or org.removed:
        progress(f"resuming the removal of org {name}: an earlier `org remove` did not finish")
        result.done = "resumed"
    else:
        progress(f"removing org {name} ({org.kind}, {org.msp_id}) from channel {spec.channel}")
        spec = _with_mark(spec, name, "leaving")
        write_atomic(layout.spec_file, dump_spec(spec))  # first: a crash from here on is resumed

    if in_channel:
        result.signers = _update_channel(spec, layout, spec.org(name), chosen, before, signers, work, progress)
    else:
        progress(f"  channel {spec.channel} no longer holds {org.msp_id}")
    if not spec.org(name).removed:
        spec = _with_mark(spec, name, "removed")
        write_atomic(layout.spec_file, dump_spec(spec))  # gone from the channel: `up` no longer runs its nodes

    if record is not None and not result.removed_at:
        result.voters, result.removed_at = _vote(spec, layout, name, record, signers, progress)
    elif record is None:
        progress(f"  {name} was never registered in the registry: nothing to mark")
    else:
        progress(f"  registry: {name} removed at {result.removed_at}")

    result.stopped = _stop_processes(layout, name, timeout)
    progress(f"  stopped: {', '.join(result.stopped)}" if result.stopped else f"  {name}'s processes were already stopped")
    joined_mark(layout, name).unlink(missing_ok=True)  # it is no longer a member: `org add` must not say so
    write_atomic(removed_mark(layout, name), f"{time.time():.0f}\n")
    progress(f"org {name} removed from channel {spec.channel} in {time.monotonic() - t0:.1f} s; its history stays "
             f"on the ledger (`twinledger data audit`)")
    return result


def _update_channel(spec: Spec, layout: Layout, org: Org, chosen: list[Org], before: dict, wanted: list[str] | None,
                    work: Path, progress: Progress) -> list[str]:
    """Delete ``org``'s group from the channel config, majority-signed; returns the orgs that signed. A stale
    config is fetched again, the signers chosen again for it, and the update retried once."""
    bin_dir = fabric_bin_dir()
    for attempt in (1, 2):
        after = cc.without_org(before, org.msp_id)
        if attempt == 1:
            progress(f"  config delta for channel {spec.channel}:")
            for line in cc.describe_delta(before, after):
                progress(f"    {line}")
        envelope = cc.compute_update(bin_dir, spec.channel, before, after, work)
        if envelope is None:
            return []
        try:
            signed = cc.sign_and_submit(bin_dir, spec.channel, envelope, [admin_of(spec, layout, o.name) for o in chosen])
        except cc.StaleConfig as exc:
            if attempt == 2:
                raise UserError(f"{exc}; `twinledger org remove {org.name}` tries again") from None
            progress(f"  the channel config changed since it was fetched ({exc}); fetching it again")
            before = cc.fetch_config(bin_dir, spec.channel, admin_of(spec, layout, chosen[0].name), work)
            if org.msp_id not in cc.application_orgs(before):
                return []
            chosen = choose_signers(spec, layout, cc.application_orgs(before), wanted, exclude=org.name)
            continue
        progress(signatures_line(chosen, signed, before))
        progress(f"  channel {spec.channel} updated: {org.msp_id} is no longer an application org")
        return [o.name for o in chosen]
    return []


def _vote(spec: Spec, layout: Layout, name: str, record: dict, wanted: list[str] | None,
          progress: Progress) -> tuple[list[str], str | None]:
    """RemoveOrg by the staying orgs' admins, one after the other (each vote reads the others'), until the
    registry records ``name`` removed; returns the orgs that voted now and the time of removal."""
    staying = [o.name for o in spec.member_orgs]
    voted = {v.get("org") for v in record.get("removal_votes", [])}
    order = [o for o in (wanted or []) if o in staying] + [o for o in staying if o not in (wanted or [])]
    voters: list[str] = []
    for voter in [o for o in order if o not in voted]:
        async def vote() -> dict:
            async with connect(spec, layout, voter, "admin") as gateway:
                out = await gateway.network(spec.channel).contract(CHAINCODE_NAME).submit("RemoveOrg", name)
            return json.loads(out)
        now = asyncio.run(vote())
        voters.append(voter)
        counted = len(now.get("removal_votes", []))
        progress(f"  registry: {voter}'s admin voted to remove {name} ({counted} vote{'s' * (counted != 1)})")
        if now.get("removed_at"):
            progress(f"  registry: {name} removed at {now['removed_at']} by {', '.join(now.get('removed_by', []))}")
            return voters, now["removed_at"]
    active = _active_registered(spec, layout, staying[0])
    raise UserError(f"the registry still lists {name} as a member after the votes of {', '.join(sorted(voted | set(voters)))}: "
                    f"a majority of its {len(active)} registered orgs is needed; `twinledger org remove {name}` tries again")


def _stop_processes(layout: Layout, name: str, timeout: float) -> list[str]:
    """Take ``name``'s processes (CA, peers, chaincode servers) out of the supervisor's manifest and wait until
    the supervisor has stopped them."""
    procs = load_manifest(layout.run)
    ours = [p.name for p in procs if p.org == name]
    if not ours:
        return []
    save_manifest(layout.run, [p for p in procs if p.org != name])
    start_supervisor(layout.root)  # running: SIGHUP, it re-reads the manifest and stops what left it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not {p["name"] for p in read_state(layout.root).get("processes", [])} & set(ours):
            return ours
        time.sleep(0.2)
    raise UserError(f"the supervisor did not stop {', '.join(ours)} within {timeout:.0f} s; see {layout.root / 'logs'}")


def result_json(r: OrgRemoveResult) -> str:
    return json.dumps({"org": r.org, "msp_id": r.msp_id, "done": r.done, "delta": r.delta, "signers": r.signers,
                       "voters": r.voters, "stopped": r.stopped, "removed_at": r.removed_at})
