"""`twinledger dashboard`: serve the web dashboard of a home on 127.0.0.1 until Ctrl-C or SIGTERM.

Every panel reads the home's Fabric network (through the Gateway, as an identity enrolled in the home) or
the stores that are local by design (the twins' status and sealed batches, the model store); a panel whose
source is down says "... unavailable: <why>" in one line.
"""

from __future__ import annotations

import argparse
import errno
import signal
import threading
from pathlib import Path

from network.spec import SpecError, load_spec
from network.layout import Layout
from orchestrator.cli_common import UserError, home_of


def cmd_dashboard(args: argparse.Namespace) -> int:
    # Imported when the command runs: the dashboard pulls in federated/ and twins/, which other commands
    # do not need to load.
    from orchestrator.dashboard.server import DashboardConfig, start, stop
    from orchestrator.ledger_session import resolve_identity

    home = home_of(args)
    acting = None
    if args.as_:
        layout = Layout(home)
        if not layout.spec_file.exists():
            raise UserError(f"--as needs a network: no spec in {home}; run `twinledger up --home {home}` first")
        try:
            # Same reading of --as as the `data` commands: ORG alone means that org's steward.
            acting = resolve_identity(args.as_, load_spec(layout.spec_file), "steward")
        except SpecError as exc:
            raise UserError(str(exc)) from None
        if not layout.user_msp(*acting).exists():
            raise UserError(f"{acting[1]}@{acting[0]} is not enrolled in {home}; run `twinledger up` first")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be between 0 and 65535, not {args.port}")
    config = DashboardConfig(
        home=home, port=args.port, acting_as=acting,
        twins_home=Path(args.twins_home).resolve() if args.twins_home else None,
    )
    try:
        server, thread = start(config)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise UserError(f"port {args.port} on 127.0.0.1 is in use; pick another with --port") from None
        raise UserError(f"cannot serve on 127.0.0.1:{args.port}: {exc.strerror or exc}") from None
    done = threading.Event()
    # serve_forever runs in its own thread so that the signal handlers (main thread) can stop it cleanly.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    who = f"; grants and revocations as {acting[1]} of the org chosen on the page" if acting else " (read-only: no --as)"
    print(f"dashboard of {home} at {server.url}{who}; Ctrl-C stops it", flush=True)
    try:
        done.wait()
    finally:
        stop(server, thread)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `dashboard` to the `twinledger` parser."""
    s = sub.add_parser("dashboard", parents=[common], help="web dashboard on 127.0.0.1 (network, governance, FL, twins)")
    s.add_argument("--port", type=int, default=8780, help="port on 127.0.0.1 (default 8780; 0 picks a free one)")
    s.add_argument("--as", dest="as_", metavar="ORG[:USER]",
                   help="identity for grants/revocations from the page (e.g. hospital1, meaning hospital1:steward); the "
                        "page may switch to the same user of another org enrolled in this home. Without it the page "
                        "is read-only")
    s.add_argument("--twins-home", help="the twins bridge's state folder (default HOME/twins)")
    s.set_defaults(func=cmd_dashboard)
