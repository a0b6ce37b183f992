"""Linux network namespaces a test creates for itself: one per org, each joined to one bridge by a veth pair.

The orgs then reach each other only across the bridge (each namespace has its own loopback and no other
route), and this machine's own namespace reaches them through the bridge's address, as an operator's
machine reaches the hosts of a consortium. Everything is named with the test's own tag, created with ``ip``
(root only) and removed again on exit, with any process still inside a namespace killed first.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from network.spec_model import Placement

NETNS_DIR = Path("/run/netns")


class NetnsUnavailable(RuntimeError):
    """This machine cannot create network namespaces for the test (not root, or no ``ip``)."""


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.77.100.0 - 10.77.249.0 that no interface of this machine uses yet (the start varies with
    the pid, so two runs at once pick different ones)."""
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=30).stdout
    for i in range(150):
        third = 100 + (os.getpid() + i) % 150
        if f" 10.77.{third}." not in used:
            return ipaddress.IPv4Network(f"10.77.{third}.0/24")
    raise NetnsUnavailable("no free 10.77.x.0/24 subnet on this machine")


def netns_inode(name: str) -> int:
    """The namespace's identity: the inode of /run/netns/NAME, which /proc/PID/ns/net of its processes share."""
    return (NETNS_DIR / name).stat().st_ino


def pids_in(name: str) -> list[int]:
    """The processes running in the namespace."""
    want, found = netns_inode(name), []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "ns" / "net").stat().st_ino == want:
                    found.append(int(d.name))
            except OSError:
                pass
    return found


@contextmanager
def org_namespaces(orgs: Sequence[str]) -> Iterator[dict[str, Placement]]:
    """One network namespace per org on a fresh bridge; yields org -> Placement(host, netns)."""
    if os.geteuid() != 0:
        raise NetnsUnavailable("network namespaces need root")
    if subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        raise NetnsUnavailable("the ip command (iproute2) is missing")
    tag = f"tl{os.getpid() % 100000}"
    subnet = _free_subnet()
    bridge = f"{tag}br"
    placements: dict[str, Placement] = {}
    made: list[str] = []
    try:
        _ip("link", "add", bridge, "type", "bridge")
        _ip("addr", "add", f"{subnet.network_address + 1}/{subnet.prefixlen}", "dev", bridge)
        _ip("link", "set", bridge, "up")
        for i, org in enumerate(orgs):
            ns, outer, inner = f"{tag}-{org}", f"{tag}v{i}", f"{tag}p{i}"
            host = str(subnet.network_address + 10 + i)
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", inner, "netns", ns)
            _ip("link", "set", outer, "master", bridge, "up")
            _ip("-n", ns, "addr", "add", f"{host}/{subnet.prefixlen}", "dev", inner)
            _ip("-n", ns, "link", "set", inner, "up")
            _ip("-n", ns, "link", "set", "lo", "up")  # the org's own processes also talk over its loopback
            placements[org] = Placement(host, ns)
        yield placements
    finally:
        for ns in made:
            _kill_inside(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)  # its veth goes with it
        subprocess.run(["ip", "link", "del", bridge], capture_output=True, timeout=30)


def _kill_inside(ns: str, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL, whatever still runs in the namespace (a failed test's leftovers)."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            pids = pids_in(ns)
        except OSError:
            return
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists()]
            time.sleep(0.1)


@contextmanager
def one_org_namespace_or_skip(org: str) -> Iterator[Placement]:
    """One org's namespace for a test, or the test skipped when this machine cannot make one (not root, no
    ``ip``, or no right to create links here)."""
    import pytest

    cm = org_namespaces([org])
    try:
        places = cm.__enter__()
    except (NetnsUnavailable, RuntimeError) as exc:
        pytest.skip(f"no network namespace for the test: {exc}")
    try:
        yield places[org]
    finally:
        cm.__exit__(None, None, None)
