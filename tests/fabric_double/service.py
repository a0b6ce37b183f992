"""The ``gateway.Gateway`` gRPC service of one simulated peer.

TEST DOUBLE: part of ``tests.fabric_double``, which stands in for Fabric peers until the Fabric binaries
can be built here. Every request is verified before anything runs: proposals by ``open_proposal``, the
client-signed envelope of Submit, and the signed CommitStatus and ChaincodeEvents requests, each
against the channel's MSPs and ACLs (Writers to propose and submit, Readers to read commit status and
events). Failures become the gRPC status codes, messages and ErrorDetails Fabric's gateway sends
(``internal/pkg/gateway/api.go``), so the client's error handling meets what a real peer returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, NoReturn

import grpc
from fabric_protos.common import common_pb2
from fabric_protos.gateway import gateway_pb2, gateway_pb2_grpc

from network.gateway_errors import STATUS_DETAILS_KEY, encode_status_details
from tests.fabric_double.channel import Channel, PeerInfo
from tests.fabric_double.msp import READERS, WRITERS, Rejected
from tests.fabric_double.proposal import ProposalView, open_proposal

Context = grpc.aio.ServicerContext[Any, Any]


async def _abort(context: Context, error: Rejected) -> NoReturn:
    metadata = ()
    if error.details:
        metadata = ((STATUS_DETAILS_KEY, encode_status_details(error.code, str(error), error.details)),)
    await context.abort(error.code, str(error), trailing_metadata=metadata)
    raise AssertionError("unreachable: abort raises")


class PeerGateway(gateway_pb2_grpc.GatewayServicer):
    def __init__(self, channel: Channel, peer: PeerInfo) -> None:
        self.channel = channel
        self.peer = peer

    def _proposal(self, signed: Any, tx_id: str, channel_id: str) -> ProposalView:
        view = open_proposal(signed, tx_id, channel_id, self.channel.msps, self.channel.name)
        self.channel.counters.proposal_signatures += 1
        self.channel.msps.require(view.creator, WRITERS, self.channel.name)  # ACL peer/Propose
        return view

    async def Evaluate(self, request: gateway_pb2.EvaluateRequest, context: Context) -> Any:  # noqa: N802
        try:
            view = self._proposal(request.proposed_transaction, request.transaction_id, request.channel_id)
            response = await self.channel.evaluate(view, self.peer)
        except Rejected as error:
            await _abort(context, error)
        return gateway_pb2.EvaluateResponse(result=response)

    async def Endorse(self, request: gateway_pb2.EndorseRequest, context: Context) -> Any:  # noqa: N802
        try:
            view = self._proposal(request.proposed_transaction, request.transaction_id, request.channel_id)
            envelope = await self.channel.endorse(view, self.peer, list(request.endorsing_organizations))
        except Rejected as error:
            await _abort(context, error)
        return gateway_pb2.EndorseResponse(prepared_transaction=envelope)

    async def Submit(self, request: gateway_pb2.SubmitRequest, context: Context) -> Any:  # noqa: N802
        envelope = request.prepared_transaction
        try:
            if not envelope.signature:
                raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "prepared transaction must be signed")
            payload = common_pb2.Payload.FromString(envelope.payload)
            signature_header = common_pb2.SignatureHeader.FromString(payload.header.signature_header)
            channel_header = common_pb2.ChannelHeader.FromString(payload.header.channel_header)
            creator = self.channel.msps.verify(signature_header.creator, envelope.payload, envelope.signature)
            self.channel.counters.envelope_signatures += 1
            self.channel.msps.require(creator, WRITERS, self.channel.name)
            if channel_header.tx_id != request.transaction_id:
                raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, "transaction id does not match the envelope")
            self.channel.submit(request.transaction_id, envelope)
        except Rejected as error:
            await _abort(context, error)
        return gateway_pb2.SubmitResponse()

    async def CommitStatus(self, request: gateway_pb2.SignedCommitStatusRequest, context: Context) -> Any:  # noqa: N802
        inner = gateway_pb2.CommitStatusRequest.FromString(request.request)
        try:
            creator = self.channel.msps.verify(inner.identity, request.request, request.signature)
            self.channel.counters.commit_status_signatures += 1
            self.channel.msps.require(creator, READERS, self.channel.name)
            if inner.channel_id != self.channel.name:
                raise Rejected(grpc.StatusCode.NOT_FOUND, f"channel {inner.channel_id} not found")
        except Rejected as error:
            await _abort(context, error)
        code, block = await self.channel.cutter.status(inner.transaction_id)
        return gateway_pb2.CommitStatusResponse(result=code, block_number=block)

    async def ChaincodeEvents(  # noqa: N802
        self, request: gateway_pb2.SignedChaincodeEventsRequest, context: Context
    ) -> AsyncIterator[gateway_pb2.ChaincodeEventsResponse]:
        inner = gateway_pb2.ChaincodeEventsRequest.FromString(request.request)
        try:
            creator = self.channel.msps.verify(inner.identity, request.request, request.signature)
            self.channel.counters.events_signatures += 1
            self.channel.msps.require(creator, READERS, self.channel.name)
            if inner.channel_id != self.channel.name:
                raise Rejected(grpc.StatusCode.NOT_FOUND, f"channel {inner.channel_id} not found")
            position = inner.start_position.WhichOneof("Type")
            if position not in (None, "next_commit", "specified"):
                # Fabric's gateway refuses "oldest" and "newest" for chaincode events.
                raise Rejected(grpc.StatusCode.INVALID_ARGUMENT, f"invalid start position type: {position}")
        except Rejected as error:
            await _abort(context, error)
        cutter = self.channel.cutter
        # As Fabric's gateway: resume in the block of the checkpointed transaction when it is known,
        # else at the requested position; events up to that transaction's are skipped either way.
        start = cutter.block_of(inner.after_transaction_id) if inner.after_transaction_id else None
        if start is None:
            start = inner.start_position.specified.number if position == "specified" else cutter.height
        async for number, events in cutter.events_from(start, inner.chaincode_id, inner.after_transaction_id):
            yield gateway_pb2.ChaincodeEventsResponse(block_number=number, events=events)
