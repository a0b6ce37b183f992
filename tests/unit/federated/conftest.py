"""The federated unit tests run the ServerApp logic and the ClientApps in process, on an in-memory fake of
the ledger (fake_ledger.py): its ``fake:<id>`` specs resolve where product code opens a Fabric ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.unit.federated.fake_ledger import forget_fakes, open_fake


@pytest.fixture(autouse=True)
def fake_ledgers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    from federated import clientapp, serverapp

    monkeypatch.setattr(clientapp, "_ledger", open_fake)
    monkeypatch.setattr(serverapp, "open_ledger", open_fake)
    yield
    forget_fakes()
