"""The shared model of the data contract's access rule, and the value pools both fuzz tests draw from.

tests/unit/chaincode/test_data_fuzz.py (the shim with an in-memory stub) and
tests/integration/test_gateway_fuzz.py (the real peers through the Gateway) predict access decisions with
the same independent model, written from the rules in chaincode/data_access.py's docstring rather than
from its code, and probe the contract with the same hostile values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from typing import Any

from chaincode.timestamps import parse_utc

ORG_MSP = {"hospital1": "Hospital1MSP", "hospital2": "Hospital2MSP", "plant1": "Plant1MSP", "plant2": "Plant2MSP"}
ORG_KIND = {"hospital1": "hospital", "hospital2": "hospital", "plant1": "plant", "plant2": "plant"}
SHA = hashlib.sha256(b"manifest").hexdigest()
SALT = "0f" * 16

#: Strings no argument of the data contract accepts as an ID, an org name or a purpose.
HOSTILE = ["", " ", "a" * 65, "\x00", "../etc", "\u03a9", "null", "{}", "[]", "train:", ":x", "x" * 9000]
#: Schema summaries the contract refuses: NaN, not an object, a duplicate key, too deep, too big.
BAD_SCHEMAS = ['{"a":NaN}', "[1]", '{"a":1,"a":2}', "[" * 3000, '{"k":"' + "v" * 5000 + '"}']
#: Expiries the contract refuses as text: a month 13, not a timestamp, a local offset.
BAD_EXPIRIES = ["2099-13-01T00:00:00Z", "tomorrow", "2099-01-01T00:00:00+01:00"]
#: An expiry that is valid text but already in the past.
PAST_EXPIRY = "2025-01-01T00:00:00Z"

# Reasons of an access decision (chaincode/access.py names the same ones).
OWNER, GRANTED, NO_GRANT, WRONG_PURPOSE, REVOKED, EXPIRED = (
    "owner", "granted", "no_grant", "wrong_purpose", "revoked", "expired")


def grant_state(grant: Mapping[str, Any], now_nanos: int) -> str:
    """active, revoked or expired at now_nanos: revoked is stored, expired is derived (exclusive bound)."""
    if grant["status"] == "revoked":
        return REVOKED
    if grant.get("expires_at") is not None and parse_utc("e", grant["expires_at"]) <= now_nanos:
        return EXPIRED
    return "active"


def decision(owner: str, org: str, purpose: str, org_grants: Iterable[Mapping[str, Any]],
             now_nanos: int) -> tuple[bool, str]:
    """(allowed, reason) for org using a data set of owner for purpose, given org's grants of it."""
    if org == owner:
        return True, OWNER
    grants = list(org_grants)
    match = next((g for g in grants if g["purpose"] == purpose), None)
    if match is None:
        return False, WRONG_PURPOSE if grants else NO_GRANT
    state = grant_state(match, now_nanos)
    return (True, GRANTED) if state == "active" else (False, state)
