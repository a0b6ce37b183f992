"""`twinledger orderer add [NAME]` / `twinledger orderer remove NAME`: the channel's Raft consenter set grows and
shrinks by one node at a time while ordering goes on.

Adding follows Fabric's documented order for a channel without a system channel (raft_configuration, v3.1):
the orderer org's CA enrols the node (its MSP and its TLS key pair), its orderer.yaml is written and its process
started under the supervisor, it joins the channel with ``osnadmin channel join`` and the channel's *latest*
config block -- it is not in that block's consenter set, so it joins as a follower and replicates the chain
from the consenters -- and only once it is level with them does a config update add it to the etcdraft
consenter set (/Channel/Orderer ConsensusType metadata: host, port, client and server TLS certificate, as
network.configtx writes the founders') and its address to the orderer org's Endpoints. Joining first keeps the
quorum safe: a consenter that is added before it can take part raises the quorum (3 of 4) without adding a
working vote, so one more failure would stop ordering. Removing is the reverse: the config update first (the
consenter leaves the cluster while it still runs, the leader hands over if it was the leader), then its process
stops; its ledger stays on disk.

Whose signatures: the consenter set is /Channel/Orderer's ConsensusType value, the endpoints the orderer org's
own group, both under ``Admins`` (/Channel/Orderer/Admins is MAJORITY Admins of the orderer orgs: this network
has one), so the orderer org's admin signs alone (network.channel_config).

Refusals, before anything changes: a consenter that is down, not active on the channel, or a cluster without a
leader (adding or removing then risks the quorum). Removing a node so that fewer than three consenters remain
asks for ``--force``: two consenters still order, but Raft then needs both, so one failure stops ordering;
removing the last consenter is refused outright.

Resumable: the spec is written first (the node in ``added``) and the ``joined`` mark last; every step checks the
state first (enrolled, started, joined, level, in the consenter set). `orderer remove` updates the channel
first, then records the node in the spec's ``removed_nodes`` (never started again, its ports stay reserved),
then stops it; re-running it finishes what is left or says it is done.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from network import channel_config as cc
from network.ca import enrol_org
from network.files import write_atomic
from network.layout import Layout
from network.processes.control import read_state, start_supervisor, supervisor_pid, wait_healthy
from network.processes.health import probe, scrape
from network.processes.procspec import load_manifest, save_manifest, upsert_processes
from network.spec import Spec, SpecError, dump_spec, load_spec, parse_spec
from network.spec_model import Node
from orchestrator.cli_common import UserError
from orchestrator.fabric_stage import join_orderers, node_processes, orderer_channel, orderer_client_args, peer_admin_env
from orchestrator.peer_add import height
from peers.binaries import fabric_bin_dir, fabric_ca_binary
from peers.orderer_config import orderer_address, write_orderer_yaml

Progress = Callable[[str], None]
JOINED_MARK = "joined"
#: Fewer consenters than this tolerate no failure (2 of 2 needed): `orderer remove` asks for --force.
SAFE_CONSENTERS = 3


@dataclass
class OrdererResult:
    name: str
    delta: list[str] = field(default_factory=list)
    signers: list[str] = field(default_factory=list)
    consenters: int = 0  # the channel's consenters afterwards
    done: str = "added"  # added | resumed | removed | already a consenter | already removed | dry run
    height: int | None = None


def result_json(r: OrdererResult) -> str:
    return json.dumps({"name": r.name, "done": r.done, "delta": r.delta, "signers": r.signers,
                       "consenters": r.consenters, "height": r.height})


# -- who acts, and what the nodes say ------------------------------------------------------------------
def orderer_admin(spec: Spec, layout: Layout, via: Node) -> cc.Admin:
    """The orderer org's admin as the peer CLI acts (fetch, sign, submit), talking to orderer ``via``. The
    peer CLI reads a core.yaml, which any member peer's config folder has; MSP and TLS client pair are the
    orderer admin's own."""
    org = spec.orderer_org
    peer = next(n for o in spec.member_orgs for n in spec.nodes_of(o.name, "peer"))
    tls = layout.user_tls(org.name, "admin")
    env = {**peer_admin_env(spec, layout, peer),
           "CORE_PEER_LOCALMSPID": org.msp_id,
           "CORE_PEER_MSPCONFIGPATH": str(layout.user_msp(org.name, "admin")),
           "CORE_PEER_TLS_CLIENTCERT_FILE": str(tls / "client.crt"),
           "CORE_PEER_TLS_CLIENTKEY_FILE": str(tls / "client.key")}
    return cc.Admin(org.name, org.msp_id, env, orderer_client_args(spec, layout, org.name, via))


def consenter_of(layout: Layout, node: Node) -> cc.Consenter:
    """``node``'s consenter entry: it dials and serves Raft with its TLS server certificate (peers.orderer_config)."""
    cert_file = layout.node_tls(node.name) / "server.crt"
    cert = cert_file.read_text() if cert_file.exists() else ""  # not enrolled yet (a dry run)
    host, port = orderer_address(node).rsplit(":", 1)
    return cc.Consenter(host, int(port), cert, cert)


def problems(spec: Spec, layout: Layout, nodes: list[Node], leaving: Node | None = None) -> list[str]:
    """Why the consenters ``nodes`` cannot safely change membership now ([] when they can): each must answer
    /healthz, be an active consenter of the channel (osnadmin), and one of them -- or ``leaving``, the consenter
    about to be removed, whose own health does not matter -- must lead (Raft metrics)."""
    out, leaders = [], []
    label = f'channel="{spec.channel}"'
    if leaving is not None and (scrape(leaving.ports.operations, "consensus_etcdraft_is_leader", host=leaving.host) or {}).get(label) == 1:
        leaders.append(leaving.name)
    for node in nodes:
        if not probe(f"{node.operations_url}/healthz"):
            out.append(f"{node.name} is unhealthy (its /healthz does not answer)")
            continue
        try:
            info = orderer_channel(spec, layout, node) or {}
        except Exception as exc:  # noqa: BLE001 - any failure to answer is the reason given
            info = {"status": f"unreachable ({exc})"}
        if info.get("consensusRelation") != "consenter" or info.get("status") != "active":
            out.append(f"{node.name} is not an active consenter of {spec.channel} "
                       f"({info.get('consensusRelation', 'not joined')}, {info.get('status', 'no status')})")
            continue
        if (scrape(node.ports.operations, "consensus_etcdraft_is_leader", host=node.host) or {}).get(label) == 1:
            leaders.append(node.name)
    if not out and len(leaders) != 1:
        out.append("the Raft cluster has no leader" if not leaders else f"several Raft leaders ({', '.join(leaders)})")
    return out


def consenter_nodes(spec: Spec, config: dict) -> list[Node]:
    """The spec's orderers that are in the channel's consenter set (matched by address)."""
    addresses = {c.address for c in cc.consenters(config)}
    return [n for n in spec.nodes_of(spec.orderer_org.name, "orderer") if orderer_address(n) in addresses]


def _via(spec: Spec, nodes: list[Node]) -> Node:
    """An orderer to talk to: the first that answers /healthz."""
    for n in nodes:
        if probe(f"{n.operations_url}/healthz"):
            return n
    raise UserError(f"no orderer of {spec.orderer_org.name} answers ({', '.join(n.name for n in nodes)}); "
                    "`twinledger status` shows them")


def _update(spec: Spec, layout: Layout, via: Node, work: Path, change: Callable[[dict], dict], done: Callable[[dict], bool],
            progress: Progress) -> list[str]:
    """Fetch the config, apply ``change``, have the orderer org's admin sign and submit it; a stale config is
    fetched again and retried once. Returns the MSP IDs that signed ([] when ``done`` already holds)."""
    bin_dir, admin = fabric_bin_dir(), orderer_admin(spec, layout, via)
    for attempt in (1, 2):
        before = cc.fetch_config(bin_dir, spec.channel, admin, work)
        if done(before):
            return []
        envelope = cc.compute_update(bin_dir, spec.channel, before, change(before), work)
        if envelope is None:
            return []
        try:
            return cc.sign_and_submit(bin_dir, spec.channel, envelope, [admin])
        except cc.StaleConfig as exc:
            if attempt == 2:
                raise UserError(f"{exc}; run the command again") from None
            progress("  the channel config changed since it was fetched; fetching it again")
    return []


def _wait(what: str, check: Callable[[], str | None], timeout: float, progress: Progress, hint: str) -> None:
    """Poll ``check`` (None: done; else what it is waiting for) until done or ``timeout``."""
    deadline, said = time.monotonic() + timeout, 0.0
    while (state := check()) is not None:
        if time.monotonic() > deadline:
            raise UserError(f"{what}: still {state} after {timeout:.0f} s; {hint}")
        if time.monotonic() - said > 5:
            progress(f"  {what}: {state}")
            said = time.monotonic()
        time.sleep(0.3)


def _running(home: Path) -> Layout:
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"no network in {home}; `twinledger up --home {home}` first")
    if supervisor_pid(home) is None:
        raise UserError(f"the network in {home} is not running; `twinledger up --home {home}` first")
    return layout


def _grown(config: dict, msp_id: str, mine: cc.Consenter) -> dict:
    """``config`` with ``mine`` as a consenter and an endpoint (what `orderer add` ends with)."""
    if mine.address not in {c.address for c in cc.consenters(config)}:
        config = cc.with_consenter(config, mine)
    return cc.with_endpoint(config, msp_id, mine.address)


def _shrunk(config: dict, msp_id: str, address: str) -> dict:
    """``config`` without the consenter and the endpoint at ``address`` (what `orderer remove` ends with)."""
    config = cc.without_endpoint(config, msp_id, address)
    if address in {c.address for c in cc.consenters(config)}:
        config = cc.without_consenter(config, address)
    return config


# -- orderer add ---------------------------------------------------------------------------------------
def plan_add(spec: Spec, layout: Layout, name: str | None) -> tuple[Spec, str, bool]:
    """(the spec naming the node, its name, whether an earlier `orderer add` already wrote it)."""
    org = spec.orderer_org
    if name is not None and "." not in name:
        name = f"{name}.{org.name}"
    if name is not None and name in spec.removed_nodes:
        raise UserError(f"{name} was removed from the consenter set (`twinledger orderer remove`); a removed orderer's "
                        f"name is not reused: `twinledger orderer add` adds {spec.next_orderer()}")
    existing = {n.name for n in spec.nodes_of(org.name, "orderer")}
    pending = [n for n in spec.added if n in existing and not (layout.node_dir(n) / JOINED_MARK).exists()]
    if name is None:
        if pending:
            return spec, pending[0], True
        name = spec.next_orderer()
    elif name in existing:
        return spec, name, True
    elif pending:
        raise UserError(f"{pending[0]} is still being added; `twinledger orderer add {pending[0]}` finishes it first")
    if name != spec.next_orderer():
        raise UserError(f"the next orderer of {org.name} is {spec.next_orderer()}, not {name}")
    try:
        return parse_spec({**spec.to_dict(), "added": [*spec.added, name]}), name, False
    except SpecError as exc:
        raise UserError(f"cannot add {name}: {exc}") from None


def add_orderer(home: Path, name: str | None = None, *, dry_run: bool = False, progress: Progress = print,
                timeout: float = 180.0) -> OrdererResult:
    layout = _running(home)
    spec = load_spec(layout.spec_file)
    grown, name, in_spec = plan_add(spec, layout, name)
    node = grown.node(name)
    org = grown.orderer_org
    work = layout.channel_dir / "updates" / f"add-{name}"
    bin_dir = fabric_bin_dir()
    others = [n for n in spec.nodes_of(org.name, "orderer") if n.name != name]
    before = cc.fetch_config(bin_dir, spec.channel, orderer_admin(spec, layout, _via(spec, others)), work)
    members = consenter_nodes(spec, before)
    if _grown(before, org.msp_id, consenter_of(layout, node)) == before and (layout.node_dir(name) / JOINED_MARK).exists():
        progress(f"{name} is already a consenter of {spec.channel} ({len(members)} consenters): nothing to do")
        return OrdererResult(name, consenters=len(members), done="already a consenter")
    if bad := problems(spec, layout, [n for n in members if n.name != name]):
        raise UserError(f"cannot add {name} now: {'; '.join(bad)}; nothing was changed")
    mine = consenter_of(layout, node)
    in_config = mine.address in {c.address for c in cc.consenters(before)}
    delta = cc.describe_consenter_delta(before, _grown(before, org.msp_id, mine), org.msp_id)
    result = OrdererResult(name, delta, consenters=len(members) + (0 if in_config else 1))
    if dry_run:
        progress(f"would {'resume adding' if in_spec else 'add'} {name}: gRPC and Raft {node.address}, "
                 f"operations {node.ports.operations}, channel participation {node.ports.admin}; identities from ca.{org.name}, "
                 f"joined to {spec.channel} from its latest config block as a follower, then made a consenter")
        progress(f"config delta for channel {spec.channel} (signed by the {org.name} admin, /Channel/Orderer/Admins):")
        for line in delta:
            progress(f"  {line}")
        result.done = "dry run"
        return result

    t0 = time.monotonic()
    if in_spec:
        progress(f"resuming {name}: an earlier `orderer add` did not finish")
        result.done = "resumed"
    else:
        write_atomic(layout.spec_file, dump_spec(grown))  # first: a crash from here on is resumed
        progress(f"adding {name} (ports {node.ports.listen}-{node.ports.listen + 9})")
    spec = grown

    done = enrol_org(spec, layout, org, fabric_ca_binary("fabric-ca-client"))
    progress(f"  identities {name}: " + (", ".join(done) if done else "already enrolled"))
    write_orderer_yaml(spec, layout, node)
    upsert_processes(layout.run, [p for p in node_processes(spec, layout) if p.name == name])
    start_supervisor(home)  # SIGHUP: the running supervisor starts the new process
    wait_healthy(home, [name], timeout, lambda n: progress(f"  ready  {n}"))
    mine = consenter_of(layout, node)  # now with the TLS certificate just enrolled

    # Join as a follower with the latest config block (cc.fetch_config left it in work/).
    cc.fetch_config(bin_dir, spec.channel, orderer_admin(spec, layout, _via(spec, others)), work)
    join_orderers(spec, layout, work / "config_block.pb", progress, [node])
    target = max(((orderer_channel(spec, layout, n) or {}).get("height", 0) for n in members), default=0)

    def level() -> str | None:
        info = orderer_channel(spec, layout, node) or {}
        h = info.get("height", 0)
        return None if h >= target and info.get("status") == "active" else f"{info.get('status', 'joining')} at block {h} of {target}"

    _wait(f"{name} catching up", level, timeout, progress, f"`twinledger logs {name}` shows why; `twinledger orderer add {name}` resumes")
    progress(f"  {name} is level with the consenters (block {target}) as a follower")

    # Two updates: the consenter first, its endpoint once it serves the channel as a consenter -- peers send
    # to every endpoint, and a node switching from follower to consenter refuses ("channel does not exist").
    signed = _update(spec, layout, _via(spec, others), work, lambda c: cc.with_consenter(c, mine),
                     lambda c: mine.address in {x.address for x in cc.consenters(c)}, progress)
    progress(f"  consenter set update signed by {', '.join(signed)} (/Channel/Orderer/Admins: MAJORITY of the orderer "
             f"orgs' admins) and submitted" if signed else f"  {name} is already in the consenter set of {spec.channel}")

    def consenting() -> str | None:
        info = orderer_channel(spec, layout, node) or {}
        if info.get("consensusRelation") != "consenter" or info.get("status") != "active":
            return f"{info.get('consensusRelation')}, {info.get('status')}"
        return "; ".join(problems(spec, layout, [*members, node])) or None

    _wait(f"{name} becoming a consenter", consenting, timeout, progress, f"`twinledger logs {name}` shows why")
    endpoint = _update(spec, layout, _via(spec, others), work, lambda c: cc.with_endpoint(c, org.msp_id, mine.address),
                       lambda c: mine.address in cc.orderer_endpoints(c, org.msp_id), progress)
    if endpoint:
        progress(f"  endpoint update signed by {', '.join(endpoint)} and submitted: peers and clients now send to {name}")
    result.signers = signed or endpoint
    result.height = (orderer_channel(spec, layout, node) or {}).get("height")
    write_atomic(layout.node_dir(name) / JOINED_MARK, f"{time.time():.0f}\n")
    progress(f"{name} is a consenter of {spec.channel} in {time.monotonic() - t0:.1f} s: {result.consenters} consenters, "
             f"quorum {cc.majority(result.consenters)}, tolerating {cc.fault_tolerance(result.consenters)} failed; "
             f"at block {result.height}")
    return result


# -- orderer remove ------------------------------------------------------------------------------------
def _stop(layout: Layout, name: str, timeout: float) -> bool:
    """Take ``name`` out of the supervisor's manifest and wait until it has stopped; False if it was not there."""
    procs = load_manifest(layout.run)
    if not any(p.name == name for p in procs):
        return False
    save_manifest(layout.run, [p for p in procs if p.name != name])
    start_supervisor(layout.root)  # SIGHUP: the supervisor re-reads the manifest and stops what left it
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name not in {p["name"] for p in read_state(layout.root).get("processes", [])}:
            return True
        time.sleep(0.2)
    raise UserError(f"the supervisor did not stop {name} within {timeout:.0f} s; see {layout.root / 'logs'}")


def remove_orderer(home: Path, name: str, *, force: bool = False, dry_run: bool = False, progress: Progress = print,
                   timeout: float = 120.0) -> OrdererResult:
    layout = _running(home)
    spec = load_spec(layout.spec_file)
    org = spec.orderer_org
    if "." not in name:
        name = f"{name}.{org.name}"
    if name in spec.removed_nodes:
        stopped = not dry_run and _stop(layout, name, timeout)
        progress(f"{name} was already removed from {spec.channel}" + ("; its process is now stopped" if stopped else ": nothing to do"))
        return OrdererResult(name, done="already removed")
    node = spec.node(name)
    if node.type != "orderer":
        raise UserError(f"{name} is a {node.type}, not an orderer; `twinledger orderer remove` takes an orderer")
    work = layout.channel_dir / "updates" / f"remove-{name}"
    staying = [n for n in spec.nodes_of(org.name, "orderer") if n.name != name]
    before = cc.fetch_config(fabric_bin_dir(), spec.channel, orderer_admin(spec, layout, _via(spec, staying)), work)
    address = orderer_address(node)
    in_config = address in {c.address for c in cc.consenters(before)}
    remaining = [n for n in consenter_nodes(spec, before) if n.name != name]
    result = OrdererResult(name, consenters=len(remaining), done="removed")
    if in_config:
        if not remaining:
            raise UserError(f"{name} is the only consenter of {spec.channel}; removing it would stop ordering for good; "
                            "nothing was changed")
        if bad := problems(spec, layout, remaining, leaving=node):
            raise UserError(f"cannot remove {name} now: {'; '.join(bad)}; nothing was changed")
        if len(remaining) < SAFE_CONSENTERS and not force:
            raise UserError(f"removing {name} would leave {len(remaining)} consenter{'s' if len(remaining) != 1 else ''}: Raft "
                            f"then needs {'both' if len(remaining) == 2 else 'it'} to order and tolerates no failure; "
                            f"add an orderer first, or pass --force; nothing was changed")
    if _shrunk(before, org.msp_id, address) != before:
        result.delta = cc.describe_consenter_delta(before, _shrunk(before, org.msp_id, address), org.msp_id)
    if dry_run:
        progress(f"would remove {name} from the consenter set of {spec.channel}, then stop its process (its ledger stays on disk)")
        progress(f"config delta for channel {spec.channel} (signed by the {org.name} admin, /Channel/Orderer/Admins):"
                 if result.delta else f"channel {spec.channel} no longer holds {name}")
        for line in result.delta:
            progress(f"  {line}")
        result.done = "dry run"
        return result

    t0 = time.monotonic()
    if in_config:
        progress(f"removing {name} from the consenter set of {spec.channel}")
        for line in result.delta:
            progress(f"  {line}")
    # Its endpoint first, so that peers stop sending to it before it leaves the cluster; then the consenter.
    via = _via(spec, remaining or staying)
    endpoint = _update(spec, layout, via, work, lambda c: cc.without_endpoint(c, org.msp_id, address),
                       lambda c: address not in cc.orderer_endpoints(c, org.msp_id), progress)
    if endpoint:
        progress(f"  endpoint update signed by {', '.join(endpoint)} (/Channel/Orderer/{org.msp_id}/Admins) and submitted")
        config_height = (orderer_channel(spec, layout, via) or {}).get("height", 0)
        peers = [n for n in spec.nodes() if n.type == "peer" and n.org in {o.name for o in spec.member_orgs}]

        def peers_have_it() -> str | None:
            behind = [n.name for n in peers if (height(n) or 0) < config_height]
            return f"{', '.join(behind)} below block {config_height}" if behind else None

        _wait("peers taking the new endpoints", peers_have_it, timeout, progress, "`twinledger status` shows the peers")
    result.signers = _update(spec, layout, via, work, lambda c: cc.without_consenter(c, address),
                             lambda c: address not in {x.address for x in cc.consenters(c)}, progress) or endpoint
    if result.signers != endpoint:
        progress(f"  consenter set update signed by {', '.join(result.signers)} (/Channel/Orderer/Admins) and submitted")
    shrunk = parse_spec({**spec.to_dict(), "removed_nodes": [*spec.removed_nodes, name]})

    def led() -> str | None:
        config = cc.fetch_config(fabric_bin_dir(), spec.channel, orderer_admin(spec, layout, _via(spec, remaining)), work)
        if address in {c.address for c in cc.consenters(config)}:
            return "waiting for the config block"
        return "; ".join(problems(shrunk, layout, remaining)) or None

    _wait(f"{spec.channel} ordering without {name}", led, timeout, progress, "`twinledger status` shows the orderers")
    write_atomic(layout.spec_file, dump_spec(shrunk))  # never started again; its ports stay reserved
    stopped = _stop(layout, name, timeout)
    progress(f"{name} removed from {spec.channel} in {time.monotonic() - t0:.1f} s" + (", its process stopped" if stopped else "")
             + f": {len(remaining)} consenters, quorum {cc.majority(len(remaining))}, tolerating "
             f"{cc.fault_tolerance(len(remaining))} failed")
    return result
