"""Health probes: Fabric's operations endpoint (/healthz answers 200 when every checker passes) or a TCP port."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from urllib.parse import urlparse


def probe(target: str | None, timeout: float = 1.0) -> bool:
    """True when the process answers; a process without a probe counts as healthy while it runs."""
    if not target:
        return True
    if target.startswith("tcp://"):
        u = urlparse(target)
        try:
            with socket.create_connection((u.hostname or "127.0.0.1", u.port or 0), timeout=timeout):
                return True
        except OSError:
            return False
    try:
        # The operations endpoints are plain HTTP on 127.0.0.1; no proxy may stand in between.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(target, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False
