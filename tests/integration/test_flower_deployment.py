"""Flower's Deployment Engine for real: SuperLink + 2 SuperNodes (plant1, plant2; maintenance task on AI4I
2020) as processes under the TwinLedger supervisor, TLS on (a CA made here with ``cryptography``) and
SuperNode authentication on; a 2-round governed FedAvg run submitted with ``flwr run``, every round on
the real Fabric network of the test run (``fabric_net``): the ServerApp acts as plant1's operator, each
ClientApp records its data use with its own org's operator identity.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509

from federated.deployment import FlowerDeployment
from federated.fabric_ledger import open_ledger
from federated.pki import make_node_key
from federated.store import ModelStore
from orchestrator.cli_fl import write_ledger_configs
from network.processes.control import reload_supervisor, start_supervisor, stop_supervisor, wait_healthy
from network.processes.procspec import save_manifest, upsert_processes
from tests.fabric_net import FabricNet
from tests.integration.test_fl_cli import PLANTS, SPEC, audit, register_federation
from tests.ports import free_port_base

pytestmark = pytest.mark.integration

ORGS = tuple(PLANTS)


@pytest.fixture
def deployment(tmp_path, fabric_net: FabricNet):
    home = tmp_path / "home"
    datasets = register_federation(fabric_net)  # each plant's steward registers its share and grants the other
    server, per_org = write_ledger_configs(fabric_net.home, fabric_net.spec, list(ORGS), ("plant1", "operator"),
                                           folder=tmp_path / "ledger")  # fmt: skip
    d = FlowerDeployment(home=home / "flower", task="maintenance", orgs=ORGS, port_base=free_port_base(4),
                         ledger=server, org_ledgers=per_org, datasets=datasets)  # fmt: skip
    d.prepare()
    started: list[subprocess.Popen] = []
    yield d, home, started, datasets
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    stop_supervisor(home, timeout=30)


def _logs(home: Path) -> str:
    out = []
    for f in sorted((home / "logs").glob("*.log")):
        out.append(f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-25:]))
    return "\n".join(out)


def _token_argvs(d: FlowerDeployment) -> list[str]:
    """Command lines of running processes that carry a Flower task token for one of our Runtime APIs."""
    ours = {d.superlink_address} | {f"127.0.0.1:{d.runtime_port(o)}" for o in ORGS}
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in argv]
        if "--token" in text and ours & set(text):
            found.append(" ".join(text))
    return found


def _assert_no_plain_http(port: int) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/")
        status = conn.getresponse().status
    except (ConnectionError, http.client.HTTPException, OSError):
        return  # the TLS server dropped the plain-text request
    finally:
        conn.close()
    pytest.fail(f"127.0.0.1:{port} answered plain HTTP with status {status}")


def _acquire_task_unsigned(address: str, ca_cert: Path) -> str:
    """AcquireTask on a Runtime API over TLS, without the SuperExec secret: what refused it ("" if nothing)."""
    from flwr.proto.runtime_pb2 import AcquireTaskRequest  # pylint: disable=no-name-in-module
    from flwr.supercore.runtime import RuntimeHttpClient

    client = RuntimeHttpClient.from_server_address(server_address=address, insecure=False,
                                                   root_certificates=ca_cert.read_bytes(), interceptors=[])  # fmt: skip
    try:
        res = client.AcquireTask(AcquireTaskRequest(supported_task_types=["flwr-serverapp", "flwr-clientapp"]))
    except Exception as exc:  # noqa: BLE001 -- the refusal is what we look for
        return f"{type(exc).__name__}: {exc}"
    finally:
        client.close()
    del res  # answered: not refused
    return ""


def test_two_rounds_tls_node_auth_hashes_and_unregistered_node_refused(deployment, fabric_net: FabricNet):
    d, home, started, datasets = deployment
    run_dir = home / "run"

    # TLS: the SuperLink's certificate is issued by our CA for 127.0.0.1.
    cert = x509.load_pem_x509_certificate(d.tls.cert.read_bytes())
    ca = x509.load_pem_x509_certificate(d.tls.ca_cert.read_bytes())
    assert cert.issuer == ca.subject
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}

    # 1. SuperLink under the real supervisor; 2. register each org's SuperNode key; 3. start the SuperNodes.
    save_manifest(run_dir, [d.superlink_spec()])
    start_supervisor(home)
    wait_healthy(home, [d.superlink_spec().name], timeout=60)
    d.wait_superlink(timeout=60)
    node_ids = {org: d.register(org) for org in ORGS}
    assert len(set(node_ids.values())) == 2

    node_specs = [d.superlink_exec_spec()] + [s for org in ORGS for s in d.supernode_specs(org)]
    upsert_processes(run_dir, node_specs)
    reload_supervisor(home)
    wait_healthy(home, [s.name for s in node_specs], timeout=90)
    d.wait_online(timeout=90)

    # A SuperNode whose key was never registered is refused by the SuperLink.
    rogue = make_node_key(home / "rogue", "rogue")
    argv = d.supernode_argv("plant1", key_file=rogue.private, port=d.port_base + 3)
    proc = subprocess.Popen(argv, env={**os.environ, **d._env("rogue")}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)  # fmt: skip
    started.append(proc)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the SuperNode with an unregistered key was not refused within 60 s")
    assert proc.returncode != 0
    assert "Failed to activate SuperNode" in out, out[-2000:]
    assert len(d.registered_nodes()) == 2

    # A 2-round governed FedAvg run through the deployment engine, a new task on the Fabric ledger.
    key = fabric_net.unique("maintenance")
    report = d.home / "reports" / "run.json"
    t0 = time.monotonic()
    run_id = d.start_run(**{"num-server-rounds": 2, "report": str(report), "strategy": "fedavg", "ledger-task": key})
    token_argvs: list[str] = []
    status = d.wait_run(run_id, timeout=300, on_poll=lambda: token_argvs.extend(_token_argvs(d)))
    elapsed = time.monotonic() - t0
    assert status["status"] == "finished:completed", f"{status}\n{d.run_log(run_id)}\n{_logs(home)}"

    # ServerApp and ClientApps were forked by our SuperExecs: no task token on any command line
    assert token_argvs == [], token_argvs
    for port in [d.port_base] + [d.runtime_port(o) for o in ORGS]:
        _assert_no_plain_http(port)  # SuperLink (Fleet/Control/ServerAppIo) and each ClientAppIo: TLS only
        # only our SuperExec (it holds the 0600 secret) may acquire tasks and their tokens
        refused = _acquire_task_unsigned(f"127.0.0.1:{port}", d.tls.ca_cert)
        assert "401 Unauthorized" in refused, (port, refused)

    summary = json.loads(report.read_text())
    print(f"\nrun {run_id}: {elapsed:.1f} s, seconds per round {[round(s, 2) for s in summary['round_seconds']]}")
    assert summary["ledger_task"] == key
    ledger = open_ledger(d.ledger)  # the ServerApp's own connection: plant1's operator through peer0.plant1
    try:
        task = ledger.get_task(key)
        rounds = ledger.list_rounds(key)
        # Every artefact the ledger names is in the store and re-hashes to its record; so does every stored file.
        store = ModelStore(d.store_dir)
        report_ledger = store.verify_ledger(ledger, key)
    finally:
        ledger.close()
    assert task is not None and task.created_by_org == "plant1" and sorted(task.datasets) == sorted(datasets.values())
    assert [r.round for r in rounds] == [1, 2]
    for r in rounds:
        assert r.complete and len(r.commit_tx_id or "") == 64
        assert r.participants == sorted(ORGS)
        assert sorted(u.org for u in r.updates) == sorted(ORGS)  # both orgs contributed each round
        assert all(u.num_examples > 0 for u in r.updates)
    assert rounds[1].global_sha256 == rounds[0].result_sha256  # round 2 starts from round 1's result
    assert summary["final_sha256"] == rounds[1].result_sha256
    assert set(rounds[1].evaluation) == set(ORGS)  # the final model was evaluated at both plants
    assert all(0.5 < m["auroc"] <= 1.0 for m in rounds[1].evaluation.values())
    assert report_ledger.passed and len(report_ledger.ok) == 2 * 2 + 3, report_ledger.summary()
    assert store.verify(store.list()).passed

    # Each round's participants were admitted on their own recorded checks: every transaction a round
    # names is that org's allowed check in the data set's audit trail on the ledger.
    for org, ds in datasets.items():
        entries = audit(fabric_net, ds, org)
        checks = {e["tx_id"]: e for e in entries if e["action"] == "access"}
        for r in rounds:
            for participant, named in r.checks.items():
                e = checks[named[ds]]
                assert (e["org"], e["allowed"], e["purpose"], e["role"]) == (participant, True, SPEC.purpose, "operator")
        assert {e["org"] for e in checks.values()} == set(ORGS)
