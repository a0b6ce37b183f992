"""`twins map` and `twins run --endpoint` refuse what they must, in one line, before any connection or process."""

import pytest

from orchestrator.cli import build_parser
from orchestrator.cli_common import UserError
from orchestrator.cli_twins_endpoints import check_url
from orchestrator.cli_twins_map import cmd_map


def test_endpoint_urls():
    assert check_url("opc.tcp://10.0.0.5:4840/path") == "opc.tcp://10.0.0.5:4840/path"
    for bad, why in (("http://10.0.0.5:4840", "expected opc.tcp://"), ("opc.tcp://10.0.0.5", "give the port"),
                     ("opc.tcp://:4840", "expected opc.tcp://"), ("opc.tcp://h:99999", "out of range")):
        with pytest.raises(UserError, match=why):
            check_url(bad)


def test_map_refuses_an_existing_file_unless_forced_and_a_missing_folder(tmp_path):
    out = tmp_path / "m.yaml"
    out.write_text("# my edits\n")
    args = build_parser().parse_args(["twins", "map", "--endpoint", "opc.tcp://127.0.0.1:1", "--org", "plant1",
                                      "--out", str(out), "--insecure-opcua", "--home", str(tmp_path)])
    with pytest.raises(UserError, match="exists; give --force"):
        cmd_map(args)
    assert out.read_text() == "# my edits\n"
    args.out = tmp_path / "no" / "m.yaml"
    with pytest.raises(UserError, match="does not exist"):
        cmd_map(args)
    with pytest.raises(SystemExit):  # an org name the ledger would refuse is refused while parsing
        build_parser().parse_args(["twins", "map", "--endpoint", "opc.tcp://h:1", "--org", "no such", "--out", "x"])


def test_run_endpoint_pairs_and_modes(tmp_path):
    from orchestrator.cli_twins_endpoints import cmd_run_endpoints

    def run(*extra):
        return cmd_run_endpoints(build_parser().parse_args(["twins", "run", "--home", str(tmp_path), *extra]))

    with pytest.raises(UserError, match="give them in pairs"):
        run("--endpoint", "opc.tcp://h:1", "--endpoint", "opc.tcp://h:2", "--mapping", "a.yaml")
    with pytest.raises(UserError, match="--machines and --monitors start simulators"):
        run("--mapping", "a.yaml", "--machines", "plant1:1")
    with pytest.raises(UserError, match="give a --mapping FILE"):
        run("--endpoint", "opc.tcp://h:1")
    with pytest.raises(UserError, match="not found"):
        run("--endpoint", "opc.tcp://h:1", "--mapping", str(tmp_path / "missing.yaml"))
