"""Session.submit's retry policy for read conflicts, against an in-process fake contract (unit test).

The real conflicts are staged on real peers in tests/integration/test_fabric_semantics.py; here each
rule of the policy is checked on its own: which functions are retried, for which validation codes, how
many times, and that every other failure is reported at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fabric_protos.peer import transaction_pb2

from network.gateway import TransactionStatus
from network.spec import load_spec
from orchestrator import ledger_session
from orchestrator.cli_common import UserError
from orchestrator.ledger_session import CONFLICT_RETRIES, Session


@dataclass
class FakeCommit:
    transaction_id: str
    code: int
    result: bytes = b'{"ok": true}'

    def status(self) -> TransactionStatus:
        return TransactionStatus(self.transaction_id, self.code, 7)


@dataclass
class FakeContract:
    """Answers each submit with the next validation code of ``codes`` (the last one repeats)."""

    codes: list[int]
    calls: list[str] = field(default_factory=list)

    def submit_async(self, function: str, *args: Any, **kwargs: Any) -> FakeCommit:
        self.calls.append(function)
        code = self.codes[min(len(self.calls), len(self.codes)) - 1]
        return FakeCommit(f"tx{len(self.calls)}", code)


def session_with(contract: FakeContract, monkeypatch: pytest.MonkeyPatch) -> Session:
    monkeypatch.setattr(ledger_session, "RETRY_PAUSE_S", 0.0)
    session = Session(load_spec(None), None, "plant1", "steward", None)  # type: ignore[arg-type]
    monkeypatch.setattr(Session, "contract", lambda self, name: contract)
    return session


MVCC, PHANTOM, VALID = (transaction_pb2.MVCC_READ_CONFLICT, transaction_pb2.PHANTOM_READ_CONFLICT,
                        transaction_pb2.VALID)


def test_a_recorded_check_is_retried_after_read_conflicts(monkeypatch: pytest.MonkeyPatch) -> None:
    contract = FakeContract([MVCC, PHANTOM, VALID])
    answer, status = session_with(contract, monkeypatch).submit("data", "Check", "ds", "train:a")
    assert answer == {"ok": True} and status.transaction_id == "tx3" and len(contract.calls) == 3


def test_retries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    contract = FakeContract([MVCC])
    with pytest.raises(UserError, match="tx4 was not committed: the peers marked it MVCC_READ_CONFLICT"):
        session_with(contract, monkeypatch).submit("data", "Check", "ds", "train:a")
    assert len(contract.calls) == 1 + CONFLICT_RETRIES


@pytest.mark.parametrize("function", ["RegisterDataset", "Grant", "Revoke"])
def test_governance_writes_are_not_retried(function: str, monkeypatch: pytest.MonkeyPatch) -> None:
    contract = FakeContract([MVCC, VALID])
    with pytest.raises(UserError, match="MVCC_READ_CONFLICT; nothing changed — another transaction changed"):
        session_with(contract, monkeypatch).submit("data", function, "ds")
    assert len(contract.calls) == 1


def test_other_validation_codes_are_not_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    contract = FakeContract([transaction_pb2.ENDORSEMENT_POLICY_FAILURE, VALID])
    with pytest.raises(UserError, match="ENDORSEMENT_POLICY_FAILURE; nothing changed — see `twinledger logs peer0.plant1`"):
        session_with(contract, monkeypatch).submit("data", "Check", "ds", "train:a")
    assert len(contract.calls) == 1


def test_a_commit_that_never_came_names_the_transaction(monkeypatch: pytest.MonkeyPatch) -> None:
    """After the Gateway client's resends gave up, the user learns which transaction and that it commits at most once."""
    import grpc

    from network.gateway_errors import CommitStatusError

    session = session_with(FakeContract([VALID]), monkeypatch)
    error = session.user_error(CommitStatusError("Deadline Exceeded", code=grpc.StatusCode.DEADLINE_EXCEEDED,
                                                 transaction_id="abc123"))
    assert "transaction abc123 was not committed in time" in str(error) and "at most once" in str(error)
