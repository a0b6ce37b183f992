"""FabricRoundLedger's task creation and recorded data use, end to end against the real contracts.

The chaincode runs in process through the chaincode tests' harness (an in-memory stub with Fabric's
semantics, real certificates with the ``role`` attribute): each org's ledger object calls with that
org's operator identity, as each org's ClientApp does through its own gateway.
"""

from __future__ import annotations

from typing import Any

import pytest

# The chaincode tests' fixtures (registered consortium, identities, shim patches) and their contract
# adapter, imported rather than rebuilt here.
from tests.unit.chaincode.conftest import _compat_applied, certs, consortium, creator, ledger  # noqa: F401
from tests.unit.chaincode.test_models import ChaincodeContract

from federated.data import task_spec
from federated.fabric_ledger import DATAACCESS_CONTRACT, REGISTRY_CONTRACT, FabricRoundLedger
from federated.governance import (
    GovernanceError,
    ResumePoint,
    TaskExists,
    TaskRecord,
    ensure_task,
    no_longer_allowed,
    record_admission,
)

SPEC = task_spec("maintenance")
H = [f"{i:064x}" for i in range(1, 10)]


@pytest.fixture
def c(consortium: Any) -> Any:
    for org in ("plant1", "plant2"):  # each plant's steward registers its share of AI4I 2020
        consortium.ok(consortium.user(org), "data:RegisterDataset", SPEC.dataset_id(org), "tabular", "{}", "ab" * 32,
                      "internal")  # fmt: skip
    return consortium


def fabric_ledger(c: Any, org: str, role: str = "operator") -> FabricRoundLedger:
    who = c.user(org, role=role)
    return FabricRoundLedger(ChaincodeContract(c, who, REGISTRY_CONTRACT), ChaincodeContract(c, who, DATAACCESS_CONTRACT))


def _task(rounds: int = 2) -> TaskRecord:
    return TaskRecord("maintenance-v1", "mlp-11-64-32-1", SPEC.purpose,
                      tuple(SPEC.dataset_id(o) for o in ("plant1", "plant2")), rounds, "fedavg")  # fmt: skip


def test_task_is_created_once_through_models_create_task(c: Any) -> None:
    led = fabric_ledger(c, "plant1")
    assert led.get_task("maintenance-v1") is None
    rec, created = ensure_task(led, _task())
    assert created and rec.created_by_org == "plant1" and rec.tx_id and rec.rounds == 2
    again, created = ensure_task(fabric_ledger(c, "plant2"), _task())  # a re-run, by another participant
    assert not created and again == rec
    with pytest.raises(TaskExists):
        led.create_task(_task())
    with pytest.raises(GovernanceError, match=r"rounds 2 \(this run: 5\)"):
        ensure_task(led, _task(rounds=5))
    # each plant's steward grants the other; each plant records its own admission; the round names both
    # with the transactions of their recorded checks, which the contract reads back
    for owner, grantee in (("plant1", "plant2"), ("plant2", "plant1")):
        c.ok(c.user(owner), "data:Grant", SPEC.dataset_id(owner), grantee, SPEC.purpose, "")
    checks = {org: record_admission(fabric_ledger(c, org), org, rec).checks() for org in ("plant1", "plant2")}
    led.commit_round_start("maintenance-v1", 1, H[0], checks)
    at = ResumePoint.of(led.list_rounds("maintenance-v1"), rec.rounds)
    assert at.pending is not None and at.first_round == 1 and at.start_sha256 == H[0]
    assert at.pending.start_tx_id  # the Fabric transaction that started it
    assert at.pending.participants == ["plant1", "plant2"] and at.pending.checks == checks


def test_each_org_records_its_own_use_with_its_own_identity(c: Any) -> None:
    plant2 = fabric_ledger(c, "plant2")
    own = plant2.record_use("plant2", SPEC.dataset_id("plant2"), SPEC.purpose)
    # The contract lets an owner use its own data set (reason "owner"); the check is recorded all the same.
    assert own.allowed and own.reason == "owner" and own.tx_id
    with pytest.raises(GovernanceError, match="belongs to org 'plant2', not 'plant1'"):
        plant2.record_use("plant1", SPEC.dataset_id("plant2"), SPEC.purpose)
    other = fabric_ledger(c, "hospital1").record_use("hospital1", SPEC.dataset_id("plant1"), SPEC.purpose)
    assert not other.allowed and other.reason == "no_grant" and "has no grant" in other.detail
    audit = c.ok(c.user("plant1"), "data:Audit", SPEC.dataset_id("plant1"))["entries"]
    assert [(e["org"], e["allowed"]) for e in audit if e["action"] == "access"] == [("hospital1", False)]
    # The misconfigured call was recorded too -- truthfully, as plant2's own check: the contract never
    # records a check for an org other than the caller's.
    audit = c.ok(c.user("plant2"), "data:Audit", SPEC.dataset_id("plant2"))["entries"]
    checks = [(e["org"], e["allowed"], e["tx_id"]) for e in audit if e["action"] == "access"]
    assert checks[0] == ("plant2", True, own.tx_id) and [x[:2] for x in checks] == [("plant2", True)] * 2


def test_admission_checks_every_data_set_of_the_task_and_a_revocation_excludes(c: Any) -> None:
    """An org's admission is one recorded data:Check per data set of the task, each with its own identity:
    its own data set passes as the owner, another org's only under that org's steward's live grant."""
    task = _task()
    plant1, plant2 = fabric_ledger(c, "plant1"), fabric_ledger(c, "plant2")
    d1, d2 = SPEC.dataset_id("plant1"), SPEC.dataset_id("plant2")
    first = record_admission(plant1, "plant1", task)
    assert not first.allowed and [(d.dataset, d.reason) for d in first.decisions] == [(d1, "owner"), (d2, "no_grant")]
    assert first.first_denial.dataset == d2 and first.reason == "no_grant"
    for owner, grantee, ds in (("plant2", "plant1", d2), ("plant1", "plant2", d1)):  # each steward grants the other
        c.ok(c.user(owner), "data:Grant", ds, grantee, SPEC.purpose, "")
    assert record_admission(plant1, "plant1", task).allowed and record_admission(plant2, "plant2", task).reason == "granted"
    assert no_longer_allowed(plant1, "plant1", task) == []
    c.ok(c.user("plant2"), "data:Revoke", d2, "plant1", SPEC.purpose)  # plant2's steward revokes plant1's grant
    assert no_longer_allowed(plant1, "plant1", task) == [d2]
    revoked = record_admission(plant1, "plant1", task)
    assert not revoked.allowed and (revoked.first_denial.dataset, revoked.reason) == (d2, "revoked")
    assert "the grant of 'plant2.ai4i2020' to 'plant1' for 'fl:maintenance' was revoked at" in revoked.detail
    assert record_admission(plant2, "plant2", task).allowed  # plant1's grant to plant2 still holds
    # plant2's data set's audit holds plant1's checks, signed by plant1's operator: denied, granted, revoked
    audit = c.ok(c.user("plant2"), "data:Audit", d2)["entries"]
    plant1_uses = [(e["reason"], e["role"]) for e in audit if e["action"] == "access" and e["org"] == "plant1"]
    assert plant1_uses == [("no_grant", "operator"), ("granted", "operator"), ("revoked", "operator")]
    assert revoked.first_denial.tx_id == [e["tx_id"] for e in audit if e["action"] == "access"][-2]
    # a data set of the task that was never registered: one line naming it
    with pytest.raises(GovernanceError, match=r"data:Check of plant3.ai4i2020 for fl:maintenance failed: .*not registered"):
        record_admission(plant1, "plant1", TaskRecord("t", "mlp", SPEC.purpose, (d1, "plant3.ai4i2020"), 1, "fedavg"))
