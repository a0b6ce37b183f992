"""A `twinledger` command's session with the ledger: one identity, its org's peer, one-line errors.

``--as ORG[:USER]`` picks the identity (``orchestrator.connect``); without ``:USER`` each command
chooses the role the chaincode expects for it (a steward for governance writes, the admin for reads,
as DESIGN's default). Without ``--as`` the org is ``$TL_AS`` or else the spec's first hospital or
plant. Calls go to that org's first peer through the Gateway client; every failure a user can meet
becomes a ``UserError`` of one line: the chaincode's own message for a denial, "cannot reach ..." for
a peer that is down, the validation code for a transaction the peers refused to commit.

Read conflicts and the retry policy. A transaction the peers mark MVCC_READ_CONFLICT or
PHANTOM_READ_CONFLICT lost a race: another transaction committed first changed something it had read,
and it changed nothing itself. Submitting it again means endorsing it again on the new state, so the
chaincode judges it anew. That is done automatically (``CONFLICT_RETRIES`` times) only for the
functions in ``RETRY_SAFE``: a recorded access check (data:Check) is a question whose answer the
chaincode derives from the current grants, and exactly one check ends up recorded because the losing
attempt left no trace. Governance writes (register, grant, revoke, consent, twin decisions) are never
retried: their conflict means someone else changed the same records meanwhile -- a grant retried over a
revocation another steward just committed would silently undo it -- so the user gets one line saying the
transaction was not committed and why, and decides again on the state as it now is.

Ordering-service failover is not retried here but one level down, in the Gateway client
(``network.gateway.Deadlines``): a Submit the orderers could not take for now (a Raft leader just
killed, no leader elected yet) and a commit that does not come are answered by sending the *same* signed
envelope again -- same transaction id, so it commits at most once, for every function, governance
writes included. Only when that gives up does the user get a line: the transaction id and what to check.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc

from network.gateway import TransactionStatus
from network.gateway_errors import CommitError, CommitStatusError, GatewayError
from network.gateway_sync import SyncContract, SyncGateway
from network.layout import Layout
from network.spec import Spec, load_spec
from network.spec_model import Node
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.cli_common import UserError, home_of
from orchestrator.connect import connect_sync, parse_as

AS_ENV = "TL_AS"
#: The prefix Fabric's gateway puts before a chaincode's error message in its error details.
CHAINCODE_FAILURE_PREFIX = "chaincode response "
#: Validation codes of transactions that lost a race and may simply be submitted again.
RETRYABLE = frozenset({"MVCC_READ_CONFLICT", "PHANTOM_READ_CONFLICT"})
#: (contract, function) whose submit is retried after a read conflict; see the module docstring.
RETRY_SAFE = frozenset({("data", "Check")})
#: Further attempts after the first, and the first pause between them (doubled each time, with jitter:
#: racers that retried in lock-step would only conflict again).
CONFLICT_RETRIES = 3
RETRY_PAUSE_S = 0.05


def add_identity_option(parser: argparse.ArgumentParser, default_user: str) -> None:
    parser.add_argument(
        "--as", dest="as_", metavar="ORG[:USER]",
        help=f"identity to act as, e.g. hospital1:steward; USER defaults to {default_user}, ORG to ${AS_ENV} "
             "or the network's first hospital or plant",
    )
    parser.set_defaults(default_user=default_user)


def add_ledger_command(commands: argparse._SubParsersAction, common: argparse.ArgumentParser, name: str,
                       func: Any, help_text: str, default_user: str) -> argparse.ArgumentParser:
    """A sub-command that acts on the ledger as ``--as`` (default user: default_user)."""
    parser = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
    add_identity_option(parser, default_user)
    parser.set_defaults(func=func)
    return parser


def resolve_identity(value: str | None, spec: Spec, default_user: str) -> tuple[str, str]:
    if not value:
        value = os.environ.get(AS_ENV) or spec.member_orgs[0].name
    org, _, user = value.partition(":")
    return parse_as(f"{org}:{user or default_user}", spec)


def chaincode_message(error: GatewayError) -> str | None:
    """The chaincode's own error text, when the peers report that the chaincode refused."""
    for detail in error.details:
        if detail.message.startswith(CHAINCODE_FAILURE_PREFIX):
            # "chaincode response 500, <message>": the status is noise to a user, the message is not.
            return detail.message.split(", ", 1)[-1]
    return None


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Session:
    spec: Spec
    layout: Layout
    org: str
    user: str
    gateway: SyncGateway

    @property
    def peer(self) -> Node:
        return self.spec.nodes_of(self.org, "peer")[0]

    @property
    def msp_id(self) -> str:
        return self.spec.org(self.org).msp_id

    def contract(self, name: str) -> SyncContract:
        return self.gateway.network(self.spec.channel).contract(CHAINCODE_NAME, name)

    def user_error(self, error: GatewayError) -> UserError:
        endpoint = self.peer.address
        message = chaincode_message(error)
        if message is not None:
            return UserError(_one_line(message))
        if isinstance(error, CommitError):
            # A read conflict means another transaction changed the same records first: the same
            # command, run again, is judged on the new state. Anything else needs a person to look.
            retry = ("another transaction changed the same records first; look at them and run the command "
                     "again" if error.validation_name in RETRYABLE else f"see `twinledger logs {self.peer.name}`")
            return UserError(f"transaction {error.transaction_id} was not committed: the peers marked it "
                             f"{error.validation_name}; nothing changed — {retry}")
        if error.unreachable:
            return UserError(
                f"cannot reach {self.peer.name} at {endpoint} — is the network up? (`twinledger status`)")
        if isinstance(error, CommitStatusError) and error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            # Sent (and sent again) but never seen in a block: it may still commit, once, later.
            return UserError(f"transaction {error.transaction_id} was not committed in time although it was sent "
                             "to the ordering service again; it commits at most once — check `twinledger status` "
                             "and look before running the command again")
        if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
            return UserError(f"no answer from {self.peer.name} at {endpoint} in time — is it overloaded? "
                             "(`twinledger status`, `twinledger logs " + self.peer.name + "`)")
        return UserError(_one_line(str(error)))

    def evaluate(self, contract: str, function: str, *args: str, **kwargs: Any) -> Any:
        """Query the chaincode (nothing is recorded) and return its JSON answer."""
        try:
            return _decode(self.contract(contract).evaluate(function, *args, **kwargs))
        except GatewayError as error:
            raise self.user_error(error) from None

    def submit(self, contract: str, function: str, *args: str, **kwargs: Any) -> tuple[Any, TransactionStatus]:
        """Endorse, order and wait for the commit; returns the JSON answer and the commit status.

        A read conflict is retried only for the functions in ``RETRY_SAFE`` (module docstring).
        """
        retries = CONFLICT_RETRIES if (contract, function) in RETRY_SAFE else 0
        attempt = 0
        while True:
            try:
                commit = self.contract(contract).submit_async(function, *args, **kwargs)
                status = commit.status()
                if not status.successful:
                    raise CommitError(status.transaction_id, status.code, status.block_number)
                return _decode(commit.result), status
            except CommitError as error:
                if error.validation_name not in RETRYABLE or attempt >= retries:
                    raise self.user_error(error) from None
            except GatewayError as error:
                raise self.user_error(error) from None
            time.sleep(RETRY_PAUSE_S * 2 ** attempt * (1 + random.random()))
            attempt += 1

    def close(self) -> None:
        self.gateway.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def _decode(raw: bytes) -> Any:
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def open_session(args: argparse.Namespace) -> Session:
    """The session for the command's ``--as`` (see add_identity_option) in the command's home."""
    home = home_of(args)
    layout = Layout(home)
    if not layout.spec_file.exists():
        raise UserError(f"no network in {home}; run `twinledger up` first")
    spec = load_spec(layout.spec_file)
    org, user = resolve_identity(args.as_, spec, args.default_user)
    return Session(spec, layout, org, user, connect_sync(spec, layout, org, user))
