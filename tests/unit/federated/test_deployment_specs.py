"""Launch commands for the deployment engine (as supervisor ProcSpecs) and the key material, without processes."""

from __future__ import annotations

import ipaddress
import json
import time

from cryptography import x509

from federated.deployment import FlowerDeployment, config_args
from federated.supernode_launch import _CappedTime


def test_process_specs_bind_loopback_with_tls_and_node_auth(tmp_path):
    d = FlowerDeployment(home=tmp_path, task="maintenance", port_base=23000, ledger="fabric:/l/server.json",
                         org_ledgers={"plant2": "fabric:/l/plant2.json"}, datasets={"plant2": "plant2.ai4i-x"})
    d.prepare()
    specs = {s.name: s for s in d.process_specs()}
    assert set(specs) == {"superlink", "superexec.superlink", "supernode.plant1", "superexec.plant1", "supernode.plant2",
                          "superexec.plant2"}  # fmt: skip
    # no Flower process talks plain text (issue 13): every API is HTTPS, every client verifies our CA
    assert not any("--insecure" in s.argv for s in specs.values())
    sl = specs["superlink"].argv
    assert "--enable-supernode-auth" in sl
    # the ServerApp is forked by our SuperExec (its token never on an argv), which signs AcquireTask
    assert sl[sl.index("--isolation") + 1] == "process"
    assert sl[sl.index("--superexec-auth-secret-file") + 1] == str(d.superexec_secret("superlink"))
    sx = specs["superexec.superlink"].argv
    assert sx[sx.index("--root-certificates") + 1] == str(d.tls.ca_cert) and sx[-1] == "127.0.0.1:23000"
    assert sx[sx.index("--superexec-auth-secret-file") + 1] == str(d.superexec_secret("superlink"))
    assert sl[sl.index("--ssl-certfile") + 1] == str(d.tls.cert) and sl[sl.index("--host") + 1] == "127.0.0.1"
    assert specs["superlink"].health == "tcp://127.0.0.1:23000"
    sn = specs["supernode.plant2"].argv
    assert sn[sn.index("--superlink") + 1] == "127.0.0.1:23000"
    assert sn[sn.index("--root-certificates") + 1] == str(d.tls.ca_cert)
    assert sn[sn.index("--auth-supernode-private-key") + 1] == str(tmp_path / "keys" / "plant2")
    assert sn[sn.index("--isolation") + 1] == "process" and sn[sn.index("--port") + 1] == "23002"
    node_config = sn[sn.index("--node-config") + 1]
    # plant2's ClientApp records its data use with plant2's own Fabric identity, for its own data set
    assert node_config == 'org="plant2" task="maintenance" ledger="fabric:/l/plant2.json" dataset="plant2.ai4i-x"'
    assert d.run_config()["ledger"] == "fabric:/l/server.json" and d.run_config()["datasets"] == "plant2.ai4i-x"
    # plant2's ClientAppIo API: HTTPS with its own certificate from our CA; its SuperExec verifies it
    rt = d.runtime_tls("plant2")
    assert sn[sn.index("--ssl-certfile") + 1] == str(rt.cert) and sn[sn.index("--ssl-keyfile") + 1] == str(rt.key)
    assert sn[sn.index("--superexec-auth-secret-file") + 1] == str(d.superexec_secret("plant2"))
    ex = specs["superexec.plant2"].argv
    assert ex[-1] == "127.0.0.1:23002" and ex[ex.index("--root-certificates") + 1] == str(d.tls.ca_cert)
    assert ex[ex.index("--superexec-auth-secret-file") + 1] == str(d.superexec_secret("plant2"))
    for s in specs.values():
        assert s.env["FLWR_HOME"].startswith(str(tmp_path)) and s.env["FLWR_TELEMETRY_ENABLED"] == "0"

    plain = FlowerDeployment(home=tmp_path / "p", port_base=23100, warm=False, node_poll=None)
    names = [s.name for s in plain.process_specs()]
    assert names == ["superlink", "superexec.superlink", "supernode.plant1", "supernode.plant2"]
    pa = plain.supernode_argv("plant1")
    assert pa[0].endswith("flower-supernode") and "subprocess" in pa and "--ssl-certfile" in pa
    assert "--superexec-auth-secret-file" not in pa  # Flower 1.41 ignores it in subprocess isolation


def test_key_material(tmp_path):
    d = FlowerDeployment(home=tmp_path, task="cardiac", port_base=23200)
    d.prepare()
    cert = x509.load_pem_x509_certificate(d.tls.cert.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    members = json.loads(d.members_file.read_text())
    assert set(members) == {"hospital1", "hospital2"}
    assert members["hospital1"] == d.node_key("hospital1").fingerprint != members["hospital2"]
    assert d.node_key("hospital1").public.read_text().startswith("ecdsa-sha2-nistp384 ")
    assert (tmp_path / "keys" / "hospital1").stat().st_mode & 0o077 == 0
    rt = x509.load_pem_x509_certificate(d.runtime_tls("hospital1").cert.read_bytes())
    assert rt.issuer == x509.load_pem_x509_certificate(d.tls.ca_cert.read_bytes()).subject
    assert ipaddress.ip_address("127.0.0.1") in rt.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.IPAddress)
    for private in (d.runtime_tls("hospital1").key, d.superexec_secret("hospital1"), d.superexec_secret("superlink")):
        assert private.stat().st_mode & 0o077 == 0, private
    assert len(d.superexec_secret("hospital1").read_bytes()) == 64
    assert d.superexec_secret("hospital1").read_bytes() != d.superexec_secret("superlink").read_bytes()
    before = members
    d.prepare()  # idempotent: keys are kept
    assert json.loads(d.members_file.read_text()) == before
    plants = FlowerDeployment(home=tmp_path, task="maintenance", port_base=23200)
    plants.prepare()  # a second task on the same SuperLink adds its orgs
    assert set(json.loads(d.members_file.read_text())) == {"hospital1", "hospital2", "plant1", "plant2"}
    conf = (d.cli_home / "config.toml").read_text()
    assert 'address = "127.0.0.1:23200"' in conf and str(d.tls.ca_cert) in conf


def test_config_args_are_toml_values():
    assert config_args({"org": "plant1", "n": 2, "lr": 0.5, "on": True, "q": 'a"b'}) == (
        'org="plant1" n=2 lr=0.5 on=true q="a\\"b"'
    )


def test_capped_time_shortens_only_long_sleeps():
    t = _CappedTime(0.01)
    start = time.monotonic()
    t.sleep(3)
    assert time.monotonic() - start < 1.0
    assert t.monotonic() > 0  # everything else is the real time module


def test_a_run_names_one_data_set_per_org():
    import pytest

    from federated.governance import GovernanceError
    from federated.serverapp import resolve_config, run_datasets, task_record

    cfg = resolve_config({"task": "maintenance", "orgs": "plant1,plant2"})
    assert run_datasets(cfg) == {"plant1": "plant1.ai4i2020", "plant2": "plant2.ai4i2020"}
    named = resolve_config({**cfg, "datasets": "plant2.ai4i-t9, plant1.ai4i-t9"})
    assert run_datasets(named) == {"plant1": "plant1.ai4i-t9", "plant2": "plant2.ai4i-t9"}
    assert task_record(named, "maintenance-t9").datasets == ("plant1.ai4i-t9", "plant2.ai4i-t9")
    for bad, match in [("plant1.a", "no data set named for plant2"), ("plant1.a,plant1.b,plant2.c", "two data sets"),
                       ("plant1.a,hospital1.b", "does not name an org of the run"), ("ai4i,plant1.a", "does not name")]:
        with pytest.raises(GovernanceError, match=match):
            run_datasets(resolve_config({**cfg, "datasets": bad}))


def test_processes_run_on_their_orgs_placement(tmp_path):
    """Across hosts (issue 12): each SuperNode binds and is reached at its org's host, in its org's network
    namespace; the SuperLink runs on the operator's org's; every server certificate names its host."""
    from federated.pki import server_cert_hosts
    from network.spec_model import Placement

    d = FlowerDeployment(home=tmp_path, task="maintenance", port_base=23000,
                         placements={"plant1": Placement("10.77.0.11", "tl-plant1"), "plant2": Placement("10.77.0.12", "tl-plant2")},
                         superlink_placement=Placement("10.77.0.11", "tl-plant1"))  # fmt: skip
    d.prepare()
    specs = {s.name: s for s in d.process_specs()}
    sl = specs["superlink"]
    assert sl.argv[sl.argv.index("--host") + 1] == "10.77.0.11" and sl.netns == "tl-plant1"
    assert sl.health == "tcp://10.77.0.11:23000" and sl.command[:4] == ["ip", "netns", "exec", "tl-plant1"]
    assert specs["superexec.superlink"].netns == "tl-plant1" and specs["superexec.superlink"].argv[-1] == "10.77.0.11:23000"
    sn = specs["supernode.plant2"]
    assert sn.argv[sn.argv.index("--superlink") + 1] == "10.77.0.11:23000"
    assert sn.argv[sn.argv.index("--host") + 1] == "10.77.0.12" and sn.netns == "tl-plant2"
    assert sn.health == "tcp://10.77.0.12:23002"
    assert specs["superexec.plant2"].argv[-1] == "10.77.0.12:23002" and specs["superexec.plant2"].netns == "tl-plant2"
    assert {"10.77.0.11", "127.0.0.1", "localhost"} <= server_cert_hosts(d.tls.cert)
    assert "10.77.0.12" in server_cert_hosts(d.runtime_tls("plant2").cert)
    assert "10.77.0.12" not in server_cert_hosts(d.runtime_tls("plant1").cert)
    assert 'address = "10.77.0.11:23000"' in (d.cli_home / "config.toml").read_text()

    # the spec moved plant2: its certificate is reissued from the same CA, the SuperLink's is kept
    ca, server = d.tls.ca_cert.read_bytes(), d.tls.cert.read_bytes()
    moved = FlowerDeployment(home=tmp_path, task="maintenance", port_base=23000,
                             placements={"plant2": Placement("10.77.0.22")},
                             superlink_placement=Placement("10.77.0.11", "tl-plant1"))  # fmt: skip
    moved.prepare()
    assert "10.77.0.22" in server_cert_hosts(moved.runtime_tls("plant2").cert)
    assert d.tls.ca_cert.read_bytes() == ca and d.tls.cert.read_bytes() == server
    assert moved.placement("plant1") == Placement()  # not named: this machine's loopback, no namespace
