"""Flower's Deployment Engine for real: SuperLink + 2 SuperNodes (plant1, plant2; maintenance task on AI4I
2020) as processes under the TwinLedger supervisor, TLS on (a CA made here with ``cryptography``) and
SuperNode authentication on; a 2-round governed FedAvg run submitted with ``flwr run``.

The Fabric ledger is not available on this machine, so the run is governed by the JSON-file ledger
(``federated.governance.JsonFileLedger``) that the ServerApp, both ClientApps and this test all read.
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

from federated.data import task_spec
from federated.deployment import FlowerDeployment
from federated.governance import JsonFileLedger, grant_federation
from federated.pki import make_node_key
from federated.store import ModelStore
from orchestrator.control import reload_supervisor, start_supervisor, stop_supervisor, wait_healthy
from orchestrator.procspec import save_manifest, upsert_processes
from tests.ports import free_port_base

pytestmark = pytest.mark.integration

ORGS = ("plant1", "plant2")


@pytest.fixture
def deployment(tmp_path):
    home = tmp_path / "home"
    d = FlowerDeployment(home=home / "flower", task="maintenance", orgs=ORGS, port_base=free_port_base(4))
    d.prepare()
    spec = task_spec("maintenance")
    ledger = JsonFileLedger(home / "flower" / "ledger.json")
    grant_federation(ledger, [spec.dataset_id(o) for o in ORGS], spec.purpose)  # each plant's steward grants the other
    started: list[subprocess.Popen] = []
    yield d, home, started
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


def test_two_rounds_tls_node_auth_hashes_and_unregistered_node_refused(deployment):
    d, home, started = deployment
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

    node_specs = [s for org in ORGS for s in d.supernode_specs(org)]
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

    # A 2-round governed FedAvg run through the deployment engine.
    report = d.home / "reports" / "run.json"
    t0 = time.monotonic()
    run_id = d.start_run(**{"num-server-rounds": 2, "report": str(report), "strategy": "fedavg"})
    status = d.wait_run(run_id, timeout=300)
    elapsed = time.monotonic() - t0
    assert status["status"] == "finished:completed", f"{status}\n{d.run_log(run_id)}\n{_logs(home)}"

    summary = json.loads(report.read_text())
    print(f"\nrun {run_id}: {elapsed:.1f} s, seconds per round {[round(s, 2) for s in summary['round_seconds']]}")
    ledger = JsonFileLedger(d.home / "ledger.json")
    rounds = ledger.list_rounds(summary["ledger_task"])
    assert [r.round for r in rounds] == [1, 2]
    for r in rounds:
        assert r.complete
        assert r.participants == sorted(ORGS)
        assert sorted(u.org for u in r.updates) == sorted(ORGS)  # both orgs contributed each round
        assert all(u.num_examples > 0 for u in r.updates)
    assert rounds[1].global_sha256 == rounds[0].result_sha256  # round 2 starts from round 1's result
    assert summary["final_sha256"] == rounds[1].result_sha256
    assert set(rounds[1].evaluation) == set(ORGS)  # the final model was evaluated at both plants
    assert all(0.5 < m["auroc"] <= 1.0 for m in rounds[1].evaluation.values())

    # Every artefact the ledger names is in the store and re-hashes to its record; so does every stored file.
    store = ModelStore(d.store_dir)
    report_ledger = store.verify_ledger(ledger, summary["ledger_task"])
    assert report_ledger.passed and len(report_ledger.ok) == 2 * 2 + 3, report_ledger.summary()
    assert store.verify(store.list()).passed
    # Grants were checked (and audited) for both orgs.
    assert {a["org"] for a in ledger.audit if a["granted"]} == set(ORGS)
