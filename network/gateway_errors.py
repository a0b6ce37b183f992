"""Errors of the Fabric Gateway client: one hierarchy, one readable line each.

The Fabric gateway reports failures as gRPC status errors. When peers or orderers were involved, the
status carries ``gateway.ErrorDetail`` messages (address, MSP ID, message per node) inside a
``google.rpc.Status`` that travels in the trailing metadata key ``grpc-status-details-bin``. The top-level
message is usually only "see attached details", so the details are what a user needs to read.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from fabric_protos.gateway import gateway_pb2
from fabric_protos.peer import transaction_pb2
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

__all__ = [
    "STATUS_DETAILS_KEY",
    "ChaincodeEventsError",
    "CommitError",
    "CommitStatusError",
    "EndorseError",
    "ErrorDetail",
    "EvaluateError",
    "GatewayError",
    "SubmitError",
    "decode_status_details",
    "encode_status_details",
    "error_from_rpc",
    "worth_resubmitting",
]

STATUS_DETAILS_KEY = "grpc-status-details-bin"
_ERROR_DETAIL_TYPE = "gateway.ErrorDetail"


def _rpc_status_class() -> Any:
    """``google.rpc.Status`` built in a private descriptor pool.

    googleapis-common-protos (which ships ``google.rpc.status_pb2``) is not among our dependencies; the
    message is three fields, so we describe it ourselves. A private pool keeps it from clashing with
    the real module should another package import it into the default pool.
    """
    pool = descriptor_pool.DescriptorPool()
    any_file = descriptor_pb2.FileDescriptorProto()
    any_pb2.DESCRIPTOR.CopyToProto(any_file)
    pool.Add(any_file)
    status_file = descriptor_pb2.FileDescriptorProto(
        name="twinledger/google_rpc_status.proto",
        package="google.rpc",
        dependency=["google/protobuf/any.proto"],
        syntax="proto3",
    )
    msg = status_file.message_type.add(name="Status")
    label = descriptor_pb2.FieldDescriptorProto
    msg.field.add(name="code", number=1, type=label.TYPE_INT32, label=label.LABEL_OPTIONAL)
    msg.field.add(name="message", number=2, type=label.TYPE_STRING, label=label.LABEL_OPTIONAL)
    msg.field.add(
        name="details",
        number=3,
        type=label.TYPE_MESSAGE,
        label=label.LABEL_REPEATED,
        type_name=".google.protobuf.Any",
    )
    pool.Add(status_file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status"))


RpcStatus = _rpc_status_class()


@dataclass(frozen=True)
class ErrorDetail:
    """What one peer or orderer said, as reported by the gateway."""

    address: str
    msp_id: str
    message: str

    def describe(self, peer_names: Mapping[str, str] | None = None) -> str:
        name = (peer_names or {}).get(self.address)
        where = f"{self.msp_id} @{self.address}" if self.msp_id else self.address
        return f"{name} ({where}): {self.message}" if name else f"{where}: {self.message}"


def decode_status_details(status_bytes: bytes) -> list[ErrorDetail]:
    """The ``gateway.ErrorDetail`` entries in a serialised ``google.rpc.Status`` (others are skipped)."""
    status = RpcStatus()
    try:
        status.ParseFromString(status_bytes)
    except DecodeError:
        return []
    details: list[ErrorDetail] = []
    for item in status.details:
        if item.type_url.rsplit("/", 1)[-1] != _ERROR_DETAIL_TYPE:
            continue
        detail = gateway_pb2.ErrorDetail()
        try:
            detail.ParseFromString(item.value)
        except DecodeError:
            continue
        details.append(ErrorDetail(detail.address, detail.msp_id, detail.message))
    return details


def encode_status_details(
    code: grpc.StatusCode, message: str, details: Iterable[ErrorDetail]
) -> bytes:
    """Serialise a ``google.rpc.Status`` with ErrorDetails, as the Fabric gateway sends it."""
    status = RpcStatus(code=code.value[0], message=message)
    for d in details:
        packed = status.details.add()
        packed.Pack(gateway_pb2.ErrorDetail(address=d.address, msp_id=d.msp_id, message=d.message))
    return bytes(status.SerializeToString())


class GatewayError(Exception):
    """Any failure of a gateway operation.

    ``code`` is the gRPC status code (None for failures that are not gRPC errors, such as an invalid
    commit), ``message`` the gateway's own message and ``details`` what each peer/orderer said.
    """

    operation = "gateway call"

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        details: Iterable[ErrorDetail] = (),
        transaction_id: str | None = None,
        endpoint: str | None = None,
        hint: str | None = None,
        peer_names: Mapping[str, str] | None = None,
    ) -> None:
        self.message = message
        self.code = code
        self.details = list(details)
        self.transaction_id = transaction_id
        self.endpoint = endpoint
        self.hint = hint
        self._peer_names = dict(peer_names or {})
        super().__init__(self._render())

    @property
    def unreachable(self) -> bool:
        """True when the client never reached the peer's gateway (transport failure), as opposed to the
        gateway answering UNAVAILABLE because something *behind* it (orderers, other peers) was."""
        return self.code == grpc.StatusCode.UNAVAILABLE and not self.details and not _from_gateway(self.message)

    def _render(self) -> str:
        if self.details:
            # The per-node messages carry the real cause (chaincode error, policy failure); the gateway's
            # own message then only says "see attached details".
            body = "; ".join(d.describe(self._peer_names) for d in self.details)
        else:
            code = f"{self.code.name}: " if self.code is not None else ""
            body = f"{code}{self.message}"
        if self.hint:
            body = f"{body} ({self.hint})"
        return f"{self.operation} failed: {body}"


class EvaluateError(GatewayError):
    operation = "evaluate"


class EndorseError(GatewayError):
    operation = "endorse"


class SubmitError(GatewayError):
    operation = "submit"


class CommitStatusError(GatewayError):
    operation = "commit status"


class ChaincodeEventsError(GatewayError):
    operation = "chaincode events"


class CommitError(GatewayError):
    """The transaction was ordered into a block but the peers marked it invalid."""

    operation = "commit"

    def __init__(self, transaction_id: str, validation_code: int, block_number: int) -> None:
        self.validation_code = validation_code
        self.validation_name = _validation_name(validation_code)
        self.block_number = block_number
        super().__init__(
            f"transaction {transaction_id} is invalid in block {block_number}: "
            f"{self.validation_name} ({validation_code})",
            transaction_id=transaction_id,
        )


def _validation_name(code: int) -> str:
    try:
        return str(transaction_pb2.TxValidationCode.Name(code))
    except ValueError:
        return "UNKNOWN_VALIDATION_CODE"


class _RpcErrorLike(Protocol):
    def code(self) -> grpc.StatusCode: ...
    def details(self) -> str | None: ...
    def trailing_metadata(self) -> Any: ...


#: How the Fabric gateway's own UNAVAILABLE answers begin (internal/pkg/gateway: submit.go, endorse.go,
#: evaluate.go); gRPC's transport failures ("failed to connect to all addresses", "Socket closed") differ.
_GATEWAY_UNAVAILABLE_PREFIXES = (
    "no orderer", "insufficient number of orderers", "no peers available", "no combination of peers",
    "failed to find any endorsing peers", "no endorsing peers",
    # A channel the peer has not joined (seen from a real v3.1.5 peer): the gateway answered.
    "failed to get config for channel",
)


def _from_gateway(message: str) -> bool:
    return message.startswith(_GATEWAY_UNAVAILABLE_PREFIXES)


def _hint(
    code: grpc.StatusCode, endpoint: str | None, timeout: float | None, plaintext: bool, message: str = ""
) -> str | None:
    # The failures users meet first, where the raw gRPC text does not say what to do next.
    if code == grpc.StatusCode.UNAVAILABLE and "orderer" in message and _from_gateway(message):
        return ("the peer's gateway reached no orderer that would take the transaction: is the ordering "
                "service up with a Raft leader? (`twinledger status`)")
    if code == grpc.StatusCode.UNAVAILABLE and _from_gateway(message):
        return None
    if code == grpc.StatusCode.UNAVAILABLE and plaintext:
        return (
            f"cannot reach the Fabric gateway at {endpoint or 'the endpoint'}: this client uses plain "
            "text (insecure=True) and Fabric peers only accept TLS; connect with tls_root_cert_pem"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return (
            f"cannot reach the Fabric gateway at {endpoint or 'the endpoint'}: is the peer running, and "
            "do the TLS settings match (CA root certificate, server name; a plain-text client cannot "
            "talk to a TLS peer)?"
        )
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        within = f" within {timeout:g}s" if timeout is not None else ""
        return f"no answer from {endpoint or 'the gateway'}{within}; the peer may be overloaded or the deadline too short"
    return None


def worth_resubmitting(error: GatewayError) -> bool:
    """True when sending the same signed envelope again may succeed where this Submit failed.

    UNAVAILABLE: the gateway reached no orderer that took the transaction (no Raft leader yet, the
    leader just died, a follower could not forward it), or we could not reach our own peer for a
    moment. DEADLINE_EXCEEDED: no answer in time (a broadcast stuck behind a forward to a dead leader).
    Resending is safe whatever happened to the first copy: same transaction id, committed at most once.
    Anything else -- ABORTED (the orderer refused the envelope: 4xx), INVALID_ARGUMENT, PERMISSION_DENIED
    -- would only be refused again.
    """
    return error.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def error_from_rpc(
    error_class: type[GatewayError],
    rpc_error: _RpcErrorLike,
    *,
    transaction_id: str | None = None,
    endpoint: str | None = None,
    timeout: float | None = None,
    peer_names: Mapping[str, str] | None = None,
    plaintext: bool = False,
) -> GatewayError:
    """Turn a ``grpc.aio.AioRpcError`` into the client's exception, decoding the per-node details."""
    code = rpc_error.code()
    details: list[ErrorDetail] = []
    for key, value in rpc_error.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            details.extend(decode_status_details(value))
    return error_class(
        rpc_error.details() or "",
        code=code,
        details=details,
        transaction_id=transaction_id,
        endpoint=endpoint,
        hint=None if details else _hint(code, endpoint, timeout, plaintext, rpc_error.details() or ""),
        peer_names=peer_names,
    )
