"""`twinledger org add NAME --kind hospital|plant`: a new hospital or plant joins the running consortium.

Fabric's way, each step one command of its own tools (network/channel_config.py): the new org's own Fabric CA
starts under the supervisor and enrols its peer and its admin, steward, operator and client (role attributes
as for the founders); the channel's latest config block is fetched and decoded, the org's group (its MSP from
that CA, its policies, peer0 as anchor peer) added, the update computed and signed by a majority of the current
member orgs' admins, each with its own admin identity (/Channel/Application/Admins is MAJORITY Admins), and
submitted to the orderer. Then the usual idempotent stages of `up` do the rest: the org's peer starts and joins
from the channel's genesis block (a peer joins a channel from block 0, or from a snapshot, and replays the
chain), the committed chaincode's package is installed with a chaincode server of its own, the org approves the
committed definition (orchestrator.lifecycle), gossip converges and its admin registers it in the registry
contract. Only then is it marked joined.

Checks before anything changes: the name is free (or the org is already being added, with the same kind), the
network runs, and the chosen signers are a majority of the channel's current application orgs whose admin
certificates are valid now and issued by their own CA.

Resumable: the spec is written first (the org ``joining``: its CA and peer get ports after every running
node's, and no stage treats it as a channel member yet), the ``joined`` mark last. Each step skips what is
done: the channel update when the channel config already holds the org's group (then the spec is flipped to a
member), enrolment, join, install, approval and registration as in `up`. A stale config block (the channel
changed between fetch and submit) is fetched again and the update retried once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from network import channel_config as cc
from network.ca import enrol_org
from network.configtx import org_definition
from network.files import write_atomic
from network.layout import Layout
from network.processes.control import start_supervisor, supervisor_pid, wait_healthy
from network.processes.procspec import upsert_processes
from network.spec import Spec, SpecError, dump_spec, load_spec, parse_spec
from network.spec_model import Node, Org, default_msp_id
from orchestrator.bringup import CHAINCODE_NAME, ca_processes, up
from orchestrator.cli_common import UserError
from orchestrator.fabric_stage import orderer_client_args, peer_admin_env
from orchestrator.lifecycle import committed
from orchestrator.peer_add import JOINED_MARK, wait_level
from peers.binaries import fabric_bin_dir, fabric_ca_binary

Progress = Callable[[str], None]
KINDS = ("hospital", "plant")


@dataclass
class OrgAddResult:
    org: str
    msp_id: str
    nodes: list[Node]
    delta: list[str]
    signers: list[str] = field(default_factory=list)  # the orgs whose admins signed, in signing order
    done: str = "added"  # added | resumed | already a member | dry run


def joined_mark(layout: Layout, org: str) -> Path:
    return layout.org_dir(org) / JOINED_MARK


def admin_of(spec: Spec, layout: Layout, org: str) -> cc.Admin:
    node = spec.nodes_of(org, "peer")[0]
    return cc.Admin(org, spec.org(org).msp_id, peer_admin_env(spec, layout, node), orderer_client_args(spec, layout, org))


def plan_org(spec: Spec, name: str, kind: str) -> tuple[Spec, bool]:
    """The spec with ``name`` added as a joining org (its CA and peer0 in ``added``), and whether it was
    already there (an earlier `org add` of it)."""
    if kind not in KINDS:
        raise UserError(f"--kind must be hospital or plant, not {kind!r}")
    existing = {o.name: o for o in spec.orgs}
    if name in existing:
        org = existing[name]
        if org.removed or org.leaving:
            raise UserError(f"{name!r} was removed from this network (`twinledger org remove`); a removed org's "
                            "name and MSP are not reused: choose another name")
        if org.founding or org.kind != kind:
            raise UserError(f"{name!r} is already a {'founding ' if org.founding else ''}{org.kind} of this network")
        return spec, True
    try:
        grown = parse_spec({**spec.to_dict(),
                            "added_orgs": [*spec.to_dict().get("added_orgs", []),
                                           {"name": name, "kind": kind, "msp_id": default_msp_id(name), "joining": True}],
                            "added": [*spec.added, f"ca.{name}", f"peer0.{name}"]})
    except SpecError as exc:
        raise UserError(f"cannot add org {name!r}: {exc}") from None
    return grown, False


def choose_signers(spec: Spec, layout: Layout, channel_orgs: list[str], wanted: list[str] | None,
                   exclude: str | None = None) -> list[Org]:
    """The member orgs whose admins sign: ``wanted`` (org names) or the first majority of the channel's
    application orgs, ``exclude`` never chosen by default (`org remove`: the org leaving). Refused -- before any
    change -- when one has no valid admin certificate or they are fewer than /Channel/Application/Admins
    (MAJORITY Admins) needs."""
    by_msp = {o.msp_id: o for o in spec.member_orgs}
    members = [by_msp[m] for m in channel_orgs if m in by_msp]
    need = cc.majority(len(channel_orgs))
    if wanted:
        unknown = [w for w in wanted if w not in {o.name for o in members}]
        if unknown:
            raise UserError(f"{', '.join(unknown)} cannot sign: not a member org of channel {spec.channel} "
                            f"(members: {', '.join(o.name for o in members)})")
        chosen = [o for o in members if o.name in wanted]
    else:
        chosen = [o for o in members if o.name != exclude][:need]
    problems = [(o.name, cc.check_admin(layout.user_msp(o.name, "admin"), layout.ca_cert(o.name))) for o in chosen]
    bad = [f"{org}: {why}" for org, why in problems if why]
    if bad:
        raise UserError(f"cannot collect the admins' signatures ({'; '.join(bad)}); nothing was changed")
    if len(chosen) < need:
        raise UserError(f"a channel update needs the signatures of {need} of the {len(channel_orgs)} member orgs' "
                        f"admins (MAJORITY Admins), only {len(chosen)} would sign ({', '.join(o.name for o in chosen)}); "
                        f"nothing was changed")
    return chosen


def endorsement_meaning(spec: Spec, layout: Layout, config: dict) -> str:
    """What the chaincode's endorsement policy requires now, from the committed definition and the config."""
    definition = committed(spec, layout, CHAINCODE_NAME)
    rule, sub = cc.implicit_policies(config)["Endorsement"]
    n = len(cc.application_orgs(config))
    seq = f"sequence {definition.sequence}, " if definition else ""
    return (f"endorsement policy of {CHAINCODE_NAME} ({seq}the channel's /Channel/Application/Endorsement): "
            f"{rule} {sub} = {cc.required(rule, n)} of {n} orgs' peers")


def add_org(home: Path, name: str, kind: str, *, signers: list[str] | None = None, dry_run: bool = False,
            progress: Progress = print, timeout: float = 180.0) -> OrgAddResult:
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"no network in {home}; `twinledger up --home {home}` first")
    spec = load_spec(layout.spec_file)
    if joined_mark(layout, name).exists() and spec.org(name).kind == kind:
        org = spec.org(name)
        progress(f"org {name} ({org.msp_id}) is already a member of channel {spec.channel}: nothing to do")
        return OrgAddResult(name, org.msp_id, spec.nodes_of(name), [], done="already a member")
    if supervisor_pid(home) is None:
        raise UserError(f"the network in {home} is not running; `twinledger up --home {home}` first")
    grown, resuming = plan_org(spec, name, kind)
    org = grown.org(name)
    nodes = grown.nodes_of(name)
    bin_dir = fabric_bin_dir()
    work = layout.channel_dir / "updates" / f"add-{name}"

    # Read-only so far: the channel's current config, and whose signatures the update will carry.
    reader = admin_of(spec, layout, spec.member_orgs[0].name)
    before = cc.fetch_config(bin_dir, spec.channel, reader, work)
    in_channel = org.msp_id in cc.application_orgs(before)
    chosen = [] if in_channel else choose_signers(spec, layout, cc.application_orgs(before), signers)
    definition = org_definition(grown, layout, org)
    after = before if in_channel else cc.with_org(before, org.msp_id, {"values": {}})  # the group's shape for the delta
    delta = cc.describe_delta(before, after, definition) if not in_channel else []
    result = OrgAddResult(name, org.msp_id, nodes, delta, [o.name for o in chosen])

    if dry_run:
        ports = ", ".join(f"{n.name} {n.address}" for n in nodes)
        progress(f"would {'resume adding' if resuming else 'add'} org {name} ({kind}, {org.msp_id}): {ports}")
        progress(f"config delta for channel {spec.channel}:" if delta else f"channel {spec.channel} already holds {org.msp_id}")
        for line in delta:
            progress(f"  {line}")
        if chosen:
            progress(f"signatures: {', '.join(f'admin@{o.name}' for o in chosen)} "
                     f"({len(chosen)} of {len(cc.application_orgs(before))}, MAJORITY Admins)")
        result.done = "dry run"
        return result

    t0 = time.monotonic()
    if resuming:
        progress(f"resuming org {name}: an earlier `org add` did not finish")
        result.done = "resumed"
    else:
        write_atomic(layout.spec_file, dump_spec(grown))  # first: a crash from here on is resumed
        progress(f"adding org {name} ({kind}, {org.msp_id}): " + ", ".join(f"{n.name} port {n.ports.listen}" for n in nodes))
    spec = grown

    # Its CA under the supervisor, like the founders', and its identities.
    cas = ca_processes(spec, layout)
    upsert_processes(layout.run, cas)
    start_supervisor(home)
    wait_healthy(home, [f"ca.{name}"], timeout, lambda n: progress(f"  ready  {n}"))
    done = enrol_org(spec, layout, org, fabric_ca_binary("fabric-ca-client"))
    progress(f"  identities {name}: " + (", ".join(done) if done else "already enrolled"))

    if not in_channel:
        result.signers = _update_channel(spec, layout, org, chosen, before, signers, work, progress)
    else:
        progress(f"  channel {spec.channel} already holds {org.msp_id}")
    spec = parse_spec({**spec.to_dict(), "added_orgs": [{k: v for k, v in o.items() if k != "joining"} if o["name"] == name else o
                                                         for o in spec.to_dict()["added_orgs"]]})
    write_atomic(layout.spec_file, dump_spec(spec))  # a channel member now: `up` joins, approves, registers it

    up(home, progress=progress, timeout=timeout)
    peer = spec.nodes_of(name, "peer")[0]
    at = wait_level(spec, peer, timeout, progress)
    config = cc.fetch_config(bin_dir, spec.channel, admin_of(spec, layout, name), work)
    progress(f"  {endorsement_meaning(spec, layout, config)}")
    write_atomic(layout.node_dir(peer.name) / JOINED_MARK, f"{time.time():.0f}\n")  # as `peer add` marks its peers
    write_atomic(joined_mark(layout, name), f"{time.time():.0f}\n")
    progress(f"org {name} joined channel {spec.channel} in {time.monotonic() - t0:.1f} s: {peer.name} at block {at}, "
             f"seen by discovery from every org, chaincode approved and served, registered in the registry")
    return result


def _update_channel(spec: Spec, layout: Layout, org: Org, chosen: list[Org], before: dict, wanted: list[str] | None,
                    work: Path, progress: Progress) -> list[str]:
    """Add ``org``'s group to the channel config, majority-signed; returns the orgs that signed. A stale config
    (another update committed since ``before`` was fetched) is fetched again, the signers chosen again for
    it, and the update retried once."""
    bin_dir = fabric_bin_dir()
    group = cc.org_group(bin_dir, org_definition(spec, layout, org), work / "org")
    for attempt in (1, 2):
        after = cc.with_org(before, org.msp_id, group)
        if attempt == 1:
            progress(f"  config delta for channel {spec.channel}:")
            for line in cc.describe_delta(before, after, org_definition(spec, layout, org)):
                progress(f"    {line}")
        envelope = cc.compute_update(bin_dir, spec.channel, before, after, work)
        if envelope is None:  # nothing to change: the channel already holds the group
            return []
        try:
            signed = cc.sign_and_submit(bin_dir, spec.channel, envelope, [admin_of(spec, layout, o.name) for o in chosen])
        except cc.StaleConfig as exc:
            if attempt == 2:
                raise UserError(f"{exc}; `twinledger org add {org.name} --kind {org.kind}` tries again") from None
            progress(f"  the channel config changed since it was fetched ({exc}); fetching it again")
            before = cc.fetch_config(bin_dir, spec.channel, admin_of(spec, layout, chosen[0].name), work)
            if org.msp_id in cc.application_orgs(before):
                return []
            chosen = choose_signers(spec, layout, cc.application_orgs(before), wanted)
            continue
        progress(signatures_line(chosen, signed, before))
        progress(f"  channel {spec.channel} updated: {org.msp_id} is an application org")
        return [o.name for o in chosen]
    return []


def signatures_line(chosen: list[Org], signed: list[str], before: dict) -> str:
    n = len(cc.application_orgs(before))
    return (f"  signatures collected: {', '.join(f'{o.name} ({m})' for o, m in zip(chosen, signed))} -- "
            f"{len(signed)} of {n} member orgs' admins (MAJORITY Admins needs {cc.majority(n)})")


def result_json(r: OrgAddResult) -> str:
    return json.dumps({"org": r.org, "msp_id": r.msp_id, "done": r.done, "delta": r.delta, "signers": r.signers,
                       "nodes": [{"name": n.name, "type": n.type, "listen": n.ports.listen} for n in r.nodes]})
