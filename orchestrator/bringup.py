"""Bringing a local network up from its spec, stage by stage, resuming whatever already exists.

Stages: home + spec -> each org's CA (supervised) -> identities (enrolment) -> Fabric nodes.
Every stage skips work already done, so `up` after `down` (or after a crash) resumes the same ledger.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from network.ca import ca_server, enrol_org
from network.layout import Layout
from network.spec import Spec, SpecError, dump_spec, load_spec
from network.spec_model import Org
from network.processes.control import start_supervisor, wait_healthy
from network.processes.procspec import ProcSpec, upsert_processes
from orchestrator.fabric_stage import bring_up_fabric
from orchestrator.lifecycle import deploy
from orchestrator.membership import register_member_orgs
from orchestrator.readiness import wait_converged, wait_ordering
from peers.binaries import fabric_binary, fabric_ca_binary

# The one chaincode every network runs (contracts registry, data, consent, models, twins: chaincode/app.py);
# `deploy` skips it when this version is already committed.
CHAINCODE_NAME = "twinledger"
CHAINCODE_VERSION = "1.0"

Progress = Callable[[str], None]


def prepare_home(home: Path, spec_file: Path | None, port_base: int | None) -> tuple[Spec, Layout]:
    """Create the home with its spec, or load the spec it already holds (a network keeps its spec)."""
    layout = Layout(home)
    if layout.spec_file.exists():
        spec = load_spec(layout.spec_file)
        if spec_file is not None and load_spec(spec_file, port_base=port_base).to_dict() != spec.to_dict():
            raise SpecError(f"{home} already holds network {spec.name!r} from another spec; use another --home or `twinledger clean`")
        if port_base is not None and port_base != spec.port_base:
            raise SpecError(f"{home} already runs on port base {spec.port_base}; use another --home or `twinledger clean`")
        _require_namespaces(spec)
        return spec, layout
    spec = load_spec(spec_file, port_base=port_base)
    _require_namespaces(spec)
    _require_free_ports(spec)
    home.mkdir(parents=True, exist_ok=True)
    layout.spec_file.write_text(dump_spec(spec))
    return spec, layout


#: Where `ip netns add NAME` leaves a named network namespace (and `ip netns exec` looks for it).
NETNS_DIR = Path("/run/netns")


def _require_namespaces(spec: Spec) -> None:
    """Every org's network namespace must exist before anything starts: a missing one is otherwise a CA that
    restarts until `up` gives up after two minutes. TwinLedger uses namespaces; it does not make them."""
    for org in spec.live_orgs:
        if org.netns and not (NETNS_DIR / org.netns).exists():
            raise SpecError(f"org {org.name}: network namespace {org.netns} does not exist; create it (`ip netns add "
                            f"{org.netns}`) with {org.host} on one of its interfaces, or drop netns from the org")


def _require_free_ports(spec: Spec) -> None:
    """A new network's ports (and the supervisor's) must be free on their hosts before its home is created: a
    clash found later is a CA that never starts, a two-minute wait and a half-made home. An org in a network
    namespace of its own binds there, where this process cannot look; a clash there is its node's start error."""
    lo, hi = spec.port_range
    here = [(o.host, o.name) for o in spec.live_orgs if o.netns is None]
    for port in range(lo, supervisor_metrics_port(spec) + 1):
        for host in sorted({h for h, _ in here} | {"127.0.0.1"}):
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the nodes bind: TIME_WAIT is no clash
                try:
                    s.bind((host, port))
                except OSError as exc:
                    if exc.errno == errno.EADDRNOTAVAIL:
                        orgs = ", ".join(n for h, n in here if h == host)
                        raise SpecError(f"host {host} (of {orgs}) is no address of this machine; give each org the "
                                        "address of the machine its nodes run on (or its netns)") from None
                    raise SpecError(f"port {port} on {host} is in use, and network {spec.name} needs {lo}-{hi + 1}; "
                                    "give another --port-base") from None


def ca_processes(spec: Spec, layout: Layout) -> list[ProcSpec]:
    def one(org: Org) -> ProcSpec:
        s = ca_server(spec, layout, org, fabric_ca_binary("fabric-ca-server"))
        return ProcSpec(f"ca.{org.name}", org.name, "ca", s.argv, s.env, health=s.health, netns=org.netns)

    # A new CA's one-time init (key generation, ~0.3 s each) runs here: side by side, like the CAs would.
    # A removed org's CA (`twinledger org remove`) is never started again.
    with ThreadPoolExecutor(max_workers=len(spec.live_orgs)) as pool:
        return list(pool.map(one, spec.live_orgs))


def supervisor_metrics_port(spec: Spec) -> int:
    """The first port after the founding nodes' own: the supervisor's Prometheus metrics."""
    return spec.supervisor_port


def up(home: Path, spec_file: Path | None = None, port_base: int | None = None,
       progress: Progress = print, timeout: float = 120.0) -> Spec:
    t0 = time.monotonic()
    spec, layout = prepare_home(home, spec_file, port_base)
    lo, hi = spec.port_range
    hosts = sorted({o.host for o in spec.live_orgs})
    progress(f"network {spec.name} in {home} (ports {lo}-{hi} on {', '.join(hosts)})")
    client_bin = fabric_ca_binary("fabric-ca-client")  # these fail early, before any process starts,
    fabric_binary("peer"), fabric_binary("orderer")     # with the setup hint

    cas = ca_processes(spec, layout)
    upsert_processes(layout.run, cas)
    start_supervisor(home, supervisor_metrics_port(spec))
    wait_healthy(home, [p.name for p in cas], timeout, lambda n: progress(f"  ready  {n}"))

    # Enrolment talks to five independent CAs: do them side by side.
    with ThreadPoolExecutor(max_workers=len(spec.live_orgs)) as pool:
        for org, done in zip(spec.live_orgs, pool.map(lambda o: enrol_org(spec, layout, o, client_bin), spec.live_orgs)):
            progress(f"  identities {org.name}: " + (", ".join(done) if done else "already enrolled"))

    bring_up_fabric(spec, layout, progress, timeout)
    deploy(spec, layout, CHAINCODE_NAME, CHAINCODE_VERSION, progress)
    # Ready means a submit needing any orgs' endorsements succeeds right away: the Raft cluster has a
    # leader, and each org's peer sees every org's peer with the chaincode (what the Gateway plans
    # endorsements from).
    wait_ordering(spec, timeout, progress)
    wait_converged(spec, layout, CHAINCODE_NAME, timeout, progress)
    asyncio.run(register_member_orgs(spec, layout, CHAINCODE_NAME, progress))
    progress(f"up in {time.monotonic() - t0:.1f} s")
    return spec
