"""Reading the caller from the proposal creator: MSP ID, certificate and Fabric CA attributes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fabric_protos.msp import identities_pb2

from chaincode.identity import IdentityError, caller_identity, certificate_attributes, load_certificate


def stub_with(creator: Any) -> Any:
    return SimpleNamespace(get_creator=lambda: creator)


def test_reads_msp_role_and_org_kind(certs: Any) -> None:
    pem = certs.issue("alice", {"role": "steward", "org_kind": "hospital", "hf.Type": "client"})
    who = caller_identity(stub_with({"mspid": "Hospital1MSP", "idBytes": pem}))
    assert (who.msp_id, who.role, who.org_kind, who.common_name) == ("Hospital1MSP", "steward", "hospital", "alice")
    assert who.attributes["hf.Type"] == "client"


def test_certificate_without_extension_has_no_attributes(certs: Any) -> None:
    who = caller_identity(stub_with({"mspid": "Plant1MSP", "idBytes": certs.issue("bob")}))
    assert who.attributes == {} and who.role is None and who.org_kind is None


def test_serialized_identity_message_and_bytes_and_der(certs: Any) -> None:
    pem = certs.issue("carol", {"role": "admin"})
    message = identities_pb2.SerializedIdentity(mspid="Plant1MSP", id_bytes=pem)
    assert caller_identity(stub_with(message)).role == "admin"
    assert caller_identity(stub_with(message.SerializeToString())).msp_id == "Plant1MSP"
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert certificate_attributes(load_certificate(der)) == {"role": "admin"}


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"{not json", "is not JSON"),
        (b"\xff\xfe", "is not JSON"),
        (b'{"other": {}}', 'has no "attrs" object'),
        (b'["attrs"]', 'has no "attrs" object'),
        (b'{"attrs": {"role": 1}}', "must all be strings"),
    ],
)
def test_malformed_attribute_extension_is_an_error(certs: Any, raw: bytes, fragment: str) -> None:
    pem = certs.issue("mallory", raw_extension=raw)
    with pytest.raises(IdentityError, match=fragment):
        certificate_attributes(pem)


@pytest.mark.parametrize(
    ("creator", "fragment"),
    [
        ({}, "has no MSP ID"),
        ({"mspid": "Hospital1MSP", "idBytes": b""}, "has no certificate"),
        ({"mspid": "Hospital1MSP", "idBytes": b"not a certificate"}, "cannot be parsed"),
        (object(), "has no creator identity"),
    ],
)
def test_unusable_creator_is_an_error(creator: Any, fragment: str) -> None:
    with pytest.raises(IdentityError, match=fragment):
        caller_identity(stub_with(creator))


def test_a_certificate_is_parsed_once_and_its_attributes_are_read_only(certs: Any) -> None:
    pem = certs.issue("carol", {"role": "operator"})
    first = caller_identity(stub_with({"mspid": "Plant2MSP", "idBytes": pem}))
    again = caller_identity(stub_with({"mspid": "Plant2MSP", "idBytes": pem}))
    assert again.certificate is first.certificate and again.attributes is first.attributes
    with pytest.raises(TypeError):
        first.attributes["role"] = "steward"  # type: ignore[index]
    assert again.role == "operator"
    other = caller_identity(stub_with({"mspid": "Plant2MSP", "idBytes": certs.issue("carol", {"role": "client"})}))
    assert other.role == "client"  # another certificate (same name) is parsed on its own
