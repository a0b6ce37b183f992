"""The shared options --home and --json work before or after any command, at every nesting level."""

from __future__ import annotations

import pytest

from orchestrator.cli import build_parser


@pytest.mark.parametrize("argv, home, as_json", [
    (["--home", "A", "status"], "A", False),
    (["status", "--home", "B"], "B", False),
    (["status"], None, False),
    (["--json", "status"], None, True),
    (["status", "--json"], None, True),
    (["--home", "A", "--json", "data", "list"], "A", True),
    (["data", "list", "--home", "C", "--json"], "C", True),
    (["--home", "A", "fl", "rounds", "maintenance-v1"], "A", False),
])
def test_shared_options_survive_wherever_they_are_given(argv: list[str], home: str | None, as_json: bool) -> None:
    args = build_parser().parse_args(argv)
    assert (args.home, args.json) == (home, as_json)


def test_a_value_after_the_command_wins_over_one_before() -> None:
    args = build_parser().parse_args(["--home", "A", "status", "--home", "B"])
    assert args.home == "B"
