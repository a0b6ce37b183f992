"""``python -m tests.fabric_double --home H``: serve a home's peers with the double until SIGTERM.

TEST DOUBLE: this is not Fabric. It stands in for the peers of a TwinLedger home until the Fabric
binaries can be built here (see the package docstring). Prints one line starting with ``ready`` once
every peer accepts connections, then serves until SIGTERM or SIGINT and exits 0. A problem (no such
home, a port in use) is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

from chaincode import compat
from tests.fabric_double.consortium import register_orgs
from tests.fabric_double.network import PortInUse, serve_home


async def _serve(home: Path, register: bool, block_ms: int | None) -> None:
    servers = await serve_home(home, block_interval=None if block_ms is None else block_ms / 1000)
    try:
        registered = await register_orgs(home) if register else []
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        peers = " ".join(f"{p.name}={p.address}" for p in servers.peers)
        orgs = f" registered={','.join(registered)}" if registered else ""
        print(f"ready channel={servers.channel.name} {peers}{orgs}", flush=True)
        await stop.wait()
    finally:
        await servers.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fabric_double",
                                     description="TEST DOUBLE of a TwinLedger home's Fabric peers (not Fabric)")
    parser.add_argument("--home", required=True, help="a home prepared by `twinledger up`")
    parser.add_argument("--register-orgs", action="store_true",
                        help="register every hospital and plant (RegisterOrg by its admin) before ready")
    parser.add_argument("--block-ms", type=int, help="block cutting interval (default: the spec's batch timeout)")
    args = parser.parse_args(argv)
    compat.apply()  # before anything logs: the shim configures logging when imported
    try:
        asyncio.run(_serve(Path(args.home).resolve(), args.register_orgs, args.block_ms))
    except (FileNotFoundError, PortInUse) as exc:
        print(f"fabric_double: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
