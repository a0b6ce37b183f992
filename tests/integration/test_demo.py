"""`twinledger demo` end to end, as a newcomer runs it: from nothing, on real Fabric, in its own home.

Everything is real: `twinledger up` (Fabric CAs, orderers, peers, the chaincode as a service), every
`twinledger` command the demo runs, the OPC-UA simulators and bridge anchoring on the ledger, Flower's
SuperLink and SuperNodes with PyTorch training and rounds committed on the ledger, the dashboard reading
the ledger through the Gateway. The demo brings up a network of its own (alongside the session's
``fabric_net``) because starting from nothing is what it is for; 1 round per task keeps it short.

While the demo serves its dashboard, the test reads the ledger through the dashboard's API and the CLI.
A second demo on the same home then resumes the network and submits no governance record and no round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import stat
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.fabric_net import REPO, twinledger
from tests.ports import free_port_base

pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

#: Seconds the first demo serves its dashboard: the checks below run against the live network meanwhile.
SERVE_S = 60


def _get_json(url: str, token: str | None) -> dict:
    """GET a dashboard API URL with the login token as a bearer header (none: expect the refusal's JSON)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with opener.open(req, timeout=20) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        return {"status": e.code, **json.loads(e.read())}


def _demo(home: Path, port_base: int, dashboard_port: int, *extra: str, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    with open(log, "w") as out:  # a file, not a pipe: nobody reads while the test polls the dashboard
        return subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "demo", "--home", str(home), "--port-base", str(port_base),
             "--rounds", "1", "--dashboard-port", str(dashboard_port), *extra],
            stdout=out, stderr=subprocess.STDOUT, text=True, cwd=REPO, env=env)


def test_demo_from_nothing_governs_trains_anchors_alerts_and_serves_the_dashboard(tmp_path: Path) -> None:
    home = tmp_path / "net"
    # The network's nodes from the base; Flower at base+900 and the twins just above the nodes (cli_fl, cli_demo).
    base = free_port_base(1000)
    # outside the demo's own range, and below the ephemeral ports (tests/ports.py says why)
    dashboard_port = next(p for p in iter(lambda: free_port_base(1), None) if not base <= p < base + 1000)
    log1, log2 = tmp_path / "demo1.log", tmp_path / "demo2.log"
    try:
        t0 = time.monotonic()
        demo = _demo(home, base, dashboard_port, "--duration", str(SERVE_S), "--alert-wait", "120", log=log1)
        state = home / "demo.json"
        deadline = time.monotonic() + 900
        while not state.exists() and demo.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        assert state.exists(), f"no dashboard before the demo ended (exit {demo.poll()}):\n{log1.read_text()}"
        t_dashboard = time.monotonic() - t0
        served = json.loads(state.read_text())
        url, login = served["dashboard"], served["dashboard_login"]
        assert url == f"http://127.0.0.1:{dashboard_port}/"
        # the login URL (with its token) is in demo.json, which is therefore readable by its owner only
        [token] = parse_qs(urlsplit(login).query)["token"]
        assert login == f"{url}?token={token}" and len(token) >= 43
        assert stat.S_IMODE(state.stat().st_mode) == 0o600
        assert (home / "dashboard" / "token").read_text().strip() == token

        # --- while the dashboard serves: the ledger as its API reads it (Gateway, the first org's steward) --
        assert _get_json(url + "api/governance", None)["status"] == 401  # nothing without the token
        governance = _get_json(url + "api/governance?dataset=plant2.ai4i2020", token)
        federated = _get_json(url + "api/federated", token)
        twins = _get_json(url + "api/twins", token)
        network = _get_json(url + "api/network", token)
        # the CLI's view of the same trail, by another org's identity
        audit = twinledger("data", "audit", "plant2.ai4i2020", "--as", "plant1", "--json", home=home, timeout=60)
        reading = _anchored_reading(home)
        verify = _get_json(url + f"api/verify?asset={reading[0]}&seq={reading[1]}", token) if reading else None
        # the twins predict with the models the demo's rounds just committed (each twin kind its sector's task;
        # the watcher polls the ledger every 2 s, so allow it a few polls after the last round)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and {m.get("state") for m in (twins.get("models") or {}).values()} != {"federated"}:
            time.sleep(2)
            twins = _get_json(url + "api/twins", token)

        demo.wait(timeout=SERVE_S + 180)
        output = log1.read_text()
        assert demo.returncode == 0, output
        wall = time.monotonic() - t0

        # governance: every data set registered by its steward and granted to the other org of its sector
        assert network["available"] is True and network["healthy"] == network["total"], network
        assert governance["available"] is True, governance
        assert governance["source"].startswith("Fabric ledger via the gateway, channel consortium, read as hospital1:steward")
        assert governance["acting"] == {"org": "hospital1", "user": "steward", "identity": "hospital1:steward"}
        ids = {d["id"]: d for d in governance["datasets"]}
        assert set(ids) >= {"plant1.ai4i2020", "plant2.ai4i2020", "hospital1.heart_disease_uci", "hospital2.heart_disease_uci",
                            "hospital1.physionet_sepsis2019_setB_subset", "hospital2.physionet_sepsis2019_setB_subset"}
        grants = {(g["grantee"], g["purpose"], g["state"]) for g in ids["plant2.ai4i2020"]["grants"]}
        assert grants == {("plant1", "fl:maintenance", "active")}, ids["plant2.ai4i2020"]
        assert audit.returncode == 0, audit.stderr
        entries = json.loads(audit.stdout)["entries"]
        shown = governance["audit"]["entries"]
        assert shown and entries[: len(shown)] == shown  # the page (read earlier) and the CLI read one ledger
        assert [e["owner"] for e in entries if e["action"] == "registered"] == ["plant2"], entries
        assert [(e["grantee"], e["purpose"]) for e in entries if e["action"] == "granted"] == [("plant1", "fl:maintenance")]
        # plant1's own ClientApp checked plant2's data set before training on it: a recorded use
        assert any(e["action"] == "access" and e.get("org") == "plant1" and e.get("allowed") for e in entries), entries

        # federated: one round per task on the ledger, every model and update hash re-hashed from the store
        assert federated["available"] is True and federated["source"]["label"].startswith("Fabric ledger"), federated
        tasks = {t["task"]: t for t in federated["tasks"]}
        assert set(tasks) == {"maintenance-v1", "cardiac-v1", "sepsis-v1"}, federated
        for task in tasks.values():
            [round1] = task["rounds"]
            assert round1["result_sha256"] and round1["commit_tx_id"] and len(round1["updates"]) == 2, round1
            assert task["counts"]["ok"] == len(task["verified"]) >= 4 and not task["counts"]["mismatched"], task
        assert isinstance(federated["node_keys"], list)  # models:ListNodeKeys answered (fl run registers none yet)

        # twins: batches anchored on the ledger, a reading proved against its anchor, an alert raised on the ledger
        assert twins["available"] is True and twins["anchorer"] == "ledger channel consortium (chaincode twinledger)"
        assert twins["counters"]["anchored"] > 0 and all(a["tx_id"] for a in twins["anchors"]), twins["anchors"]
        assert verify is not None and verify.get("verified") is True, verify
        assert [a for a in twins["ledger_alerts"] if a["tx_id"]], twins["ledger_alerts"]
        # ... and their predictions name the federated model the ledger committed, with its hash
        models = twins["models"]
        assert set(models) == {"machine", "patient"}, models
        for kind, task in (("machine", "maintenance-v1"), ("patient", "sepsis-v1")):
            used = models[kind]
            assert used["state"] == "federated" and used["task"] == task, used
            assert used["model"].startswith(f"federated:{task}:round") and used["in_use"]["sha256"] == tasks[task]["rounds"][0]["result_sha256"], used
            predicting = [a for a in twins["assets"] if a["kind"] == kind and a["risk"] and a["risk"]["label"] == used["model"]]
            assert predicting, (kind, twins["assets"])

        summary = json.loads(state.read_text())
        assert summary["ledger"] == "Fabric, channel consortium"
        for task in ("maintenance-v1", "cardiac-v1", "sepsis-v1"):
            assert summary["federated"][task]["exit"] == 0 and summary["federated"][task]["verified"] >= 4, summary
        assert summary["anchors"] > 0 and summary["alerts"] >= 1 and summary["reading_verified"]["exit"] == 0, summary
        # each step narrated with the command it ran
        for line in (f"$ twinledger up --port-base {base}", "$ twinledger data register plant1.ai4i2020",
                     "$ twinledger data grant hospital2.heart_disease_uci", "$ twinledger twins run",
                     "$ twinledger fl run cardiac-v1 --rounds 1", "$ twinledger fl verify maintenance-v1",
                     "$ twinledger verify reading", "raised on the ledger in tx", "model hashes verified",
                     f"dashboard: {login} (for {SERVE_S} s; acting as hospital1:steward)",
                     "shutting down: twins, then every process of the home"):
            assert line in output, (line, output)
        assert not _processes_of(home), "the demo left processes of its home running"
        assert not (home / "dashboard" / "token").exists(), "the stopped dashboard took its token with it"
        print(f"\ndemo from nothing: dashboard after {t_dashboard:.0f} s, done after {wall:.0f} s "
              f"(up {_up_seconds(output)} s, served {SERVE_S} s)")

        # --- a second demo on the same home: resumes the network, submits no governance record, no round --
        t1 = time.monotonic()
        again = _demo(home, base, dashboard_port, "--duration", "0", "--alert-wait", "30", log=log2)
        again.wait(timeout=600)
        output = log2.read_text()
        assert again.returncode == 0, output
        assert "$ twinledger up" in output  # the network was down: resumed, and stopped again at the end
        assert "$ twinledger data register" not in output and "$ twinledger data grant" not in output, output
        assert output.count("already registered") == 6, output  # 2 orgs x 3 tasks
        assert output.count("nothing to train") == 3, output
        second = json.loads(state.read_text())
        assert {t: v["verified"] for t, v in second["federated"].items()} == \
            {t: v["verified"] for t, v in summary["federated"].items()}, "no new round on the ledger"
        assert second["anchors"] > summary["anchors"], "the twins kept anchoring on the resumed network"
        assert not _processes_of(home)
        print(f"second demo on the same home: {time.monotonic() - t1:.0f} s")
    finally:
        for proc in (locals().get("demo"), locals().get("again")):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(timeout=120)
        twinledger("down", home=home, timeout=120)


def _anchored_reading(home: Path) -> tuple[str, int] | None:
    """(asset, seq) of a reading in the latest batch the bridge recorded as anchored (its local store)."""
    from twins.anchoring.store import ReadingStore

    store = ReadingStore(home / "twins" / "readings.sqlite")
    try:
        for anchor in store.recent_anchors(1):
            batch = store.batch(anchor["batch_id"])
            key, (first, _) = min(batch.record.seq_ranges.items())
            return key.split("/")[0], first
    finally:
        store.close()
    return None


def _processes_of(home: Path) -> list[str]:
    """Command lines of running processes that name the home (supervisor, nodes, Flower, twins)."""
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
    return [line for line in out if str(home) in line and "ps -eo" not in line]


def _up_seconds(output: str) -> str:
    line = next((x for x in output.splitlines() if x.strip().startswith("up in ")), "")
    return line.strip().removeprefix("up in ").removesuffix(" s") or "?"
