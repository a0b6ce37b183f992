"""`twinledger twins decide | ack`: the twins contract's DecideMaintenance / AckDecision on the alerts the bridge
raised on the ledger (`twins status` lists them with their ids)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from orchestrator.cli_common import UserError, home_of
from orchestrator.twins_state import TwinsDir, require_state


# --- twins decide / ack ----------------------------------------------------------------------------------
TWINS_CONTRACT = "twins"
#: What chaincode/twins.py's DecideMaintenance accepts (its DECISIONS).
ACTIONS = ("repair-now", "schedule", "monitor", "dismiss")
_TX_ID_RE = re.compile(r"[0-9a-f]{64}")


def _alert_of(home: Path, target: str) -> tuple[str, str | None]:
    """``twins decide``'s target -> (alert id, its org if known). An alert id (the RaiseAlert tx id, as `twins status`
    shows) is taken as is; an asset name means that asset's latest alert on the ledger, from the bridge's store."""
    if _TX_ID_RE.fullmatch(target):
        return target, None
    from twins.anchoring.store import ReadingStore

    td = TwinsDir(home)
    require_state(td)
    store = ReadingStore(td.store)
    try:
        raised = [e for e in store.alerts() if e["asset"] == target and e["tx_id"]]
    finally:
        store.close()
    if not raised:
        raise UserError(f"no alert of {target} is on the ledger (`twinledger twins status` lists them); give an asset "
                        "with one, or an alert id")
    return raised[-1]["tx_id"], raised[-1]["org"]


def _owner(args: argparse.Namespace, read_function: str, record_id: str) -> str:
    """The org of an alert or decision on the ledger (any member may read it: the default identity does)."""
    from orchestrator.ledger_session import open_session

    with open_session(args) as session:
        return str(session.evaluate(TWINS_CONTRACT, read_function, record_id)["org"])


def cmd_decide(args: argparse.Namespace) -> int:
    from orchestrator.cli_data import short_actor
    from orchestrator.ledger_session import open_session
    from orchestrator.tables import emit, render_fields

    alert_id, org = _alert_of(home_of(args), args.target)
    if args.as_ is None:  # the contract lets only an operator of the alert's org decide
        args.as_ = org or _owner(args, "ReadAlert", alert_id)
    with open_session(args) as session:
        record, status = session.submit(TWINS_CONTRACT, "DecideMaintenance", alert_id, args.action)
    emit(args, record, render_fields([
        ("decision", f"{record['id']}"), ("alert", f"{record['alert']} ({record['asset']}, org {record['org']})"),
        ("action", record["decision"]), ("status", record["status"]), ("by", short_actor(record["decided_by"])),
        ("model", record.get("model") or "not named by the alert"),
        ("tx", f"{status.transaction_id} (block {status.block_number})"),
        ("next", f"twinledger twins ack {record['id']} once it is done"),
    ]))
    return 0


def cmd_ack(args: argparse.Namespace) -> int:
    from orchestrator.cli_data import short_actor
    from orchestrator.ledger_session import open_session
    from orchestrator.tables import emit, render_fields

    if not _TX_ID_RE.fullmatch(args.decision_id):
        raise UserError(f"{args.decision_id!r} is not a decision id (64 hex digits, as `twins decide` prints)")
    if args.as_ is None:  # an admin or operator of the decision's org acknowledges
        args.as_ = _owner(args, "ReadDecision", args.decision_id)
    with open_session(args) as session:
        record, status = session.submit(TWINS_CONTRACT, "AckDecision", args.decision_id)
    emit(args, record, render_fields([
        ("acknowledged", f"decision {record['id']} ({record['decision']} on {record['asset']}, alert {record['alert']})"),
        ("by", short_actor(record["acked_by"])), ("at", record["acked_at"]),
        ("tx", f"{status.transaction_id} (block {status.block_number})"),
    ]))
    return 0


def add_decide_parsers(ts: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from orchestrator.ledger_session import add_ledger_command

    d = add_ledger_command(ts, common, "decide", cmd_decide,
                           "an operator of the alert's org records what to do about a twin alert (once per alert; "
                           "without --as: the operator of the alert's org)",
                           "operator")
    d.add_argument("target", metavar="ASSET|ALERT_ID",
                   help="an alert id (as `twins status` shows), or an asset: its latest alert on the ledger")
    d.add_argument("--action", required=True, choices=ACTIONS, help="the maintenance decision")
    k = add_ledger_command(ts, common, "ack", cmd_ack,
                           "an operator or admin of the decision's org acknowledges that it was carried out (once; "
                           "without --as: the operator of the decision's org)",
                           "operator")
    k.add_argument("decision_id", metavar="DECISION_ID", help="as `twins decide` prints it")
