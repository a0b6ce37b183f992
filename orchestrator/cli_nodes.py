"""`twinledger peer add --org ORG [--dry-run]`: a node joins the running network (orchestrator/peer_add.py)."""

from __future__ import annotations

import argparse
import json

from orchestrator.cli_common import home_of
from orchestrator.peer_add import add_peer


def cmd_peer_add(args: argparse.Namespace) -> int:
    quiet = args.json
    node = add_peer(home_of(args), args.org, dry_run=args.dry_run,
                    progress=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    if quiet:
        print(json.dumps({"name": node.name, "org": node.org, "dry_run": args.dry_run,
                          "ports": {"listen": node.ports.listen, "operations": node.ports.operations,
                                    "chaincode": node.ports.chaincode}}))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `peer add` to the `twinledger` parser."""
    peer = sub.add_parser("peer", parents=[common], help="peers joining the running network")
    actions = peer.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = actions.add_parser("add", parents=[common], help="another peer of an existing org joins, catches up, endorses")
    s.add_argument("--org", required=True, help="the hospital or plant the peer belongs to (e.g. plant1)")
    s.add_argument("--dry-run", action="store_true", help="say what would be added (name, ports, steps) and change nothing")
    s.set_defaults(func=cmd_peer_add)
