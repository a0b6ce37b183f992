"""`twinledger orderer add` / `orderer remove` on a real network of its own (the session network keeps its three
orderers).

While plant1's operator keeps submitting recorded ``data:Check`` transactions through the Gateway:

* ``orderer add --dry-run`` prints the consenter-set delta and changes nothing; with a consenter frozen
  (SIGSTOP) `orderer add` is refused in one line naming it, and nothing changes;
* `orderer add`, killed once the spec names orderer3 and run again, brings orderer3 in as a follower from the latest config block, then into the consenter set
  (4 consenters); it has the chain's height; `status` lists it; every check submitted meanwhile committed;
* kill -9 of the Raft leader afterwards: checks still commit (4 consenters tolerate one failure);
* re-running `orderer add orderer3` is a no-op that says so;
* `orderer remove orderer3.orderer`: out of the consenter set, its process stopped, checks go on; re-running
  it says it is done; removing a founder then (2 would remain) is refused without --force and changes nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from network import channel_config as cc
from network.processes.health import scrape
from network.spec import load_spec
from orchestrator.fabric_stage import orderer_channel
from orchestrator.orderer_nodes import orderer_admin
from orchestrator.readiness import wait_ordering
from peers.binaries import fabric_bin_dir
from tests.fabric_net import PORTS, FabricNet, start_network, stop_network
from tests.ports import free_port_base

NEW = "orderer3.orderer"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory):
    net = start_network(tmp_path_factory.mktemp("ordereradd") / "net", free_port_base(PORTS))
    try:
        yield net
    finally:
        stop_network(net)


class Checks:
    """plant1's operator submitting recorded checks one after another in the background; every outcome kept."""

    def __init__(self, net: FabricNet, dataset: str) -> None:
        self.net, self.dataset = net, dataset
        self.ok: list[str] = []
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with self.net.connect_sync("plant1", "operator") as gateway:
            contract = gateway.network(self.net.spec.channel).contract(self.net.chaincode, "data")
            while not self._stop.is_set():
                try:
                    contract.submit("Check", self.dataset, "train:sepsis")
                    self.ok.append(time.strftime("%H:%M:%S"))
                except Exception as exc:  # noqa: BLE001 - each failure is kept with its reason
                    self.failed.append(f"{type(exc).__name__}: {exc}")
                self._stop.wait(0.3)

    def __enter__(self) -> Checks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)


def consenter_addresses(net: FabricNet) -> list[str]:
    spec = load_spec(net.layout.spec_file)
    via = spec.nodes_of("orderer", "orderer")[0]
    config = cc.fetch_config(fabric_bin_dir(), spec.channel, orderer_admin(spec, net.layout, via), net.home / "t")
    return [c.address for c in cc.consenters(config)]


def leader(net: FabricNet) -> str:
    spec = load_spec(net.layout.spec_file)
    label = f'channel="{spec.channel}"'
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leaders = [n.name for n in spec.nodes_of("orderer", "orderer")
                   if (scrape(n.ports.operations, "consensus_etcdraft_is_leader") or {}).get(label) == 1]
        if len(leaders) == 1:
            return leaders[0]
        time.sleep(0.2)
    raise AssertionError("no single Raft leader within 30 s")


def test_orderer_add_kill_leader_remove_refusals_and_reruns(net: FabricNet) -> None:
    dataset = net.unique("ord-cohort")
    net.ok("data", "register", dataset, "--kind", "tabular", "--sha256", "cd" * 32, "--as", "hospital1:steward")
    net.ok("data", "grant", dataset, "--to", "plant1", "--purpose", "train:sepsis", "--as", "hospital1:steward")
    spec_before = net.layout.spec_file.read_text()
    founders = consenter_addresses(net)
    assert len(founders) == 3

    dry = net.run("orderer", "add", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    o3 = net.spec.port_range[1] + 1 + 10  # after the supervisor's slot
    for line in (f"would add {NEW}", f"+ /Channel/Orderer ConsensusType etcdraft consenter 127.0.0.1:{o3}",
                 f"+ /Channel/Orderer/OrdererMSP Endpoints 127.0.0.1:{o3}",
                 "Raft quorum: 3 of 4 consenters, tolerating 1 failed (was 2 of 3, tolerating 1)"):
        assert line in dry.stdout, dry.stdout
    assert net.layout.spec_file.read_text() == spec_before and NEW not in net.processes()

    # An unhealthy consenter: refused before anything changes.
    frozen = net.processes()["orderer2.orderer"]["pid"]
    os.kill(frozen, signal.SIGSTOP)
    try:
        refused = net.fails("orderer", "add")
    finally:
        os.kill(frozen, signal.SIGCONT)
    assert "orderer2.orderer is unhealthy" in refused and "nothing was changed" in refused, refused
    assert net.layout.spec_file.read_text() == spec_before and NEW not in net.processes()
    net.wait_ready()

    t0 = time.monotonic()
    with Checks(net, dataset) as during:
        # Killed half-way: once the spec names the new orderer, before it is a consenter.
        first = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "orderer", "add", "--home", str(net.home)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = time.monotonic() + 60
        while NEW not in net.layout.spec_file.read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGKILL)
        first.wait()
        added = net.run("orderer", "add", timeout=300)
        time.sleep(1.5)  # a few checks after the change too
    took = time.monotonic() - t0
    assert added.returncode == 0, added.stdout + added.stderr
    for line in (f"resuming {NEW}: an earlier `orderer add` did not finish", f"joined {NEW} to channel", "as a follower", "consenter set update signed by OrdererMSP",
                 f"endpoint update signed by OrdererMSP and submitted: peers and clients now send to {NEW}",
                 f"{NEW} is a consenter of consortium", "4 consenters, quorum 3, tolerating 1 failed"):
        assert line in added.stdout, added.stdout
    print(f"orderer add under load (killed once, resumed): {took:.1f} s, {len(during.ok)} checks committed meanwhile")
    assert not during.failed, during.failed
    assert len(during.ok) >= 3, "checks kept committing while the orderer joined"

    spec = load_spec(net.layout.spec_file)
    assert NEW in spec.added and consenter_addresses(net) == founders + [f"127.0.0.1:{spec.node(NEW).ports.listen}"]
    heights = {n.name: (orderer_channel(spec, net.layout, n) or {}).get("height") for n in spec.nodes_of("orderer", "orderer")}
    assert heights[NEW] and heights[NEW] >= max(heights.values()) - 1, heights
    status = {n["name"]: n for n in net.ok("status")["nodes"]}
    assert status[NEW]["healthy"] and status[NEW]["type"] == "orderer", status.get(NEW)

    again = net.run("orderer", "add", "orderer3")
    assert again.returncode == 0 and "already a consenter of consortium (4 consenters): nothing to do" in again.stdout, again.stdout

    # The Raft leader killed: 4 consenters tolerate one failure.
    old = leader(net)
    os.kill(net.processes()[old]["pid"], signal.SIGKILL)
    t0 = time.monotonic()
    with Checks(net, dataset) as after_kill:
        deadline = time.monotonic() + 30
        while len(after_kill.ok) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
    print(f"after kill -9 of leader {old}: 3 checks committed in {time.monotonic() - t0:.1f} s; "
          f"failed meanwhile: {after_kill.failed}")
    assert len(after_kill.ok) >= 3, after_kill.failed
    wait_ordering(spec, 60)

    # Removal: the consenter update first, then its process stops; checks go on.
    t0 = time.monotonic()
    with Checks(net, dataset) as during_remove:
        removed = net.run("orderer", "remove", NEW, timeout=300)
        time.sleep(1.5)
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert f"- /Channel/Orderer ConsensusType etcdraft consenter 127.0.0.1:{spec.node(NEW).ports.listen}" in removed.stdout
    assert "its process stopped: 3 consenters, quorum 2, tolerating 1 failed" in removed.stdout, removed.stdout
    print(f"orderer remove under load: {time.monotonic() - t0:.1f} s, {len(during_remove.ok)} checks committed meanwhile")
    assert not during_remove.failed, during_remove.failed
    assert len(during_remove.ok) >= 2
    assert NEW not in net.processes() and consenter_addresses(net) == founders
    spec = load_spec(net.layout.spec_file)
    assert spec.removed_nodes == (NEW,) and NEW not in {n["name"] for n in net.ok("status")["nodes"]}
    again = net.run("orderer", "remove", NEW)
    assert again.returncode == 0 and "already removed from consortium: nothing to do" in again.stdout, again.stdout

    # Two consenters would tolerate no failure: refused without --force, nothing changes.
    spec_now = net.layout.spec_file.read_text()
    refused = net.fails("orderer", "remove", "orderer0.orderer")
    assert refused == ("twinledger: removing orderer0.orderer would leave 2 consenters: Raft then needs both to order and tolerates "
                       "no failure; add an orderer first, or pass --force; nothing was changed"), refused
    assert net.layout.spec_file.read_text() == spec_now and consenter_addresses(net) == founders
    assert net.ok("data", "check", dataset, "--purpose", "train:sepsis", "--as", "plant1:operator")["allowed"]
