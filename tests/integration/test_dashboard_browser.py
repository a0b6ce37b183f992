"""`twinledger dashboard` in a real headless Chromium (Debian's package, driven by Selenium through the system
chromedriver) on the test run's real Fabric network (``fabric_net``): without its login token it answers
nothing; logged in with the URL it prints, the page loads, shows live data read from the ledger, and a grant
made on the page (with the session's CSRF token, as the one identity chosen with `--as`) lands in the audit trail.

Everything is real: the peers, orderers, CAs and chaincode of ``fabric_net``; the `twinledger dashboard`
process, its Gateway connections and the identities it acts as; the browser; `twinledger twins run`
(OPC-UA simulators and bridge, anchoring each org's batches on the ledger as its operator) in a twins home
of its own; `twinledger fl run` on Flower's deployment engine with its rounds committed on the ledger.
The test isolates itself by its own IDs (a data set and a federated task of its own).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from federated.data import data_root, task_spec
from network.layout import Layout
from network.spec import dump_spec, load_spec
from orchestrator.dashboard.auth import token_file, url_file
from tests.fabric_net import REPO, FabricNet
from tests.ports import free_port_base
from twins.procs import Proc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
HOSPITALS = ("hospital1", "hospital2")
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _cli(*args: str, home: Path, log: Path) -> subprocess.Popen:
    """A long-running `twinledger` command; output to a file (nobody reads a pipe while the browser works)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args, "--home", str(home)],
                                stdout=out, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def _stop(proc: subprocess.Popen | None, sig: int = signal.SIGINT, timeout: float = 60) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _api(url: str, path: str, token: str) -> dict:
    req = urllib.request.Request(url + path, headers={"Authorization": f"Bearer {token}"})
    with OPENER.open(req, timeout=20) as r:
        return json.loads(r.read())


def _status(url: str, path: str, body: dict | None = None, headers: dict[str, str] | None = None) -> int:
    """The HTTP status of one request (a refusal is an answer here, not an error)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with OPENER.open(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def _login_url(line: str) -> tuple[str, str, str]:
    """(login URL, clean URL, token) from the line `twinledger dashboard` prints its URL on."""
    login = line.strip()
    parts = urlsplit(login)
    [token] = parse_qs(parts.query)["token"]
    return login, f"{parts.scheme}://{parts.netloc}/", token


def _metric(url: str, name: str, labels: str) -> float:
    with OPENER.open(url + "metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(f"{name}{{{labels}}} "):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def _home_beside(net: FabricNet, path: Path, port_base: int | None = None) -> Path:
    """A home that runs no node: the network's identities and its spec (moved to ``port_base`` if given, so
    that every node it names is somewhere nothing listens)."""
    path.mkdir(parents=True)
    layout = Layout(path)
    spec = load_spec(net.layout.spec_file, port_base=port_base) if port_base else net.spec
    layout.spec_file.write_text(dump_spec(spec))
    orgs = net.layout.org_dir("any").parent
    (path / orgs.name).symlink_to(orgs)
    return path


def _hospitals_may_train(net: FabricNet, purpose: str) -> None:
    """Each hospital's data set registered by its steward and granted to the other hospital for ``purpose`` --
    what `twinledger demo` does; only what the ledger does not hold yet (the data sets' IDs are the tasks')."""
    spec = task_spec("cardiac")
    listed = {d["id"] for d in net.ok("data", "list")}
    for org in HOSPITALS:
        dataset = spec.dataset_id(org)
        if dataset not in listed:
            source = next(p for p in sorted((data_root() / spec.dataset).glob("*")) if p.suffix in (".csv", ".data"))
            net.ok("data", "register", dataset, "--kind", "tabular", "--sha256", str(source),
                   "--sensitivity", "confidential", "--as", f"{org}:steward")
    for org, other in (HOSPITALS, HOSPITALS[::-1]):
        dataset = spec.dataset_id(org)
        grants = net.ok("data", "grants", dataset, "--as", org)
        if not any(g["grantee"] == other and g["purpose"] == purpose and g["state"] == "active" for g in grants):
            net.ok("data", "grant", dataset, "--to", other, "--purpose", purpose, "--as", f"{org}:steward")


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="Debian's chromium + chromium-driver are not installed (scripts/setup.sh installs them as root)")
def test_dashboard_in_a_browser_live_twins_verified_models_and_a_grant_in_the_audit_trail(fabric_net: FabricNet, tmp_path,
                                                                                            monkeypatch):
    from selenium import webdriver
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    net, home = fabric_net, fabric_net.home
    t_start = time.monotonic()
    fl = twins = None
    procs: list[Proc] = []
    driver = None
    try:
        # --- a federated run of the test's own task, in the background while the page is exercised ----------
        task_id = net.unique("cardiac")
        _hospitals_may_train(net, task_spec("cardiac").purpose)
        fl = _cli("fl", "run", task_id, "--rounds", "1", "--port-base", str(free_port_base(20)), home=home,
                  log=tmp_path / "fl.log")

        # --- a data set of the test's own, registered by hospital1's steward --------------------------------
        dataset = net.unique("h1-ecg")
        net.ok("data", "register", dataset, "--kind", "tabular", "--sha256", hashlib.sha256(dataset.encode()).hexdigest(),
               "--sensitivity", "restricted", "--as", "hospital1:steward")

        # --- the twins in a home of their own, anchoring on the network's ledger ----------------------------
        twins_home = _home_beside(net, tmp_path / "twins-home")
        twins = _cli("twins", "run", "--machines", "plant1:2", "--monitors", "hospital1:1", "--port", str(free_port_base(3)),
                     "--interval", "0.5", home=twins_home, log=tmp_path / "twins.log")

        # --- the real CLI serves the dashboard, acting as hospital1's steward ---------------------------------
        dash_port = free_port_base(1)
        dash = Proc([sys.executable, "-m", "orchestrator.cli", "dashboard", "--home", str(home), "--port", str(dash_port),
                     "--as", "hospital1:steward", "--twins-home", str(twins_home / "twins")], cwd=REPO,
                    log=tmp_path / "dashboard.log")
        procs.append(dash)
        # printed the Jupyter way, on a line of its own; the same URL and token wait in the home (0600)
        login_url, url, token = _login_url(dash.wait_line(f"    http://127.0.0.1:{dash_port}/?token=", 30))
        assert url == f"http://127.0.0.1:{dash_port}/" and len(token) >= 43
        assert url_file(home).read_text().strip() == login_url and token_file(home).read_text().strip() == token
        assert token_file(home).stat().st_mode & 0o777 == 0o600 and url_file(home).stat().st_mode & 0o777 == 0o600
        assert net.run("dashboard", "--url").stdout.strip() == login_url

        # --- without the token, nothing: page, API and POSTs are 401; a foreign Origin or no CSRF token, 403 --
        grant = {"dataset": "none", "grantee": "hospital2", "purpose": "fl:cardiac"}
        assert _status(url, "") == 401 and _status(url, "api/governance") == 401
        assert _status(url, "api/governance", headers={"Authorization": "Bearer " + "x" * len(token)}) == 401
        assert _status(url, "api/governance/grant", grant) == 401
        assert _status(url, "api/governance/grant", grant, {"Authorization": f"Bearer {token}",
                                                            "Origin": "http://evil.example"}) == 403
        assert _status(url, "api/governance", headers={"Authorization": f"Bearer {token}", "Host": "localhost:%d" % dash_port}) == 403

        # --- and one of a home whose peers are not there: the ledger panels say so, in one line --------------
        nowhere = _home_beside(net, tmp_path / "nowhere", port_base=free_port_base(200))
        down_port = free_port_base(1)
        down = Proc([sys.executable, "-m", "orchestrator.cli", "dashboard", "--home", str(nowhere), "--port", str(down_port)],
                    cwd=REPO, log=tmp_path / "dashboard-down.log")
        procs.append(down)
        assert down.wait_line("dashboard of", 30) == f"dashboard of {nowhere}: read-only (no --as); Ctrl-C stops it"
        down_login, down_url, down_token = _login_url(url_file(nowhere).read_text())  # as `dashboard --url` finds it
        assert down_url == f"http://127.0.0.1:{down_port}/" and down_token != token
        assert _status(down_url, "api/network", headers={"Authorization": f"Bearer {token}"}) == 401  # not its token
        for panel in ("governance", "federated"):
            out = _api(down_url, f"api/{panel}", down_token)
            assert out["available"] is False and "\n" not in out["reason"], out
            assert out["reason"].startswith("ledger unavailable: evaluate failed: UNAVAILABLE"), out
        assert _api(down_url, "api/network", down_token)["healthy"] == 0

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
        # The page re-renders panels as data arrives: an element found a moment ago may have been replaced.
        wait = WebDriverWait(driver, 30, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException])

        def d_find(css: str):
            return driver.find_elements(By.CSS_SELECTOR, css)

        def click(css: str) -> None:
            def attempt(d) -> bool:
                d.find_element(By.CSS_SELECTOR, css).click()
                return True
            wait.until(attempt)

        # the page without logging in: refused
        driver.get(url)
        assert "login needed" in driver.find_element(By.TAG_NAME, "body").text and driver.title != "TwinLedger dashboard"
        # the page of the network-less home, logged in with its own URL: the one-line reason, where the panel would be
        driver.get(down_login)
        assert driver.current_url == down_url, "the login redirects to the URL without the token"
        wait.until(lambda d: d_find('#gov-body .unavailable'))
        assert driver.find_element(By.CSS_SELECTOR, "#gov-body .unavailable").text.startswith("ledger unavailable:")
        assert driver.find_element(By.ID, "acting").text == "read-only (no --as)"

        driver.get(login_url)
        assert driver.current_url == url and driver.title == "TwinLedger dashboard"
        assert driver.find_element(By.ID, "acting").text == "acting as hospital1:steward"
        # the session cookie is the browser's own: the page's script cannot read it (HttpOnly), nor send it elsewhere
        [cookie] = [c for c in driver.get_cookies() if c["name"] == f"twinledger_dashboard_{dash_port}"]
        assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and token not in cookie["value"]
        assert driver.execute_script("return document.cookie") == ""
        driver.get_log("browser")  # the refused visit above logged its 401: not the page's doing

        # network: the real peers, orderers and CAs of the network, healthy, with block heights
        wait.until(lambda d: d_find('#network-nodes tr[data-node="peer0.hospital1"]'))
        # (inside wait.until: the table is rebuilt every poll, so a row found may be replaced before it is read)
        for node in ("peer0.hospital1", "orderer0.orderer", "ca.hospital1"):
            wait.until(lambda d, node=node: "healthy" in d.find_element(By.CSS_SELECTOR, f'#network-nodes tr[data-node="{node}"]').text)

        # twins: values keep updating while the page is open (polling, no reload); anchors on the ledger
        def readings() -> int:
            els = d_find("#twins-readings")
            return int(els[0].text) if els and els[0].text.isdigit() else -1

        # read inside wait.until too: a panel re-rendered between finding an element and reading it is stale
        first = wait.until(lambda d: (n := readings()) > 0 and n)
        seq_first = wait.until(lambda d: d_find('[data-asset="plant1.m1"] .seq')[0].text or None)
        wait.until(lambda d: readings() > first)
        wait.until(lambda d: d_find('[data-asset="plant1.m1"] .seq')[0].text != seq_first)
        assert "anchors: ledger channel consortium (chaincode twinledger)" in driver.find_element(By.ID, "twins-src").text
        assert len(d_find('[data-asset="plant1.m1"] svg.chart path')) >= 4  # signals charted from the history
        wait.until(lambda d: d_find("#twins-anchor-table tr td.mono[title]"))

        # governance: the data set is listed; grant it to hospital2 from the page as hospital1's steward
        wait.until(lambda d: d_find(f'#gov-datasets tr[data-dataset="{dataset}"]'))
        assert driver.find_element(By.ID, "gov-src").text.startswith("Fabric ledger via the gateway, channel consortium")
        wait.until(lambda d: d.find_element(By.ID, "grant-as").text == "hospital1:steward")
        Select(driver.find_element(By.ID, "grant-dataset")).select_by_value(dataset)
        Select(driver.find_element(By.ID, "grant-grantee")).select_by_value("hospital2")
        driver.find_element(By.ID, "grant-purpose").send_keys("fl:cardiac")
        click("#grant-submit")
        wait.until(lambda d: "granted:" in d.find_element(By.ID, "grant-result").text)
        # the audit panel follows the data set just acted on
        wait.until(lambda d: d_find(f'#audit-table[data-dataset="{dataset}"] tr.audit-entry[data-action="granted"]'))
        entry_text, page_tx = wait.until(lambda d: (
            (e := d.find_element(By.CSS_SELECTOR, f'#audit-table[data-dataset="{dataset}"] tr.audit-entry[data-action="granted"]')).text,
            e.find_element(By.CSS_SELECTOR, "td.mono[title]:last-child").get_attribute("title")))
        assert "to hospital2 for fl:cardiac" in entry_text and "steward (ca.hospital1)" in entry_text
        wait.until(lambda d: "active" in d.find_element(By.CSS_SELECTOR, f'#gov-datasets tr[data-dataset="{dataset}"]').text)

        # ... and the same entry through the gateway, read by another org's identity
        with net.connect_sync("hospital2", "admin") as gw:
            audit = json.loads(gw.network(net.spec.channel).contract(net.chaincode, "data").evaluate("Audit", dataset))
        [granted] = [e for e in audit["entries"] if e["action"] == "granted"]
        assert granted["tx_id"] == page_tx and granted["grantee"] == "hospital2" and granted["purpose"] == "fl:cardiac"
        assert granted["granted_by"].startswith("x509::CN=steward,") and "CN=ca.hospital1" in granted["granted_by"]
        assert _metric(url, "dashboard_governance_actions_total", 'action="grant",outcome="committed"') == 1
        # /metrics is open (read-only counters); the refusals above are counted there
        assert _metric(url, "dashboard_auth_refused_total", 'reason="no_token"') >= 3
        assert _metric(url, "dashboard_auth_refused_total", 'reason="origin"') == 1

        # revoke it from the page: the grant's state and the trail follow
        click(f'#gov-datasets tr[data-dataset="{dataset}"] .grant[data-grantee="hospital2"] button.revoke')
        wait.until(lambda d: d_find(f'#audit-table[data-dataset="{dataset}"] tr.audit-entry[data-action="revoked"]'))
        wait.until(lambda d: "revoked" in d.find_element(By.CSS_SELECTOR, f'#gov-datasets tr[data-dataset="{dataset}"] .grant').text)
        with net.connect_sync("hospital2", "admin") as gw:
            audit = json.loads(gw.network(net.spec.channel).contract(net.chaincode, "data").evaluate("Audit", dataset))
        assert [e["action"] for e in audit["entries"]] == ["registered", "granted", "revoked"]

        # hospital2's data set from the page: hospital1's steward is refused by the chaincode, in its words
        h2_dataset = task_spec("cardiac").dataset_id("hospital2")
        Select(driver.find_element(By.ID, "grant-dataset")).select_by_value(h2_dataset)
        Select(driver.find_element(By.ID, "grant-grantee")).select_by_value("plant1")
        click("#grant-submit")
        wait.until(lambda d: d.find_element(By.ID, "grant-result").get_attribute("class") == "bad")
        refusal = driver.find_element(By.ID, "grant-result").text
        assert refusal.startswith("access denied") and "'hospital2'" in refusal and "'hospital1'" in refusal, refusal

        # in the logged-in page itself: a POST with the cookie but without the session's CSRF token is refused,
        # and with it no field can make the server sign as another identity (plant1's steward is enrolled here)
        post = """const [body, withCsrf, done] = arguments;
            const headers = {"Content-Type": "application/json"};
            if (withCsrf) headers["X-CSRF-Token"] = CSRF;
            fetch("/api/governance/grant", {method: "POST", headers, body: JSON.stringify(body)})
              .then(async (r) => done([r.status, (await r.json()).error])).catch((e) => done([0, String(e)]));"""
        attempt = {"dataset": dataset, "grantee": "plant1", "purpose": "fl:cardiac"}
        status, error = driver.execute_async_script(post, attempt, False)
        assert status == 403 and "X-CSRF-Token" in error, error
        status, error = driver.execute_async_script(post, {**attempt, "as_org": "plant1"}, True)
        assert status == 403 and "acts only as hospital1:steward" in error, error

        # verify box: a reading the page shows (the machine's latest sequence number) proves against its anchor
        seq = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, '[data-asset="plant1.m1"] .seq').text.split()[-1])
        driver.find_element(By.ID, "verify-asset").send_keys("plant1.m1")
        driver.find_element(By.ID, "verify-seq").send_keys(seq)
        driver.find_element(By.ID, "verify-prop").send_keys("Torque")
        # shown once delivered to the twin; sealed within the bridge's 0.5 s interval, then committed on the ledger
        deadline = time.monotonic() + 30
        while driver.find_element(By.ID, "verify-result").get_attribute("data-verified") != "true":
            assert time.monotonic() < deadline, driver.find_element(By.ID, "verify-result").text
            driver.find_element(By.ID, "verify-submit").click()
            time.sleep(1.0)
        result = driver.find_element(By.ID, "verify-result").text
        assert f"verified 1 reading(s) of plant1.m1 seq {seq} against ledger channel consortium" in result, result

        # federated: the run's round on the ledger, every model and update hash re-hashed from the store
        assert fl.wait(timeout=420) == 0, (tmp_path / "fl.log").read_text()
        rounds = net.ok("fl", "rounds", task_id)["rounds"]
        hashes = {h for r in rounds for h in [r["global_sha256"], r["result_sha256"], *(u["sha256"] for u in r["updates"])]}
        assert len(rounds) == 1 and len(hashes) == 4, rounds
        wait.until(lambda d: d_find(f'.fl-task[data-task="{task_id}"]'))
        task = driver.find_element(By.CSS_SELECTOR, f'.fl-task[data-task="{task_id}"]')
        assert task.text.count("✓ verified") == len(hashes) and f"{len(hashes)} verified, 0 missing, 0 mismatched" in task.text
        assert driver.find_element(By.ID, "fl-src").text.startswith("Fabric ledger (models contract), channel consortium")
        # the SuperNode keys the models contract lists, as the page shows them (`fl run` registers none yet)
        with net.connect_sync("hospital2", "admin") as gw:
            keys = json.loads(gw.network(net.spec.channel).contract(net.chaincode, "models").evaluate("ListNodeKeys"))
        shown = driver.find_element(By.ID, "fl-node-keys").text
        assert all(k["org"] in shown for k in keys) if keys else shown == "no SuperNode key registered on the ledger yet"

        driver.save_screenshot(str(tmp_path / "dashboard.png"))  # left for a person to look at when debugging
        # no script error, and no failed request but the refusals provoked above (409 and 403 from the grant)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"
                  and not ("/api/governance/grant" in e["message"] and ("409" in e["message"] or "403" in e["message"]))]
        assert errors == [], f"the page logged errors: {errors}"
        print(f"\nbrowser test: {time.monotonic() - t_start:.0f} s")
    finally:
        if driver is not None:
            driver.quit()
        for p in reversed(procs):
            p.stop()
        _stop(twins)
        _stop(fl, signal.SIGTERM, timeout=120)
