"""The dashboard's HTTP API in process: every panel, the request checks, the metrics -- no peers.

What runs for real: the dashboard server and its ``LedgerClient`` (identity choice, deadlines, error mapping,
reconnects), the twins' own code (``MachineSource`` readings through a ``TwinRuntime``, sealed into its
``ReadingStore``), ``FabricRoundLedger`` and ``FabricAnchorer`` reading through the dashboard's contracts, the
model store's re-hashing and ``verify_reading``.

What is faked, in process (unit tests only): the Gateway connection. ``FakeGateway`` is what the
``LedgerClient``'s connector returns; its contracts answer from ``FakeChaincode`` -- a few dicts shaped like
the TwinLedger chaincode's answers, which refuse the way the peers do (a ``chaincode response 500, <message>``
detail). ``ChaincodeAnchorer`` is the twins' anchorer writing into those dicts. The real chaincode answers
the same requests in tests/integration/test_dashboard_browser.py and tests/integration/test_demo.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sqlite3
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from federated.governance import RoundRecord, TaskRecord, UpdateRecord
from federated.store import ModelStore
from network.gateway_errors import EndorseError, ErrorDetail, EvaluateError
from network.layout import Layout
from orchestrator.dashboard.ledger import LedgerClient, LedgerRefused, LedgerUnavailable
from orchestrator.dashboard.server import DashboardConfig, start, stop
from tests.unit.orchestrator.test_dashboard_metrics import parse as parse_metrics
from twins.anchoring.anchorer import resubmit_pending
from twins.anchoring.record import BatchRecord
from twins.bridge.mapping import parse_mapping
from twins.readings import Reading
from twins.runtime import TwinRuntime
from twins.simulators.machine import PROPS, MachineSource

OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
DEFAULT_SPEC = Path(__file__).resolve().parents[3] / "network" / "default_spec.yaml"
#: What `twinledger twins run` records in HOME/twins/anchor.json for ledger anchoring.
LEDGER_ANCHOR = {"kind": "ledger", "channel": "consortium", "chaincode": "twinledger"}


# --- the fake gateway -------------------------------------------------------------------------------------


def _refusal(function: str, message: str, submit: bool = False) -> Exception:
    """How the peers report a chaincode error: a gateway error whose detail is the chaincode's response."""
    cls = EndorseError if submit else EvaluateError
    return cls("failed", code=grpc.StatusCode.ABORTED if submit else grpc.StatusCode.UNKNOWN,
               details=[ErrorDetail("127.0.0.1:17051", "Hospital1MSP", f"chaincode response 500, {message}")])


def _tx(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()


@dataclass
class FakeChaincode:
    """The answers of the chaincode functions the dashboard calls, from dicts; ``down`` = no peer answers."""

    datasets: dict[str, dict] = field(default_factory=dict)
    grants: dict[tuple[str, str, str], dict] = field(default_factory=dict)
    trail: dict[str, list[dict]] = field(default_factory=dict)
    tasks: dict[str, dict] = field(default_factory=dict)
    rounds: dict[str, list[dict]] = field(default_factory=dict)
    node_keys: list[dict] = field(default_factory=list)
    anchors: dict[str, dict] = field(default_factory=dict)
    alerts: dict[str, dict] = field(default_factory=dict)
    down: bool = False
    calls: list[tuple[str, str, str, tuple, bool]] = field(default_factory=list)  # (as, contract:function, ...)

    def register(self, dataset: str, owner: str) -> None:
        self.datasets[dataset] = {"id": dataset, "kind": "tabular", "owner": owner, "sensitivity": "restricted"}
        self.trail[dataset] = [{"action": "registered", "owner": owner, "tx_id": _tx("reg", dataset)}]

    def call(self, who: tuple[str, str], contract: str | None, function: str, args: tuple, submit: bool,
             timeout: float | None) -> bytes:
        name = function if contract is None else f"{contract}:{function}"
        self.calls.append((f"{who[0]}:{who[1]}", name, args, submit, timeout))
        if self.down:
            raise (EndorseError if submit else EvaluateError)("failed to connect to all addresses",
                                                              code=grpc.StatusCode.UNAVAILABLE)
        answer = getattr(self, "fn_" + name.replace(":", "_"))(who, *args)
        return json.dumps(answer).encode()

    # data contract
    def fn_data_ListDatasets(self, who):  # noqa: N802
        return list(self.datasets.values())

    def fn_data_ListGrants(self, who, dataset):  # noqa: N802
        return [dict(g) for (d, _, _), g in self.grants.items() if d == dataset]

    def fn_data_Audit(self, who, dataset):  # noqa: N802
        if dataset not in self.datasets:
            raise _refusal("Audit", f"data set {dataset!r} not found")
        return {"dataset": dataset, "owner": self.datasets[dataset]["owner"], "entries": self.trail[dataset]}

    def _owner_steward(self, who, dataset, function):
        owner = self.datasets.get(dataset, {}).get("owner")
        if who != (owner, "steward"):
            raise _refusal(function, f"access denied: {function} is for stewards of org {owner!r}; the caller is "
                                     f"{who[1]} of {who[0]!r}", submit=True)

    def fn_data_Grant(self, who, dataset, grantee, purpose, expires):  # noqa: N802
        self._owner_steward(who, dataset, "Grant")
        tx = _tx("grant", dataset, grantee, purpose, len(self.trail[dataset]))
        self.grants[(dataset, grantee, purpose)] = {"grantee": grantee, "purpose": purpose, "state": "active", "tx_id": tx}
        self.trail[dataset].append({"action": "granted", "grantee": grantee, "purpose": purpose, "tx_id": tx})
        return {"dataset": dataset, "grantee": grantee, "purpose": purpose, "tx_id": tx}

    def fn_data_Revoke(self, who, dataset, grantee, purpose):  # noqa: N802
        self._owner_steward(who, dataset, "Revoke")
        tx = _tx("revoke", dataset, grantee, purpose, len(self.trail[dataset]))
        self.grants[(dataset, grantee, purpose)]["state"] = "revoked"
        self.trail[dataset].append({"action": "revoked", "grantee": grantee, "purpose": purpose, "tx_id": tx})
        return {"dataset": dataset, "grantee": grantee, "purpose": purpose, "tx_id": tx}

    # models contract
    def fn_models_ListRounds(self, who, task):  # noqa: N802
        return self.rounds.get(task, [])

    def fn_models_ReadTask(self, who, task):  # noqa: N802
        if task not in self.tasks:
            raise _refusal("ReadTask", f"task {task!r} not found")
        return self.tasks[task]

    def fn_models_ListNodeKeys(self, who):  # noqa: N802
        return self.node_keys

    # twins contract (the anchorer calls it by qualified name on the unnamed contract)
    def fn_twins_ReadSensorBatch(self, who, batch_id):  # noqa: N802
        if batch_id not in self.anchors:
            raise _refusal("ReadSensorBatch", f"sensor batch {batch_id!r} not found")
        return self.anchors[batch_id]


class FakeContract:
    def __init__(self, chaincode: FakeChaincode, who: tuple[str, str], name: str | None) -> None:
        self.chaincode, self.who, self.name = chaincode, who, name

    def evaluate(self, function: str, *args: str, timeout: float | None = None) -> bytes:
        assert timeout is not None, "every dashboard read carries a deadline"
        return self.chaincode.call(self.who, self.name, function, args, False, timeout)

    def submit(self, function: str, *args: str) -> bytes:
        return self.chaincode.call(self.who, self.name, function, args, True, None)


class FakeGateway:
    """What ``orchestrator.connect.connect_sync`` returns, for one identity; ``opened`` counts the dials."""

    opened = 0

    def __init__(self, chaincode: FakeChaincode, org: str, user: str) -> None:
        self.chaincode, self.who = chaincode, (org, user)
        FakeGateway.opened += 1

    def network(self, channel: str) -> FakeGateway:
        assert channel == "consortium"
        return self

    def contract(self, chaincode: str, name: str | None = None) -> FakeContract:
        assert chaincode == "twinledger"
        return FakeContract(self.chaincode, self.who, name)

    def close(self) -> None:
        pass


def network_home(home: Path, enrolled: dict[str, list[str]]) -> Path:
    """A home as `twinledger up` leaves it, as far as the dashboard looks: the spec and the users' MSP folders."""
    layout = Layout(home)
    layout.spec_file.parent.mkdir(parents=True, exist_ok=True)
    layout.spec_file.write_text(DEFAULT_SPEC.read_text())
    for user, orgs in enrolled.items():
        for org in orgs:
            layout.user_msp(org, user).mkdir(parents=True, exist_ok=True)
    return home


def fake_ledger(home: Path, chaincode: FakeChaincode, read_as: tuple[str, str] | None = None) -> LedgerClient:
    return LedgerClient(home, read_as=read_as, connector=lambda spec, layout, org, user: FakeGateway(chaincode, org, user))


# --- twins state made by the twins' code, anchored into the fake chaincode --------------------------------


class ChaincodeAnchorer:
    """The twins ``Anchorer`` protocol, storing what the twins contract stores (ReadSensorBatch's answer)."""

    name = "fabric"

    def __init__(self, chaincode: FakeChaincode) -> None:
        self.chaincode = chaincode

    async def submit_anchor(self, record: BatchRecord) -> str:
        tx = _tx("anchor", record.batch_id)
        self.chaincode.anchors.setdefault(record.batch_id, {
            "batch_id": record.batch_id, "record": record.to_dict(), "record_hash": record.record_hash(), "tx_id": tx,
            "anchored_at": "2026-01-01T00:00:00Z", "anchored_by": "x509::CN=operator"})
        return self.chaincode.anchors[record.batch_id]["tx_id"]

    async def get_anchor(self, batch_id: str) -> dict[str, Any] | None:
        return self.chaincode.anchors.get(batch_id)

    async def raise_alert(self, alert) -> str:  # noqa: ANN001
        tx = _tx("alert", alert.key)
        self.chaincode.alerts[tx] = {"key": alert.key}
        return tx

    async def report_sustainability(self, report) -> str:  # noqa: ANN001
        return _tx("report", report.key)


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


class TwinsFeed:
    """One plant machine fed by the simulator's generator, sealed and anchored like the bridge does."""

    def __init__(self, home: Path, chaincode: FakeChaincode) -> None:
        home.mkdir(parents=True, exist_ok=True)
        self.home = home
        mapping = parse_mapping({
            "assets": {"plant1.m1": {"org": "plant1", "kind": "machine"}},
            "nodes": {f"ns=2;s=plant1.m1.{p}": {"asset": "plant1.m1", "property": p} for p in PROPS},
        })
        (home / "anchor.json").write_text(json.dumps(LEDGER_ANCHOR))
        self.anchorer = ChaincodeAnchorer(chaincode)
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


# --- HTTP helpers ---------------------------------------------------------------------------------------


@pytest.fixture
def serve(tmp_path):
    """Start a dashboard on a free port; every server started is stopped at the end."""
    running = []

    def _start(ledger: LedgerClient | None = None, home: Path | None = None, **kw: Any):
        cfg = DashboardConfig(home=home or tmp_path / "home", port=0, sample_interval=0.1, **kw)
        server, thread = start(cfg, ledger)
        running.append((server, thread))
        return server

    yield _start
    for server, thread in running:
        stop(server, thread)


def bearer(server) -> dict[str, str]:
    """How a script authenticates: the login token the server made at start (tests/unit/orchestrator/
    test_dashboard_auth.py covers the browser's way, the session cookie with its CSRF token)."""
    return {"Authorization": f"Bearer {server.auth.token}"}


def _get(server, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(server.url.rstrip("/") + path, headers={**bearer(server), **(headers or {})})
    try:
        with OPENER.open(req, timeout=15) as r:
            body = r.read()
            return r.status, json.loads(body) if r.headers["Content-Type"] == "application/json" else body.decode()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _post(server, path: str, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(server.url.rstrip("/") + path, data=data, method="POST",
                                 headers={"Content-Type": "application/json", **bearer(server), **(headers or {})})
    try:
        with OPENER.open(req, timeout=15) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _one_line_unavailable(data: dict) -> str:
    assert data["available"] is False, data
    reason = data["reason"]
    assert "\n" not in reason and re.search(r"\bunavailable: \S", reason), reason
    return reason


# --- tests ----------------------------------------------------------------------------------------------


def test_every_panel_says_in_one_line_what_is_missing_and_the_page_is_self_contained(serve, tmp_path):
    server = serve()
    assert server.server_address[0] == "127.0.0.1"
    home = tmp_path / "home"
    for panel, expected in (("network", f"no network in {home}"), ("governance", "no enrolled identity"),
                            ("federated", "no enrolled identity"),
                            ("twins", f"no status at {home / 'twins' / 'status.json'}")):
        code, data = _get(server, f"/api/{panel}")
        assert code == 200
        assert expected in _one_line_unavailable(data), (panel, data)
    code, page = _get(server, "/")
    assert code == 200 and "<script>" in page and "<style>" in page
    # nothing is fetched from anywhere: every reference in the page is inline (data:), none names a host
    refs = re.findall(r'\b(?:src|href)\s*=\s*["\']([^"\']*)', page)
    assert refs and all(r.startswith("data:") for r in refs), refs
    assert "https://" not in page and "//cdn" not in page.lower()
    _, metrics = _get(server, "/metrics")
    _, samples = parse_metrics(metrics)
    errors = {lab["panel"]: v for n, lab, v in samples if n == "dashboard_panel_source_errors_total"}
    assert errors["network"] == errors["governance"] == errors["federated"] == errors["twins"] == 1


def test_when_the_peers_are_down_the_ledger_panels_say_so_and_come_back_without_a_restart(serve, tmp_path):
    home = network_home(tmp_path / "home", {"admin": ["hospital1", "hospital2", "plant1", "plant2"]})
    chaincode = FakeChaincode(down=True)
    chaincode.register("h1-ecg", "hospital1")
    FakeGateway.opened = 0
    server = serve(fake_ledger(home, chaincode), home=home)
    # the network panel reads the supervisor's local state: no supervisor, every node down
    _, net = _get(server, "/api/network")
    from network.spec import load_spec

    nodes = load_spec(Layout(home).spec_file).nodes()
    assert net["available"] is True and net["supervisor"] is False and net["healthy"] == 0 and net["total"] == len(nodes)
    for panel in ("governance", "federated"):
        _, data = _get(server, f"/api/{panel}")
        assert _one_line_unavailable(data).startswith("ledger unavailable: evaluate failed: UNAVAILABLE"), data
    dials = FakeGateway.opened
    chaincode.down = False  # the peers are back: the next poll dials again and answers
    _, gov = _get(server, "/api/governance")
    assert gov["available"] is True and [d["id"] for d in gov["datasets"]] == ["h1-ecg"]
    assert gov["source"] == "Fabric ledger via the gateway, channel consortium, read as hospital1:admin"
    assert FakeGateway.opened > dials, "a connection whose call found no peer is dropped and dialled again"
    # every read went out as the home's first admin, with the dashboard's deadline
    assert {c[0] for c in chaincode.calls} == {"hospital1:admin"} and all(c[4] for c in chaincode.calls)


def test_twins_panel_follows_the_status_and_keeps_chart_history(serve, tmp_path):
    feed = TwinsFeed(tmp_path / "home" / "twins", FakeChaincode())
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
        assert d1["anchorer"] == "ledger channel consortium (chaincode twinledger)"
        assert [a["batch_id"] for a in d1["anchors"]] == ["plant1:0000000001"]
        assert d1["anchors"][0]["tx_id"] == _tx("anchor", "plant1:0000000001")

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


def test_verify_box_proves_a_reading_against_the_ledger_anchor_and_detects_a_tampered_one(serve, tmp_path):
    home = network_home(tmp_path / "home", {"admin": ["plant1"]})
    chaincode = FakeChaincode()
    feed = TwinsFeed(home / "twins", chaincode)
    feed.step(6)
    feed.close()
    server = serve(fake_ledger(home, chaincode), home=home)
    code, ok = _get(server, "/api/verify?asset=plant1.m1&seq=4&prop=Torque")
    assert code == 200 and ok["verified"] is True, ok
    assert ok["anchorer"] == "ledger channel consortium (chaincode twinledger)"
    [r] = ok["readings"]
    assert r["reading"]["seq"] == 4 and r["reading"]["prop"] == "Torque" and r["batch_id"] == "plant1:0000000001"
    on_ledger = chaincode.anchors["plant1:0000000001"]
    assert r["merkle_root"] == on_ledger["record"]["merkle_root"] and r["tx_id"] == on_ledger["tx_id"]
    assert ("plant1:admin", "twins:ReadSensorBatch", ("plant1:0000000001",), False, 4.0) in chaincode.calls
    _, all_props = _get(server, "/api/verify?asset=plant1.m1&seq=4")
    assert {v["reading"]["prop"] for v in all_props["readings"]} == set(PROPS)

    db = sqlite3.connect(home / "twins" / "readings.sqlite")
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

    # the anchor the ledger holds differs from the local record: caught
    chaincode.anchors["plant1:0000000001"] = dict(on_ledger, record=dict(on_ledger["record"], count=on_ledger["record"]["count"] + 1))
    _, forged = _get(server, "/api/verify?asset=plant1.m1&seq=5&prop=Torque")
    assert forged["verified"] is False and "anchored root/count" in forged["reason"]
    # a batch the ledger never saw
    del chaincode.anchors["plant1:0000000001"]
    _, never = _get(server, "/api/verify?asset=plant1.m1&seq=5&prop=Torque")
    assert never["verified"] is False and "has no anchor" in never["reason"]
    # no peer answers: the box says the ledger is unavailable, in one line
    chaincode.down = True
    _, down = _get(server, "/api/verify?asset=plant1.m1&seq=5&prop=Torque")
    assert _one_line_unavailable(down).startswith("ledger unavailable:")


def test_verify_box_refuses_state_that_was_never_anchored_on_the_ledger(serve, tmp_path):
    home = network_home(tmp_path / "home", {"admin": ["plant1"]})
    feed = TwinsFeed(home / "twins", FakeChaincode())
    feed.step(2)
    feed.close()
    (home / "twins" / "anchor.json").write_text(json.dumps({"kind": "file", "path": "anchors.jsonl"}))  # an old run's
    server = serve(fake_ledger(home, FakeChaincode()), home=home)
    _, out = _get(server, "/api/verify?asset=plant1.m1&seq=1")
    assert "not the ledger" in _one_line_unavailable(out)


def _federated_state(home: Path, chaincode: FakeChaincode, task: str = "cardiac-v1") -> list[RoundRecord]:
    """Two committed rounds on the (fake) models contract, their artefacts in HOME/flower/store, and the run's
    report naming the task, as `twinledger fl run` leaves them."""
    store = ModelStore(home / "flower" / "store")
    rounds, global_sha = [], store.put_bytes(b"initial model")
    for n in (1, 2):
        updates = [UpdateRecord(org, store.put_bytes(f"update {n} {org}".encode()), 100 + i)
                   for i, org in enumerate(("hospital1", "hospital2"))]
        result = store.put_bytes(f"global after round {n}".encode())
        rounds.append(RoundRecord(task=task, round=n, global_sha256=global_sha, participants=["hospital1", "hospital2"],
                                  started_at=1.0 + n, result_sha256=result, updates=updates,
                                  metrics={"loss": 1.0 / n, "val_auroc": 0.8 + n / 100}, committed_at=2.0 + n,
                                  start_tx_id=_tx("start", n), commit_tx_id=_tx("commit", n)))
        global_sha = result
    chaincode.rounds[task] = [r.to_dict() for r in rounds]
    chaincode.tasks[task] = TaskRecord(task, "mlp", "fl:cardiac", ("hospital1.heart_disease_uci", "hospital2.heart_disease_uci"),
                                       2, "fedavg", created_by_org="hospital1", tx_id=_tx("task")).to_dict()
    chaincode.node_keys = [{"org": "hospital1", "public_key_sha256": "ab" * 32, "tx_id": _tx("key")}]
    (home / "flower" / "reports").mkdir(parents=True, exist_ok=True)
    (home / "flower" / "reports" / f"{task}-latest.json").write_text(json.dumps({"ledger_task": task}))
    return rounds


def test_federated_panel_rehashes_every_model_the_ledger_names(serve, tmp_path):
    home = network_home(tmp_path / "home", {"admin": ["hospital1", "hospital2"]})
    chaincode = FakeChaincode()
    server = serve(fake_ledger(home, chaincode), home=home)
    _, empty = _get(server, "/api/federated")
    assert empty["available"] is True and empty["tasks"] == [] and empty["node_keys"] == []

    rounds = _federated_state(home, chaincode)
    _, d = _get(server, "/api/federated")
    assert d["available"] is True, d
    assert d["source"]["label"] == "Fabric ledger (models contract), channel consortium, read as hospital1:admin"
    assert d["node_keys"] == [{"org": "hospital1", "public_key_sha256": "ab" * 32, "tx_id": _tx("key")}]
    [task] = d["tasks"]
    assert task["task"] == "cardiac-v1" and task["record"]["rounds"] == 2 and task["record"]["aggregation"] == "fedavg"
    assert [r["round"] for r in task["rounds"]] == [1, 2]
    assert task["rounds"][1]["metrics"] == pytest.approx(rounds[1].metrics)
    assert task["rounds"][1]["commit_tx_id"] == _tx("commit", 2)
    hashes = {h for r in rounds for h in r.hashes()}
    assert set(task["verified"]) == hashes and set(task["verified"].values()) == {"ok"}
    assert ("hospital1:admin", "models:ListRounds", ("cardiac-v1",), False, 4.0) in chaincode.calls

    # a stored model altered after the fact, and one deleted: the panel says which
    store = home / "flower" / "store"
    final = rounds[-1].result_sha256
    (store / final).write_bytes((store / final).read_bytes() + b"\0")
    (store / rounds[0].global_sha256).unlink()
    _, d = _get(server, "/api/federated")
    verified = d["tasks"][0]["verified"]
    assert verified[final] == "mismatched" and verified[rounds[0].global_sha256] == "missing"
    assert d["tasks"][0]["counts"] == {"ok": len(hashes) - 2, "missing": 1, "mismatched": 1}

    # a report naming a task the ledger does not know: listed without rounds, its record None
    (home / "flower" / "reports" / "other.json").write_text(json.dumps({"ledger_task": "cardiac-unknown"}))
    _, d = _get(server, "/api/federated")
    other = next(t for t in d["tasks"] if t["task"] == "cardiac-unknown")
    assert other["record"] is None and other["rounds"] == []


def test_grant_acts_only_as_the_identity_chosen_with_as_and_no_request_can_switch_it(serve, tmp_path):
    home = network_home(tmp_path / "home", {"admin": ["hospital1"], "steward": ["hospital1", "hospital2"]})
    chaincode = FakeChaincode()
    chaincode.register("h1-ecg", "hospital1")
    chaincode.register("h2-ecg", "hospital2")
    server = serve(fake_ledger(home, chaincode, read_as=("hospital1", "steward")), home=home,
                   acting_as=("hospital1", "steward"))
    _, gov = _get(server, "/api/governance")
    assert gov["acting"] == {"org": "hospital1", "user": "steward", "identity": "hospital1:steward"}
    code, page = _get(server, "/")
    assert code == 200 and "acting as hospital1:steward" in page

    body = {"dataset": "h1-ecg", "grantee": "hospital2", "purpose": "fl:cardiac"}
    code, out = _post(server, "/api/governance/grant", body)
    assert code == 200 and out["as"] == "hospital1:steward"
    submitted = [c for c in chaincode.calls if c[3]]
    assert submitted == [("hospital1:steward", "data:Grant", ("h1-ecg", "hospital2", "fl:cardiac", ""), True, None)]
    _, gov = _get(server, "/api/governance?dataset=h1-ecg")
    assert [(g["grantee"], g["purpose"], g["state"]) for g in gov["datasets"][0]["grants"]] == [("hospital2", "fl:cardiac", "active")]
    assert [e["action"] for e in gov["audit"]["entries"]] == ["registered", "granted"]

    # hospital2's data set: hospital1's steward is refused by the chaincode, whose words reach the page
    code, out = _post(server, "/api/governance/grant", {**body, "dataset": "h2-ecg"})
    assert code == 409 and out["error"].startswith("access denied: Grant is for stewards of org 'hospital2'"), out
    code, out = _post(server, "/api/governance/revoke", body)
    assert code == 200 and [c for c in chaincode.calls if c[3]][-1][:3] == ("hospital1:steward", "data:Revoke",
                                                                              ("h1-ecg", "hospital2", "fl:cardiac"))
    n = len(chaincode.calls)
    # hospital2's steward is enrolled in this home too, but no field of a request can make the server sign as it
    for claim in ({"as_org": "hospital2"}, {"as_org": "hospital1"}, {"user": "admin"}, {"msp_id": "Hospital2MSP"},
                  {"certificate": "-----BEGIN CERTIFICATE-----"}, {"org": "hospital2", "as_user": "steward"}):
        code, out = _post(server, "/api/governance/grant", {**body, "dataset": "h2-ecg", **claim})
        assert code == 403 and "acts only as hospital1:steward" in out["error"], (claim, out)
    code, out = _get(server, "/api/governance?as_org=hospital2&user=admin")
    assert code == 200 and out["acting"]["identity"] == "hospital1:steward"
    code, out = _post(server, "/api/governance/grant", {**body, "note": "x"})
    assert code == 400 and "unexpected field(s) note" in out["error"]
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
    assert not [c for c in chaincode.calls[n:] if c[3]], "no refused request reached the ledger"

    _, metrics = _get(server, "/metrics")
    actions = {(lab["action"], lab["outcome"]): v for name, lab, v in parse_metrics(metrics)[1]
               if name == "dashboard_governance_actions_total"}
    assert actions[("grant", "committed")] == 1 and actions[("revoke", "committed")] == 1
    assert actions[("grant", "rejected")] == 1
    assert actions[("grant", "refused")] == 6 and actions[("grant", "invalid")] == 2


def test_without_as_the_page_is_read_only(serve, tmp_path):
    home = network_home(tmp_path / "home", {"admin": ["hospital1"], "steward": ["hospital1"]})
    chaincode = FakeChaincode()
    chaincode.register("h1-ecg", "hospital1")
    server = serve(fake_ledger(home, chaincode), home=home)
    _, gov = _get(server, "/api/governance")
    assert gov["available"] is True and gov["acting"] is None
    code, page = _get(server, "/")
    assert code == 200 and "read-only (no --as)" in page
    code, out = _post(server, "/api/governance/grant", {"dataset": "h1-ecg", "grantee": "hospital2", "purpose": "p"})
    assert code == 403 and "read-only" in out["error"] and not [c for c in chaincode.calls if c[3]]


def test_a_grant_while_no_peer_answers_is_503_and_one_line(serve, tmp_path):
    home = network_home(tmp_path / "home", {"steward": ["hospital1"]})
    chaincode = FakeChaincode()
    chaincode.register("h1-ecg", "hospital1")
    server = serve(fake_ledger(home, chaincode, read_as=("hospital1", "steward")), home=home,
                   acting_as=("hospital1", "steward"))
    chaincode.down = True
    got, out = _post(server, "/api/governance/grant", {"dataset": "h1-ecg", "grantee": "hospital2", "purpose": "p"})
    assert got == 503 and out["error"].startswith("ledger unavailable: endorse failed: UNAVAILABLE") and "\n" not in out["error"]
    _, metrics = _get(server, "/metrics")
    actions = {(lab["action"], lab["outcome"]): v for name, lab, v in parse_metrics(metrics)[1]
               if name == "dashboard_governance_actions_total"}
    assert actions[("grant", "unreachable")] == 1


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


def test_the_cli_has_no_file_ledger_or_file_anchor_options(capsys):
    from orchestrator.cli import main

    for gone in ("--fl-ledger", "--fl-ledger-file", "--twins-anchor"):
        with pytest.raises(SystemExit):
            main(["dashboard", gone, "x"])
        assert "unrecognized arguments" in capsys.readouterr().err


def test_gateway_failures_are_told_apart_unavailable_or_refused_with_the_chaincode_words():
    from orchestrator.dashboard.ledger import describe_gateway_error

    down = describe_gateway_error(EvaluateError("failed to connect to all addresses", code=grpc.StatusCode.UNAVAILABLE))
    assert isinstance(down, LedgerUnavailable) and str(down).startswith("ledger unavailable: evaluate failed: UNAVAILABLE")
    # the peer answered, but an orderer (or another peer) behind its gateway did not: unavailable too
    behind = describe_gateway_error(EndorseError("failed to collect enough transaction endorsements", code=grpc.StatusCode.UNAVAILABLE,
                                                 details=[ErrorDetail("127.0.0.1:7051", "Hospital2MSP", "connection refused")]))
    assert isinstance(behind, LedgerUnavailable)
    said = "access denied: Grant is for stewards of org 'hospital1'"
    refused = describe_gateway_error(_refusal("Grant", said, submit=True))
    assert isinstance(refused, LedgerRefused) and str(refused) == said


def test_governance_lists_the_newest_data_sets_with_grants_and_always_the_chosen_one(serve, tmp_path, monkeypatch):
    from orchestrator.dashboard import panels

    monkeypatch.setattr(panels, "MAX_DATASETS", 2)
    home = network_home(tmp_path / "home", {"admin": ["hospital1"]})
    chaincode = FakeChaincode()
    for n, name in enumerate(("oldest", "older", "newer", "newest")):
        chaincode.register(name, "hospital1")
        chaincode.datasets[name]["registered_at"] = f"2026-01-0{n + 1}T00:00:00Z"
    server = serve(fake_ledger(home, chaincode), home=home)
    _, gov = _get(server, "/api/governance")
    assert [d["id"] for d in gov["datasets"]] == ["newest", "newer"] and gov["truncated"] is True
    assert gov["dataset_ids"] == ["newest", "newer", "older", "oldest"] and gov["audit_dataset"] == "newest"
    _, gov = _get(server, "/api/governance?dataset=oldest")
    assert [d["id"] for d in gov["datasets"]] == ["newest", "newer", "oldest"] and gov["audit"]["dataset"] == "oldest"
    listed = [c[2] for c in chaincode.calls if c[1] == "data:ListGrants"]
    assert ("older",) not in listed, "grants are read only for the data sets shown"


def test_a_connection_dropped_by_one_poll_is_not_closed_under_another_polls_call(tmp_path):
    """The server answers panels on several threads: one call finding the peer down must not close the
    gateway another thread is mid-call on (CI saw "governance unavailable: RuntimeError: Event loop is
    closed" that way). The dropped gateway is closed once, by the last call leaving it."""
    import threading

    home = network_home(tmp_path / "home", {"admin": ["hospital1"]})
    inside, release = threading.Event(), threading.Event()

    class ClosingGateway(FakeGateway):
        closes = 0

        def __init__(self, *a: Any) -> None:
            super().__init__(*a)
            self.closed = False

        def close(self) -> None:
            self.closed = True
            ClosingGateway.closes += 1

    class SlowContract:
        def __init__(self, gw: ClosingGateway) -> None:
            self.gw = gw

        def evaluate(self, function: str, *args: str, timeout: float | None = None) -> bytes:
            if self.gw.closed:
                raise RuntimeError("Event loop is closed")
            if function == "Slow":
                inside.set()
                assert release.wait(10)
                if self.gw.closed:
                    raise RuntimeError("Event loop is closed")
                return b'"slow answered"'
            raise EvaluateError("no peer", code=grpc.StatusCode.UNAVAILABLE)

    gateways: list[ClosingGateway] = []

    def connector(spec, layout, org, user):
        gw = ClosingGateway(FakeChaincode(), org, user)
        gw.contract = lambda chaincode, name=None: SlowContract(gw)  # type: ignore[method-assign]
        gateways.append(gw)
        return gw

    ledger = LedgerClient(home, connector=connector)
    answers: list[Any] = []
    slow = threading.Thread(target=lambda: answers.append(ledger.evaluate("data", "Slow")))
    slow.start()
    assert inside.wait(10)
    with pytest.raises(LedgerUnavailable):
        ledger.evaluate("data", "Fast")  # same identity, same gateway: finds the peer down and drops it
    assert ClosingGateway.closes == 0, "closed under the slow call"
    release.set()
    slow.join(10)
    assert answers == ["slow answered"]
    assert ClosingGateway.closes == 1 and gateways[0].closed
    assert ledger.evaluate("data", "Slow") == "slow answered"  # the next call dials a new gateway
    assert len(gateways) == 2
    ledger.close()
    assert ClosingGateway.closes == 2


def test_a_patient_prediction_is_labelled_as_sepsis_risk_and_a_machine_one_as_failure():
    from orchestrator.dashboard.panels import _risk

    pred = {"probability": 0.3, "model": "federated:sepsis-v1:round1:abc"}
    assert _risk({"kind": "patient", "prediction": pred})["unit"] == "P(sepsis within 6 h)"
    assert _risk({"kind": "machine", "prediction": dict(pred, model="federated:maintenance-v1:round1:abc")})["unit"] == "P(failure)"
    assert _risk({"kind": "patient", "risk": {"score": 5, "risk": "medium", "label": "NEWS2-like"}})["unit"] == "NEWS2-like score"
