"""Integration fixtures: the one real Fabric network of the test run (see tests/fabric_net.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fabric_net import PORTS, FabricNet, start_network, stop_network
from tests.ports import free_port_base


@pytest.fixture(scope="session")
def fabric_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FabricNet]:
    """`twinledger up` from nothing, once per run, on free ports; `twinledger down` at the end.

    No skip: setup fails when Fabric cannot be built, so a missing binary here is a failure to report.
    """
    net = start_network(tmp_path_factory.mktemp("fabric") / "net", free_port_base(PORTS))
    try:
        yield net
    finally:
        stop_network(net)
