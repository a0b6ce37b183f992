"""An in-process Grid: the same ServerApp logic and ClientApps, without SuperLink and SuperNodes.

Each node is one org with its own ``Context`` (node config ``org``/``task``/...), its ClientApp is called
directly when a message is pushed, and replies are pulled as from a SuperLink. Aggregation is Flower's
own strategy code (``flwr.serverapp.strategy``); governance, hashing and the client checks are ours,
unchanged. Used by unit tests and ``bench/quality.py``.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.common.constant import SUPERLINK_NODE_ID, ErrorCode
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity


class LocalGrid(Grid):
    def __init__(
        self,
        node_configs: Mapping[str, Mapping[str, Any]],
        app: ClientApp | None = None,
        run_id: int = 1,
        names: bool = True,
    ) -> None:
        """``node_configs``: org -> node config (``org`` is filled in). ``names=False`` registers nodes
        without a name (as self-registered SuperNodes are)."""
        if app is None:
            from federated.clientapp import app as default_app

            app = default_app
        self.app = app
        self._run_id = run_id
        # What the SuperLink's flwr-serverapp process sets before running a ServerApp.
        TaskIdentity.task_id = 1
        TaskIdentity.run_id = run_id
        TaskIdentity.node_id = SUPERLINK_NODE_ID
        self.nodes: dict[int, tuple[NodeInfo, Context]] = {}
        for i, (org, nc) in enumerate(node_configs.items()):
            node_id = 1000 + i
            info = NodeInfo(node_id=node_id, name=org if names else "", public_key=b"")
            ctx = Context(run_id=run_id, node_id=node_id, node_config={"org": org, **dict(nc)}, state=RecordDict(),
                          run_config={})  # fmt: skip
            self.nodes[node_id] = (info, ctx)
        self._replies: dict[str, Message] = {}
        self.sent: list[Message] = []  # every message pushed, for tests

    def set_run(self, run: Run) -> None:
        self._run_id = run.run_id

    @property
    def run(self) -> Run:
        return Run.create_empty(self._run_id)

    def create_message(self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str,
                       ttl: float | None = None) -> Message:  # fmt: skip
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.nodes)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [info for info, _ in self.nodes.values()]

    def node_id_of(self, org: str) -> int:
        return next(nid for nid, (_, ctx) in self.nodes.items() if ctx.node_config["org"] == org)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            mid = uuid.uuid4().hex
            msg.metadata.__dict__["_message_id"] = mid
            msg.metadata.__dict__["_run_id"] = self._run_id
            self.sent.append(msg)
            node = self.nodes.get(msg.metadata.dst_node_id)
            if node is None:
                reply = Message(Error(code=ErrorCode.NODE_UNAVAILABLE, reason="no such node"), reply_to=msg)
            else:
                try:
                    reply = self.app(msg, node[1])
                except Exception as exc:  # noqa: BLE001 -- as the SuperNode turns a crash into an error reply
                    reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=f"{type(exc).__name__}: {exc}"),
                                    reply_to=msg)  # fmt: skip
            reply.metadata.__dict__["_message_id"] = hashlib.sha256(mid.encode()).hexdigest()
            self._replies[mid] = reply
            ids.append(mid)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(m) for m in list(message_ids) if m in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(self.push_messages(messages))
