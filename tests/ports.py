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


def _ephemeral_low() -> int:
    """Where the kernel starts handing out ports to outgoing connections (32768 on Linux by default)."""
    try:
        return int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port_base(count: int, lo: int = 20000, hi: int | None = None) -> int:
    """A base such that base..base+count-1 are all free right now (random start avoids reuse races).

    The range stays below the ephemeral ports: a port free when picked there could be taken minutes
    later as the local end of some outgoing connection (a CI run lost a demo's dashboard port that way).
    """
    hi = min(hi, _ephemeral_low()) if hi is not None else _ephemeral_low()
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(lo, hi - count, 10)
        if all(_free(p) for p in range(base, base + count)):
            return base
    raise RuntimeError(f"no free range of {count} ports on 127.0.0.1")
