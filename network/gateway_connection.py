"""What every gateway request shares: one gRPC channel to a peer's gateway, who signs, the deadlines, and
how a failed call is explained (network/gateway_errors.py). Used by network/gateway.py and the modules it
splits into; callers use ``Gateway``, not this.
"""

from __future__ import annotations

import collections
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

import grpc
from fabric_protos.gateway import gateway_pb2_grpc

from network.gateway_errors import GatewayError, error_from_rpc
from network.identity import Identity, Signer


@dataclass(frozen=True)
class Deadlines:
    """Per-call deadlines in seconds (the official SDKs' recommended defaults).

    Endorsement is the longest because the gateway may have to collect several organisations'
    endorsements; the commit-status wait covers ordering plus block validation.

    Ordering-service failover. Resending a transaction is always safe: it is the same signed envelope
    (same transaction id), and the peers commit a transaction id once -- a second copy in a later block
    is marked DUPLICATE_TXID and changes nothing. So:

    * ``submit_retry``: a Submit the ordering service refused for now (the gateway reached no orderer that
      took it: no Raft leader yet, the leader just died) or did not answer within ``submit`` is sent
      again, the same envelope, with a short pause, until this many seconds have passed;
    * ``resubmit_after``: a commit-status wait that hears nothing for this long sends the envelope again
      (a transaction handed to a Raft leader that died before it was ordered is otherwise never
      committed, and its client would wait out ``commit_status``). Under load a commit can take longer
      than this, so the client waits at least 3x the median commit time it has recently seen.
    """

    evaluate: float = 5.0
    endorse: float = 15.0
    submit: float = 5.0
    commit_status: float = 60.0
    submit_retry: float = 20.0
    resubmit_after: float = 3.0


class Connection:
    """What every request object needs: the stub, who signs, deadlines and how to report errors."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        identity: Identity,
        signer: Signer,
        endpoint: str,
        deadlines: Deadlines,
        peer_names: Mapping[str, str],
        plaintext: bool,
    ) -> None:
        self.channel = channel
        self.stub = gateway_pb2_grpc.GatewayStub(channel)
        self.identity = identity
        self.signer = signer
        self.endpoint = endpoint
        self.deadlines = deadlines
        self.peer_names = dict(peer_names)
        self.plaintext = plaintext
        # Recent submit-to-commit times (s): how long a commit normally takes on this connection now.
        self.commit_times: collections.deque[float] = collections.deque(maxlen=64)

    def resubmit_after(self) -> float:
        """Seconds of silence after which a commit-status wait resends the envelope (see ``Deadlines``)."""
        floor = self.deadlines.resubmit_after
        if len(self.commit_times) < 8:
            return floor
        return max(floor, 3 * statistics.median(self.commit_times))

    def error(
        self,
        error_class: type[GatewayError],
        rpc_error: grpc.aio.AioRpcError,
        transaction_id: str | None,
        timeout: float | None,
    ) -> GatewayError:
        return error_from_rpc(
            error_class,
            rpc_error,
            transaction_id=transaction_id,
            endpoint=self.endpoint,
            timeout=timeout,
            peer_names=self.peer_names,
            plaintext=self.plaintext,
        )
