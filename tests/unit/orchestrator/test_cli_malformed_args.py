"""Bad command lines, generated for every `twinledger` command: one line, exit 2, nothing run.

The parser tree is walked, so a command added later is covered without a new test. For each command:
no arguments (when some are required), an unknown option, an option without its value, and for every
option or positional that takes a number, the values that number cannot be (a word, NaN, infinities,
negatives and zero where they mean nothing, numbers past any port). Each must stop in the parser --
before the command's function, which is what starts networks and calls peers, could run -- with ONE
stderr line ``twinledger: error: COMMAND: ... (see `twinledger COMMAND --help`)`` and exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator

import pytest

from orchestrator.cli import build_parser

BAD_NUMBERS = ("x", "", "nan", "NaN", "inf", "-inf", "1e999", "-1", "0", "1.5", "99999999999999999999", "0x10", "٣", "²")


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, child in subs[0].choices.items():
        yield from _leaves(child, (*path, name))


LEAVES = dict(_leaves(build_parser()))


def _required_filler(parser: argparse.ArgumentParser, skip: argparse.Action | None = None) -> list[str]:
    """Valid values for every required argument but ``skip`` (so the error is about the one under test)."""
    argv: list[str] = []
    for a in parser._actions:
        if a is skip or isinstance(a, argparse._HelpAction):
            continue
        good = {"--sha256": "a" * 64, "--action": "monitor"}.get(a.option_strings[-1] if a.option_strings else "", "1")
        if a.choices and good not in a.choices:
            good = next(iter(a.choices))
        if not a.option_strings and a.nargs != "?":
            argv.append(good if a.type is not None else "plant1.m1")
        elif a.required:
            argv += [a.option_strings[-1], good]
    return argv


def _cases() -> Iterator[tuple[str, tuple[str, ...], list[str]]]:
    for path, parser in LEAVES.items():
        name = " ".join(path)
        required = [a for a in parser._actions if a.required or (not a.option_strings and a.nargs not in ("?", "*"))]
        if required:
            yield f"{name}: nothing given", path, []
        yield f"{name}: unknown option", path, [*_required_filler(parser), "--no-such-option"]
        yield f"{name}: stray argument", path, [*_required_filler(parser), "stray", "extra"]
        for a in parser._actions:
            if a.option_strings and a.nargs is None and not isinstance(a, argparse._HelpAction):
                yield f"{name}: {a.option_strings[-1]} without a value", path, [*_required_filler(parser), a.option_strings[-1]]
            if a.type is None or a.type is str:
                continue
            for value in BAD_NUMBERS:
                try:
                    a.type(value)
                except (argparse.ArgumentTypeError, ValueError, TypeError):
                    pass
                else:
                    continue  # a value this argument takes (e.g. 0 for "no metrics")
                given = [a.option_strings[-1], value] if a.option_strings else [value]
                filler = _required_filler(parser, skip=a)
                if not a.option_strings:  # positionals keep their place: the bad one replaces its filler
                    index = [x for x in parser._actions if not x.option_strings and x.nargs != "?"
                             and not isinstance(x, argparse._SubParsersAction)].index(a)
                    filler[index:index] = given
                    given = []
                yield f"{name}: {a.dest}={value!r}", path, [*filler, *given]


CASES = list(_cases())


def test_every_number_a_command_takes_is_checked_while_parsing() -> None:
    """No bare int/float is left: those take nan, inf, negatives and ports past 65535 without a word."""
    loose = [f"{' '.join(p)} {a.dest}" for p, parser in LEAVES.items() for a in parser._actions if a.type in (int, float)]
    assert not loose, loose
    assert len(LEAVES) >= 25 and len(CASES) >= 300, (len(LEAVES), len(CASES))


@pytest.mark.parametrize("case, path, argv", CASES, ids=[c[0] for c in CASES])
def test_a_bad_command_line_is_one_line_and_exit_2(case: str, path: tuple[str, ...], argv: list[str],
                                                   capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args([*path, *argv, "--home", str(tmp_path / "h")])
    out, err = capsys.readouterr()
    assert stop.value.code == 2 and out == "", (case, out, err)
    assert err.endswith("\n") and err.count("\n") == 1, err
    command = " ".join(("twinledger", *path))
    assert err.startswith("twinledger: error: ") and f"(see `{command} --help`)" in err, err
    assert not (tmp_path / "h").exists()
