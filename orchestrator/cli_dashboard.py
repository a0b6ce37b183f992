"""`twinledger dashboard`: serve the web dashboard of a home on 127.0.0.1 until Ctrl-C or SIGTERM.

Every panel reads the home's Fabric network (through the Gateway, as an identity enrolled in the home) or
the stores that are local by design (the twins' status and sealed batches, the model store); a panel whose
source is down says "... unavailable: <why>" in one line.

It serves only whoever holds the login token it prints at start (the Jupyter way: open
``http://127.0.0.1:PORT/?token=...``); the token and that URL are also in HOME/dashboard/ (mode 0600) while it
runs, and `twinledger dashboard --url` prints the URL again. Grants and revocations are signed as the one
identity of `--as`; without it the page is read-only.
"""

from __future__ import annotations

import argparse
import errno
import signal
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from network.spec import SpecError, load_spec
from network.layout import Layout
from orchestrator import cli_inputs
from orchestrator.cli_common import UserError, home_of


def cmd_dashboard(args: argparse.Namespace) -> int:
    # Imported when the command runs: the dashboard pulls in federated/ and twins/, which other commands
    # do not need to load.
    from orchestrator.dashboard.auth import token_file
    from orchestrator.dashboard.server import DashboardConfig, start, stop
    from orchestrator.ledger_session import resolve_identity

    home = home_of(args)
    if args.url:
        return print_url(home)
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
    who = f"acting as {acting[0]}:{acting[1]} (grants and revocations)" if acting else "read-only (no --as)"
    # The Jupyter way: the URL with its token on a line of its own, to open or copy as it is.
    print(f"dashboard of {home}: {who}; Ctrl-C stops it\n    {server.login_url}\n"
          f"  (the login token is also in {token_file(home)}, readable by you only; "
          f"`twinledger dashboard --url --home {home}` prints the URL again)", flush=True)
    try:
        done.wait()
    finally:
        stop(server, thread)
    return 0


def print_url(home: Path) -> int:
    """`--url`: the login URL of the dashboard serving this home, as it wrote it at start."""
    from orchestrator.dashboard.auth import url_file

    try:
        url = url_file(home).read_text().strip()
    except FileNotFoundError:
        raise UserError(f"no dashboard is serving {home}: start one with `twinledger dashboard --home {home}`") from None
    except OSError as exc:
        raise UserError(f"cannot read {url_file(home)}: {exc.strerror or exc}") from None
    # A dashboard killed with SIGKILL could not remove its file: say so rather than hand out a dead URL.
    port = urlsplit(url).port
    try:
        socket.create_connection(("127.0.0.1", port or 0), timeout=2).close()
    except OSError:
        raise UserError(f"the dashboard that wrote {url_file(home)} no longer answers on 127.0.0.1:{port}; "
                        f"start one with `twinledger dashboard --home {home}`") from None
    print(url)
    return 0


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add `dashboard` to the `twinledger` parser."""
    s = sub.add_parser("dashboard", parents=[common], help="web dashboard on 127.0.0.1 (network, governance, FL, twins)")
    s.add_argument("--port", type=cli_inputs.port(allow_zero=True), default=8780, help="port on 127.0.0.1 (default 8780; 0 picks a free one)")
    s.add_argument("--as", dest="as_", metavar="ORG[:USER]",
                   help="the one identity grants/revocations from the page are signed as (e.g. hospital1, meaning "
                        "hospital1:steward); no request can choose another. Without it the page is read-only")
    s.add_argument("--url", action="store_true",
                   help="print the login URL (with its token) of the dashboard serving this home, and exit")
    s.add_argument("--twins-home", help="the twins bridge's state folder (default HOME/twins)")
    s.set_defaults(func=cmd_dashboard)
