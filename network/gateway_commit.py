"""An endorsed transaction on its way to the ledger: submitted to the ordering service through the gateway,
then awaited until its block commits -- with the ordering-service failover that makes a crashed orderer
cost seconds, not a lost transaction (resend the same signed envelope; see ``Deadlines``).
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from dataclasses import dataclass

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import transaction_pb2

from network.gateway_connection import Connection
from network.gateway_errors import CommitStatusError, EndorseError, SubmitError, worth_resubmitting
from network.gateway_proposal import parse_prepared_transaction


@dataclass(frozen=True)
class TransactionStatus:
    """Outcome of a committed transaction: the validation code the peers gave it and its block."""

    transaction_id: str
    code: int
    block_number: int

    @property
    def code_name(self) -> str:
        try:
            return str(transaction_pb2.TxValidationCode.Name(self.code))
        except ValueError:
            return "UNKNOWN_VALIDATION_CODE"

    @property
    def successful(self) -> bool:
        return bool(self.code == transaction_pb2.VALID)


class Transaction:
    """An endorsed transaction (the gateway's prepared envelope), signed by us for ordering."""

    def __init__(
        self, conn: Connection, transaction_id: str, envelope: common_pb2.Envelope
    ) -> None:
        self._conn = conn
        try:
            parsed = parse_prepared_transaction(envelope.payload)
        except ValueError as exc:
            raise EndorseError(str(exc), transaction_id=transaction_id) from None
        if parsed.transaction_id and parsed.transaction_id != transaction_id:
            # The gateway must return the transaction we proposed; anything else we refuse to sign.
            raise EndorseError(
                f"gateway returned transaction {parsed.transaction_id}, expected {transaction_id}",
                transaction_id=transaction_id,
            )
        self.transaction_id = transaction_id
        self.channel_name = parsed.channel_id
        self.result = parsed.result
        # The orderer and the committing peers check the envelope signature against the creator in
        # the payload header — our identity — so the client, not the gateway, signs the payload.
        self.envelope = common_pb2.Envelope(
            payload=envelope.payload, signature=conn.signer.sign(envelope.payload)
        )

    def digest(self) -> bytes:
        return hashlib.sha256(self.envelope.payload).digest()

    async def submit(self, timeout: float | None = None) -> Commit:
        """Hand the transaction to the ordering service (through the gateway); returns a ``Commit``.

        An attempt the ordering service refused for now, or did not answer within ``timeout``, is sent
        again -- the same envelope -- until ``Deadlines.submit_retry`` has passed (see ``Deadlines``);
        other failures (an invalid or refused transaction) raise at once.
        """
        timeout = self._conn.deadlines.submit if timeout is None else timeout
        # The commit-status request is built before submitting so nothing can fail after the
        # transaction has left for the orderer.
        commit = Commit(self._conn, self.channel_name, self.transaction_id, self.result, transaction=self)
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self._conn.deadlines.submit_retry
        pause = 0.1
        while True:
            try:
                await self.send(timeout)
            except SubmitError as error:
                if not worth_resubmitting(error) or loop.time() + pause >= give_up:
                    raise
                commit.resubmissions += 1
                await asyncio.sleep(pause * (1 + random.random()))  # jitter: many clients fail together
                pause = min(0.3, pause * 2)
                continue
            commit.submitted_at = loop.time()
            return commit

    async def send(self, timeout: float) -> None:
        """One Submit of the signed envelope (no retry)."""
        request = gateway_pb2.SubmitRequest(
            transaction_id=self.transaction_id,
            channel_id=self.channel_name,
            prepared_transaction=self.envelope,
        )
        try:
            await self._conn.stub.Submit(request, timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise self._conn.error(SubmitError, exc, self.transaction_id, timeout) from None


class Commit:
    """A submitted transaction whose commit status can be awaited."""

    def __init__(
        self,
        conn: Connection,
        channel_name: str,
        transaction_id: str,
        result: bytes,
        *,
        transaction: Transaction | None = None,
    ) -> None:
        self._conn = conn
        self.transaction_id = transaction_id
        self.result = result
        # The signed envelope, to send again when the ordering service seems to have lost it (None:
        # a commit built from a transaction id alone only waits).
        self._transaction = transaction
        #: How many times the envelope was sent again (by ``Transaction.submit`` or ``status``).
        self.resubmissions = 0
        self.submitted_at: float | None = None
        request = gateway_pb2.CommitStatusRequest(
            transaction_id=transaction_id,
            channel_id=channel_name,
            identity=conn.identity.serialized(),
        ).SerializeToString()
        # The gateway checks this signature under the channel's Gateway/CommitStatus ACL.
        self._signed_request = gateway_pb2.SignedCommitStatusRequest(
            request=request, signature=conn.signer.sign(request)
        )

    async def status(self, timeout: float | None = None) -> TransactionStatus:
        """Wait until the transaction is in a committed block and return its validation code.

        With the envelope at hand, a wait that hears nothing for ``resubmit_after`` (see ``Deadlines``)
        sends it again and keeps waiting, up to ``timeout`` in all; a gateway peer that restarts
        meanwhile is waited for too.
        """
        timeout = self._conn.deadlines.commit_status if timeout is None else timeout
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        looked_again = False
        while True:
            left = give_up - loop.time()
            wait = left if self._transaction is None else min(left, self._conn.resubmit_after())
            try:
                response = await self._conn.stub.CommitStatus(self._signed_request, timeout=wait)
            except grpc.aio.AioRpcError as exc:
                error = self._conn.error(CommitStatusError, exc, self.transaction_id, timeout)
                if self._transaction is None or give_up - loop.time() < 0.2:
                    raise error from None
                if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    await self._resend(give_up - loop.time())
                elif error.unreachable:  # our own peer restarting: wait for it, then ask again
                    await asyncio.sleep(0.2)
                else:
                    raise error from None
                continue
            status = TransactionStatus(
                self.transaction_id, int(response.result), int(response.block_number)
            )
            if status.code == transaction_pb2.DUPLICATE_TXID and not looked_again:
                # A copy sent again was reported as the duplicate of an earlier one (in the same block):
                # the ledger's transaction index holds the first copy, whose code a second look reports.
                looked_again = True
                continue
            if self.submitted_at is not None:
                self._conn.commit_times.append(loop.time() - self.submitted_at)
            return status

    async def _resend(self, left: float) -> None:
        assert self._transaction is not None
        self.resubmissions += 1
        try:
            await self._transaction.send(min(self._conn.deadlines.submit, max(0.1, left)))
        except SubmitError:
            pass  # the next wait (and resend) tries again; the overall deadline bounds it
