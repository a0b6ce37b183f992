"""Free 127.0.0.1 port ranges for tests, so runs (and parallel runs) never collide."""

from __future__ import annotations

import random
import socket


def _free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port_base(count: int, lo: int = 20000, hi: int = 60000) -> int:
    """A base such that base..base+count-1 are all free right now (random start avoids reuse races)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(lo, hi - count, 10)
        if all(_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no free range of {count} ports on 127.0.0.1")
