"""`twinledger peer add --org ORG [--dry-run]`: a node joins the running network (orchestrator/peer_add.py);
`twinledger org add NAME --kind hospital|plant [--dry-run]`: an org joins the channel (orchestrator/org_add.py);
`twinledger org remove NAME [--dry-run]`: an org leaves it (orchestrator/org_remove.py);
`twinledger orderer add [NAME] | remove NAME [--force] [--dry-run]`: Raft consenters (orchestrator/orderer_nodes.py)."""

from __future__ import annotations

import argparse
import json

from network.channel_config import ChannelConfigError
from orchestrator.cli_common import UserError, home_of
from orchestrator import org_remove, orderer_nodes
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


def cmd_orderer_add(args: argparse.Namespace) -> int:
    quiet = args.json
    try:
        result = orderer_nodes.add_orderer(home_of(args), args.name, dry_run=args.dry_run,
                                           progress=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    except ChannelConfigError as exc:  # a Fabric tool's refusal, named with its step: one line, not a traceback
        raise UserError(f"{exc}; `twinledger orderer add {args.name or ''}` resumes".replace("  ", " ")) from None
    if quiet:
        print(orderer_nodes.result_json(result))
    return 0


def cmd_orderer_remove(args: argparse.Namespace) -> int:
    quiet = args.json
    try:
        result = orderer_nodes.remove_orderer(home_of(args), args.name, force=args.force, dry_run=args.dry_run,
                                              progress=(lambda m: None) if quiet else (lambda m: print(m, flush=True)))
    except ChannelConfigError as exc:
        raise UserError(f"{exc}; `twinledger orderer remove {args.name}` resumes") from None
    if quiet:
        print(orderer_nodes.result_json(result))
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `peer add`, `org add`, `org remove`, `orderer add` and `orderer remove` to the `twinledger` parser."""
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

    orderer = sub.add_parser("orderer", parents=[common], help="Raft consenters joining and leaving the ordering service")
    actions = orderer.add_subparsers(dest="action", required=True, metavar="ACTION")
    oa = actions.add_parser("add", parents=[common], help="another orderer joins: enrolled, started, joined as a follower "
                            "from the latest config block, caught up, then added to the Raft consenter set")
    oa.add_argument("name", nargs="?", help="the orderer to add or finish adding (default: the next one, e.g. orderer3.orderer)")
    oa.add_argument("--dry-run", action="store_true", help="print the consenter-set config delta; change nothing")
    oa.set_defaults(func=cmd_orderer_add)
    orm = actions.add_parser("remove", parents=[common], help="an orderer leaves the Raft consenter set, then its process stops")
    orm.add_argument("name", help="the orderer to remove (e.g. orderer3.orderer)")
    orm.add_argument("--force", action="store_true", help="remove it even if fewer than 3 consenters remain "
                     "(2 consenters order but tolerate no failure)")
    orm.add_argument("--dry-run", action="store_true", help="print the consenter-set config delta; change nothing")
    orm.set_defaults(func=cmd_orderer_remove)
