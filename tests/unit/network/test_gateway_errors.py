"""Error messages built from gRPC status errors carrying Fabric gateway ErrorDetails."""

from __future__ import annotations

import grpc
from fabric_protos.gateway import gateway_pb2

from network.gateway_errors import (
    STATUS_DETAILS_KEY,
    CommitError,
    EndorseError,
    ErrorDetail,
    EvaluateError,
    GatewayError,
    RpcStatus,
    SubmitError,
    decode_status_details,
    encode_status_details,
    error_from_rpc,
    worth_resubmitting,
)


def _rpc_error(code: grpc.StatusCode, message: str, status_bytes: bytes | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata()
    if status_bytes is not None:
        trailing.add(STATUS_DETAILS_KEY, status_bytes)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, message)


def test_endorse_error_names_each_peer() -> None:
    status = encode_status_details(
        grpc.StatusCode.ABORTED,
        "failed to endorse transaction, see attached details for more info",
        [
            ErrorDetail(
                "127.0.0.1:7051",
                "Hospital1MSP",
                "chaincode response 500, access denied: role client may not grant",
            )
        ],
    )
    error = error_from_rpc(
        EndorseError,
        _rpc_error(grpc.StatusCode.ABORTED, "failed to endorse transaction, see attached details for more info", status),
        transaction_id="tx1",
        endpoint="127.0.0.1:7051",
        peer_names={"127.0.0.1:7051": "peer0.hospital1"},
    )
    assert isinstance(error, GatewayError)
    assert str(error) == (
        "endorse failed: peer0.hospital1 (Hospital1MSP @127.0.0.1:7051): "
        "chaincode response 500, access denied: role client may not grant"
    )
    assert error.code == grpc.StatusCode.ABORTED
    assert error.transaction_id == "tx1"
    assert error.details[0].msp_id == "Hospital1MSP"


def test_status_built_with_real_any_and_foreign_details() -> None:
    # A status as Go's grpc status.WithDetails writes it, plus a detail type we do not know.
    status = RpcStatus(code=10, message="see details")
    status.details.add().Pack(gateway_pb2.ErrorDetail(address="o1:7050", msp_id="OrdererMSP", message="boom"))
    foreign = status.details.add()
    foreign.type_url = "type.googleapis.com/google.rpc.DebugInfo"
    foreign.value = b"\x0a\x01x"
    status.details.add().Pack(gateway_pb2.ErrorDetail(address="o2:7050", msp_id="OrdererMSP", message="down"))
    details = decode_status_details(status.SerializeToString())
    assert details == [ErrorDetail("o1:7050", "OrdererMSP", "boom"), ErrorDetail("o2:7050", "OrdererMSP", "down")]
    error = error_from_rpc(SubmitError, _rpc_error(grpc.StatusCode.UNAVAILABLE, "no orderers", status.SerializeToString()))
    assert str(error) == "submit failed: OrdererMSP @o1:7050: boom; OrdererMSP @o2:7050: down"


def test_garbage_status_is_ignored() -> None:
    assert decode_status_details(b"\xff\xff") == []
    error = error_from_rpc(EvaluateError, _rpc_error(grpc.StatusCode.NOT_FOUND, "channel x not found", b"\xff\xff"))
    assert str(error) == "evaluate failed: NOT_FOUND: channel x not found"


def test_unavailable_and_deadline_hints() -> None:
    unavailable = error_from_rpc(
        EvaluateError, _rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"), endpoint="127.0.0.1:7051"
    )
    assert str(unavailable).startswith("evaluate failed: UNAVAILABLE: Socket closed (cannot reach the Fabric gateway at 127.0.0.1:7051")
    assert "TLS" in str(unavailable)
    plaintext = error_from_rpc(
        EvaluateError, _rpc_error(grpc.StatusCode.UNAVAILABLE, "Socket closed"), endpoint="p:1", plaintext=True
    )
    assert "plain text (insecure=True) and Fabric peers only accept TLS" in str(plaintext)

    late = error_from_rpc(
        EndorseError, _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded"), endpoint="p:1", timeout=0.5
    )
    assert "DEADLINE_EXCEEDED" in str(late) and "within 0.5s" in str(late)


def test_commit_error_names_validation_code() -> None:
    error = CommitError("tx9", 11, 42)
    assert isinstance(error, GatewayError)
    assert error.validation_name == "MVCC_READ_CONFLICT"
    assert str(error) == "commit failed: transaction tx9 is invalid in block 42: MVCC_READ_CONFLICT (11)"
    assert CommitError("tx", 9999, 1).validation_name == "UNKNOWN_VALIDATION_CODE"


def test_only_for_now_failures_are_worth_resubmitting() -> None:
    """The client sends the same envelope again only when the ordering service could not take it for now."""
    def submit_error(code: grpc.StatusCode, message: str) -> SubmitError:
        return SubmitError(message, code=code)

    assert worth_resubmitting(submit_error(grpc.StatusCode.UNAVAILABLE, "no orderers could successfully process transaction"))
    assert worth_resubmitting(submit_error(grpc.StatusCode.DEADLINE_EXCEEDED, "submit timeout expired"))
    for code in (grpc.StatusCode.ABORTED, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED,
                 grpc.StatusCode.FAILED_PRECONDITION):
        assert not worth_resubmitting(submit_error(code, "refused"))
