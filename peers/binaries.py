"""Where the Fabric binaries are found: the per-user cache that scripts/build_fabric.sh fills.

Setup fails when it cannot build them, so a missing binary here means setup was not run (or another
cache folder is in use).

``TL_FABRIC_BIN`` / ``TL_FABRIC_CA_BIN`` point at other folders (e.g. binaries built on another machine).
"""

from __future__ import annotations

import os
from pathlib import Path

FABRIC_VERSION = "v3.1.5"
FABRIC_CA_VERSION = "v1.5.15"
FABRIC_COMMANDS = ("peer", "orderer", "configtxgen", "configtxlator", "osnadmin")
CA_COMMANDS = ("fabric-ca-server", "fabric-ca-client")


class BinariesMissing(RuntimeError):
    """A Fabric binary is not installed; the message says why and what to run."""


def cache_dir() -> Path:
    if os.environ.get("TL_CACHE_DIR"):
        return Path(os.environ["TL_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "twinledger"


def fabric_bin_dir() -> Path:
    env = os.environ.get("TL_FABRIC_BIN")
    return Path(env) if env else cache_dir() / f"fabric-{FABRIC_VERSION}" / "bin"


def fabric_ca_bin_dir() -> Path:
    env = os.environ.get("TL_FABRIC_CA_BIN")
    return Path(env) if env else cache_dir() / f"fabric-ca-{FABRIC_CA_VERSION}" / "bin"


def _find(folder: Path, name: str, what: str) -> Path:
    p = folder / name
    if p.is_file() and os.access(p, os.X_OK):
        return p
    raise BinariesMissing(f"{name} ({what}) not found in {folder}; run scripts/setup.sh, which builds it")


def fabric_binary(name: str) -> Path:
    """peer, orderer, configtxgen, configtxlator or osnadmin."""
    if name not in FABRIC_COMMANDS:
        raise ValueError(f"not a Fabric command: {name}")
    return _find(fabric_bin_dir(), name, "fabric")


def fabric_ca_binary(name: str) -> Path:
    if name not in CA_COMMANDS:
        raise ValueError(f"not a Fabric CA command: {name}")
    return _find(fabric_ca_bin_dir(), name, "fabric-ca")

