"""core.yaml rendering: complete, loopback-only, paths from the layout, CCaaS without Docker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml

from network.layout import Layout
from network.spec import load_spec, parse_spec
from peers.ccaas import BUILDER_CONTEXT_ENV, BUILDER_CONTEXT_FILE
from peers.core_config import (
    CoreConfigError,
    peer_chaincode_listen_address,
    render_core_yaml,
    write_core_yaml,
)
from peers.orderer_config import render_orderer_yaml

ADDR_RE = re.compile(r"^([A-Za-z0-9.\-]+):(\d+)$")


def strings(obj: Any) -> Iterator[str]:
    if isinstance(obj, dict):
        for v in obj.values():
            yield from strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from strings(v)
    elif isinstance(obj, str):
        yield from obj.split()  # gossip.bootstrap is a space-separated list


@pytest.fixture
def spec():
    return load_spec()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    return Layout(tmp_path / "home")


def render(spec, layout, name="peer0.hospital1", **kw):
    node = spec.node(name)
    kw.setdefault("builder_dir", layout.root / "builder")
    kw.setdefault("chaincode_server_address", f"127.0.0.1:{node.ports.chaincode}")
    return node, render_core_yaml(spec, layout, node, **kw)


def test_complete_sections(spec, layout):
    _, cfg = render(spec, layout)
    # Every top-level section of Fabric's sample core.yaml; viper gives nil maps for missing ones.
    assert set(cfg) == {"peer", "vm", "chaincode", "ledger", "operations", "metrics"}
    for key in ("gateway", "keepalive", "gossip", "tls", "authentication", "BCCSP", "client",
                "deliveryclient", "handlers", "discovery", "limits", "profile"):
        assert key in cfg["peer"], key
    assert {"election", "pvtData", "state"} <= set(cfg["peer"]["gossip"])
    assert {"state", "history", "pvtdataStore", "snapshots"} <= set(cfg["ledger"])


def test_addresses_are_loopback_and_from_spec(spec, layout):
    node, cfg = render(spec, layout)
    p = cfg["peer"]
    listen = f"127.0.0.1:{node.ports.listen}"
    assert p["id"] == node.name
    assert p["listenAddress"] == p["address"] == listen
    assert p["gossip"]["endpoint"] == p["gossip"]["externalEndpoint"] == listen
    assert p["gossip"]["bootstrap"] == listen  # alone in its org
    assert p["chaincodeListenAddress"] == p["chaincodeAddress"] == peer_chaincode_listen_address(node)
    assert cfg["operations"]["listenAddress"] == f"127.0.0.1:{node.ports.operations}"
    for s in strings(cfg):
        m = ADDR_RE.match(s)
        if m and not s.startswith("$("):
            assert m.group(1) == "127.0.0.1", s


def test_no_port_collisions_across_the_network(spec, layout):
    bound: list[str] = []
    for node in spec.nodes():
        if node.type == "peer":
            _, cfg = render(spec, layout, node.name)
            bound += [cfg["peer"]["listenAddress"], cfg["peer"]["chaincodeListenAddress"],
                      cfg["operations"]["listenAddress"], f"127.0.0.1:{node.ports.chaincode}"]
        elif node.type == "orderer":
            o = render_orderer_yaml(spec, layout, node)
            bound += [f"127.0.0.1:{o['General']['ListenPort']}", o["Operations"]["ListenAddress"],
                      o["Admin"]["ListenAddress"]]
    assert len(bound) == len(set(bound))


def test_tls_identity_and_storage_paths_come_from_layout(spec, layout):
    node, cfg = render(spec, layout)
    p = cfg["peer"]
    tls = layout.node_tls(node.name)
    assert p["tls"]["enabled"] is True
    assert p["tls"]["clientAuthRequired"] is True  # mutual TLS (issue 13)
    assert p["tls"]["cert"]["file"] == str(tls / "server.crt")
    assert p["tls"]["key"]["file"] == str(tls / "server.key")
    assert p["tls"]["rootcert"]["file"] == str(tls / "ca.crt")
    assert p["mspConfigPath"] == str(layout.node_msp(node.name))
    assert p["localMspId"] == "Hospital1MSP"
    assert p["fileSystemPath"] == str(layout.node_data(node.name))
    assert cfg["ledger"]["snapshots"]["rootDir"].startswith(str(layout.node_data(node.name)))
    # Nothing may point outside the home folder (e.g. Fabric's /var/hyperledger defaults).
    for s in strings(cfg):
        if s.startswith("/"):
            assert s.startswith(str(layout.root)), s


def test_no_docker_and_ccaas_builder(spec, layout, tmp_path):
    builder = tmp_path / "b"
    _, cfg = render(spec, layout, builder_dir=builder)
    assert cfg["vm"]["endpoint"] == ""
    (eb,) = cfg["chaincode"]["externalBuilders"]
    assert eb["name"] == "ccaas"
    assert eb["path"] == str(builder.resolve())
    assert BUILDER_CONTEXT_ENV in eb["propagateEnvironment"]
    assert "FABRIC_CFG_PATH" in eb["propagateEnvironment"]
    assert cfg["ledger"]["state"]["stateDatabase"] == "goleveldb"
    assert cfg["peer"]["gateway"]["enabled"] is True
    assert cfg["metrics"]["provider"] == "prometheus"
    assert cfg["operations"]["tls"]["enabled"] is False
    assert cfg["peer"]["BCCSP"]["Default"] == "SW"
    assert cfg["peer"]["BCCSP"]["SW"] == {"Hash": "SHA2", "Security": 256, "FileKeyStore": {"KeyStore": None}}


def test_tuning_knobs_default_to_fabric_and_can_be_raised(spec, layout):
    _, cfg = render(spec, layout)
    assert cfg["peer"]["limits"]["concurrency"] == {"endorserService": 2500, "deliverService": 2500, "gatewayService": 500}
    assert cfg["peer"]["validatorPoolSize"] == 0
    _, cfg = render(spec, layout, gateway_concurrency=2000, endorser_concurrency=5000, validator_pool_size=8,
                    chaincode_execute_timeout="60s")
    assert cfg["peer"]["limits"]["concurrency"]["gatewayService"] == 2000
    assert cfg["peer"]["limits"]["concurrency"]["endorserService"] == 5000
    assert cfg["peer"]["validatorPoolSize"] == 8
    assert cfg["chaincode"]["executetimeout"] == "60s"


def test_gossip_bootstrap_names_same_org_peers():
    spec = parse_spec({"orgs": [{"name": "ord", "kind": "orderer", "orderers": 1},
                                {"name": "hospital1", "kind": "hospital", "peers": 2}]})
    layout = Layout(Path("/tmp/x"))
    p0, p1 = spec.nodes_of("hospital1", "peer")
    _, cfg1 = render(spec, layout, p1.name)
    assert cfg1["peer"]["gossip"]["bootstrap"] == f"127.0.0.1:{p0.ports.listen}"


def test_rejects_bad_inputs(spec, layout):
    with pytest.raises(CoreConfigError, match="not a peer"):
        render_core_yaml(spec, layout, spec.node("orderer0.orderer"), builder_dir="/b",
                         chaincode_server_address="127.0.0.1:1")
    node = spec.node("peer0.hospital1")
    with pytest.raises(CoreConfigError, match="127.0.0.1"):
        render(spec, layout, chaincode_server_address=f"0.0.0.0:{node.ports.chaincode}")
    with pytest.raises(CoreConfigError, match="binds itself"):
        render(spec, layout, chaincode_server_address=f"127.0.0.1:{node.ports.listen}")
    with pytest.raises(CoreConfigError, match=">= 0"):
        render(spec, layout, gateway_concurrency=-1)


def test_write_core_yaml_round_trips_and_writes_builder_context(spec, layout):
    node = spec.node("peer0.plant2")
    addr = f"127.0.0.1:{node.ports.chaincode}"
    path = write_core_yaml(spec, layout, node, builder_dir=layout.root / "builder", chaincode_server_address=addr)
    assert path == layout.node_config(node.name) / "core.yaml"
    loaded = yaml.safe_load(path.read_text())
    assert loaded == render_core_yaml(spec, layout, node, builder_dir=layout.root / "builder", chaincode_server_address=addr)
    ctx = json.loads((path.parent / BUILDER_CONTEXT_FILE).read_text())
    assert ctx["chaincode_address"] == addr
    assert ctx["peer"] == node.name and ctx["msp_id"] == "Plant2MSP"
    assert not list(path.parent.glob(".*.tmp"))


def test_builder_resolves_package_template_from_written_config(spec, layout, tmp_path):
    """End to end without Fabric: core.yaml's folder (FABRIC_CFG_PATH) feeds the builder's template."""
    import os
    import subprocess
    import tarfile

    from peers.ccaas import CHAINCODE_ADDRESS_TEMPLATE, install_builder, package_ccaas

    node = spec.node("peer0.hospital2")
    builder = install_builder(tmp_path / "builder")
    addr = f"127.0.0.1:{node.ports.chaincode}"
    cfg_path = write_core_yaml(spec, layout, node, builder_dir=builder, chaincode_server_address=addr)
    pkg = package_ccaas("registry_1", CHAINCODE_ADDRESS_TEMPLATE, tmp_path / "p.tgz")
    src, meta, out = tmp_path / "src", tmp_path / "meta", tmp_path / "out"
    src.mkdir()
    meta.mkdir()
    with tarfile.open(pkg.path, "r:gz") as outer:
        (meta / "metadata.json").write_bytes(outer.extractfile("metadata.json").read())
        (tmp_path / "code.tar.gz").write_bytes(outer.extractfile("code.tar.gz").read())
    with tarfile.open(tmp_path / "code.tar.gz", "r:gz") as inner:
        inner.extractall(src, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "FABRIC_CFG_PATH": str(cfg_path.parent)}
    r = subprocess.run([str(builder / "bin" / "build"), str(src), str(meta), str(out)], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "connection.json").read_text())["address"] == addr


def _seconds(text: str) -> float:
    assert text.endswith("s"), text
    return float(text[:-1])


def test_servers_accept_keepalive_pings_strictly_more_often_than_clients_send_them(spec, layout):
    # Equal intervals let jitter make a ping "too early": GOAWAY too_many_pings between nodes under load.
    peer = render(spec, layout)[1]["peer"]["keepalive"]
    client_pings = min(_seconds(peer["client"]["interval"]), _seconds(peer["deliveryClient"]["interval"]))
    assert _seconds(peer["minInterval"]) < client_pings
    orderer = render_orderer_yaml(spec, layout, spec.node("orderer0.orderer"))["General"]["Keepalive"]
    assert _seconds(orderer["ServerMinInterval"]) < client_pings
