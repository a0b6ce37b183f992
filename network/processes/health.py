"""Health probes: Fabric's operations endpoint (/healthz answers 200 when every checker passes) or a TCP port."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from urllib.parse import urlparse


def probe(target: str | None, timeout: float = 1.0) -> bool:
    """True when the process answers; a process without a probe counts as healthy while it runs.

    ``target`` may name several probes separated by spaces; all must answer (a Fabric peer's /healthz
    answers ~3 s before its gRPC listener accepts, so a peer is ready only when both do)."""
    if not target:
        return True
    targets = target.split()
    if len(targets) > 1:
        return all(probe(t, timeout) for t in targets)
    if target.startswith("tcp://"):
        u = urlparse(target)
        try:
            with socket.create_connection((u.hostname or "127.0.0.1", u.port or 0), timeout=timeout):
                return True
        except OSError:
            return False
    try:
        # The operations endpoints are plain HTTP on the nodes' hosts; no proxy may stand in between.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(target, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def scrape(port: int, name: str, timeout: float = 1.0, host: str = "127.0.0.1") -> dict[str, float] | None:
    """The samples of metric ``name`` on a node's operations endpoint, keyed by their label text
    (``channel="consortium"``); None when the endpoint does not answer."""
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(f"http://{host}:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except (urllib.error.URLError, OSError, ValueError):
        return None
    samples = {}
    for line in text.splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
            head, _, value = line.rpartition(" ")
            labels = head[len(name):].strip().strip("{}")
            samples[labels] = float(value)
    return samples
