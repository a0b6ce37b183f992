"""`twinledger` commands of this capability (being written; registers nothing yet)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add this module's sub-commands to the `twinledger` parser."""
