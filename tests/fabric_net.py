"""One real Fabric network for a whole test run: `twinledger up` on its own home and free ports.

Every integration test that needs the ledger takes the session fixture ``fabric_net`` (see
tests/integration/conftest.py): real orderers and peers (the Fabric v3.1.5 binaries setup built), real
Fabric CAs, the real chaincode served as CCaaS, all under the real supervisor. Tests isolate themselves by
their own IDs (``fabric_net.unique("ds")``), never by a network of their own; a test that kills a node
calls ``wait_ready()`` before it returns, so the next test finds the network whole.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from network.gateway import Gateway
from network.gateway_sync import SyncGateway
from network.layout import Layout
from network.spec import Spec, load_spec
from network.spec_model import Node
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.connect import connect, connect_sync
from network.processes.control import read_state, wait_healthy
from orchestrator.readiness import wait_converged, wait_ordering

REPO = Path(__file__).resolve().parents[1]
#: Ports reserved per network: the default spec uses 12 nodes x 10 plus the supervisor's; room to spare.
PORTS = 200


def twinledger(*args: str, home: Path, timeout: float = 300, env: dict[str, str] | None = None,
               input: str | None = None) -> subprocess.CompletedProcess[str]:
    """The `twinledger` CLI as a user runs it, as a subprocess of this interpreter (no TL_HOME/TL_AS leaks in)."""
    clean = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    clean.update(env or {})
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args, "--home", str(home)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO, env=clean, input=input)


@dataclass
class FabricNet:
    home: Path
    spec: Spec
    layout: Layout
    port_base: int
    up_seconds: float
    _ids: itertools.count = field(default_factory=itertools.count)

    # --- the CLI ------------------------------------------------------------------------------------
    def run(self, *args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return twinledger(*args, home=self.home, timeout=timeout, env=env)

    def ok(self, *args: str, timeout: float = 300) -> Any:
        """``twinledger ARGS --json``; it must succeed; returns the parsed answer."""
        result = self.run(*args, "--json", timeout=timeout)
        assert result.returncode == 0, f"twinledger {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def fails(self, *args: str, code: int = 1) -> str:
        """The command exits ``code`` with one `twinledger:` line on stderr and no traceback; returns the line."""
        result = self.run(*args)
        assert result.returncode == code, f"twinledger {' '.join(args)}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        line = result.stderr.strip()
        assert line.startswith("twinledger: ") and "\n" not in line and "Traceback" not in line, result.stderr
        return line

    # --- the Gateway client ------------------------------------------------------------------------
    def connect(self, org: str, user: str = "admin", peer_index: int = 0) -> Gateway:
        """Async gateway as ``user@org`` through that org's peer (open it inside the test's event loop)."""
        return connect(self.spec, self.layout, org, user, peer_index)

    def connect_sync(self, org: str, user: str = "admin", peer_index: int = 0) -> SyncGateway:
        return connect_sync(self.spec, self.layout, org, user, peer_index)

    @property
    def chaincode(self) -> str:
        return CHAINCODE_NAME

    # --- nodes -------------------------------------------------------------------------------------
    def node(self, name: str) -> Node:
        return self.spec.node(name)

    def peer(self, org: str) -> Node:
        return self.spec.nodes_of(org, "peer")[0]

    def processes(self) -> dict[str, dict]:
        """The supervisor's view: name -> {pid, healthy, restarts, ...}."""
        return {p["name"]: p for p in read_state(self.home).get("processes", [])}

    def wait_ready(self, timeout: float = 90) -> None:
        """Every supervised process healthy, a Raft leader, gossip converged: what `up` waits for."""
        wait_healthy(self.home, list(self.processes()), timeout)
        wait_ordering(self.spec, timeout)
        wait_converged(self.spec, self.layout, CHAINCODE_NAME, timeout)

    def client_home(self, path: Path) -> Path:
        """A home of its own for a user of this network that runs no node (e.g. a twins state of its own, under
        HOME/twins): the network's spec and the orgs' identities, symlinked; none of its nodes or ledgers."""
        path.mkdir(parents=True, exist_ok=True)
        for src in (self.layout.spec_file, self.layout.org_dir("any").parent):
            (path / src.name).symlink_to(src)
        return path

    def unique(self, prefix: str) -> str:
        """An ID no other test of this run uses (letters, digits and '-' only)."""
        return f"{prefix}-{next(self._ids)}{secrets.token_hex(2)}"


def start_network(home: Path, port_base: int) -> FabricNet:
    t0 = time.monotonic()
    result = twinledger("up", "--port-base", str(port_base), home=home, timeout=300)
    up_seconds = time.monotonic() - t0
    if result.returncode != 0:
        twinledger("down", home=home, timeout=120)
        raise RuntimeError(f"twinledger up failed (exit {result.returncode}):\n{result.stdout}\n{result.stderr}")
    layout = Layout(home)
    return FabricNet(home, load_spec(layout.spec_file), layout, port_base, up_seconds)


def stop_network(net: FabricNet) -> None:
    twinledger("down", home=net.home, timeout=120)
