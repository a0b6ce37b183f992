"""`twinledger consent ...`: a hospital's stewards record patient consent in the hospital's private data.

Calls of the chaincode's ``consent`` contract (chaincode/consent.py):

* ``consent record PSEUDONYM SCOPE`` / ``consent withdraw PSEUDONYM SCOPE`` — submit
  consent:RecordConsent with the record ``{"pseudonym", "salt", "scope", "status"}`` in the transient map
  under "consent" (never in arguments, which land on the channel), a fresh random salt so the on-chain
  hash cannot be guessed, and endorsement pinned to the caller's own org (Fabric's advice for transient
  data: no other org's peer sees it);
* ``consent show PSEUDONYM SCOPE`` — evaluate consent:ReadConsent: the hospital's own stored record and
  its SHA-256, to show to a verifier;
* ``consent verify HOSPITAL PSEUDONYM SCOPE --sha256 HEX|FILE`` — evaluate consent:VerifyConsent: does a
  record shown by the hospital match what it committed? Exits 3 when it does not.

Default identity (``--as ORG`` without ``:USER``): the steward for record and withdraw (the contract's
rule), the admin for show and verify.
"""

from __future__ import annotations

import argparse
import json
import secrets
from typing import Any

from orchestrator.cli_inputs import sha256_of
from orchestrator.ledger_session import add_ledger_command, open_session
from orchestrator.tables import emit, render_fields

CONTRACT = "consent"
TRANSIENT_KEY = "consent"
#: Exit status of `consent verify` when the record does not match (as `data check` when denied).
EXIT_MISMATCH = 3


def _record(args: argparse.Namespace, status: str) -> int:
    consent = {"pseudonym": args.pseudonym, "salt": secrets.token_hex(16), "scope": args.scope, "status": status}
    transient = {TRANSIENT_KEY: json.dumps(consent, sort_keys=True, separators=(",", ":")).encode()}
    with open_session(args) as session:
        answer, committed = session.submit(CONTRACT, "RecordConsent", transient=transient,
                                           endorsing_orgs=[session.msp_id])
    emit(args, answer, render_fields([
        ("consent", f"{status} — recorded privately by {answer['hospital']}"),
        ("collection", answer["collection"]), ("record sha256", answer["sha256"]),
        ("tx", f"{committed.transaction_id} (block {committed.block_number})"),
    ]))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    return _record(args, "given")


def cmd_withdraw(args: argparse.Namespace) -> int:
    return _record(args, "withdrawn")


def cmd_show(args: argparse.Namespace) -> int:
    with open_session(args) as session:
        answer = session.evaluate(CONTRACT, "ReadConsent", args.pseudonym, args.scope)
    emit(args, answer, render_fields([("record", answer["record"]), ("sha256", answer["sha256"])]))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    digest = sha256_of("--sha256", args.sha256)
    with open_session(args) as session:
        answer = session.evaluate(CONTRACT, "VerifyConsent", args.hospital, args.pseudonym, args.scope, digest)
    if answer["match"]:
        verdict = f"match: the record is the one {answer['hospital']} committed"
    elif answer["recorded"]:
        verdict = f"no match: {answer['hospital']} committed a different record for this pseudonym and scope"
    else:
        verdict = f"no match: {answer['hospital']} has no consent recorded for this pseudonym and scope"
    emit(args, answer, verdict)
    return 0 if answer["match"] else EXIT_MISMATCH


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `consent ...` to the `twinledger` parser."""
    consent = sub.add_parser("consent", parents=[common], help="patient consent in a hospital's private data")
    commands = consent.add_subparsers(dest="consent_command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, help_text: str, default_user: str) -> argparse.ArgumentParser:
        parser = add_ledger_command(commands, common, name, func, help_text, default_user)
        if name == "verify":
            parser.add_argument("hospital", metavar="HOSPITAL", help="the hospital org that recorded the consent")
        parser.add_argument("pseudonym", metavar="PSEUDONYM",
                            help="the patient's pseudonym (never written to the ledger)")
        parser.add_argument("scope", metavar="SCOPE",
                            help="what the consent covers, verb:object (e.g. train:cardiac-v1)")
        return parser

    command("record", cmd_record, "a hospital steward records that a patient gave consent", "steward")
    command("withdraw", cmd_withdraw, "a hospital steward records that a patient withdrew consent", "steward")
    command("show", cmd_show, "the hospital's own stored consent record and its SHA-256", "admin")
    p = command("verify", cmd_verify, "does a record a hospital showed match what it committed? (exit 3 if not)",
                "admin")
    p.add_argument("--sha256", required=True, metavar="HEX|FILE",
                   help="SHA-256 of the record shown (64 hex digits), or a file holding the record's exact text")
