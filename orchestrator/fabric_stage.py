"""The Fabric part of `up`: node configs, the channel, orderer and peer processes, channel joins.

Each step drives the real Fabric v3.1.5 tools the documented way (configtxgen, osnadmin, the peer CLI) and
is idempotent, so `up` after `down` resumes the same ledger.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from network.configtx import configtxgen_command, configtxgen_env, genesis_block_path, write_configtx
from network.layout import Layout
from network.spec_model import Node, Spec
from network.processes.control import start_supervisor, wait_healthy
from network.processes.procspec import ProcSpec, upsert_processes
from peers.binaries import fabric_bin_dir, fabric_binary
from peers.ccaas import install_builder
from peers.core_config import write_core_yaml
from peers.orderer_config import write_orderer_yaml

Progress = Callable[[str], None]
T = TypeVar("T")


class FabricStepError(RuntimeError):
    """A Fabric tool refused a step; the message names the step, the node and the tool's last error."""


def run_tool(step: str, argv: list[str], env: dict[str, str] | None = None, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
    import os

    r = subprocess.run(argv, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})
    if r.returncode not in ok_codes:
        lines = [ln for ln in (r.stderr + r.stdout).strip().splitlines() if ln.strip()]
        raise FabricStepError(f"{step}: {Path(argv[0]).name} exited {r.returncode}: {lines[-1] if lines else '(no output)'}")
    return r


def in_parallel(step: Callable[[T], None], items: Iterable[T]) -> None:
    """Run ``step`` on every item side by side (each is a Fabric CLI call waiting on a node); the first
    failure is raised once all have finished, so no call is left running behind the error."""
    items = list(items)
    if not items:
        return
    with ThreadPoolExecutor(max_workers=len(items)) as pool:
        futures = [pool.submit(step, item) for item in items]
    for future in futures:
        future.result()


def chaincode_address(node: Node) -> str:
    """Where a peer's chaincode-as-a-service server listens (the peer dials it)."""
    return node.chaincode_address


def write_node_configs(spec: Spec, layout: Layout) -> Path:
    builder = install_builder(layout.root / "builders" / "ccaas")
    for node in spec.nodes():
        if node.type == "orderer":
            write_orderer_yaml(spec, layout, node)
        elif node.type == "peer":
            write_core_yaml(spec, layout, node, builder_dir=builder, chaincode_server_address=chaincode_address(node))
    return builder


def node_processes(spec: Spec, layout: Layout) -> list[ProcSpec]:
    procs = []
    for node in spec.nodes():
        if node.type not in ("orderer", "peer"):
            continue
        layout.node_data(node.name).mkdir(parents=True, exist_ok=True)
        argv = [str(fabric_binary("orderer"))] if node.type == "orderer" else [str(fabric_binary("peer")), "node", "start"]
        procs.append(ProcSpec(
            node.name, node.org, node.type, argv,
            env={"FABRIC_CFG_PATH": str(layout.node_config(node.name))},
            health=f"{node.operations_url}/healthz",
            ready=_ready(node),
            netns=node.netns,
        ))
    return procs


def _ready(node: Node) -> str:
    """/healthz answers before the node's gRPC listener (and an orderer's channel participation API)
    accept: a peer's ~3 s earlier, and a channel join in between is refused. So a node counts as healthy
    only once those ports have accepted too (probed until then only: each bare probe is an error line
    in the node's log)."""
    probes = [f"tcp://{node.address}"]
    if node.type == "orderer":
        probes.append(f"tcp://{node.admin_address}")
    return " ".join(probes)


def make_genesis_block(spec: Spec, layout: Layout) -> Path:
    block = genesis_block_path(layout, spec)
    if not block.exists():
        write_configtx(spec, layout)
        run_tool("channel genesis block", configtxgen_command(fabric_bin_dir(), layout, spec), configtxgen_env(layout))
    return block


def _osnadmin_tls(spec: Spec, layout: Layout) -> list[str]:
    org = spec.orderer_org.name
    tls = layout.user_tls(org, "admin")
    return ["--ca-file", str(layout.ca_cert(org)), "--client-cert", str(tls / "client.crt"), "--client-key", str(tls / "client.key")]


def osnadmin_target(spec: Spec, layout: Layout, node: Node) -> list[str]:
    """osnadmin flags reaching ``node``'s channel participation API as the orderer org's admin (mutual TLS)."""
    return ["-o", node.admin_address, *_osnadmin_tls(spec, layout)]


def orderer_channel(spec: Spec, layout: Layout, node: Node) -> dict | None:
    """What ``node`` says of the channel (``osnadmin channel list``: name, status onboarding|active,
    consensusRelation consenter|follower|config-tracker, height); None when it has not joined it."""
    listed = run_tool(f"list channels of {node.name}", [str(fabric_binary("osnadmin")), "channel", "list", "--channelID",
                                                         spec.channel, *osnadmin_target(spec, layout, node)], ok_codes=(0, 1))
    if '"status": 200' not in listed.stdout and "Status: 200" not in listed.stdout:
        return None
    body = listed.stdout[listed.stdout.index("{"):] if "{" in listed.stdout else "{}"
    return json.loads(body)


def join_orderers(spec: Spec, layout: Layout, block: Path, progress: Progress, nodes: list[Node] | None = None) -> None:
    """Join ``nodes`` (default: every orderer) to the channel with ``block`` -- the genesis block at `up`, the
    latest config block for an orderer added later -- skipping those that have joined already."""
    osnadmin = str(fabric_binary("osnadmin"))

    def join(node: Node) -> None:
        if orderer_channel(spec, layout, node) is not None:
            return
        run_tool(f"join {node.name} to {spec.channel}", [osnadmin, "channel", "join", "--channelID", spec.channel,
                                                         "--config-block", str(block), *osnadmin_target(spec, layout, node)])
        progress(f"  joined {node.name} to channel {spec.channel}")

    in_parallel(join, spec.nodes_of(spec.orderer_org.name, "orderer") if nodes is None else nodes)


def peer_admin_env(spec: Spec, layout: Layout, node: Node) -> dict[str, str]:
    """The peer CLI acting as the node's org admin against that node.

    Peers require TLS client certificates: the CLI presents the admin's TLS key pair (from the org's CA),
    to this peer and to any other org's peer it names with --peerAddresses (those trust the channel's
    orgs' TLS roots). Calls to an orderer take ``orderer_client_args`` as well.
    """
    tls = layout.user_tls(node.org, "admin")
    return {
        "FABRIC_CFG_PATH": str(layout.node_config(node.name)),
        "CORE_PEER_LOCALMSPID": spec.org(node.org).msp_id,
        "CORE_PEER_MSPCONFIGPATH": str(layout.user_msp(node.org, "admin")),
        "CORE_PEER_ADDRESS": node.address,
        "CORE_PEER_TLS_ENABLED": "true",
        "CORE_PEER_TLS_ROOTCERT_FILE": str(layout.ca_cert(node.org)),
        "CORE_PEER_TLS_CLIENTAUTHREQUIRED": "true",
        "CORE_PEER_TLS_CLIENTCERT_FILE": str(tls / "client.crt"),
        "CORE_PEER_TLS_CLIENTKEY_FILE": str(tls / "client.key"),
    }


def orderer_client_args(spec: Spec, layout: Layout, org: str, orderer: Node | None = None) -> list[str]:
    """peer CLI flags to reach an orderer (the first one by default) as ``org``'s admin, with mutual TLS."""
    o = orderer or spec.nodes_of(spec.orderer_org.name, "orderer")[0]
    tls = layout.user_tls(org, "admin")
    return ["-o", o.address, "--tls", "--cafile", str(layout.ca_cert(o.org)),
            "--clientauth", "--certfile", str(tls / "client.crt"), "--keyfile", str(tls / "client.key")]


def join_peers(spec: Spec, layout: Layout, block: Path, progress: Progress) -> None:
    peer = str(fabric_binary("peer"))

    def join(node: Node) -> None:
        env = peer_admin_env(spec, layout, node)
        if run_tool(f"channel info of {node.name}", [peer, "channel", "getinfo", "-c", spec.channel], env, ok_codes=(0, 1)).returncode == 0:
            return
        run_tool(f"join {node.name} to {spec.channel}", [peer, "channel", "join", "-b", str(block)], env)
        progress(f"  joined {node.name} to channel {spec.channel}")

    in_parallel(join, [node for org in spec.member_orgs for node in spec.nodes_of(org.name, "peer")])


def bring_up_fabric(spec: Spec, layout: Layout, progress: Progress, timeout: float) -> None:
    write_node_configs(spec, layout)
    block = make_genesis_block(spec, layout)
    procs = node_processes(spec, layout)
    upsert_processes(layout.run, procs)
    start_supervisor(layout.root)  # SIGHUP: the running supervisor picks up the new processes
    wait_healthy(layout.root, [p.name for p in procs], timeout, lambda n: progress(f"  ready  {n}"))
    join_orderers(spec, layout, block, progress)
    join_peers(spec, layout, block, progress)
