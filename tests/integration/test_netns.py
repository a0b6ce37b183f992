"""The consortium across hosts (issue 12): each org in its own Linux network namespace, on its own address.

The test makes a bridge and one namespace per org (``tests.netns``: veth pairs on a 10.77.x.0/24 it picks),
writes a spec that places each org there (``host``, ``netns``) and runs, as a user would:

* `twinledger up --spec`: the orderer org's orderer, each plant's CA, peer and chaincode server start inside
  their org's namespace and listen on its address only (nothing of theirs answers on this machine's
  127.0.0.1); the channel, the chaincode and gossip come up across the bridge;
* a governed federated round (`fl run`, maintenance, both plants): the SuperLink in plant1's namespace, each
  plant's SuperNode in its own, the round committed on the ledger and `fl verify` clean;
* `twins run` of plant1's machines: the OPC-UA simulators and the bridge in plant1's namespace, a reading
  anchored on the ledger and `verify reading` OK;
* `twinledger down`; the namespaces and the bridge are removed whatever happens.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from federated.launch import stop_deployment
from network.layout import Layout
from network.processes.procspec import load_manifest
from network.spec import load_spec
from tests.fabric_net import PORTS, REPO, FabricNet, twinledger
from tests.integration.test_fl_cli import register_federation
from tests.integration.test_twins_cli import procs_using
from tests.netns import NetnsUnavailable, org_namespaces, pids_in
from tests.ports import free_port_base

pytestmark = pytest.mark.integration

ORGS = ("orderer", "plant1", "plant2")


def spec_text(name: str, port_base: int, places: dict) -> str:
    lines = [f"name: {name}", "channel: consortium", f"port_base: {port_base}", "orgs:"]
    for org in ORGS:
        kind = "orderer" if org == "orderer" else "plant"
        count = "orderers: 1" if org == "orderer" else "peers: 1"
        lines.append(f"  - {{name: {org}, kind: {kind}, {count}, host: {places[org].host}, netns: {places[org].netns}}}")
    return "\n".join(lines) + "\n"


def refused_on_loopback(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def in_netns(pid: int, ns: str) -> bool:
    return pid in pids_in(ns)


def test_orgs_in_their_own_namespaces_run_a_governed_round_and_anchor_a_batch(tmp_path: Path) -> None:
    try:
        ctx = org_namespaces(ORGS)
        places = ctx.__enter__()
    except NetnsUnavailable as exc:
        pytest.skip(str(exc))
    home = tmp_path / "net"
    timings: dict[str, float] = {}
    try:
        port_base = free_port_base(PORTS)
        spec_file = tmp_path / "spec.yaml"
        spec_file.write_text(spec_text("acrosshosts", port_base, places))
        t0 = time.monotonic()
        up = twinledger("up", "--spec", str(spec_file), home=home, timeout=420)
        timings["up"] = time.monotonic() - t0
        assert up.returncode == 0, up.stdout + up.stderr
        layout = Layout(home)
        spec = load_spec(layout.spec_file)
        net = FabricNet(home, spec, layout, port_base, timings["up"])

        # Each node runs in its org's namespace and listens on its org's address, not on this machine's loopback.
        procs = net.processes()
        for node in spec.nodes():
            if node.name not in procs:
                continue
            assert node.host == places[node.org].host and node.netns == places[node.org].netns
            assert in_netns(procs[node.name]["pid"], places[node.org].netns), f"{node.name} is not in its namespace"
            assert refused_on_loopback(node.ports.listen), f"{node.name} answers on 127.0.0.1:{node.ports.listen}"
        status = {n["name"]: n for n in net.ok("status")["nodes"]}
        for node in ("orderer0.orderer", "peer0.plant1", "peer0.plant2", "twinledger.peer0.plant2"):
            assert status[node]["healthy"], status[node]
        assert status["peer0.plant2"]["address"] == spec.node("peer0.plant2").address
        assert status["peer0.plant2"]["address"].startswith(places["plant2"].host + ":")

        # A governed federated round: each plant's steward grants the other its data set; Flower across the bridge.
        datasets = register_federation(net)
        task = net.unique("maintenance")
        flower_base = str(free_port_base(3))
        t0 = time.monotonic()
        run = net.run("fl", "run", task, "--rounds", "1", "--datasets", datasets["plant1"], datasets["plant2"],
                      "--port-base", flower_base, "--keep-running", timeout=600)  # fmt: skip
        timings["fl run (1 round, 2 plants)"] = time.monotonic() - t0
        try:
            assert run.returncode == 0, run.stdout + run.stderr
            assert f"SuperLink {places['plant1'].host}:{flower_base} and SuperNodes of plant1, plant2 are up" in run.stdout
            assert "round 1/1 committed" in run.stdout, run.stdout
            procs = net.processes()
            assert in_netns(procs["superlink"]["pid"], places["plant1"].netns)
            for org in ("plant1", "plant2"):
                assert in_netns(procs[f"supernode.{org}"]["pid"], places[org].netns), f"supernode.{org}"
                assert in_netns(procs[f"superexec.{org}"]["pid"], places[org].netns), f"superexec.{org}"
        finally:
            ours = [p for p in load_manifest(home / "run") if p.type in ("superlink", "supernode")]
            if ours:
                stop_deployment(home, ours)
        rounds = net.ok("fl", "rounds", task)["rounds"]
        assert [r["round"] for r in rounds] == [1] and sorted(rounds[0]["participants"]) == ["plant1", "plant2"]
        verify = net.run("fl", "verify", task)
        assert verify.returncode == 0 and "0 missing, 0 mismatched" in verify.stdout, verify.stdout + verify.stderr

        # The twins of plant1: simulators and bridge in plant1's namespace, a batch anchored on the ledger.
        port = free_port_base(3)
        twins = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "twins", "run", "--machines", "plant1:1",
                                  "--port", str(port), "--machine-rate", "10", "--duration", "6", "--home", str(home)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
        t0 = time.monotonic()
        cmds: dict[int, str] = {}
        seen: dict[int, bool] = {}  # pid of a simulator or the bridge -> it ran in plant1's namespace
        while twins.poll() is None and time.monotonic() - t0 < 120:
            inside = set(pids_in(places["plant1"].netns))
            # the latest look wins: `ip netns exec` runs in this namespace for a moment before it enters the org's
            for pid in procs_using(home / "twins"):  # also the CLI's own enrolment (fabric-ca-client), not ours
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                except OSError:
                    continue
                if " -m twins.simulators " in cmd or " -m twins.bridge " in cmd:
                    seen[pid], cmds[pid] = pid in inside, cmd[:160]
            time.sleep(0.3)
        out, err = twins.communicate(timeout=60)
        timings["twins run (6 s)"] = time.monotonic() - t0
        assert twins.returncode == 0, out + err
        assert f"opc.tcp://{places['plant1'].host}:{port}" in out, out
        last = out.strip().splitlines()[-1]
        assert "0 lost" in last and " 0 anchored" not in last, last
        assert len(seen) == 2 and all(seen.values()), f"a simulator or the bridge ran outside plant1's namespace: {seen} {cmds}"
        st = json.loads(net.run("twins", "status", "--json").stdout)
        batch = st["last_anchors"][0]["batch_id"]
        db = sqlite3.connect(home / "twins" / "readings.sqlite")
        (seq,) = db.execute("SELECT seq FROM readings WHERE batch_id=? LIMIT 1", (batch,)).fetchone()
        db.close()
        check = net.run("verify", "reading", "plant1.m1", str(seq), "--json")
        assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True, check.stdout + check.stderr
    finally:
        t0 = time.monotonic()
        twinledger("down", home=home, timeout=180)
        timings["down"] = time.monotonic() - t0
        ctx.__exit__(None, None, None)
        print("\nacross network namespaces: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
