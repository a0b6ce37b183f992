"""What every `twinledger` command module shares: the one-line user error and the state folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from network.layout import resolve_home


class UserError(Exception):
    """A problem the user can fix; printed as one line (``twinledger: ...``), exit 1, no stack trace."""


def home_of(args: argparse.Namespace) -> Path:
    return resolve_home(args.home)
