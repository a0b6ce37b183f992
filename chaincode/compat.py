"""Workarounds for measured defects of fabric-chaincode-python 2.5.4, applied by one call: ``apply()``.

Each patch replaces one attribute of the shim and records the original so that ``revert()`` can put it
back (the tests use that to show each defect on the unpatched code). The version is pinned because
these patches reach into the shim's internals; a new shim version must be re-checked patch by patch.

a. Stream writes are not serialized. The handler runs every peer message in its own asyncio task and
   each task calls ``context.write`` on the one gRPC stream; gRPC allows one outstanding send per call,
   so concurrent transactions fail with ``GRPC_CALL_ERROR_TOO_MANY_OPERATIONS`` and never reply.
   Fix: every stream gets a writer that holds an asyncio lock around ``write`` (Fabric's serialSend).
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
   Fabric peers use for the same two settings — and a filter for the "-->> Look out!" line the shim
   logs at WARNING for every message it receives (kept only when the shim logs at DEBUG).
g. A peer ERROR reply to GET_STATE/PUT_STATE/... is handed back as if it were a value (get_state
   returns the error text, put_state "succeeds"). Fix: the pending request fails with PeerRequestError.
h. Extra transaction arguments are silently dropped (only "too few" is checked). Fix: the count must
   match exactly, as in fabric-contract-api-go.
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
from fabric_chaincode_python.fabric_shim import msg_queue_handler
from fabric_chaincode_python.fabric_shim.logging import LOGGER as SHIM_LOGGER
from fabric_chaincode_python.fabric_shim.response import ResponseCode
from fabric_chaincode_python.fabric_shim.stub import ChaincodeStub
from fabric_protos.peer import chaincode_pb2, chaincode_shim_pb2, proposal_response_pb2

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


# --- a. one writer per stream -------------------------------------------------------------------


class SerializedStream:
    """Wraps a gRPC stream context so that only one ``write`` is in flight at a time."""

    def __init__(self, context: Any) -> None:
        self._context = context
        self._lock = asyncio.Lock()

    async def write(self, message: Any) -> None:
        async with self._lock:
            await self._context.write(message)

    def __getattr__(self, name: str) -> Any:
        # Everything but write (read, peer(), abort, ...) goes straight to the real context.
        return getattr(self._context, name)


_original_chat_with_peer = shim_handler.Handler.chat_with_peer


async def _chat_with_peer(self: Any, stream: Any, context: Any) -> Any:
    # The handler and its MsgQueueHandler both write through handler.context, which the original sets
    # from this argument: wrapping it here covers every write of the stream.
    if not isinstance(context, SerializedStream):
        context = SerializedStream(context)
    return await _original_chat_with_peer(self, stream, context)


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


class _ShimNoiseFilter(logging.Filter):
    """Drops the shim's per-message "-->> Look out!" warning unless the shim logs at DEBUG."""

    NOISE = "-->> Look out!"

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != self.NOISE or SHIM_LOGGER.isEnabledFor(logging.DEBUG)


_SHIM_NOISE_FILTER = _ShimNoiseFilter()


def configure_logging(environ: Mapping[str, str] | None = None) -> None:
    """Set sane levels on the root logger and the shim's logger (see f. above)."""
    env = os.environ if environ is None else environ
    root_level = _level(env, LOG_LEVEL_ENV, DEFAULT_LOG_LEVEL)
    shim_level = _level(env, SHIM_LOG_LEVEL_ENV, DEFAULT_SHIM_LOG_LEVEL)
    logging.getLogger().setLevel(root_level)
    SHIM_LOGGER.setLevel(shim_level)
    SHIM_LOGGER.addFilter(_SHIM_NOISE_FILTER)  # adding the same filter twice is a no-op


# --- apply / revert -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Patch:
    owner: Any
    name: str
    replacement: Callable[..., Any]


_PATCHES = (
    _Patch(shim_handler.Handler, "chat_with_peer", _chat_with_peer),
    _Patch(shim_handler.Handler, "handle_stub_interaction", _handle_stub_interaction),
    _Patch(contract_function, "_parse_param_named", _parse_param_named),
    _Patch(transaction_context.ClientIdentity, "_ensure_loaded", _ensure_loaded),
    _Patch(msg_queue_handler.QueueMessage, "success", _queue_message_success),
    _Patch(contract_function.ContractFunction, "_format_args", _format_args),
)
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
        _originals[(id(patch.owner), patch.name)] = patch.owner.__dict__[patch.name]
        setattr(patch.owner, patch.name, patch.replacement)


def revert() -> None:
    """Undo apply() (used by tests to show each defect on the unpatched shim)."""
    global _saved_levels
    for patch in _PATCHES:
        key = (id(patch.owner), patch.name)
        if key in _originals:
            setattr(patch.owner, patch.name, _originals.pop(key))
    if _saved_levels is not None:
        logging.getLogger().setLevel(_saved_levels[0])
        SHIM_LOGGER.setLevel(_saved_levels[1])
        _saved_levels = None
    SHIM_LOGGER.removeFilter(_SHIM_NOISE_FILTER)
