"""`twinledger dashboard` in a real headless Chromium (Debian's package, driven by Selenium through the system
chromedriver): the page loads, shows live data, and a grant made on the page lands in the audit trail.

What is real and what is a stand-in:

* REAL: each org's Fabric CA and every enrolled identity (`twinledger up` with real fabric-ca-server
  processes under the real supervisor); the `twinledger dashboard` process and its HTTP server; the
  browser; the OPC-UA simulators and the twins bridge (`python -m twins.simulators`, `python -m twins.bridge
  run`, real sockets); the Flower ServerApp/ClientApp logic of the federated run (in process, on
  ``federated.local_grid.LocalGrid``); the project's Gateway client; the TwinLedger chaincode (its
  registry and data contracts decide the grant and build the audit trail).
* TEST DOUBLE: the Fabric peers. ``python -m tests.fabric_double`` serves every peer port of the home with the
  peers' real TLS certificates and runs the real chaincode in process, because the Fabric peer/orderer
  binaries cannot be built on this machine (README "Status"). So the network panel shows the CAs healthy
  and the peers/orderers down (the supervisor runs no Fabric node), while the ledger calls are answered.
* LOCAL STAND-INS, labelled as such on the page: the twins anchor to the file anchorer, and the federated
  rounds are in the JSON ledger file (both until real peers run).
"""

from __future__ import annotations

import json
import hashlib
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from network.layout import Layout
from network.spec import load_spec
from orchestrator.bringup import CHAINCODE_NAME
from orchestrator.connect import connect_sync
from peers.binaries import fabric_available
from tests.fabric_double.process import DoubleProcess
from tests.ports import free_port_base
from twins.procs import Proc, bridge_argv, simulator_argv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ROOT = Path(__file__).resolve().parents[2]


def _tl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def _federated_run(home: Path) -> str:
    """A governed 2-round cardiac run into HOME/flower: JSON ledger stand-in + content-addressed model store."""
    from federated.data import task_spec
    from federated.governance import JsonFileLedger, grant_federation
    from federated.local_grid import LocalGrid
    from federated.serverapp import run_governed

    fl, spec, orgs, key = home / "flower", task_spec("cardiac"), ["hospital1", "hospital2"], "cardiac/run-browser"
    fl.mkdir(parents=True, exist_ok=True)
    ledger = JsonFileLedger(fl / "ledger.json")
    grant_federation(ledger, [spec.dataset_id(o) for o in orgs], spec.purpose)  # each steward grants the other
    grid = LocalGrid({o: {"task": "cardiac", "ledger": f"file:{fl / 'ledger.json'}"} for o in orgs})
    run_governed(grid, {"local-epochs": 1, "num-server-rounds": 2, "hidden": "8", "wait-for-nodes": 0.0,
                        "poll-interval": 0.0, "task": "cardiac", "orgs": ",".join(orgs),
                        "ledger": f"file:{fl / 'ledger.json'}", "store": str(fl / "store"), "ledger-task": key})
    return key


def _metric(url: str, name: str, labels: str) -> float:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url + "metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium + chromium-driver are not installed (scripts/setup.sh installs them as root)")
@pytest.mark.skipif(fabric_available() is None,
                    reason="real Fabric binaries are installed: `up` would start real peers on the ports the double serves; "
                           "this test is for machines without them (test_fabric_network.py covers real peers)")
def test_dashboard_in_a_browser_live_twins_verified_models_and_a_grant_in_the_audit_trail(tmp_path, monkeypatch):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    t_start = time.monotonic()
    home = tmp_path / "home"
    base = free_port_base(200)  # the network's CAs and (double-served) peers
    procs: list[Proc | DoubleProcess] = []
    driver = None
    try:
        # --- real CAs and identities; `up` stops (exit 1) where the Fabric binaries are needed -------------
        up = _tl("up", "--home", str(home), "--port-base", str(base))
        assert up.returncode == 1 and "peers and orderers cannot start" in up.stderr, up.stdout + up.stderr
        layout, spec = Layout(home), load_spec(Layout(home).spec_file)

        # --- the real CLI serves the dashboard, acting as hospital1's steward ------------------------------
        dash_port = free_port_base(1)
        dash = Proc([sys.executable, "-m", "orchestrator.cli", "dashboard", "--home", str(home), "--port", str(dash_port),
                     "--as", "hospital1:steward"], cwd=ROOT, log=tmp_path / "dashboard.log")
        procs.append(dash)
        url = dash.wait_line("dashboard of", 30).split(" at ", 1)[1].split(";", 1)[0]
        assert url == f"http://127.0.0.1:{dash_port}/"

        # before the peers' double serves: the governance panel says so plainly, the others still answer
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url + "api/governance", timeout=15) as r:
            gov = json.loads(r.read())
        assert gov["available"] is False and gov["reason"].startswith("ledger unreachable:"), gov
        with opener.open(url + "api/network", timeout=15) as r:
            assert json.loads(r.read())["available"] is True

        # --- the peers' TEST DOUBLE, orgs registered by their admins, one data set by hospital1's steward ----
        procs.append(DoubleProcess(home))  # waits for its "ready" line; registers every org by its admin
        manifest = hashlib.sha256(b"hospital1 ECG manifest v1").hexdigest()
        with connect_sync(spec, layout, "hospital1", "steward") as gw:
            gw.network(spec.channel).contract(CHAINCODE_NAME, "data").submit(
                "RegisterDataset", "h1-ecg", "tabular", json.dumps({"columns": ["age", "hr"]}), manifest, "restricted")

        # --- real OPC-UA simulators + bridge writing the twins state of this home ---------------------------
        twins, sim_port = home / "twins", free_port_base(1)
        mapping = twins / "sim" / "mapping.yaml"
        sim = Proc(simulator_argv(port=sim_port, data_dir=twins / "sim", machines=["plant1:2"], monitors=["hospital1:1"],
                                  machine_rate=5, monitor_rate=2, mapping_out=mapping), log=tmp_path / "sim.log")
        procs.append(sim)
        sim.wait_ready(30)
        bridge = Proc(bridge_argv(mapping=mapping, home=twins, interval=0.5), log=tmp_path / "bridge.log")
        procs.append(bridge)
        bridge.wait_ready(30)

        fl_key = _federated_run(home)

        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to check the page's console below
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,2000",
                    "--no-proxy-server"):
            options.add_argument(arg)
        # The explicit driver path already skips Selenium Manager; offline mode guarantees it never downloads.
        monkeypatch.setenv("SE_OFFLINE", "true")
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log")),
                                  options=options)
        driver.get(url)
        # The page re-renders panels as data arrives: an element found a moment ago may have been replaced.
        wait = WebDriverWait(driver, 30, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])

        def click(css: str) -> None:
            def attempt(d) -> bool:
                d.find_element(By.CSS_SELECTOR, css).click()
                return True
            wait.until(attempt)
        assert driver.title == "TwinLedger dashboard"

        # network: the real CAs healthy; the peers are not supervisor processes here (the double serves them)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, '#network-nodes tr[data-node="ca.hospital1"]'))
        row = driver.find_element(By.CSS_SELECTOR, '#network-nodes tr[data-node="ca.hospital1"]')
        assert "healthy" in row.text
        assert "down" in driver.find_element(By.CSS_SELECTOR, '#network-nodes tr[data-node="peer0.hospital1"]').text

        def d_find(css: str):
            return driver.find_elements(By.CSS_SELECTOR, css)

        # twins: values keep updating while the page is open (polling, no reload)
        def readings() -> int:
            els = d_find("#twins-readings")
            return int(els[0].text) if els and els[0].text.isdigit() else -1

        wait.until(lambda d: readings() > 0)
        first, seq_first = readings(), d_find('[data-asset="plant1.m1"] .seq')[0].text
        wait.until(lambda d: readings() > first)
        wait.until(lambda d: d_find('[data-asset="plant1.m1"] .seq')[0].text != seq_first)
        assert "local file anchor, not the ledger" in driver.find_element(By.ID, "twins-src").text
        assert len(d_find('[data-asset="plant1.m1"] svg.chart path')) >= 4  # signals charted from the history

        # federated: every model hash of the run re-hashed from the store and shown verified
        wait.until(lambda d: d_find(f'.fl-task[data-task="{fl_key}"]'))
        task = driver.find_element(By.CSS_SELECTOR, f'.fl-task[data-task="{fl_key}"]')
        from federated.governance import JsonFileLedger

        hashes = [h for r in JsonFileLedger(home / "flower" / "ledger.json").list_rounds(fl_key) for h in r.hashes()]
        assert task.text.count("✓ verified") == len(hashes) and "mismatched" not in task.text.replace("0 mismatched", "")
        assert "local JSON ledger" in driver.find_element(By.ID, "fl-src").text

        # governance: the data set is listed; grant it to hospital2 from the page as hospital1's steward
        wait.until(lambda d: d_find('#gov-datasets tr[data-dataset="h1-ecg"]'))
        assert Select(driver.find_element(By.ID, "grant-as")).first_selected_option.text == "hospital1"
        Select(driver.find_element(By.ID, "grant-dataset")).select_by_value("h1-ecg")
        Select(driver.find_element(By.ID, "grant-grantee")).select_by_value("hospital2")
        driver.find_element(By.ID, "grant-purpose").send_keys("fl:cardiac")
        click("#grant-submit")
        wait.until(lambda d: "granted:" in d.find_element(By.ID, "grant-result").text)
        wait.until(lambda d: d_find('#audit-table tr.audit-entry[data-action="granted"]'))
        entry_text, page_tx = wait.until(lambda d: (
            (e := d.find_element(By.CSS_SELECTOR, '#audit-table tr.audit-entry[data-action="granted"]')).text,
            e.find_element(By.CSS_SELECTOR, "td.mono[title]:last-child").get_attribute("title")))
        assert "to hospital2 for fl:cardiac" in entry_text and "steward (ca.hospital1)" in entry_text
        wait.until(lambda d: "active" in d.find_element(By.CSS_SELECTOR, '#gov-datasets tr[data-dataset="h1-ecg"]').text)

        # ... and the same entry through the gateway, read by another org's identity
        with connect_sync(spec, layout, "hospital2", "admin") as gw:
            audit = json.loads(gw.network(spec.channel).contract(CHAINCODE_NAME, "data").evaluate("Audit", "h1-ecg"))
        [granted] = [e for e in audit["entries"] if e["action"] == "granted"]
        assert granted["tx_id"] == page_tx and granted["grantee"] == "hospital2" and granted["purpose"] == "fl:cardiac"
        assert granted["granted_by"].startswith("x509::CN=steward,") and "CN=ca.hospital1" in granted["granted_by"]
        assert _metric(url, "dashboard_governance_actions_total", 'action="grant",outcome="committed"') == 1

        # revoke it from the page: the grant's state and the trail follow
        click('#gov-datasets tr[data-dataset="h1-ecg"] .grant[data-grantee="hospital2"] button.revoke')
        wait.until(lambda d: d_find('#audit-table tr.audit-entry[data-action="revoked"]'))
        wait.until(lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, '#gov-datasets tr[data-dataset="h1-ecg"] .grant').text)
        with connect_sync(spec, layout, "hospital2", "admin") as gw:
            audit = json.loads(gw.network(spec.channel).contract(CHAINCODE_NAME, "data").evaluate("Audit", "h1-ecg"))
        assert [e["action"] for e in audit["entries"]] == ["registered", "granted", "revoked"]

        # acting as plant1's steward (also enrolled here) the chaincode refuses: plant1 does not own h1-ecg
        Select(driver.find_element(By.ID, "grant-as")).select_by_value("plant1")
        click("#grant-submit")
        wait.until(lambda d: d.find_element(By.ID, "grant-result").get_attribute("class") == "bad")
        refusal = driver.find_element(By.ID, "grant-result").text
        assert refusal.startswith("access denied") and "'hospital1'" in refusal and "'plant1'" in refusal, refusal

        # verify box: a reading the page shows (the machine's latest sequence number) proves against its anchor
        seq = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-asset="plant1.m1"] .seq').text.split()[-1])
        driver.find_element(By.ID, "verify-asset").send_keys("plant1.m1")
        driver.find_element(By.ID, "verify-seq").send_keys(seq)
        driver.find_element(By.ID, "verify-prop").send_keys("Torque")
        # shown once delivered to the twin; sealed and anchored within the bridge's 0.5 s interval after that
        deadline = time.monotonic() + 15
        while driver.find_element(By.ID, "verify-result").get_attribute("data-verified") != "true":
            assert time.monotonic() < deadline, driver.find_element(By.ID, "verify-result").text
            driver.find_element(By.ID, "verify-submit").click()
            time.sleep(0.5)
        assert f"verified 1 reading(s) of plant1.m1 seq {seq}" in driver.find_element(By.ID, "verify-result").text
        driver.save_screenshot(str(tmp_path / "dashboard.png"))  # left for a person to look at when debugging
        # no script error, and no failed request but the refusal provoked above (409 from the grant)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and not ("/api/governance/grant" in e["message"] and "409" in e["message"])]
        assert errors == [], f"the page logged errors: {errors}"
        assert time.monotonic() - t_start < 90, f"took {time.monotonic() - t_start:.0f} s"
    finally:
        if driver is not None:
            driver.quit()
        for p in reversed(procs):
            p.stop()
        _tl("down", "--home", str(home))
