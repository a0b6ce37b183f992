"""The building blocks of the data-governance contracts: argument rules, time, endorsement policy bytes."""

from __future__ import annotations

import pytest
from fabric_protos.common import policies_pb2
from hypothesis import given
from hypothesis import strategies as st

from chaincode.arguments import require_id, require_json_object, require_purpose, require_sha256
from chaincode.endorsement import peers_of, policy_orgs
from chaincode.errors import ValidationError
from chaincode.timestamps import format_utc, parse_utc


def test_endorsement_policy_bytes_match_fabric_statebased() -> None:
    # fabric-chaincode-go statebased: NewStateEP(nil); AddOrgs(RoleTypePeer, "Plant1MSP"); Policy().
    # Hand-encoded SignaturePolicyEnvelope{rule: NOutOf{n: 1, rules: [SignedBy 0]},
    # identities: [MSPPrincipal{ROLE, MSPRole{msp_identifier: "Plant1MSP", role: PEER}}]}.
    expected = bytes.fromhex("1208" "1206" "0801" "1202" "0800" "1a0f" "120d" "0a09") + b"Plant1MSP" + bytes.fromhex("1003")
    assert peers_of(["Plant1MSP"]) == expected


def test_endorsement_policy_of_several_orgs_is_sorted_and_needs_all() -> None:
    policy = policies_pb2.SignaturePolicyEnvelope.FromString(peers_of(["Plant2MSP", "Hospital1MSP", "Plant2MSP"]))
    assert policy.rule.n_out_of.n == 2
    assert [r.signed_by for r in policy.rule.n_out_of.rules] == [0, 1]
    assert policy_orgs(policy.SerializeToString()) == {"Hospital1MSP": "PEER", "Plant2MSP": "PEER"}
    assert list(policy_orgs(policy.SerializeToString())) == ["Hospital1MSP", "Plant2MSP"]
    with pytest.raises(ValueError):
        peers_of([])
    with pytest.raises(ValueError):
        peers_of([""])


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:01.5Z", 1_500_000_000),
        ("1970-01-01T00:00:00.000000001+00:00", 1),
        ("2025-03-01T12:00:00Z", 1_740_830_400 * 10**9),
        ("1969-12-31T23:59:59Z", -(10**9)),
    ],
)
def test_parse_utc(text: str, nanos: int) -> None:
    assert parse_utc("t", text) == nanos


@given(st.integers(min_value=0, max_value=253402300799 * 10**9 + 999_999_999))
def test_format_then_parse_is_identity(nanos: int) -> None:
    assert parse_utc("t", format_utc(nanos)) == nanos


@given(st.text(max_size=60))
def test_parse_utc_accepts_or_raises_validation_error(text: str) -> None:
    try:
        parse_utc("t", text)
    except ValidationError as exc:
        assert "\n" not in str(exc)


@given(st.text(max_size=200))
def test_rules_never_raise_anything_but_validation_error(text: str) -> None:
    for rule in (require_id, require_purpose, require_sha256, require_json_object):
        try:
            rule("field", text)
        except ValidationError as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 400


def test_non_string_arguments_are_refused() -> None:
    with pytest.raises(ValidationError, match="must be a string, got int"):
        require_id("data set ID", 5)
