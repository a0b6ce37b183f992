"""Where a network's state lives under its home folder (default ``./.twinledger/<network>``).

One place decides every path so that `down` keeps state, `up` resumes it and `clean` removes it.

    <home>/spec.yaml                      the spec the network was created from
    <home>/orgs/<org>/ca/                 the org's fabric-ca-server home (its CA key never leaves it)
    <home>/orgs/<org>/msp/                the org's verifying MSP (cacerts, tlscacerts, NodeOUs config.yaml)
    <home>/orgs/<org>/users/<user>/msp    enrolled user identities (admin, steward, operator, client)
    <home>/nodes/<node>/msp, tls/         a peer's or orderer's own identity and TLS key pair
    <home>/nodes/<node>/config/           rendered core.yaml / orderer.yaml
    <home>/nodes/<node>/data/             ledger, Raft WAL and snapshots
    <home>/channel/                       channel genesis block and config artefacts
    <home>/logs/<process>.log             one log per process
    <home>/run/                           pid files and the supervisor's state
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME_ROOT = Path(".twinledger")


def resolve_home(home: str | Path | None, network: str = "twinledger") -> Path:
    """--home wins, then $TL_HOME, then ./.twinledger/<network>; always absolute."""
    if home:
        return Path(home).expanduser().resolve()
    env = os.environ.get("TL_HOME")
    if env:
        return Path(env).expanduser().resolve()
    return (DEFAULT_HOME_ROOT / network).resolve()


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def spec_file(self) -> Path:
        return self.root / "spec.yaml"

    def org_dir(self, org: str) -> Path:
        return self.root / "orgs" / org

    def ca_home(self, org: str) -> Path:
        return self.org_dir(org) / "ca"

    def ca_cert(self, org: str) -> Path:
        """The org's root CA certificate: signs its identities and its TLS certificates."""
        return self.ca_home(org) / "ca-cert.pem"

    def ca_client_home(self, org: str) -> Path:
        return self.org_dir(org) / "ca-client"

    def org_msp(self, org: str) -> Path:
        return self.org_dir(org) / "msp"

    def user_dir(self, org: str, user: str) -> Path:
        return self.org_dir(org) / "users" / user

    def user_msp(self, org: str, user: str) -> Path:
        return self.user_dir(org, user) / "msp"

    def user_tls(self, org: str, user: str) -> Path:
        return self.user_dir(org, user) / "tls"

    def node_dir(self, node: str) -> Path:
        return self.root / "nodes" / node

    def node_msp(self, node: str) -> Path:
        return self.node_dir(node) / "msp"

    def node_tls(self, node: str) -> Path:
        """server.crt, server.key, ca.crt -- the names Fabric's samples use."""
        return self.node_dir(node) / "tls"

    def node_config(self, node: str) -> Path:
        return self.node_dir(node) / "config"

    def node_data(self, node: str) -> Path:
        return self.node_dir(node) / "data"

    @property
    def channel_dir(self) -> Path:
        return self.root / "channel"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def log_file(self, process: str) -> Path:
        return self.logs / f"{process}.log"

    @property
    def run(self) -> Path:
        return self.root / "run"
