"""Local input of the data and consent commands, read before any ledger call (orchestrator/cli_inputs.py)."""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path

import pytest

from orchestrator.cli_common import UserError
from orchestrator.cli_data import short_actor
from orchestrator.cli_inputs import expiry_of, json_object_of, sha256_of

NOW = dt.datetime(2026, 1, 31, 12, 0, 0, tzinfo=dt.timezone.utc)


def test_sha256_is_a_digest_or_the_hash_of_a_file(tmp_path: Path) -> None:
    assert sha256_of("--sha256", "AB" * 32) == "ab" * 32
    manifest = tmp_path / "manifest"
    manifest.write_bytes(b"rows: 10000\n" * 50_000)  # larger than one read chunk
    assert sha256_of("--sha256", str(manifest)) == hashlib.sha256(manifest.read_bytes()).hexdigest()
    for bad in ("ab" * 31, "zz" * 32, str(tmp_path / "missing"), str(tmp_path)):
        with pytest.raises(UserError, match="neither a SHA-256 digest"):
            sha256_of("--sha256", bad)


def test_schema_is_a_json_object_inline_or_in_a_file(tmp_path: Path) -> None:
    assert json_object_of("--schema", '{"b": 1, "a": {"x": "int"}}') == '{"a":{"x":"int"},"b":1}'
    schema = tmp_path / "schema.json"
    schema.write_text('{"rows": 3}')
    assert json_object_of("--schema", str(schema)) == '{"rows":3}'
    with pytest.raises(UserError, match="must be a JSON object"):
        json_object_of("--schema", "[1, 2]")
    with pytest.raises(UserError, match="neither a JSON object nor a JSON file"):
        json_object_of("--schema", "{rows: 3}")


@pytest.mark.parametrize(("value", "expected"), [
    ("90s", "2026-01-31T12:01:30.000Z"),
    ("15m", "2026-01-31T12:15:00.000Z"),
    ("12h", "2026-02-01T00:00:00.000Z"),
    ("30d", "2026-03-02T12:00:00.000Z"),
    ("2026-02-01T00:00:00Z", "2026-02-01T00:00:00.000Z"),
    ("2026-02-01T02:00:00+02:00", "2026-02-01T00:00:00.000Z"),  # converted to UTC, which the chaincode needs
])
def test_expiry_is_a_time_or_a_delay_in_the_future(value: str, expected: str) -> None:
    assert expiry_of("--expires", value, now=NOW) == expected


@pytest.mark.parametrize(("value", "fragment"), [
    ("2026-01-31T11:59:59Z", "not in the future"),
    ("0s", "neither a time"),
    ("tomorrow", "neither a time"),
    ("2026-02-01T00:00:00", "has no time zone"),
])
def test_bad_expiry_is_one_clear_line(value: str, fragment: str) -> None:
    with pytest.raises(UserError, match=fragment) as caught:
        expiry_of("--expires", value, now=NOW)
    assert "\n" not in str(caught.value) and str(caught.value).startswith("--expires")


def test_short_actor_names_user_and_org() -> None:
    client_id = "x509::CN=steward,OU=client,O=Hyperledger,ST=North Carolina,C=US::CN=ca.plant1,OU=Fabric,O=Hyperledger"
    assert short_actor(client_id) == "steward@plant1"
    assert short_actor("not a fabric id") == "not a fabric id"
    assert short_actor(None) == ""
