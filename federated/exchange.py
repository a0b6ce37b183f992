"""The governed server's message exchange with the federation's nodes.

``GrantedGrid`` is a view of a Flower grid that shows only the admitted nodes, so a wrapped strategy
samples among the participants; ``send_and_receive`` pushes messages and pulls the replies, polling every
``poll_interval`` s (instead of the 3 s of ``Grid.send_and_receive``) and noticing a node that will never
answer (it left, or came back as a new process) instead of waiting out the whole timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from flwr.app import Message
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.node_pb2 import NodeInfo  # pylint: disable=no-name-in-module
from flwr.serverapp import Grid

log = logging.getLogger("federated.exchange")


class GrantedGrid(Grid):
    """A view of a grid that only shows the granted nodes (so the wrapped strategy samples among them)."""

    def __init__(self, grid: Grid, node_ids: Iterable[int]) -> None:
        self._grid = grid
        self._ids = list(node_ids)

    def set_run(self, run) -> None:  # noqa: ANN001
        self._grid.set_run(run)

    @property
    def run(self):  # noqa: ANN201
        return self._grid.run

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # noqa: ANN001,ANN201
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._ids)

    def get_nodes(self) -> Iterable[NodeInfo]:
        return [n for n in self._grid.get_nodes() if n.node_id in self._ids]

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        return self._grid.push_messages(messages)

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return self._grid.pull_messages(message_ids)

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self._grid.send_and_receive(messages, timeout=timeout)


def activations(grid: Grid) -> dict[int, str]:
    """node id -> when it last activated, of the nodes the SuperLink has online."""
    return {n.node_id: str(getattr(n, "last_activated_at", "")) for n in grid.get_nodes()}


def send_and_receive(
    grid: Grid, messages: Iterable[Message], timeout: float, *, poll_interval: float, watch_interval: float,
    lost: dict[int, str],
) -> list[Message]:
    """Push, then pull replies until every message is answered, lost, or ``timeout`` passes.

    A message is *lost* when its SuperNode left the federation or came back as a new process after
    the push (``NodeInfo.last_activated_at`` changed): a SuperNode pulls a message once, so a killed
    one's message is never answered, and Flower 1.41 only turns it into a NODE_UNAVAILABLE error
    while the node is offline -- a supervisor that restarts the SuperNode can make that window
    vanish, and the round would wait the whole ``timeout``. An error reply the SuperLink itself sends
    for a node (NODE_UNAVAILABLE) counts as lost too. ``lost`` (a dict the caller keeps) gets why, per
    node; the nodes' activations are checked every ``watch_interval`` s."""
    msgs = list(messages)
    before = activations(grid)
    pending = dict(zip(grid.push_messages(msgs), (m.metadata.dst_node_id for m in msgs), strict=True))
    deadline = time.monotonic() + timeout
    next_watch = time.monotonic() + watch_interval
    replies: list[Message] = []
    while pending:
        for m in grid.pull_messages(set(pending)):
            nid = pending.pop(m.metadata.reply_to_message_id, None)
            if nid is not None and m.metadata.src_node_id == SUPERLINK_NODE_ID and m.has_error():
                # the SuperLink answering for the node (NODE_UNAVAILABLE: it missed its heartbeats)
                lost[nid] = f"the SuperLink reports its SuperNode unavailable ({m.error.reason})"
                log.warning("no reply from node %s: %s", nid, lost[nid])
                continue
            replies.append(m)
        if not pending or time.monotonic() >= deadline:
            break
        if time.monotonic() >= next_watch:
            next_watch = time.monotonic() + watch_interval
            now = activations(grid)
            for mid, nid in list(pending.items()):
                if nid not in now:
                    lost[nid] = "its SuperNode left the federation during the exchange"
                elif before.get(nid) != now[nid]:
                    lost[nid] = "its SuperNode restarted during the exchange (the message it held is lost)"
                else:
                    continue
                del pending[mid]
                log.warning("no reply from node %s: %s", nid, lost[nid])
        time.sleep(poll_interval)
    return replies
