"""The twins' state folder under HOME/twins (see orchestrator/cli_twins.py for what it holds) and the ledger
config that lets the bridge anchor there: shared by `twins run`, the views and `twins decide`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from network.files import write_atomic
from network.layout import Layout
from network.spec import SpecError, load_spec
from network.spec_model import Placement
from orchestrator.cli_common import UserError


# --- the twins state folder ---------------------------------------------------------------------------
class TwinsDir:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.root = home / "twins"
        self.sim = self.root / "sim"
        self.mapping = self.sim / "mapping.yaml"
        self.pki = self.root / "pki"
        self.store = self.root / "readings.sqlite"
        self.status = self.root / "status.json"
        self.anchor = self.root / "anchor.json"
        self.ledger = self.root / "ledger.json"
        self.run = self.root / "run.json"
        self.models = self.root / "models.json"

    def log(self, name: str) -> Path:
        return Layout(self.home).log_file(name)

    def read_json(self, path: Path) -> dict[str, Any] | None:
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None

    def write_json(self, path: Path, data: dict[str, Any]) -> None:
        write_atomic(path, json.dumps(data, indent=1, sort_keys=True))

    def running_pids(self) -> dict[str, int]:
        """The processes of the last run that still run (checked by command line, so a reused pid never counts)."""
        run = self.read_json(self.run) or {}
        out = {}
        for name, pid in (run.get("pids") or {}).items():
            try:
                cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, ValueError):
                continue
            if "twins." in cmdline and str(self.root) in cmdline:
                out[name] = int(pid)
        return out


def anchor_label(anchor: dict[str, Any] | None) -> str:
    if not anchor:
        return "unknown anchor"
    return f"ledger channel {anchor.get('channel')} (chaincode {anchor.get('chaincode')})"


def not_on_ledger(td: TwinsDir, anchor: dict[str, Any]) -> UserError:
    # a state written before anchoring became ledger-only: its batches were never on the ledger
    return UserError(f"the twins state in {td.root} was not anchored on the ledger (anchor kind "
                     f"{anchor.get('kind')!r}); start a new one in another --home")


def require_state(td: TwinsDir) -> dict[str, Any]:
    anchor = td.read_json(td.anchor)
    if anchor is None or not td.store.exists():
        raise UserError(f"no twins state in {td.root}; start the twins with `twinledger twins run` (see --help)")
    if anchor.get("kind") != "ledger":
        raise not_on_ledger(td, anchor)
    return anchor


def org_placement(home: Path, org: str) -> Placement:
    """Where ``org``'s processes run (its spec ``host`` and ``netns``): the twins of `twins run` run on the OPC-UA
    org's. ``UserError`` without a network or for an org the spec does not name."""
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"there is no network in {home}; {ledger_hint()}")
    try:
        return load_spec(layout.spec_file).org(org).placement
    except SpecError as exc:
        raise UserError(f"cannot place the twins of org {org}: {exc}") from None


# --- ledger reachability --------------------------------------------------------------------------------
def ledger_hint() -> str:
    return "start the network with `twinledger up`"


def ledger_config(home: Path, orgs: list[str]) -> dict[str, Any]:
    """The ledger config (twins.anchoring.anchorer.connect_ledger) for ``orgs``, each anchoring as its org's
    operator (the twins contract accepts an operator or admin of the record's org; operator is the least
    privilege) through its first peer (``orchestrator.connect.peer_target``) — after checking that each such
    peer answers. ``UserError`` otherwise."""
    from orchestrator.bringup import CHAINCODE_NAME
    from orchestrator.connect import peer_target
    from network.processes.health import probe

    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"cannot anchor on the ledger: there is no network in {home}; {ledger_hint()}")
    spec = load_spec(layout.spec_file)
    out: dict[str, Any] = {"channel": spec.channel, "chaincode": CHAINCODE_NAME, "orgs": {}}
    down = []
    for org in orgs:
        try:
            peers = spec.nodes_of(spec.org(org).name, "peer")
        except SpecError as exc:
            raise UserError(f"cannot anchor on the ledger: {exc}") from None
        if not peers:
            raise UserError(f"cannot anchor on the ledger: org {org} runs no peer")
        # the peer first: when it is down, that is what the user must fix, whatever else is missing
        if not probe(f"{peers[0].operations_url}/healthz"):
            down.append(peers[0].name)
            continue
        try:
            t = peer_target(spec, layout, org, "operator")
        except SpecError as exc:
            raise UserError(f"cannot anchor on the ledger: {exc}") from None
        out["orgs"][org] = {"endpoint": t.endpoint, "msp_dir": str(t.msp_dir), "msp_id": t.msp_id,
                            "tls_root_cert": str(t.tls_ca), "tls_client_cert": str(t.tls_cert),
                            "tls_client_key": str(t.tls_key)}
    if down:
        raise UserError(f"cannot anchor on the ledger: the network's peers are not up ({', '.join(down)} not answering); "
                        f"{ledger_hint()}")
    return out
