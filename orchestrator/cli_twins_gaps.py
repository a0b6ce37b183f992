"""`twinledger verify gaps`: the gap records of the twins state, each verified against the ledger.

A gap record (twins.anchoring.record.GapRecord) says that readings of one variable may be missing between two
stored readings: the OPC-UA server keeps no history and the stream broke (a reconnect, a restart of the bridge, an
overflow of the server's queue). It is sealed into the org's batch, so the anchored record hash covers it; this
command verifies every batch holding gaps (twins.anchoring.verify.verify_gaps) and lists the gaps as the ledger's
records state them. Exit 0 when every such batch verifies (with or without gaps), 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from orchestrator.cli_common import UserError, home_of
from orchestrator.twins_state import TwinsDir, anchor_label, ledger_config, require_state


async def _gaps(td: TwinsDir) -> list:
    from twins.anchoring.anchorer import connect_ledger
    from twins.anchoring.store import ReadingStore
    from twins.anchoring.verify import verify_gaps

    cfg = td.read_json(td.ledger) or {}
    ledger_config(td.home, sorted(cfg.get("orgs", {})))  # the peers must answer: the gaps are proven there
    anchorer, gateways = connect_ledger(cfg)
    store = ReadingStore(td.store)
    try:
        return await verify_gaps(store, anchorer)
    finally:
        store.close()
        for g in gateways:
            await g.close()


def cmd_verify_gaps(args: argparse.Namespace) -> int:
    from twins.anchoring.verify import VerificationError
    from twins.readings import us_to_iso

    td = TwinsDir(home_of(args))
    label = anchor_label(require_state(td))
    try:
        gaps = asyncio.run(_gaps(td))
    except VerificationError as exc:
        if args.json:
            print(json.dumps({"ok": False, "error": str(exc), "anchor": label}))
        raise UserError(f"VERIFICATION FAILED against the {label}: {exc}") from None
    if args.json:
        print(json.dumps({"ok": True, "anchor": label, "gaps": [g.to_dict() for g in gaps]}, indent=1, sort_keys=True))
        return 0
    for g in gaps:
        d: dict[str, Any] = g.to_dict()
        print(f"gap  {d['var']} (org {d['org']}): readings may be missing after {us_to_iso(d['from_ts_us'])} and before "
              f"{us_to_iso(d['to_ts_us'])}: {d['reason']}; sealed in batch {g.batch_id}, tx {g.tx_id}")
    print(f"OK: {len(gaps)} gap record(s), each in a batch that matches its anchor on the {label}"
          if gaps else f"OK: no gap records in {td.store}")
    return 0


def add_verify_gaps_parser(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`verify gaps`, next to `verify reading` (whose `verify` parser orchestrator.cli_twins_views creates)."""
    verify = sub.choices["verify"]
    vs = next(a for a in verify._actions if isinstance(a, argparse._SubParsersAction))
    g = vs.add_parser("gaps", parents=[common],
                      help="the gap records (readings a server without history could not give back), verified "
                           "against the ledger")
    g.set_defaults(func=cmd_verify_gaps)
