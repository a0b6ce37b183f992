"""The dashboard's HTTP API in process: panels from real twins and federated state, request checks, metrics.

Twins state is made by the twins' own code (``twins.simulators.machine.MachineSource`` readings through a
``TwinRuntime``, sealed and anchored with the ``FileAnchorer``); federated state by a governed run on the
in-process ``LocalGrid`` (real ServerApp logic, ClientApps, JSON ledger and model store). The ledger side of
the governance panel is a recording stand-in here (``RecordingLedger``): these tests are about what the
server lets the browser do; the real chaincode answers in tests/integration/test_dashboard_browser.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest

from orchestrator.dashboard.ledger import LedgerClient, LedgerRefused, LedgerUnavailable
from orchestrator.dashboard.server import DashboardConfig, start, stop
from tests.unit.orchestrator.test_dashboard_metrics import parse as parse_metrics
from twins.anchoring.anchorer import FileAnchorer, resubmit_pending
from twins.bridge.mapping import parse_mapping
from twins.readings import Reading
from twins.runtime import TwinRuntime
from twins.simulators.machine import PROPS, MachineSource

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class TwinsFeed:
    """One plant machine fed by the simulator's generator, sealed and anchored like the bridge does."""

    def __init__(self, home: Path) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        mapping = parse_mapping({
            "assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}},
            "nodes": {f"ns=2;s=plant1.m1.{p}": {"asset": "plant1.m1", "property": p} for p in PROPS},
        })
        self.anchorer = FileAnchorer(home / "anchors.jsonl")
        self.rt = TwinRuntime(mapping, home / "readings.sqlite", self.anchorer)
        self.source = MachineSource("plant1.m1", "plant1", seed=7, rate=5)
        self.seq = 0
        self.t_us = 1_790_000_000_000_000

    def step(self, products: int) -> dict[str, Any]:
        for _ in range(products):
            self.seq += 1
            self.t_us += 200_000
            for prop, value in self.source.step().items():
                self.rt.on_reading(Reading("plant1", "plant1.m1", prop, self.seq, self.t_us, float(value)))
        self.rt.anchor_once()
        asyncio.run(resubmit_pending(self.rt.store, self.anchorer, self.t_us))
        status = self.rt.status()
        _write_json_atomic(self.home / "status.json", status)
        return status

    def close(self) -> None:
        self.rt.close()


class RecordingLedger(LedgerClient):
    """Stands in for the gateway: remembers who submitted what; answers reads from what was submitted."""

    def __init__(self, home: Path, enrolled: dict[str, list[str]], fail: Exception | None = None) -> None:
        super().__init__(home)
        self._enrolled = enrolled
        self.fail = fail
        self.submitted: list[tuple[tuple[str, str], str, tuple[str, ...]]] = []
        self.grants: dict[tuple[str, str, str], str] = {}

    def enrolled(self, user: str) -> list[str]:
        return self._enrolled.get(user, [])

    def reader(self) -> tuple[str, str]:
        return ("hospital1", "admin")

    def spec(self):  # the governance panel reads the channel and the member orgs
        from network.spec import parse_spec

        return parse_spec({"name": "t", "orgs": [{"name": "orderer", "kind": "orderer", "orderers": 1},
                                                 {"name": "hospital1", "kind": "hospital", "peers": 1},
                                                 {"name": "hospital2", "kind": "hospital", "peers": 1}]})

    def evaluate(self, contract_name: str, function: str, *args: str, as_=None) -> Any:
        if self.fail:
            raise self.fail
        if function == "ListDatasets":
            return [{"id": "h1-ecg", "kind": "tabular", "owner": "hospital1", "sensitivity": "restricted"}]
        if function == "ListGrants":
            return [{"grantee": g, "purpose": p, "state": s} for (d, g, p), s in self.grants.items() if d == args[0]]
        if function == "Audit":
            return {"dataset": args[0], "owner": "hospital1", "entries": []}
        raise AssertionError(function)

    def submit(self, contract_name: str, function: str, *args: str, as_: tuple[str, str]) -> Any:
        if self.fail:
            raise self.fail
        self.submitted.append((as_, function, args))
        self.grants[tuple(args[:3])] = "active" if function == "Grant" else "revoked"
        return {"tx_id": f"tx{len(self.submitted)}", "dataset": args[0]}


@pytest.fixture
def serve(tmp_path):
    """Start a dashboard on a free port; every server started is stopped at the end."""
    running = []

    def _start(ledger: LedgerClient | None = None, **kw: Any):
        cfg = DashboardConfig(home=tmp_path / "home", port=0, sample_interval=0.1, **kw)
        server, thread = start(cfg, ledger)
        running.append((server, thread))
        return server

    yield _start
    for server, thread in running:
        stop(server, thread)


def _get(server, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(server.url.rstrip("/") + path, headers=headers or {})
    try:
        with OPENER.open(req, timeout=15) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers["Content-Type"] == "application/json" else body.decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(server, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(server.url.rstrip("/") + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with OPENER.open(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_every_panel_says_plainly_what_is_missing_and_the_page_is_self_contained(serve, tmp_path):
    server = serve()
    assert server.server_address[0] == "127.0.0.1"
    home = tmp_path / "home"
    for panel, expected in (("network", f"no network in {home}"), ("governance", "no enrolled identity"),
                            ("federated", "no local ledger file"),  # and no Fabric identity to ask instead
                            ("twins", f"no status at {home / 'twins' / 'status.json'}")):
        code, data = _get(server, f"/api/{panel}")
        assert code == 200 and data["available"] is False, panel
        assert expected in data["reason"], (panel, data["reason"])
    code, page = _get(server, "/")
    assert code == 200 and "<script>" in page and "<style>" in page
    # nothing is fetched from anywhere: every reference in the page is inline (data:), none names a host
    import re

    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)', page)
    assert refs and all(r.startswith("data:") for r in refs), refs
    assert "https://" not in page and "//cdn" not in page.lower()
    _, metrics = _get(server, "/metrics")
    _, samples = parse_metrics(metrics)
    errors = {lab["panel"]: v for n, lab, v in samples if n == "dashboard_panel_source_errors_total"}
    assert errors["network"] == errors["governance"] == errors["federated"] == errors["twins"] == 1


def test_twins_panel_follows_the_status_and_keeps_chart_history(serve, tmp_path):
    feed = TwinsFeed(tmp_path / "home" / "twins")
    try:
        first = feed.step(10)
        server = serve()
        _, d1 = _get(server, "/api/twins")
        assert d1["available"] is True and d1["stale"] is False
        [asset] = d1["assets"]
        snap = first["twins"]["plant1.m1"]
        assert asset["last_seq"]["Torque"] == 10 == feed.seq
        assert asset["signals"]["Torque"] == pytest.approx(snap["estimates"]["Torque"]["value"])
        assert asset["risk"]["value"] == pytest.approx(snap["prediction"]["probability"])
        assert d1["counters"] == first["counters"] and d1["counters"]["batches"] == 1
        assert d1["plants"]["plant1"]["energy_kwh"] == pytest.approx(first["plants"]["plant1"]["energy_kwh"])
        assert "local file anchor, not the ledger" in d1["anchorer"]
        assert [a["batch_id"] for a in d1["anchors"]] == ["plant1:0000000001"]

        time.sleep(0.02)  # a new mtime for the rewritten status
        second = feed.step(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            _, d2 = _get(server, "/api/twins")
            if d2["assets"][0]["last_seq"]["Torque"] == 15:
                break
            time.sleep(0.1)
        hist = d2["history"]["asset:plant1.m1"]
        assert len(hist["t"]) == 2 and hist["t"][0] < hist["t"][1]
        assert hist["series"]["Torque"] == pytest.approx(
            [snap["estimates"]["Torque"]["value"], second["twins"]["plant1.m1"]["estimates"]["Torque"]["value"]])
        plant = d2["history"]["plant:plant1"]["series"]
        assert plant["energy_kwh"][1] >= plant["energy_kwh"][0] > 0  # cumulative energy only grows
    finally:
        feed.close()


def test_verify_box_proves_a_reading_and_detects_a_tampered_one(serve, tmp_path):
    feed = TwinsFeed(tmp_path / "home" / "twins")
    feed.step(6)
    feed.close()
    # as `twinledger twins run --anchor file` records it: the path is relative to the twins folder
    (tmp_path / "home" / "twins" / "anchor.json").write_text(json.dumps({"kind": "file", "path": "anchors.jsonl"}))
    server = serve()
    code, ok = _get(server, "/api/verify?asset=plant1.m1&seq=4&prop=Torque")
    assert code == 200 and ok["verified"] is True
    [r] = ok["readings"]
    assert r["reading"]["seq"] == 4 and r["reading"]["prop"] == "Torque" and r["batch_id"] == "plant1:0000000001"
    anchored = [json.loads(x) for x in (tmp_path / "home" / "twins" / "anchors.jsonl").read_text().splitlines()]
    assert r["merkle_root"] == anchored[0]["record"]["merkle_root"] and r["tx_id"] == anchored[0]["tx_id"]
    _, all_props = _get(server, "/api/verify?asset=plant1.m1&seq=4")
    assert {v["reading"]["prop"] for v in all_props["readings"]} == set(PROPS)

    db = sqlite3.connect(tmp_path / "home" / "twins" / "readings.sqlite")
    db.execute("DROP TRIGGER readings_no_update")
    db.execute("UPDATE readings SET value = value + 1 WHERE asset='plant1.m1' AND prop='Torque' AND seq=4")
    db.commit()
    db.close()
    _, bad = _get(server, "/api/verify?asset=plant1.m1&seq=4&prop=Torque")
    assert bad["verified"] is False and "altered" in bad["reason"]
    _, missing = _get(server, "/api/verify?asset=plant1.m1&seq=999")
    assert missing["verified"] is False and "no stored reading" in missing["reason"]
    code, err = _get(server, "/api/verify?asset=plant1.m1&seq=abc")
    assert code == 400 and "sequence number" in err["error"]


@pytest.fixture(scope="module")
def fl_home(tmp_path_factory):
    """A governed 2-round cardiac run of two hospitals into HOME/flower (JSON ledger + model store)."""
    from federated.data import task_spec
    from federated.governance import JsonFileLedger, grant_federation
    from federated.local_grid import LocalGrid
    from federated.serverapp import run_governed

    home = tmp_path_factory.mktemp("flhome")
    fl = home / "flower"
    fl.mkdir()
    spec, orgs = task_spec("cardiac"), ["hospital1", "hospital2"]
    ledger = JsonFileLedger(fl / "ledger.json")
    grant_federation(ledger, [spec.dataset_id(o) for o in orgs], spec.purpose)  # each steward grants the other
    grid = LocalGrid({o: {"task": "cardiac", "ledger": f"file:{fl / 'ledger.json'}"} for o in orgs})
    run_governed(grid, {"local-epochs": 1, "num-server-rounds": 2, "hidden": "8", "wait-for-nodes": 0.0,
                        "poll-interval": 0.0, "task": "cardiac", "orgs": ",".join(orgs), "ledger": f"file:{fl / 'ledger.json'}",
                        "store": str(fl / "store"), "ledger-task": "cardiac/run-dash"})
    return home


def test_federated_panel_rehashes_every_model_against_the_json_ledger(fl_home, tmp_path):
    import shutil

    from federated.governance import JsonFileLedger

    home = tmp_path / "home"
    shutil.copytree(fl_home, home)
    rounds = JsonFileLedger(home / "flower" / "ledger.json").list_rounds("cardiac/run-dash")
    cfg = DashboardConfig(home=home, port=0)
    server, thread = start(cfg)
    try:
        _, d = _get(server, "/api/federated")
        assert d["available"] is True and d["source"]["kind"] == "file"
        assert d["source"]["label"].startswith("local JSON ledger, not Fabric (")
        [task] = d["tasks"]
        assert task["task"] == "cardiac/run-dash"
        assert [r["round"] for r in task["rounds"]] == [r.round for r in rounds]
        assert task["rounds"][1]["metrics"] == pytest.approx(rounds[1].metrics)
        hashes = {h for r in rounds for h in r.hashes()}
        assert set(task["verified"]) == hashes and set(task["verified"].values()) == {"ok"}

        # a stored model altered after the fact, and one deleted: the panel says which
        final = rounds[-1].result_sha256
        store = home / "flower" / "store"
        (store / final).write_bytes((store / final).read_bytes() + b"\0")
        (store / rounds[0].global_sha256).unlink()
        _, d = _get(server, "/api/federated")
        verified = d["tasks"][0]["verified"]
        assert verified[final] == "mismatched" and verified[rounds[0].global_sha256] == "missing"
        assert d["tasks"][0]["counts"] == {"ok": len(hashes) - 2, "missing": 1, "mismatched": 1}
    finally:
        stop(server, thread)

    # a JSON ledger elsewhere (`twinledger fl run --ledger-file PATH`): named explicitly, same answer
    moved = tmp_path / "elsewhere.json"
    (home / "flower" / "ledger.json").rename(moved)
    server, thread = start(DashboardConfig(home=home, port=0, fl_ledger="file", fl_ledger_file=moved))
    try:
        _, d = _get(server, "/api/federated")
    finally:
        stop(server, thread)
    assert str(moved) in d["source"]["label"] and d["tasks"][0]["task"] == "cardiac/run-dash"


def test_grant_acts_only_as_a_local_enrolled_identity_chosen_by_org(serve, tmp_path):
    ledger = RecordingLedger(tmp_path / "home", {"steward": ["hospital1", "hospital2"]})
    server = serve(ledger, acting_as=("hospital1", "steward"))
    _, gov = _get(server, "/api/governance")
    assert gov["acting"] == {"user": "steward", "orgs": ["hospital1", "hospital2"], "default": "hospital1"}

    body = {"as_org": "hospital1", "dataset": "h1-ecg", "grantee": "hospital2", "purpose": "fl:cardiac",
            # whatever else the browser claims about identity is ignored: only as_org picks a local user
            "user": "admin", "msp_id": "Hospital2MSP", "certificate": "-----BEGIN CERTIFICATE-----"}
    code, out = _post(server, "/api/governance/grant", body)
    assert code == 200 and out["as"] == "hospital1:steward"
    assert ledger.submitted == [(("hospital1", "steward"), "Grant", ("h1-ecg", "hospital2", "fl:cardiac", ""))]
    _, gov = _get(server, "/api/governance?dataset=h1-ecg")
    assert gov["datasets"][0]["grants"] == [{"grantee": "hospital2", "purpose": "fl:cardiac", "state": "active"}]

    code, out = _post(server, "/api/governance/revoke", {**body, "as_org": "hospital2"})
    assert code == 200 and ledger.submitted[-1] == (("hospital2", "steward"), "Revoke", ("h1-ecg", "hospital2", "fl:cardiac"))

    n = len(ledger.submitted)
    code, out = _post(server, "/api/governance/grant", {**body, "as_org": "plant1"})
    assert code == 403 and "no enrolled steward of org 'plant1'" in out["error"]
    code, out = _post(server, "/api/governance/grant", {**body, "purpose": " "})
    assert code == 400 and "purpose is required" in out["error"]
    code, out = _post(server, "/api/governance/grant", body, headers={"Origin": "http://evil.example"})
    assert code == 403 and "cross-origin" in out["error"]
    code, _ = _post(server, "/api/governance/grant", body, headers={"Content-Type": "text/plain"})
    assert code == 415
    code, _ = _post(server, "/api/governance/grant", body, headers={"Host": "attacker.example:80"})
    assert code == 403
    code, _ = _get(server, "/api/governance", headers={"Host": "rebound.example"})
    assert code == 403
    code, _ = _post(server, "/api/governance/grant", b"[1, 2]")
    assert code == 400
    assert len(ledger.submitted) == n, "no refused request reached the ledger"

    _, metrics = _get(server, "/metrics")
    actions = {(lab["action"], lab["outcome"]): v for name, lab, v in parse_metrics(metrics)[1]
               if name == "dashboard_governance_actions_total"}
    assert actions[("grant", "committed")] == 1 and actions[("revoke", "committed")] == 1
    assert actions[("grant", "refused")] == 1 and actions[("grant", "invalid")] == 1


def test_without_as_the_page_is_read_only(serve, tmp_path):
    ledger = RecordingLedger(tmp_path / "home", {"steward": ["hospital1"]})
    server = serve(ledger)
    _, gov = _get(server, "/api/governance")
    assert gov["available"] is True and gov["acting"]["user"] is None and gov["acting"]["orgs"] == []
    code, out = _post(server, "/api/governance/grant",
                      {"as_org": "hospital1", "dataset": "h1-ecg", "grantee": "hospital2", "purpose": "p"})
    assert code == 403 and "read-only" in out["error"] and ledger.submitted == []


@pytest.mark.parametrize("failure, code, shown", [
    (LedgerUnavailable("ledger unreachable: evaluate failed: UNAVAILABLE: connection refused"), 503, "ledger unreachable"),
    (LedgerRefused("endorse failed: access denied: Grant is for stewards of org 'hospital1'"), 409, "access denied"),
])
def test_ledger_failures_reach_the_page_as_one_line(serve, tmp_path, failure, code, shown):
    ledger = RecordingLedger(tmp_path / "home", {"steward": ["hospital2"]}, fail=failure)
    server = serve(ledger, acting_as=("hospital2", "steward"))
    _, gov = _get(server, "/api/governance")
    assert gov == {"available": False, "reason": str(failure)}
    got, out = _post(server, "/api/governance/grant",
                     {"as_org": "hospital2", "dataset": "h1-ecg", "grantee": "hospital1", "purpose": "p"})
    assert got == code and shown in out["error"]


def test_cli_refuses_bad_as_and_a_busy_port_in_one_line(tmp_path, capsys):
    import socket

    from orchestrator.cli import main

    assert main(["dashboard", "--home", str(tmp_path), "--as", "hospital1:steward"]) == 1
    assert "no spec in" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["dashboard", "--home", str(tmp_path), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is in use" in err and "Traceback" not in err


class FakeGateway(RecordingLedger):
    """The gateway's contracts answered from local state, to exercise the dashboard's Fabric read paths."""

    def __init__(self, home: Path, answer) -> None:
        super().__init__(home, {})
        self.answer = answer
        self.calls: list[tuple[str | None, str, tuple]] = []

    def contract(self, contract_name, org, user):
        outer = self

        class Contract:
            def evaluate(self, function, *args, timeout=None):
                assert timeout is not None, "every dashboard read carries a deadline"
                outer.calls.append((contract_name, function, args))
                return outer.answer(contract_name, function, args)

        return Contract()


def test_federated_panel_reads_rounds_from_fabric_for_the_runs_of_this_home(fl_home, tmp_path):
    import shutil

    from federated.governance import JsonFileLedger

    home = tmp_path / "home"
    shutil.copytree(fl_home, home)
    local = JsonFileLedger(home / "flower" / "ledger.json")
    (home / "flower" / "ledger.json").unlink()  # the rounds now live only "on the ledger" below
    (home / "flower" / "reports").mkdir()
    (home / "flower" / "reports" / "cardiac-latest.json").write_text(json.dumps({"ledger_task": "cardiac/run-dash"}))

    def answer(contract, function, args):
        if (contract, function) == ("models", "ListRounds"):
            return json.dumps([r.to_dict() for r in local.list_rounds(args[0])]).encode()
        if (contract, function) == ("models", "ReadTask"):
            return json.dumps(local.get_task(args[0]).to_dict()).encode()
        raise AssertionError((contract, function))

    ledger = FakeGateway(home, answer)
    server, thread = start(DashboardConfig(home=home, port=0), ledger)
    try:
        _, d = _get(server, "/api/federated")
    finally:
        stop(server, thread)
    assert d["source"]["kind"] == "fabric" and "Fabric ledger" in d["source"]["label"]
    [task] = d["tasks"]
    assert task["task"] == "cardiac/run-dash" and task["record"]["rounds"] == 2
    assert set(task["verified"]) == {h for r in local.list_rounds("cardiac/run-dash") for h in r.hashes()}
    assert set(task["verified"].values()) == {"ok"}
    assert ("models", "ListRounds", ("cardiac/run-dash",)) in ledger.calls


def test_verify_box_reads_the_anchor_from_fabric_when_the_twins_anchor_there(serve, tmp_path):
    from network.gateway_errors import EvaluateError

    feed = TwinsFeed(tmp_path / "home" / "twins")
    feed.step(4)
    feed.close()
    anchors_file = tmp_path / "home" / "twins" / "anchors.jsonl"
    on_ledger = {e["batch_id"]: e for e in map(json.loads, anchors_file.read_text().splitlines())}
    anchors_file.unlink()
    (tmp_path / "home" / "twins" / "anchor.json").write_text(
        json.dumps({"kind": "ledger", "channel": "consortium", "chaincode": "twinledger"}))  # as `twins run` writes it
    state = {"down": False}

    def answer(contract, function, args):
        assert (contract, function) == (None, "twins:ReadSensorBatch")
        if state["down"]:
            raise EvaluateError("failed to connect to all addresses", code=grpc.StatusCode.UNAVAILABLE)
        return json.dumps(on_ledger[args[0]]).encode()

    server = serve(FakeGateway(tmp_path / "home", answer))
    _, ok = _get(server, "/api/verify?asset=plant1.m1&seq=3&prop=Torque")
    assert ok["verified"] is True and ok["anchorer"] == "ledger channel consortium (chaincode twinledger)"
    assert ok["readings"][0]["tx_id"] == on_ledger["plant1:0000000001"]["tx_id"]
    state["down"] = True
    _, down = _get(server, "/api/verify?asset=plant1.m1&seq=3&prop=Torque")
    assert down["available"] is False and down["reason"].startswith("ledger unreachable:")


def test_gateway_failures_are_told_apart_unreachable_or_refused_with_the_chaincode_words():
    from network.gateway_errors import EndorseError, ErrorDetail, EvaluateError
    from orchestrator.dashboard.ledger import describe_gateway_error

    down = describe_gateway_error(EvaluateError("failed to connect to all addresses", code=grpc.StatusCode.UNAVAILABLE))
    assert isinstance(down, LedgerUnavailable) and str(down).startswith("ledger unreachable: evaluate failed")
    said = "access denied: Grant is for stewards of org 'hospital1'"
    refused = describe_gateway_error(EndorseError(
        "failed to endorse", code=grpc.StatusCode.ABORTED,
        details=[ErrorDetail("127.0.0.1:7051", "Hospital1MSP", f"chaincode response 500, {said}")]))
    assert isinstance(refused, LedgerRefused) and str(refused) == said
