"""Several OPC-UA connections behind one bridge: several endpoints per org, and big servers split across sessions.

One ``OpcUaBridge`` is one session with one subscription. asyncua keeps every monitored item of a subscription in
one Python object and one publish loop, and a server caps what one subscription may hold (MaxMonitoredItemsPerCall,
its notification queue per publish): above a few thousand variables a single subscription falls behind. So each
endpoint's variables are split (``split_nodes``) into balanced parts of at most ``max_per_connection``, one
connection each; the parts cover the variables exactly once (a variable's ordering, de-duplication and history
refill belong to the one sequencer that owns it, ``twins.bridge.sequencer``).

``BridgeGroup`` runs them all and answers the status and metrics questions ``OpcUaBridge`` answers, summed over its
connections (``connects`` is the fewest any connection made: 2 means every connection reconnected at least once).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Any

from twins.anchoring.record import GapRecord
from twins.bridge.client import OpcUaBridge
from twins.bridge.mapping import Mapping
from twins.readings import Reading

#: Variables per OPC-UA connection (one session, one subscription) unless told otherwise.
MAX_PER_CONNECTION = 3000


def split_nodes(mapping: Mapping, max_per_connection: int = MAX_PER_CONNECTION) -> list[Mapping]:
    """``mapping`` as parts of at most ``max_per_connection`` variables, as few parts as that allows and of sizes
    differing by one at most; an asset's variables stay together where the cut allows (sorted by asset)."""
    if max_per_connection < 1:
        raise ValueError("max_per_connection must be at least 1")
    nodes = sorted(mapping.nodes, key=lambda n: (n.asset, n.prop))
    if len(nodes) <= max_per_connection:
        return [mapping]
    parts = math.ceil(len(nodes) / max_per_connection)
    base, extra = divmod(len(nodes), parts)
    out, start = [], 0
    for i in range(parts):
        chunk = nodes[start:start + base + (1 if i < extra else 0)]
        start += len(chunk)
        assets = {n.asset: mapping.assets[n.asset] for n in chunk}
        out.append(Mapping(chunk, assets, mapping.server, mapping.namespace, dict(mapping.sustainability)))
    return out


class _SeqTotals:
    """The sequencer counters the status and metrics read, summed over the group's connections."""

    def __init__(self, bridges: list[OpcUaBridge]) -> None:
        self._bridges = bridges

    def __getattr__(self, name: str) -> Any:
        return sum(getattr(b.seq, name) for b in self._bridges)


class BridgeGroup:
    def __init__(self, endpoints: list[tuple[Mapping, str | None]], deliver: Callable[[Reading], None], *,
                 on_gap: Callable[[GapRecord], None] | None = None, max_per_connection: int = MAX_PER_CONNECTION,
                 **bridge_options: Any) -> None:
        """``endpoints``: (mapping, URL or None for the mapping's ``server``) per OPC-UA server; ``bridge_options``
        go to every ``OpcUaBridge`` (positions, security, publish_ms, start_from, ...)."""
        self.bridges: list[OpcUaBridge] = []
        for mapping, url in endpoints:
            for part in split_nodes(mapping, max_per_connection):
                b = OpcUaBridge(part, deliver, url=url, **bridge_options)
                b.seq.on_gap = on_gap
                self.bridges.append(b)
        self.seq = _SeqTotals(self.bridges)
        self.values = _ValueTotals(self.bridges)

    @property
    def connected(self) -> bool:
        return all(b.connected for b in self.bridges)

    @property
    def connects(self) -> int:
        return min(b.connects for b in self.bridges)

    @property
    def disconnects(self) -> int:
        return sum(b.disconnects for b in self.bridges)

    @property
    def client_overflows(self) -> int:
        return sum(b.client_overflows for b in self.bridges)

    @property
    def last_error(self) -> str | None:
        errors = [f"{b.url}: {b.last_error}" for b in self.bridges if b.last_error]
        return "; ".join(errors) if errors else None

    def status(self) -> dict[str, Any]:
        s = self.seq
        return {"connected": self.connected, "connects": self.connects, "delivered": s.delivered,
                "duplicates": s.duplicates, "gaps": s.gaps, "replayed": s.replayed, "rereads": s.rereads, "lost": s.lost,
                "gap_records": s.gap_records, "last_error": self.last_error, "refused": self.values.refused,
                "not_good": s.not_good, "overflows": s.overflows, "fills": s.fills,
                "server_time": self.values.server_time, "client_overflows": self.client_overflows,
                "connections": len(self.bridges), "endpoints": sorted({b.url for b in self.bridges})}

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.gather(*(b.run(stop) for b in self.bridges))


class _ValueTotals(_SeqTotals):
    def __getattr__(self, name: str) -> Any:
        return sum(getattr(b.values, name) for b in self._bridges)
