"""`twinledger twins` in process: speed arguments, and the ledger check that decides whether `twins run` may
anchor on the ledger (a real HTTP /healthz answering on a peer's operations port stands in for a live peer)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path

import pytest

from network.layout import Layout
from network.spec import dump_spec, load_spec
from orchestrator.cli import build_parser
from orchestrator.cli_common import UserError
from orchestrator.cli_twins_views import speed_factor
from orchestrator.twins_state import ledger_config
from tests.ports import free_port_base


@pytest.mark.parametrize("text, rpm, factor", [
    ("-10%", None, 0.9), ("+5%", None, 1.05), ("5%", None, 1.05), ("-2.5%", None, 0.975),
    ("0.9", None, 0.9), ("x1.1", None, 1.1), ("1400rpm", 1750.0, 1400 / 1750), ("1400 RPM", 1400.0, 1.0),
])
def test_speed_forms(text, rpm, factor):
    assert speed_factor(text, rpm) == pytest.approx(factor)


@pytest.mark.parametrize("text, rpm", [("fast", 1500.0), ("1400rpm", None), ("%", None)])
def test_bad_speed_is_one_user_error(text, rpm):
    with pytest.raises(UserError):
        speed_factor(text, rpm)


def test_parser_takes_a_negative_percentage_as_the_speed():
    # argparse would read "-10%" as an unknown option without the parser's tweak
    args = build_parser().parse_args(["twins", "whatif", "plant1.m1", "--speed", "-10%", "--hours", "4"])
    assert (args.asset, args.speed, args.hours) == ("plant1.m1", "-10%", 4.0)
    args = build_parser().parse_args(["verify", "reading", "plant1.m1", "42", "--prop", "Torque", "--json"])
    assert (args.asset, args.seq, args.prop, args.json) == ("plant1.m1", 42, "Torque", True)


class _Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def network_home(tmp_path: Path):
    spec = load_spec(None, port_base=free_port_base(200))
    (tmp_path / "spec.yaml").write_text(dump_spec(spec))
    return tmp_path, spec


def test_ledger_config_refuses_when_a_peer_is_down(network_home):
    home, spec = network_home
    with pytest.raises(UserError, match=r"peers are not up \(peer0\.plant1 not answering\); start the network with `twinledger up`$"):
        ledger_config(home, ["plant1"])


def test_ledger_config_without_a_network_says_to_start_one(tmp_path):
    with pytest.raises(UserError, match=r"there is no network in .*; start the network with `twinledger up`$"):
        ledger_config(tmp_path, ["plant1"])


def test_twins_run_has_no_other_anchor_than_the_ledger():
    with pytest.raises(SystemExit):
        build_parser().parse_args(["twins", "run", "--anchor", "file"])


def test_ledger_config_uses_each_orgs_operator_through_its_live_peer(network_home):
    home, spec = network_home
    peer = spec.nodes_of("plant1", "peer")[0]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", peer.ports.operations), _Healthz)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(UserError, match="operator@plant1 is not enrolled"):
            ledger_config(home, ["plant1"])
        layout = Layout(home)
        layout.user_msp("plant1", "operator").mkdir(parents=True)
        cfg = ledger_config(home, ["plant1"])
    finally:
        server.shutdown()
        server.server_close()
    assert cfg["channel"] == spec.channel and cfg["chaincode"]
    assert cfg["orgs"] == {"plant1": {
        "endpoint": f"127.0.0.1:{peer.ports.listen}", "msp_dir": str(layout.user_msp("plant1", "operator")),
        "msp_id": spec.org("plant1").msp_id, "tls_root_cert": str(layout.ca_cert("plant1")),
        "tls_client_cert": str(layout.user_tls("plant1", "operator") / "client.crt"),
        "tls_client_key": str(layout.user_tls("plant1", "operator") / "client.key"),
    }}
    with pytest.raises(UserError, match="unknown org 'plant9'"):
        ledger_config(home, ["plant9"])


def test_twins_run_writes_which_ledger_task_and_store_the_machine_twins_follow(tmp_path):
    from orchestrator.cli_twins_run import models_config
    from twins.model.ledger_watch import ModelsConfig

    args = build_parser().parse_args(["twins", "run", "--home", str(tmp_path)])
    cfg = models_config(tmp_path, args)
    assert cfg == {"tasks": {"machine": "maintenance-v1", "patient": "sepsis-v1"}, "store": str(tmp_path / "flower" / "store"), "poll_s": 2.0}
    args = build_parser().parse_args(["twins", "run", "--model-task", "maintenance-v2", "--model-store",
                                      str(tmp_path / "s"), "--model-poll", "0.5"])
    (tmp_path / "twins").mkdir()
    (tmp_path / "twins" / "models.json").write_text(__import__("json").dumps(models_config(tmp_path, args)))
    # what the bridge reads back (twins.runtime): the patient twins follow their default task, sepsis-v1
    assert ModelsConfig.load(tmp_path / "twins") == ModelsConfig({"machine": "maintenance-v2", "patient": "sepsis-v1"},
                                                                 tmp_path / "s", 0.5)
    with pytest.raises(UserError):
        models_config(tmp_path, build_parser().parse_args(["twins", "run", "--model-task", "no spaces"]))
    for poll in ("0", "-1", "nan", "inf"):  # refused while parsing, as every number the CLI takes
        with pytest.raises(SystemExit):
            build_parser().parse_args(["twins", "run", "--model-poll", poll])


def test_status_lines_name_the_model_in_use_and_a_refused_round():
    from orchestrator.cli_twins_views import model_lines

    sha = "ab" * 32
    lines = model_lines({
        "machine": {"state": "federated", "model": f"federated:m-v1:round2:{sha[:12]}", "task": "m-v1",
                    "in_use": {"task": "m-v1", "round": 2, "sha256": sha, "commit_tx_id": "tx2"},
                    "refused": {"task": "m-v1", "round": 3, "reason": "hash-mismatch", "detail": "REFUSED model file x"}},
        "patient": {"state": "rules", "model": "NEWS2-like (partial)", "note": "no federated task on bedside vitals"}})
    assert lines[0] == (f"model of the machine twins: federated:m-v1:round2:{sha[:12]} (task m-v1 round 2, sha256 {sha} "
                        "verified against the ledger, commit tx tx2)")
    assert lines[1] == "  NOT USED: m-v1 round 3 (hash-mismatch): REFUSED model file x"
    assert lines[2] == "model of the patient twins: NEWS2-like (partial) (no federated task on bedside vitals)"
    fallback = model_lines({"machine": {"state": "fallback", "model": None, "task": "m-v1", "ledger_latest": None}})
    assert fallback == ["model of the machine twins: fallback:ai4i-rules-v1 (the AI4I rules: task m-v1 has no committed "
                        "round on the ledger yet)"]
