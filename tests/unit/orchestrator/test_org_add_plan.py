"""`org add`'s checks before any change: the plan in the spec, and whose signatures the update can carry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from network.layout import Layout
from network.spec import load_spec
from orchestrator.cli_common import UserError
from orchestrator.org_add import choose_signers, plan_org
from tests.unit.network.test_channel_config import admin_msp, make_ca

FOUNDERS = ["Hospital1MSP", "Hospital2MSP", "Plant1MSP", "Plant2MSP"]


def test_plan_adds_a_joining_org_once_and_refuses_a_taken_name():
    spec = load_spec()
    grown, resuming = plan_org(spec, "hospital3", "hospital")
    assert not resuming and grown.org("hospital3").joining and grown.added == ("ca.hospital3", "peer0.hospital3")
    again, resuming = plan_org(grown, "hospital3", "hospital")
    assert resuming and again == grown, "a second run resumes the same org, it does not add another"
    with pytest.raises(UserError, match="already a hospital"):
        plan_org(grown, "hospital3", "plant")
    with pytest.raises(UserError, match="already a founding plant"):
        plan_org(spec, "plant1", "plant")
    with pytest.raises(UserError, match="cannot add org 'Bad'"):
        plan_org(spec, "Bad", "plant")


@pytest.fixture
def home(tmp_path: Path) -> Layout:
    """Admin MSPs of the four founders, each issued by its own CA."""
    layout = Layout(tmp_path)
    for org in ("hospital1", "hospital2", "plant1", "plant2"):
        ca = make_ca(f"ca.{org}")
        layout.ca_home(org).mkdir(parents=True)
        layout.ca_cert(org).write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
        msp = admin_msp(tmp_path, ca)
        layout.user_dir(org, "admin").mkdir(parents=True)
        msp.rename(layout.user_msp(org, "admin"))
    return layout


def test_a_majority_of_valid_admins_signs(home: Layout):
    spec = load_spec()
    assert [o.name for o in choose_signers(spec, home, FOUNDERS, None)] == ["hospital1", "hospital2", "plant1"]
    assert [o.name for o in choose_signers(spec, home, FOUNDERS, ["plant2", "plant1", "hospital2"])] == [
        "hospital2", "plant1", "plant2"]
    with pytest.raises(UserError, match=r"needs the signatures of 3 of the 4 .* only 2 would sign \(hospital1, plant1\); "
                                        "nothing was changed"):
        choose_signers(spec, home, FOUNDERS, ["hospital1", "plant1"])
    with pytest.raises(UserError, match="nosuch cannot sign: not a member org"):
        choose_signers(spec, home, FOUNDERS, ["hospital1", "nosuch"])


def test_an_expired_admin_certificate_is_refused_before_anything_changes(home: Layout, tmp_path: Path):
    spec = load_spec()
    ca = make_ca("ca.hospital2")
    home.ca_cert("hospital2").write_bytes(ca[0].public_bytes(serialization.Encoding.PEM))
    expired = admin_msp(tmp_path, ca, days=(-30, -1))
    shutil.rmtree(home.user_msp("hospital2", "admin"))
    expired.rename(home.user_msp("hospital2", "admin"))
    with pytest.raises(UserError, match=r"hospital2: its admin certificate expired on .*; nothing was changed"):
        choose_signers(spec, home, FOUNDERS, None)
    # Signers that leave hospital2 out still make a majority.
    assert [o.name for o in choose_signers(spec, home, FOUNDERS, ["hospital1", "plant1", "plant2"])] == [
        "hospital1", "plant1", "plant2"]


def test_peer_add_to_an_added_org_takes_its_next_peer_not_its_ca(tmp_path: Path):
    from network.spec import parse_spec
    from orchestrator.peer_add import JOINED_MARK, plan_peer

    spec, _ = plan_org(load_spec(), "hospital3", "hospital")
    member = parse_spec({**spec.to_dict(), "added_orgs": [{"name": "hospital3", "kind": "hospital"}]})
    layout = Layout(tmp_path)
    layout.node_dir("peer0.hospital3").mkdir(parents=True)
    (layout.node_dir("peer0.hospital3") / JOINED_MARK).write_text("1\n")
    grown, plan = plan_peer(member, layout, "hospital3")
    assert plan.node.name == "peer1.hospital3" and not plan.resuming
    assert grown.added == ("ca.hospital3", "peer0.hospital3", "peer1.hospital3")
    with pytest.raises(UserError, match="'hospital3' is not a hospital or plant of this network"):
        plan_peer(spec, layout, "hospital3")  # still joining: not a channel member yet
