"""Workarounds for measured defects of fabric-chaincode-python 2.5.4, applied by one call: ``apply()``.

Each patch replaces (or, for i-k, defines on ChaincodeStub over the interface's placeholder) one
attribute of the shim and records the original so that ``revert()`` can put it back (the tests use
that to show each defect on the unpatched code). The version is pinned because
these patches reach into the shim's internals; a new shim version must be re-checked patch by patch.

a. Stream writes are not serialized: concurrent transactions fail with
   ``GRPC_CALL_ERROR_TOO_MANY_OPERATIONS`` and never reply. Fix: one writer per stream (shim_stream.py).
b. ``stub.set_event()`` stores the event on the stub but the COMPLETED message never carries it.
   Fix: the COMPLETED message's ``chaincode_event`` holds the last event set (Fabric keeps one per tx).
c. An exception escaping ``Chaincode.invoke`` (or stub construction) kills the task without a reply,
   so the peer waits its execute timeout (30 s by default). Fix: reply at once with an ERROR message
   whose payload is the error text, as the Go and Java shims do.
d. A transaction function's unannotated ``ctx`` parameter is counted as an argument (the shim's
   name-based check exists but is never called). Fix: an unannotated first parameter named like a
   context is the context.
e. ``ClientIdentity.get_attribute()`` always returns None (attributes are never parsed).
   Fix: parse the Fabric CA attribute extension of the creator's certificate.
f. Importing the shim runs ``logging.basicConfig(level=DEBUG)`` and the shim logs every message's
   payload at INFO, so ledger values land in logs. Fix: root level from CORE_CHAINCODE_LOGGING_LEVEL
   (default INFO), the shim's logger from CORE_CHAINCODE_LOGGING_SHIM (default WARNING) — the names
   Fabric peers use for the same two settings. (The "-->> Look out!" WARNING the shim logs for every
   message it receives is gone with l.)
g. A peer ERROR reply to GET_STATE/PUT_STATE/... is handed back as if it were a value (get_state
   returns the error text, put_state "succeeds"). Fix: the pending request fails with PeerRequestError.
h. Extra transaction arguments are silently dropped (only "too few" is checked). Fix: the count must
   match exactly, as in fabric-contract-api-go.
i. ``stub.get_transient()`` always returns None: the stub decodes the proposal payload but only the
   interface's empty placeholder answers. Fix: return the payload's TransientMap (private inputs, such
   as consent records, that must not travel as arguments, because arguments land on the channel).
j. The private data calls (``get_private_data``, ``put_private_data``, ``get_private_data_hash``) are
   the interface's argument-less placeholders: any call raises TypeError and nothing is sent.
   Fix: GET_STATE / PUT_STATE with the collection set (the handler already sends the field) and a
   GET_PRIVATE_DATA_HASH request, as the Go shim does.
k. ``set_state_validation_parameter`` / ``get_state_validation_parameter`` are argument-less
   placeholders too: key-level endorsement is impossible. Fix: PUT_STATE_METADATA /
   GET_STATE_METADATA with the VALIDATION_PARAMETER metakey, as the Go shim does.
l. The chat loop formats every received message (the proposal as protobuf text, ~0.1 ms per transaction)
   into INFO lines that logging then drops. Fix: the same loop without them (shim_stream.py).
m. A range query read to its end still sends QUERY_STATE_CLOSE, a round trip through the peer for a query the
   peer closed itself with its last page (Fabric's query response builder cleans the query context up when
   has_more is false). Fix: no close message for an exhausted query; one stopped early still sends it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fabric_chaincode_python.fabric_contract_api.contractapi import transaction_context
from fabric_chaincode_python.fabric_contract_api.internal import contract_function
from fabric_chaincode_python.fabric_shim import handler as shim_handler
from fabric_chaincode_python.fabric_shim import iterators as shim_iterators
from fabric_chaincode_python.fabric_shim import msg_queue_handler
from fabric_chaincode_python.fabric_shim.logging import LOGGER as SHIM_LOGGER
from fabric_chaincode_python.fabric_shim.response import ResponseCode
from fabric_chaincode_python.fabric_shim.stub import VALIDATION_PARAMETER, ChaincodeStub
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, proposal_response_pb2

from chaincode import shim_stream
from chaincode.identity import IdentityError, certificate_attributes

LOG = logging.getLogger(__name__)

SHIM_VERSION = "2.5.4"
LOG_LEVEL_ENV = "CORE_CHAINCODE_LOGGING_LEVEL"
SHIM_LOG_LEVEL_ENV = "CORE_CHAINCODE_LOGGING_SHIM"
DEFAULT_LOG_LEVEL = logging.INFO
DEFAULT_SHIM_LOG_LEVEL = logging.WARNING
#: Parameter names the shim itself means to treat as the transaction context (its unused _parse_param).
CONTEXT_PARAMETER_NAMES = ("ctx", "context", "ctx_", "transaction_context")

Message = chaincode_shim_pb2.ChaincodeMessage


class CompatConfigError(ValueError):
    """A logging setting in the environment is not a level name."""


class PeerRequestError(Exception):
    """The peer answered a chaincode request (GET_STATE, PUT_STATE, ...) with ERROR."""


# --- a + l. the stream: chaincode/shim_stream.py ---------------------------------------------------

SerializedStream = shim_stream.SerializedStream
_original_chat_with_peer = shim_stream.original_chat_with_peer


# --- b + c. the reply to INIT / TRANSACTION --------------------------------------------------------


def _error_text(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


async def _handle_stub_interaction(self: Any, msg: Any, action: str = "Invoke") -> None:
    """Run Init/Invoke and always answer the peer: COMPLETED (with the event) or ERROR."""
    try:
        cc_input = chaincode_pb2.ChaincodeInput.FromString(msg.payload)
        stub = ChaincodeStub(self, msg.channel_id, msg.txid, cc_input, msg.proposal)
        if (action or "").lower() == "init":
            response = await self.chaincode.init(stub)
        else:
            response = await self.chaincode.invoke(stub)
    except Exception as exc:  # noqa: BLE001 - anything escaping must still produce a reply (c)
        text = _error_text(exc)
        LOG.warning("transaction failed channel=%s txid=%s error=%s", msg.channel_id, msg.txid, text)
        await self.context.write(
            Message(type=Message.ERROR, payload=text.encode("utf-8"), txid=msg.txid, channel_id=msg.channel_id)
        )
        return

    if not isinstance(response, proposal_response_pb2.Response) or not response.status:
        response = proposal_response_pb2.Response(
            status=ResponseCode.ERROR, message=f"chaincode {action}() returned no success or error response"
        )
    completed = Message(
        type=Message.COMPLETED, payload=response.SerializeToString(), txid=msg.txid, channel_id=msg.channel_id
    )
    events = stub.get_events()
    if events:
        # Like the Go shim, only the last event is sent: a Fabric transaction carries one event (b).
        completed.chaincode_event.CopyFrom(events[-1])
    await self.context.write(completed)


# --- d. unannotated ctx -------------------------------------------------------------------------

_original_parse_param_named = contract_function._parse_param_named


def _parse_param_named(p: inspect.Parameter, annotation: Any, context_handler_type: Any) -> tuple[bool, Any]:
    if p.annotation is inspect.Parameter.empty and p.name in CONTEXT_PARAMETER_NAMES:
        return True, context_handler_type
    return _original_parse_param_named(p, annotation, context_handler_type)


# --- e. certificate attributes ------------------------------------------------------------------

_original_ensure_loaded = transaction_context.ClientIdentity._ensure_loaded


def _ensure_loaded(self: Any) -> None:
    if self._loaded:
        return
    _original_ensure_loaded(self)
    if self._cert:
        try:
            self._attrs = certificate_attributes(self._cert)
        except IdentityError as exc:
            # No attributes is the safe answer: every role check then denies.
            LOG.warning("caller attributes unreadable: %s", exc)
            self._attrs = {}


# --- g. peer ERROR replies ----------------------------------------------------------------------

_original_queue_message_success = msg_queue_handler.QueueMessage.success


def _queue_message_success(self: Any, response: Any) -> None:
    if getattr(response, "type", None) == Message.ERROR:
        detail = bytes(response.payload).decode("utf-8", errors="replace")
        self.future.set_exception(PeerRequestError(f"{self.get_method()} failed: {detail}"))
        return
    _original_queue_message_success(self, response)


# --- h. exact argument count --------------------------------------------------------------------

_original_format_args = contract_function.ContractFunction._format_args


def _format_args(self: Any, ctx: Any, supplementary_metadata: Any, components: Any, params: list[str],
                 serializer: Any) -> list[Any]:
    expected = len(self.params.fields)
    if len(params) != expected:
        raise ValueError(f"incorrect number of params. Expected {expected}, received {len(params)}")
    return _original_format_args(self, ctx, supplementary_metadata, components, params, serializer)


# --- i. transient map ---------------------------------------------------------------------------


def _get_transient(self: Any) -> dict[str, bytes]:
    """The proposal's transient map; empty when the transaction has no (decodable) proposal."""
    # Once decoded, the shim keeps the proposal as a dict whose "payload" is the ChaincodeProposalPayload.
    decoded = self.signed_proposal_pb
    if not isinstance(decoded, dict):
        return {}
    payload = decoded.get("proposal", {}).get("payload")
    if payload is None:
        return {}
    return {key: bytes(value) for key, value in payload.TransientMap.items()}


# --- j + k. requests the shim has no handler call for ---------------------------------------------


async def _ask_peer(stub: Any, kind: int, request: Any, method: str) -> Any:
    """Send one request for the stub's transaction and wait for the peer's RESPONSE message.

    Goes through the handler's per-transaction queue like the shim's own calls (one request in
    flight per transaction), so an ERROR reply raises PeerRequestError (g) here too.
    """
    handler = stub.client
    message = Message(type=kind, payload=request.SerializeToString(), txid=stub.tx_id, channel_id=stub.channel_id)
    future = asyncio.get_running_loop().create_future()
    await handler.msg_queue_handler.queue_msg(msg_queue_handler.QueueMessage(message, method, future))
    return await future


def _collection(collection: Any) -> str:
    # The Go shim's check: an empty collection would silently address the public world state.
    if not isinstance(collection, str) or not collection:
        raise ValueError("collection must not be an empty string")
    return collection


def _key(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError("key must not be an empty string")
    return key


async def _get_private_data(self: Any, collection: str, key: str) -> bytes:
    """The committed value of key in collection (empty bytes when absent); needs the data on this peer."""
    return bytes(await self.client.handle_get_state(_collection(collection), _key(key), self.channel_id, self.tx_id))


async def _put_private_data(self: Any, collection: str, key: str, value: bytes | str) -> None:
    """Write key in collection: the value goes to the collection's members, its hash to the channel."""
    data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    await self.client.handle_put_state(_collection(collection), _key(key), data, self.channel_id, self.tx_id)


async def _get_private_data_hash(self: Any, collection: str, key: str) -> bytes:
    """SHA-256 of the committed private value (empty when absent); every peer of the channel has it."""
    request = chaincode_shim_pb2.GetState(key=_key(key), collection=_collection(collection))
    reply = await _ask_peer(self, Message.GET_PRIVATE_DATA_HASH, request, "GetPrivateDataHash")
    return bytes(reply.payload)


async def _set_state_validation_parameter(self: Any, key: str, policy: bytes) -> None:
    """Attach a key-level endorsement policy (e.g. chaincode.endorsement.peers_of) to a public key."""
    request = chaincode_shim_pb2.PutStateMetadata(
        key=_key(key), collection="",
        metadata=chaincode_shim_pb2.StateMetadata(metakey=VALIDATION_PARAMETER, value=bytes(policy)),
    )
    await _ask_peer(self, Message.PUT_STATE_METADATA, request, "PutStateMetadata")


async def _get_state_validation_parameter(self: Any, key: str) -> bytes:
    """The committed key-level endorsement policy of a public key (empty when it has none)."""
    request = chaincode_shim_pb2.GetStateMetadata(key=_key(key), collection="")
    reply = await _ask_peer(self, Message.GET_STATE_METADATA, request, "GetStateMetadata")
    for entry in chaincode_shim_pb2.StateMetadataResult.FromString(reply.payload).entries:
        if entry.metakey == VALIDATION_PARAMETER:
            return bytes(entry.value)
    return b""


# --- f. logging ---------------------------------------------------------------------------------


_LEVEL_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL", "PANIC": "CRITICAL", "DPANIC": "CRITICAL"}


def _level(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name, "").strip()
    if not value:
        return default
    # Fabric (zap) spells levels "warn" and "fatal"; Python's names are accepted too, in any case.
    name_upper = _LEVEL_ALIASES.get(value.upper(), value.upper())
    level = logging.getLevelName(name_upper)
    if not isinstance(level, int):
        raise CompatConfigError(f"{name}={value!r} is not a log level: use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def configure_logging(environ: Mapping[str, str] | None = None) -> None:
    """Set sane levels on the root logger and the shim's logger (see f. above)."""
    env = os.environ if environ is None else environ
    root_level = _level(env, LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL)
    shim_level = _level(env, SHIM_LOG_LEVEL_ENV, DEFAULT_SHIM_LOG_LEVEL)
    logging.getLogger().setLevel(root_level)
    SHIM_LOGGER.setLevel(shim_level)


# --- m. no close message for an exhausted range query -----------------------------------------------------

_original_query_close = shim_iterators._QueryIteratorBase._close


async def _query_close(self: Any) -> None:
    if not self._closed and self._id is not None and not self._has_more:
        self._closed = True  # the peer cleaned this query up with its last page (has_more false)
        return
    await _original_query_close(self)


# --- apply / revert -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patch:
    owner: Any
    name: str
    replacement: Callable[..., Any]


_PATCHES = (
    _Patch(shim_handler.Handler, "chat_with_peer", shim_stream.chat_with_peer),
    _Patch(shim_handler.Handler, "handle_message", shim_stream.handle_message),
    _Patch(shim_handler.Handler, "handle_stub_interaction", _handle_stub_interaction),
    _Patch(contract_function, "_parse_param_named", _parse_param_named),
    _Patch(transaction_context.ClientIdentity, "_ensure_loaded", _ensure_loaded),
    _Patch(msg_queue_handler.QueueMessage, "success", _queue_message_success),
    _Patch(contract_function.ContractFunction, "_format_args", _format_args),
    _Patch(ChaincodeStub, "get_transient", _get_transient),
    _Patch(ChaincodeStub, "get_private_data", _get_private_data),
    _Patch(ChaincodeStub, "put_private_data", _put_private_data),
    _Patch(ChaincodeStub, "get_private_data_hash", _get_private_data_hash),
    _Patch(ChaincodeStub, "set_state_validation_parameter", _set_state_validation_parameter),
    _Patch(ChaincodeStub, "get_state_validation_parameter", _get_state_validation_parameter),
    _Patch(shim_iterators._QueryIteratorBase, "_close", _query_close),
)
#: Stands for "the class did not define the attribute itself" (i, j, k fill in inherited placeholders).
_ABSENT = object()
_originals: dict[tuple[int, str], Any] = {}
_saved_levels: tuple[int, int] | None = None


def is_applied() -> bool:
    return bool(_originals)


def apply(environ: Mapping[str, str] | None = None) -> None:
    """Apply every workaround; calling it again only re-reads the logging levels.

    Call it before building a ContractChaincode: transaction signatures (d) are parsed when the
    contracts are registered.
    """
    global _saved_levels
    import fabric_chaincode_python

    if fabric_chaincode_python.VERSION != SHIM_VERSION:
        raise RuntimeError(
            f"chaincode.compat targets fabric-chaincode-python {SHIM_VERSION}, found "
            f"{fabric_chaincode_python.VERSION}: re-check every workaround before changing the pin"
        )
    if _saved_levels is None:
        _saved_levels = (logging.getLogger().level, SHIM_LOGGER.level)
    configure_logging(environ)
    if _originals:
        return
    for patch in _PATCHES:
        _originals[(id(patch.owner), patch.name)] = patch.owner.__dict__.get(patch.name, _ABSENT)
        setattr(patch.owner, patch.name, patch.replacement)


def revert() -> None:
    """Undo apply() (used by tests to show each defect on the unpatched shim)."""
    global _saved_levels
    for patch in _PATCHES:
        key = (id(patch.owner), patch.name)
        if key in _originals:
            original = _originals.pop(key)
            if original is _ABSENT:
                delattr(patch.owner, patch.name)  # the inherited placeholder answers again
            else:
                setattr(patch.owner, patch.name, original)
    if _saved_levels is not None:
        logging.getLogger().setLevel(_saved_levels[0])
        SHIM_LOGGER.setLevel(_saved_levels[1])
        _saved_levels = None
