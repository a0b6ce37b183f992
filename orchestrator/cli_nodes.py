"""`twinledger peer add --org ORG [--dry-run]`: a node joins the running network (orchestrator/peer_add.py);
`twinledger org add NAME --kind hospital|plant [--dry-run]`: an org joins the channel (orchestrator/org_add.py);
`twinledger org remove NAME [--dry-run]`: an org leaves it (orchestrator/org_remove.py)."""

from __future__ import annotations

import argparse
import json

from orchestrator.cli_common import home_of
from orchestrator import org_remove
from orchestrator.org_add import KINDS, add_org, result_json
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


def cmd_org_add(args: argparse.Namespace) -> int:
    quiet = args.json
    signers = [s for s in (args.signers or "").split(",") if s] or None
    result = add_org(home_of(args), args.name, args.kind, signers=signers, dry_run=args.dry_run,
                     progress=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    if quiet:
        print(result_json(result))
    return 0


def cmd_org_remove(args: argparse.Namespace) -> int:
    quiet = args.json
    signers = [s for s in (args.signers or "").split(",") if s] or None
    result = org_remove.remove_org(home_of(args), args.name, signers=signers, dry_run=args.dry_run,
                                   progress=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    if quiet:
        print(org_remove.result_json(result))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `peer add`, `org add` and `org remove` to the `twinledger` parser."""
    peer = sub.add_parser("peer", parents=[common], help="peers joining the running network")
    actions = peer.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = actions.add_parser("add", parents=[common], help="another peer of an existing org joins, catches up, endorses")
    s.add_argument("--org", required=True, help="the hospital or plant the peer belongs to (e.g. plant1)")
    s.add_argument("--dry-run", action="store_true", help="say what would be added (name, ports, steps) and change nothing")
    s.set_defaults(func=cmd_peer_add)

    org = sub.add_parser("org", parents=[common], help="organisations joining the consortium's channel")
    actions = org.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("add", parents=[common], help="a new hospital or plant joins: its CA, identities and peer, "
                           "a channel update signed by a majority of the member orgs' admins, chaincode approval, registry")
    a.add_argument("name", help="the new org's name (lowercase letters and digits, e.g. hospital3)")
    a.add_argument("--kind", required=True, choices=KINDS, help="what the org is")
    a.add_argument("--signers", metavar="ORG,ORG", help="the member orgs whose admins sign the channel update "
                   "(default: the first majority of the channel's orgs)")
    a.add_argument("--dry-run", action="store_true", help="print the channel config delta and the signers; change nothing")
    a.set_defaults(func=cmd_org_add)

    r = actions.add_parser("remove", parents=[common], help="a hospital or plant leaves: a channel update removing its "
                           "MSP signed by a majority of the member orgs' admins, the registry marks it removed, its "
                           "peers, chaincode servers and CA stop")
    r.add_argument("name", help="the org to remove (e.g. plant2)")
    r.add_argument("--signers", metavar="ORG,ORG", help="the member orgs whose admins sign the channel update and vote "
                   "in the registry (default: the first majority of the orgs that stay)")
    r.add_argument("--dry-run", action="store_true", help="print the channel config delta, the signers and what would "
                   "stop; change nothing")
    r.set_defaults(func=cmd_org_remove)
