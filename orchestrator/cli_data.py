"""`twinledger data ...`: stewards govern their org's data sets; any member checks and audits use.

Each command is one call of the chaincode's ``data`` contract (chaincode/data_access.py):

=====================================================  ========  =========================================
command                                                how       chaincode function (arguments)
=====================================================  ========  =========================================
data register ID --kind K --sha256 H [--sensitivity]   submit    data:RegisterDataset(ID, K, schema JSON,
  [--schema JSON|FILE]                                           sha256, sensitivity)
data grant ID --to ORG --purpose P [--expires T]       submit    data:Grant(ID, ORG, P, T or "")
data revoke ID --to ORG --purpose P                    submit    data:Revoke(ID, ORG, P)
data check ID --purpose P                              submit    data:Check(ID, P) — recorded
data check ID --purpose P --read-only                  evaluate  data:CheckReadOnly(ID, P)
data audit ID / data grants ID / data list             evaluate  data:Audit / data:ListGrants / data:ListDatasets
=====================================================  ========  =========================================

Default identity (``--as ORG`` without ``:USER``): the org's steward for register, grant and revoke
(the only role the contract lets govern data), its admin for everything else. ``check`` exits 0 when
the use is allowed and 3 when it is denied (a denial is an answer, and it is recorded); errors exit 1.
The ``consent`` commands (cli_consent.py) register from here too.
"""

from __future__ import annotations

import argparse
from typing import Any

from network.gateway import TransactionStatus
from orchestrator import cli_consent
from orchestrator.cli_common import UserError
from orchestrator.cli_inputs import expiry_of, json_object_of, sha256_of
from orchestrator.ledger_session import Session, add_ledger_command, open_session
from orchestrator.tables import emit, render_fields, render_table

CONTRACT = "data"
SENSITIVITIES = ("public", "internal", "confidential", "restricted")
#: Exit status of `data check` (and `consent verify`) when the answer is no.
EXIT_DENIED = 3


def short_actor(client_id: Any) -> str:
    """``x509::CN=steward,OU=client,...::CN=ca.plant1,...`` -> ``steward@plant1`` (the table's form)."""
    text = str(client_id or "")
    parts = text.split("::")
    if len(parts) != 3:
        return text

    def cn(dn: str) -> str:
        return next((p[3:] for p in dn.split(",") if p.startswith("CN=")), dn)

    return f"{cn(parts[1])}@{cn(parts[2]).removeprefix('ca.')}"


def _committed(status: TransactionStatus) -> str:
    return f"{status.transaction_id} (block {status.block_number})"


def _org(session: Session, name: str) -> str:
    org = session.spec.org(name)  # unknown -> SpecError naming the known orgs
    if org.kind == "orderer":
        raise UserError(f"--to {name}: the orderer org holds no data; grant to a hospital or plant")
    return name


# --- commands -------------------------------------------------------------------------------------


def cmd_register(args: argparse.Namespace) -> int:
    sha = sha256_of("--sha256", args.sha256)
    schema = json_object_of("--schema", args.schema)
    with open_session(args) as session:
        record, status = session.submit(CONTRACT, "RegisterDataset", args.id, args.kind, schema, sha, args.sensitivity)
    emit(args, record, render_fields([
        ("registered", f"data set {record['id']} of {record['owner']}"),
        ("kind", record["kind"]), ("sensitivity", record["sensitivity"]),
        ("manifest sha256", record["manifest_sha256"]), ("by", short_actor(record["registered_by"])),
        ("tx", _committed(status)),
    ]))
    return 0


def cmd_grant(args: argparse.Namespace) -> int:
    expires = expiry_of("--expires", args.expires) if args.expires else ""
    with open_session(args) as session:
        grant, status = session.submit(CONTRACT, "Grant", args.id, _org(session, args.to), args.purpose, expires)
    emit(args, grant, render_fields([
        ("granted", f"{grant['dataset']} to {grant['grantee']} for {grant['purpose']}"),
        ("expires", grant["expires_at"] or "never (until revoked)"), ("by", short_actor(grant["granted_by"])),
        ("tx", _committed(status)),
    ]))
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    with open_session(args) as session:
        grant, status = session.submit(CONTRACT, "Revoke", args.id, _org(session, args.to), args.purpose)
    emit(args, grant, render_fields([
        ("revoked", f"{grant['dataset']} to {grant['grantee']} for {grant['purpose']}"),
        ("by", short_actor(grant["revoked_by"])), ("tx", _committed(status)),
    ]))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    with open_session(args) as session:
        if args.read_only:
            answer, recorded = session.evaluate(CONTRACT, "CheckReadOnly", args.id, args.purpose), "no (--read-only)"
        else:
            answer, status = session.submit(CONTRACT, "Check", args.id, args.purpose)
            recorded = f"tx {_committed(status)}"
    emit(args, answer, render_fields([
        ("allowed" if answer["allowed"] else "denied", answer["detail"]),
        ("org", answer["org"]), ("reason", answer["reason"]), ("recorded", recorded),
    ]))
    return 0 if answer["allowed"] else EXIT_DENIED


def _audit_row(entry: dict[str, Any]) -> list[Any]:
    action = entry["action"]
    by = entry.get("caller") or entry.get("revoked_by") or entry.get("granted_by") or entry.get("registered_by")
    if action == "access":
        org, result = entry.get("org"), f"{'allowed' if entry.get('allowed') else 'denied'} ({entry.get('reason')})"
    elif action == "registered":
        org, result = entry.get("owner"), f"{entry.get('kind')}, {entry.get('sensitivity')}"
    else:
        org = entry.get("grantee")
        until = f"until {entry['expires_at']}" if entry.get("expires_at") else "no expiry"
        result = until if action == "granted" else ""
    return [entry["at"], action, short_actor(by), org, entry.get("purpose"), result, entry["tx_id"]]


def cmd_audit(args: argparse.Namespace) -> int:
    with open_session(args) as session:
        trail = session.evaluate(CONTRACT, "Audit", args.id)
    emit(args, trail, f"data set {trail['dataset']} (owner {trail['owner']})\n" + render_table(
        ["AT", "ACTION", "BY", "ORG", "PURPOSE", "RESULT", "TX"], [_audit_row(e) for e in trail["entries"]]))
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    with open_session(args) as session:
        grants = session.evaluate(CONTRACT, "ListGrants", args.id)
    emit(args, grants, render_table(
        ["GRANTEE", "PURPOSE", "STATE", "EXPIRES", "GRANTED BY", "TX"],
        [[g["grantee"], g["purpose"], g["state"], g.get("expires_at"), short_actor(g.get("granted_by")), g["tx_id"]]
         for g in grants]))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with open_session(args) as session:
        datasets = session.evaluate(CONTRACT, "ListDatasets")
    emit(args, datasets, render_table(
        ["ID", "OWNER", "KIND", "SENSITIVITY", "REGISTERED", "MANIFEST SHA256"],
        [[d["id"], d["owner"], d["kind"], d["sensitivity"], d["registered_at"], d["manifest_sha256"]]
         for d in datasets]))
    return 0


# --- parser ---------------------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `data ...` (and `consent ...`) to the `twinledger` parser."""
    data = sub.add_parser("data", parents=[common], help="data sets: register, grant, revoke, check, audit")
    commands = data.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help_text: str, default_user: str) -> argparse.ArgumentParser:
        return add_ledger_command(commands, common, name, func, help_text, default_user)

    p = command("register", cmd_register, "a steward registers a data set of its org", "steward")
    p.add_argument("id", metavar="ID", help="data set ID, unique in the consortium (e.g. ai4i-plant1)")
    p.add_argument("--kind", required=True, help="what kind of data (e.g. tabular, timeseries, images)")
    p.add_argument("--sha256", required=True, metavar="HEX|FILE",
                   help="SHA-256 of the data set's manifest: 64 hex digits, or the manifest file to hash")
    p.add_argument("--sensitivity", choices=SENSITIVITIES, default="confidential", help="default: confidential")
    p.add_argument("--schema", default="{}", metavar="JSON|FILE", help="a JSON object summarising the schema")

    p = command("grant", cmd_grant, "a steward of the owner org lets another org use a data set for a purpose",
                "steward")
    p.add_argument("id", metavar="ID")
    p.add_argument("--to", required=True, metavar="ORG", help="the org that may use the data set")
    p.add_argument("--purpose", required=True, help="verb:object, e.g. train:maintenance-v1")
    p.add_argument("--expires", metavar="T", help="RFC 3339 time (2026-01-31T23:59:59Z) or a delay (90s, 12h, 30d); "
                                                  "default: until revoked")

    p = command("revoke", cmd_revoke, "a steward of the owner org ends a grant now", "steward")
    p.add_argument("id", metavar="ID")
    p.add_argument("--to", required=True, metavar="ORG")
    p.add_argument("--purpose", required=True)

    p = command("check", cmd_check, "may the caller's org use a data set for a purpose? (recorded; exit 3 if denied)",
                "admin")
    p.add_argument("id", metavar="ID")
    p.add_argument("--purpose", required=True)
    p.add_argument("--read-only", action="store_true", help="ask without recording the check")

    p = command("audit", cmd_audit, "the data set's registration, grants, revocations and every access check",
                "admin")
    p.add_argument("id", metavar="ID")
    p = command("grants", cmd_grants, "every grant of a data set with its state now", "admin")
    p.add_argument("id", metavar="ID")
    command("list", cmd_list, "every registered data set", "admin")

    cli_consent.register(sub, common)
