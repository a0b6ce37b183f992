"""The twins on their OPC-UA org's placement (network.spec_model.Placement): the simulators listen on the org's host
(never all interfaces), the bridge reaches them there, both can start inside the org's network namespace, the
OPC-UA certificates name the host, and `twins run`'s port checks look where the processes will listen.

Real sockets throughout: Linux answers on all of 127.0.0.0/8 without setup, so 127.0.0.2 stands for "a host that
is not 127.0.0.1". The network-namespace test (root only, skipped elsewhere) creates one namespace on a bridge of
its own (tests.netns) and removes it again."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from network.spec import dump_spec, load_spec, parse_spec
from network.spec_model import Placement
from orchestrator.cli_common import UserError
from orchestrator.cli_twins_run import _port_problem
from orchestrator.twins_state import org_placement
from tests.ports import free_port_base
from twins.bridge.client import OpcUaBridge
from twins.bridge.mapping import load_mapping
from twins.metrics import listen_host
from twins.procs import Proc, bridge_argv, simulator_argv
from twins.security import _still_valid, app_cert_hosts, generate_certificate, ip_sans, load_certificate
from twins.simulators.server import SimulatorServer

ALIAS = "127.0.0.2"


@pytest.mark.parametrize("given, bound", [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), (ALIAS, ALIAS),
                                          ("10.77.0.11", "10.77.0.11"), ("192.168.1.20", "192.168.1.20")])
def test_a_listener_takes_loopback_or_one_unicast_address(given, bound):
    assert listen_host(given, "simulators") == bound


@pytest.mark.parametrize("given, says", [
    ("0.0.0.0", "would listen on every interface"), ("plant1.example", "is not an IPv4 address"),
    ("plant1", "is not an IPv4 address"), ("", "is not an IPv4 address"), ("::1", "IPv6 is not supported"),
    ("224.0.0.1", "not a unicast address"), ("255.255.255.255", "not a unicast address"),
])
def test_a_listener_refuses_all_interfaces_names_and_group_addresses(given, says, tmp_path):
    with pytest.raises(ValueError, match=says):
        listen_host(given, "simulators")
    with pytest.raises(ValueError, match=f"^simulators: host .*{says}"):
        SimulatorServer([], tmp_path / "history.sqlite", host=given)
    with pytest.raises(ValueError, match=says):
        simulator_argv(host=given, port=4840, data_dir=tmp_path, insecure=True)
    with pytest.raises(ValueError, match=says):
        bridge_argv(mapping=tmp_path / "m.yaml", home=tmp_path, ledger_config=tmp_path / "l.json", insecure=True,
                    metrics_port=4842, metrics_host=given)


def test_the_server_url_names_its_host(tmp_path):
    assert SimulatorServer([], tmp_path / "a.sqlite").url == "opc.tcp://127.0.0.1:4840/twinledger/sim"
    assert SimulatorServer([], tmp_path / "b.sqlite", host=ALIAS, port=4999).url == f"opc.tcp://{ALIAS}:4999/twinledger/sim"


def test_argv_builders_carry_the_host(tmp_path):
    sim = simulator_argv(host="10.77.0.11", port=4840, data_dir=tmp_path, insecure=True, metrics_port=4841)
    assert sim[sim.index("--host") + 1] == "10.77.0.11" and sim[sim.index("--metrics-port") + 1] == "4841"
    assert simulator_argv(port=4840, data_dir=tmp_path, insecure=True)[3:5] == ["--host", "127.0.0.1"]
    common = dict(mapping=tmp_path / "m.yaml", home=tmp_path, ledger_config=tmp_path / "l.json", insecure=True)
    br = bridge_argv(metrics_port=4842, metrics_host="10.77.0.11", **common)
    assert br[br.index("--metrics-port"):br.index("--metrics-port") + 4] == ["--metrics-port", "4842", "--metrics-host", "10.77.0.11"]
    assert "--metrics-host" not in bridge_argv(**common)  # no metrics, no listener


def test_the_commands_refuse_all_interfaces_in_one_line(tmp_path):
    sim = subprocess.run([*simulator_argv(host="127.0.0.1", port=4840, data_dir=tmp_path / "sim", machines=["plant1:1"],
                                          insecure=True), "--host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert sim.returncode != 0 and sim.stderr.strip().splitlines()[-1] == (
        "error: simulators: host 0.0.0.0 would listen on every interface; give one address (127.0.0.1 or the org's host)")
    (tmp_path / "m.yaml").write_text("{}")
    br = subprocess.run([*bridge_argv(mapping=tmp_path / "m.yaml", home=tmp_path / "b", ledger_config=tmp_path / "l.json",
                                      insecure=True), "--metrics-host", "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert br.returncode != 0 and br.stderr.strip().splitlines()[-1].startswith(
        "error: bridge --metrics-host: host 0.0.0.0 would listen on every interface")


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")
def test_a_proc_in_a_namespace_runs_under_ip_netns_exec_and_errors_name_the_program(tmp_path):
    argv = simulator_argv(port=free_port_base(1), data_dir=tmp_path / "sim", machines=["plant1:1"], insecure=True)
    p = Proc(argv, log=tmp_path / "sim.log", netns="tlnosuchns")
    try:
        assert p.command == ["ip", "netns", "exec", "tlnosuchns", *argv] and p.argv == argv
        with pytest.raises(RuntimeError, match=r"^twins\.simulators \(in network namespace tlnosuchns\) exited with "):
            p.wait_ready(30)
    finally:
        p.stop()
    assert "tlnosuchns" in (tmp_path / "sim.log").read_text()  # ip's own reason, in the process's log


async def _bridge_readings(mapping_file: Path, want: int, timeout: float = 30.0) -> list:
    """Readings the real bridge client delivers from the server the mapping names (until ``want`` of them)."""
    got: list = []
    stop = asyncio.Event()

    def deliver(reading) -> None:
        got.append(reading)
        if len(got) >= want:
            stop.set()

    bridge = OpcUaBridge(load_mapping(mapping_file), deliver, start_from="history")
    task = asyncio.create_task(bridge.run(stop))
    try:
        await asyncio.wait_for(stop.wait(), timeout)
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
    return got


def _start_simulators(tmp_path: Path, host: str, port: int, netns: str | None = None) -> Proc:
    argv = simulator_argv(host=host, port=port, data_dir=tmp_path / "sim", machines=["plant1:1"], machine_rate=20,
                          mapping_out=tmp_path / "mapping.yaml", metrics_port=port + 1, insecure=True)
    return Proc(argv, log=tmp_path / "sim.log", netns=netns)


def _check_served_there(tmp_path: Path, p: Proc, host: str, port: int) -> None:
    ready = p.wait_ready(60)
    url = f"opc.tcp://{host}:{port}/twinledger/sim"
    assert ready["endpoint"] == url and ready["metrics"] == f"http://{host}:{port + 1}/metrics"
    assert load_mapping(tmp_path / "mapping.yaml").server == url
    with urllib.request.urlopen(ready["metrics"], timeout=10) as r:
        assert b"twinledger_simulator_values_published_total" in r.read()
    readings = asyncio.run(_bridge_readings(tmp_path / "mapping.yaml", 30))
    assert {r.asset for r in readings} == {"plant1.m1"} and all(r.good for r in readings)


def test_simulators_on_a_loopback_alias_serve_there_only_and_a_bridge_reads_them(tmp_path):
    port = free_port_base(2)
    p = _start_simulators(tmp_path, ALIAS, port)
    try:
        _check_served_there(tmp_path, p, ALIAS, port)
        for q in (port, port + 1):  # one address bound, not every interface
            with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", q), timeout=5):
                pass
        assert _port_problem(Placement(ALIAS), port) == f"port {port} on {ALIAS} is in use"
        assert _port_problem(Placement(), port) is None  # the same port on another address is another socket
    finally:
        assert p.stop() == 0


def test_port_checks_look_at_the_placements_host(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _port_problem(Placement(), port, " (metrics of the bridge, --metrics-port)") == (
            f"port {port} on 127.0.0.1 (metrics of the bridge, --metrics-port) is in use")
        assert _port_problem(Placement(ALIAS), port) is None
    # an address this machine does not have: not "in use", the real reason
    assert _port_problem(Placement("192.0.2.77"), port) == (
        f"cannot listen on port {port} on 192.0.2.77 in this machine (Cannot assign requested address, "
        "192.0.2.77 is no address of this machine)")


@pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2's ip")
def test_a_namespace_that_cannot_be_entered_is_said_so(tmp_path):
    with pytest.raises(UserError, match=r"^cannot run the twins in network namespace tlnosuchns: .*tlnosuchns"):
        _port_problem(Placement("10.77.0.11", "tlnosuchns"), 4840)


def test_the_opcua_orgs_placement_comes_from_the_homes_spec(tmp_path):
    raw = load_spec(None).to_dict()
    for org in raw["orgs"]:
        if org["name"] == "plant1":
            org.update(host="10.77.0.13", netns="tl-plant1")
    (tmp_path / "spec.yaml").write_text(dump_spec(parse_spec(raw)))
    assert org_placement(tmp_path, "plant1") == Placement("10.77.0.13", "tl-plant1")
    assert org_placement(tmp_path, "hospital1") == Placement()  # not placed: this machine's loopback
    with pytest.raises(UserError, match="unknown org 'plant9'"):
        org_placement(tmp_path, "plant9")
    with pytest.raises(UserError, match="there is no network in"):
        org_placement(tmp_path / "none", "plant1")


def test_application_certificates_name_the_host(tmp_path):
    import socket as _s

    uri = "urn:twinledger:plant1:simulators"
    # on loopback, the SANs asked of the CA are what they always were
    assert app_cert_hosts(uri) == [uri, "127.0.0.1", "localhost", _s.gethostname()]
    assert app_cert_hosts(uri, "10.77.0.13") == [uri, "127.0.0.1", "localhost", "10.77.0.13", _s.gethostname()]
    # a certificate without the org's host is issued again (the org moved), one with it is kept
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    generate_certificate(cert, key, uri, "simulators")
    assert ip_sans(load_certificate(cert)) == {"127.0.0.1"}
    assert _still_valid(cert, key, uri, cert, "127.0.0.1")  # self-signed: its own CA
    assert not _still_valid(cert, key, uri, cert, "10.77.0.13")


# --- inside a network namespace (root) ------------------------------------------------------------------------
@pytest.fixture
def plant_ns():
    from tests.netns import one_org_namespace_or_skip

    with one_org_namespace_or_skip("plant1") as place:
        yield place


def test_simulators_in_the_orgs_namespace_listen_on_its_host(tmp_path, plant_ns):
    from tests.netns import pids_in

    place, port = plant_ns, free_port_base(2)
    assert _port_problem(place, port) is None
    p = _start_simulators(tmp_path, place.host, port, netns=place.netns)
    try:
        # reached from this machine's namespace across the namespace's bridge, as another org's machine would
        _check_served_there(tmp_path, p, place.host, port)
        assert p.pid in pids_in(place.netns)  # ip netns exec execs in place: the pid is the simulators'
        assert _port_problem(place, port) == f"port {port} on {place.host} is in use"
        assert _port_problem(Placement("192.0.2.77", place.netns), port) == (
            f"cannot listen on port {port} on 192.0.2.77 in network namespace {place.netns} (Cannot assign "
            f"requested address, 192.0.2.77 is no address of network namespace {place.netns})")
        probe = subprocess.run(["ip", "netns", "exec", place.netns, sys.executable, "-c",
                                f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"],
                               capture_output=True, text=True, timeout=60)
        assert "ConnectionRefusedError" in probe.stderr  # the namespace's loopback: nothing bound there
    finally:
        assert p.stop() == 0


def test_a_bridge_in_a_namespace_refuses_orgs_left_on_this_machines_loopback():
    from orchestrator.cli_twins_run import stranded_orgs

    inside = Placement("10.77.0.11", "tl-plant1")
    mixed = {"plant1": inside, "plant2": Placement("10.77.0.12", "tl-plant2"), "hospital1": Placement()}
    assert stranded_orgs(inside, mixed) == ["hospital1"]
    assert stranded_orgs(inside, {"plant1": inside, "plant2": Placement("10.77.0.12", "tl-plant2")}) == []
    assert stranded_orgs(Placement(), mixed) == []  # from this machine every host is reached
