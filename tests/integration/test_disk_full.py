"""A peer's ledger disk fills up under load: a clear error, the network goes on, recovery when space returns.

plant1's peer keeps its ledger (``nodes/peer0.plant1/data``) on a 32 MiB tmpfs this test mounts before
`twinledger up`, on a network of its own (the session network's peers must not share this fate). The test
fills that file system to 64 KiB, runs recorded checks (hospital1's client, a data set of plant2's) and
sees, on the real peer:

* the peer panics on its next block (Fabric's own ``no space left on device``); the supervisor does not
  crash-loop it but waits for space, and ``twinledger status`` says so in one line naming the path;
* the checks keep committing through the other peers (MAJORITY of 4 orgs is 3);
* once the space is freed the supervisor restarts the peer by itself, its ledger recovers from its last
  complete block, it catches up from the orderers, and every check acknowledged before, during and after
  the outage is VALID on it -- no committed data lost, none half-applied.

Mounting a tmpfs needs CAP_SYS_ADMIN (the test machine and CI run as root); without it the test says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from fabric_protos.peer import transaction_pb2

from network.spec import load_spec
from network.layout import Layout
from network.processes.exit_reason import RESTART_FREE_BYTES
from tests.fabric_net import PORTS, FabricNet, start_network, stop_network, twinledger
from tests.integration.fabric_nodes import block_height, wait_height
from tests.ports import free_port_base

DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "network" / "default_spec.yaml"
TMPFS_BYTES = 32 * 1024 * 1024
LEFT_FREE = 64 * 1024
PURPOSE = "train:disk-full"
WAIT_S = 90.0


def mount_tmpfs(path: Path, size: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for the full disk (needs CAP_SYS_ADMIN): {done.stderr.strip()}")


def umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path, leave: int) -> Path:
    """One file taking all but ``leave`` bytes of the file system under ``path``."""
    st = os.statvfs(path)
    filler = path / "filler"
    with open(filler, "wb") as fh:
        os.posix_fallocate(fh.fileno(), 0, st.f_bavail * st.f_frsize - leave)
    return filler


def peer_state(net: FabricNet, name: str) -> dict:
    return net.processes()[name]


def until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)


@pytest.fixture
def net_with_small_disk(tmp_path: Path):
    spec = load_spec(DEFAULT_SPEC)
    victim = spec.nodes_of("plant1", "peer")[0].name
    home = tmp_path / "net"
    data = Layout(home).node_data(victim)
    mount_tmpfs(data, TMPFS_BYTES)
    try:
        net = start_network(home, free_port_base(PORTS))
        try:
            yield net, victim, data
        finally:
            stop_network(net)
    finally:
        umount(data)


def test_peer_disk_full_is_reported_then_recovers_with_nothing_lost(net_with_small_disk) -> None:
    net, victim, data = net_with_small_disk
    ds = net.unique("diskfull")
    acknowledged: list[str] = []

    async def checks(n: int) -> None:
        async with net.connect("hospital1", "client") as gateway:
            contract = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            for _ in range(n):
                transaction = await contract.new_proposal("Check", ds, PURPOSE).endorse()
                status = await (await transaction.submit()).status()
                assert status.successful, f"check {status.transaction_id}: {status.code_name}"
                assert json.loads(transaction.result)["allowed"]
                acknowledged.append(transaction.transaction_id)

    async def register() -> None:
        async with net.connect("plant2", "steward") as gateway:
            contract = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            await contract.submit("RegisterDataset", ds, "tabular", '{"rows": 10}', "cd" * 32, "internal")
            await contract.submit("Grant", ds, "hospital1", PURPOSE, "")

    asyncio.run(register())
    asyncio.run(checks(3))
    filler = fill(data, LEFT_FREE)

    # The next blocks cannot be written: the peer panics, and the supervisor waits for space.
    deadline = time.monotonic() + WAIT_S
    while not peer_state(net, victim).get("waiting_for_space"):
        assert time.monotonic() < deadline, f"{victim} never reported its full disk: {peer_state(net, victim)}"
        asyncio.run(checks(2))  # the network commits on: every check is VALID without plant1's peer
    state = peer_state(net, victim)
    assert "no space left on device" in state["last_error"]
    assert state["waiting_for_space"]["path"].startswith(str(data))
    assert not state["running"]

    status = twinledger("status", home=net.home)
    said = [ln for ln in status.stdout.splitlines() if ln.startswith(f"{victim}:")]
    assert len(said) == 1 and "disk full" in said[0] and str(data) in said[0], status.stdout
    assert "restarts by itself" in said[0]

    # No crash loop while the disk stays full, and the consortium keeps committing meanwhile.
    restarts = state["restarts"]
    asyncio.run(checks(5))
    time.sleep(3.0)
    assert peer_state(net, victim)["restarts"] == restarts and not peer_state(net, victim)["running"]

    # Space returns: restarted by the supervisor at once (not after a backoff), caught up, nothing lost.
    filler.unlink()
    assert os.statvfs(data).f_bavail * os.statvfs(data).f_frsize >= RESTART_FREE_BYTES
    t_freed = time.monotonic()
    until(lambda: peer_state(net, victim).get("healthy"), WAIT_S, f"{victim} to come back")
    back_s = time.monotonic() - t_freed
    asyncio.run(checks(3))
    reference = net.peer("hospital1").name
    wait_height(net, victim, block_height(net, reference), timeout=WAIT_S)
    print(f"disk full: {victim} back {back_s:.1f} s after space returned; {len(acknowledged)} checks acknowledged")
    assert back_s < 10.0, f"{victim} took {back_s:.1f} s to restart after space returned"
    assert not peer_state(net, victim).get("waiting_for_space")

    async def all_valid_on_victim() -> list[str]:
        missing = []
        async with net.connect("plant1", "admin") as gateway:  # plant1's own gateway: its own peer answers qscc
            qscc = gateway.network(net.spec.channel).contract("qscc")
            for tx_id in acknowledged:
                raw = await qscc.evaluate("GetTransactionByID", net.spec.channel, tx_id)
                if transaction_pb2.ProcessedTransaction.FromString(raw).validationCode != transaction_pb2.VALID:
                    missing.append(tx_id)
            contract = gateway.network(net.spec.channel).contract(net.chaincode, "data")
            trail = json.loads(await contract.evaluate("Audit", ds))
        accesses = sum(1 for e in trail["entries"] if e["action"] == "access")
        assert accesses == len(acknowledged), f"{accesses} access records for {len(acknowledged)} checks"
        return missing

    assert asyncio.run(all_valid_on_victim()) == []
