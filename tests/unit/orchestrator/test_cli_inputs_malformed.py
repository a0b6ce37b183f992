"""The readers behind `twinledger` options refuse what cannot mean anything, as one UserError line."""

from __future__ import annotations

import argparse
import datetime as dt

import pytest

from orchestrator.cli_common import UserError
from orchestrator.cli_inputs import expiry_of, finite, json_object_of, port, sha256_of, whole
from orchestrator.cli_twins_views import speed_factor

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.timezone.utc)


@pytest.mark.parametrize("value, needle", [
    ("9999999d", "past the year 9999"), ("99999-01-01T00:00:00Z", "neither a time"), ("2026-13-01T00:00:00Z", "neither a time"),
    ("2020-01-01T00:00:00Z", "not in the future"), ("2030-01-01T00:00:00", "no time zone"), ("0s", "neither"),
    ("-5d", "neither"), ("1e5s", "neither"), ("", "neither"), ("30 d", "neither"), ("2030-01-01T00:00:00+25:00", "neither"),
    ("３０d", "neither"),
])
def test_bad_expiry(value: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle) as err:
        expiry_of("--expires", value, now=NOW)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999", "nan%", "inf%", "1e999rpm", "nanrpm", "x", "%", "rpm", "",
                                   "--10%", "x-"])
def test_bad_speed(value: str) -> None:
    with pytest.raises(UserError, match="--speed"):
        speed_factor(value, 1500.0)


def test_good_speeds() -> None:
    assert speed_factor("-10%", 1500.0) == pytest.approx(0.9)
    assert speed_factor("1350rpm", 1500.0) == pytest.approx(0.9)
    assert speed_factor("x0.9", None) == pytest.approx(0.9)


@pytest.mark.parametrize("parse, value", [
    (whole(1), "0"), (whole(1), "-1"), (whole(1), "1.0"), (whole(1), "x"), (whole(1), ""), (whole(0, 5), "6"),
    (finite(0.0), "nan"), (finite(0.0), "-inf"), (finite(0.0), "inf"), (finite(0.0), "-0.001"), (finite(0.0, above=True), "0"),
    (finite(0.0, maximum=10), "10.5"), (finite(0.0), "1e999"), (port(), "0"), (port(), "65536"), (port(True), "-1"),
])
def test_argparse_types_refuse(parse, value: str) -> None:
    with pytest.raises((argparse.ArgumentTypeError, ValueError)) as err:
        parse(value)
    assert "\n" not in str(err.value) and repr(value) in str(err.value)


def test_argparse_types_accept() -> None:
    assert whole(1)("3") == 3 and finite(0.0)("0") == 0.0 and port(True)("0") == 0 and port()("65535") == 65535


@pytest.mark.parametrize("value, needle", [
    ("{", "neither a JSON object nor a JSON file"), ("[1]", "must be a JSON object"), ('"x"', "must be a JSON object"),
    ("null", "must be a JSON object"), ("{'a': 1}", "neither"), ("", "neither"),
])
def test_bad_json_objects(value: str, needle: str) -> None:
    with pytest.raises(UserError, match=needle):
        json_object_of("--schema", value)


def test_bad_digest_paths(tmp_path) -> None:
    for value in (str(tmp_path), str(tmp_path / "missing"), "/dev/zero", "ab" * 31, "g" * 64, ""):
        with pytest.raises(UserError, match="--sha256"):
            sha256_of("--sha256", value)
    latin = tmp_path / "schema.json"
    latin.write_bytes('{"a": "caf\xe9"}'.encode("latin-1"))
    with pytest.raises(UserError, match="cannot read"):
        json_object_of("--schema", str(latin))
