"""Fabric chaincode lifecycle for our chaincode-as-a-service: package, install, run, approve, commit.

One CCaaS package per chaincode version; every peer dials its own chaincode server (the package's address
is a template the builder fills per peer). Each org's admin installs on its peers and approves for its org;
then one admin commits with endorsements from every org. An upgrade (``deploy(..., upgrade=True)`` with a
new version) is the same with the next sequence. Idempotent: what is already installed, approved or
committed is skipped.

Why `up` never redefines a committed chaincode: with chaincode-as-a-service the package holds no code, only
the server's address and TLS roots (peers/ccaas.py); the code is whatever the chaincode servers run, and
new code takes effect when they restart. A new definition (version, sequence) is needed only to change the
definition itself, and that is an operator's explicit upgrade. So `up` (``upgrade=False``) defines the
chaincode when nothing is committed and otherwise keeps the committed definition -- also one that an
upgrade made with another version than `up` knows -- and submits no lifecycle transaction; the servers of
the committed package stay in the supervisor's manifest across `down`/`up`. Otherwise every `up` after an
upgrade would "upgrade" back to its own version label, one sequence further each time.

During an upgrade the chaincode servers are swapped before the new definition is committed (a server
registers with one package ID only), so invocations fail for the few seconds between the swap and the
commit; deploy returns only once the new servers answer.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from network.layout import Layout
from network.spec_model import Node, Org, Spec
from network.processes.control import read_state, start_supervisor, wait_healthy
from network.ca import chaincode_tls_dir
from orchestrator.fabric_stage import (
    FabricStepError,
    Progress,
    chaincode_address,
    in_parallel,
    orderer_client_args,
    peer_admin_env,
    run_tool,
)
from network.processes.procspec import ProcSpec, load_manifest, upsert_processes
from peers.binaries import fabric_binary
from peers.ccaas import (
    CHAINCODE_ADDRESS_TEMPLATE,
    CHAINCODE_ROOT_CERT_TEMPLATE,
    PEER_CLIENT_CERT_TEMPLATE,
    PEER_CLIENT_KEY_TEMPLATE,
    CcaasPackage,
    CcaasTLS,
    package_ccaas,
)

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Definition:
    name: str
    version: str
    sequence: int


def _peers(spec: Spec) -> list[Node]:
    return [n for o in spec.member_orgs for n in spec.nodes_of(o.name, "peer")]


def committed(spec: Spec, layout: Layout, name: str) -> Definition | None:
    node = _peers(spec)[0]
    r = run_tool(f"query committed {name}", [str(fabric_binary("peer")), "lifecycle", "chaincode", "querycommitted",
                 "-C", spec.channel, "-n", name, "-O", "json"], peer_admin_env(spec, layout, node), ok_codes=(0, 1))
    if r.returncode != 0:
        return None
    d = json.loads(r.stdout)
    return Definition(name, d["version"], int(d["sequence"]))


def approved(spec: Spec, layout: Layout, definition: Definition, org: Org) -> bool:
    """Whether ``org`` has approved ``definition`` (its sequence) for itself."""
    env = peer_admin_env(spec, layout, spec.nodes_of(org.name, "peer")[0])
    r = run_tool(f"query {org.name}'s approval of {definition.name}", [str(fabric_binary("peer")), "lifecycle", "chaincode",
                 "queryapproved", "-C", spec.channel, "-n", definition.name, "--sequence", str(definition.sequence),
                 "-O", "json"], env, ok_codes=(0, 1))
    return r.returncode == 0 and json.loads(r.stdout or "{}").get("version") == definition.version


def approve_committed(spec: Spec, layout: Layout, definition: Definition, org: Org, progress: Progress,
                      timeout: float) -> None:
    """``org`` approves the committed ``definition`` with the package its peers run (skipped when it has).

    Its peer may still be replaying the chain and see an older sequence; the approval is retried until the
    peer has caught up with the committed definition or ``timeout`` passes."""
    if approved(spec, layout, definition, org):
        return
    pkg = _package(layout, definition.name, definition.version)
    env = peer_admin_env(spec, layout, spec.nodes_of(org.name, "peer")[0])
    argv = [str(fabric_binary("peer")), "lifecycle", "chaincode", "approveformyorg", *orderer_client_args(spec, layout, org.name),
            "--channelID", spec.channel, "--name", definition.name, "--version", definition.version,
            "--sequence", str(definition.sequence), "--package-id", pkg.package_id]
    deadline = time.monotonic() + timeout
    while True:
        try:
            run_tool(f"approve {definition.name} {definition.version} for {org.name}", argv, env)
            break
        except FabricStepError as exc:
            if "sequence" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    progress(f"  approved {definition.name} {definition.version} (sequence {definition.sequence}) for {org.name}, "
             f"which joined after it was committed")


def chaincode_process(layout: Layout, node: Node, name: str, package_id: str) -> ProcSpec:
    tls = chaincode_tls_dir(layout, node.name)
    return ProcSpec(
        f"{name}.{node.name}", node.org, "chaincode", [sys.executable, "-m", "chaincode.server"],
        env={
            "CHAINCODE_ID": package_id,
            "CHAINCODE_SERVER_ADDRESS": chaincode_address(node),
            # The server's own TLS key pair from the org's CA (network.ca.enrol_chaincode_server_tls),
            # not the peer's: the chaincode process holds no key that could act as the peer.
            "CHAINCODE_TLS_KEY_FILE": str(tls / "server.key"),
            "CHAINCODE_TLS_CERT_FILE": str(tls / "server.crt"),
            # Mutual TLS: only a client with a certificate from this org's CA -- its peer -- gets in.
            "CHAINCODE_TLS_CLIENT_CACERT_FILE": str(layout.ca_cert(node.org)),
            # ...and of those only a peer (the OU Fabric CA writes from the identity type), not a user.
            "CHAINCODE_TLS_CLIENT_OU": "peer",
        },
        cwd=str(REPO_ROOT),
        health=f"tcp://{chaincode_address(node)}",
        netns=node.netns,
    )


def _package(layout: Layout, name: str, version: str) -> CcaasPackage:
    """One package for every org's peers: address and TLS material are placeholders each peer's builder
    fills from its own context (peers/core_config.py) -- its org's CA as the root, its own TLS key pair as
    the client certificate the chaincode server requires. No key ever travels inside the package. The
    bytes are reproducible, so a peer added later installs the very package id its org approved."""
    tls = CcaasTLS(root_cert=CHAINCODE_ROOT_CERT_TEMPLATE, client_cert=PEER_CLIENT_CERT_TEMPLATE,
                   client_key=PEER_CLIENT_KEY_TEMPLATE)
    return package_ccaas(f"{name}_{version}", CHAINCODE_ADDRESS_TEMPLATE,
                         layout.root / "chaincode" / f"{name}_{version}.tar.gz", tls)


def _install_and_serve(spec: Spec, layout: Layout, name: str, pkg: CcaasPackage, nodes: list[Node],
                       progress: Progress, timeout: float) -> None:
    """Install ``pkg`` on ``nodes`` (skipped where it is) and run each one's chaincode server."""
    peer = str(fabric_binary("peer"))

    def install(node: Node) -> None:
        env = peer_admin_env(spec, layout, node)
        installed = run_tool(f"query installed on {node.name}", [peer, "lifecycle", "chaincode", "queryinstalled", "-O", "json"], env)
        if pkg.package_id not in installed.stdout:
            run_tool(f"install {pkg.label} on {node.name}", [peer, "lifecycle", "chaincode", "install", str(pkg.path)], env)
            progress(f"  installed {pkg.label} on {node.name}")

    # Each peer and each org is independent of the others: the peer CLI calls run side by side.
    in_parallel(install, nodes)
    procs = [chaincode_process(layout, node, name, pkg.package_id) for node in nodes]
    before = {p.name: p for p in load_manifest(layout.run)}
    running = {p["name"]: p.get("pid") for p in read_state(layout.root).get("processes", [])}
    upsert_processes(layout.run, procs)
    start_supervisor(layout.root)
    # The supervisor reloads its manifest asynchronously: until it has stopped the old servers and
    # started the new ones, "healthy" would describe the previous package's servers.
    _wait_replaced(layout, {p.name: running.get(p.name) for p in procs if before.get(p.name) != p}, timeout)
    wait_healthy(layout.root, [p.name for p in procs], timeout, lambda n: progress(f"  ready  {n}"))


def _wait_replaced(layout: Layout, old_pids: dict[str, int | None], timeout: float) -> None:
    """Until the supervisor has restarted each named process (a new pid: it runs the new manifest entry)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = {p["name"]: p.get("pid") for p in read_state(layout.root).get("processes", [])}
        if all(pids.get(n) is not None and pids.get(n) != old for n, old in old_pids.items()):
            return
        time.sleep(0.1)
    raise FabricStepError(f"the supervisor did not restart {', '.join(sorted(old_pids))} within {timeout:.0f} s "
                          f"(see {layout.log_file('supervisor')})")


def deploy(spec: Spec, layout: Layout, name: str, version: str, progress: Progress, timeout: float = 60,
           *, upgrade: bool = False) -> Definition:
    """Define ``name`` on the channel when nothing is committed; with ``upgrade``, move it to ``version``.

    Without ``upgrade`` an already committed definition is kept whatever its version (see the module
    docstring); with it, a committed definition of another version gets the next sequence.
    """
    current = committed(spec, layout, name)
    if current and (current.version == version or not upgrade):
        # Peers added since it was committed (`twinledger peer add`) get the committed version's package
        # and their own chaincode server; their org's approval already covers that package id.
        new = [n for n in _peers(spec) if f"{name}.{n.name}" not in {p.name for p in load_manifest(layout.run)}]
        if new:
            _install_and_serve(spec, layout, name, _package(layout, name, current.version), new, progress, timeout)
        # Orgs that joined the channel after it was committed (`twinledger org add`) approve the committed
        # definition for themselves: until then their peers neither run nor endorse it.
        in_parallel(lambda org: approve_committed(spec, layout, current, org, progress, timeout),
                    [o for o in spec.member_orgs if not o.founding])
        if current.version != version:
            progress(f"  {name} {current.version} (sequence {current.sequence}) is committed; kept "
                     f"(`up` does not redefine a committed chaincode)")
        return current
    sequence = current.sequence + 1 if current else 1
    peer = str(fabric_binary("peer"))
    pkg = _package(layout, name, version)
    _install_and_serve(spec, layout, name, pkg, _peers(spec), progress, timeout)

    common = ["--channelID", spec.channel, "--name", name, "--version", version, "--sequence", str(sequence)]
    def approve(org: Org) -> None:
        env = peer_admin_env(spec, layout, spec.nodes_of(org.name, "peer")[0])
        run_tool(f"approve {name} {version} for {org.name}", [peer, "lifecycle", "chaincode", "approveformyorg",
                 *orderer_client_args(spec, layout, org.name), *common, "--package-id", pkg.package_id], env)
        progress(f"  approved {name} {version} (sequence {sequence}) for {org.name}")

    in_parallel(approve, spec.member_orgs)

    targets: list[str] = []
    for org in spec.member_orgs:
        node = spec.nodes_of(org.name, "peer")[0]
        targets += ["--peerAddresses", node.address, "--tlsRootCertFiles", str(layout.ca_cert(org.name))]
    first = spec.nodes_of(spec.member_orgs[0].name, "peer")[0]
    run_tool(f"commit {name} {version}", [peer, "lifecycle", "chaincode", "commit", *orderer_client_args(spec, layout, first.org),
             *common, *targets],
             peer_admin_env(spec, layout, first))
    progress(f"  committed {name} {version} (sequence {sequence}) on {spec.channel}")
    return Definition(name, version, sequence)
