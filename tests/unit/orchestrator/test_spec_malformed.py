"""Malformed spec files: each gives ONE line naming the field and what is wrong, exit 1, and no change.

Every case goes through the real `twinledger up --spec FILE` entry point (orchestrator.cli.main, in this
process: the spec is refused before any process could start) into a home that must not appear, and into a
home that already holds a stopped network's state, which must stay byte for byte what it was. A few run
as a real `twinledger` process to prove the same line reaches a user's terminal.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from network.spec import MAX_SPEC_BYTES, SpecError, dump_spec, load_spec
from orchestrator import cli

REPO = Path(__file__).resolve().parents[3]
GOOD = yaml.safe_load(dump_spec(load_spec()))
ORDERER = "  - {name: orderer, kind: orderer}\n"
PLANT = "  - {name: plant1, kind: plant}\n"


def org_spec(*orgs: str, head: str = "") -> str:
    return head + "orgs:\n" + "".join(orgs)


def with_(**top: object) -> str:
    data = {**GOOD, **top}
    return yaml.safe_dump({k: v for k, v in data.items() if v is not _DROP}, sort_keys=False)


_DROP = object()

# (case id, file content, substrings the one line must hold: the field and what is wrong)
CASES: list[tuple[str, str | bytes, tuple[str, ...]]] = [
    ("empty file", "", ("must be a YAML mapping", "NoneType")),
    ("only a comment", "# nothing\n", ("must be a YAML mapping",)),
    ("a list", "- orderer\n- plant1\n", ("must be a YAML mapping", "list")),
    ("a scalar", "42\n", ("must be a YAML mapping", "int")),
    ("a string", "hello world\n", ("must be a YAML mapping", "str")),
    ("unclosed flow", "orgs: [unclosed\n", ("not valid YAML at line 2",)),
    ("tab indentation", "name:\ttl\n\torgs: x\n", ("not valid YAML at line 1", "'\\t'")),
    ("bad indentation", "orgs:\n  - {name: orderer, kind: orderer}\n - {name: p, kind: plant}\n", ("not valid YAML",)),
    ("python tag", "!!python/object/apply:os.system ['echo owned']\n", ("not valid YAML", "python/object")),
    ("duplicate top key", "name: a\nname: b\n" + org_spec(ORDERER, PLANT), ("key 'name' appears twice", "line 2")),
    ("duplicate org key", org_spec(ORDERER, "  - {name: plant1, kind: plant, kind: hospital}\n"), ("key 'kind' appears twice",)),
    ("not UTF-8", b"\xff\xfe\x00name: x\n", ("not UTF-8 text", "byte 0")),
    ("latin-1 bytes", "name: tw\xefn\n".encode("latin-1"), ("not UTF-8 text",)),
    ("unknown top key", org_spec(ORDERER, PLANT, head="colour: red\n"), ("unknown key 'colour'", "known: name")),
    ("misspelt port_base", org_spec(ORDERER, PLANT, head="portbase: 20000\n"), ("unknown key 'portbase'",)),
    ("unknown org key", org_spec(ORDERER, "  - {name: plant1, kind: plant, peer: 2}\n"), ("orgs[1]: unknown key 'peer'",)),
    ("unknown batch key", org_spec(ORDERER, PLANT, head="batch: {timeout: 5}\n"), ("batch.unknown key 'timeout'",)),
    ("host key", org_spec(ORDERER, PLANT, head="host: 0.0.0.0\n"), ("host is not a setting", "host: ADDRESS")),
    ("org listen key", org_spec(ORDERER, "  - {name: plant1, kind: plant, listen: 10.0.0.1}\n"),
     ("orgs[1]: listen is not a setting",)),
    ("no orgs", "name: tl\n", ("non-empty list 'orgs'",)),
    ("orgs empty", "orgs: []\n", ("non-empty list 'orgs'",)),
    ("orgs a mapping", "orgs: {plant1: plant}\n", ("non-empty list 'orgs'",)),
    ("org a string", "orgs: [orderer, plant1]\n", ("orgs[0] must be a mapping", "'orderer'")),
    ("org without name", org_spec("  - {kind: orderer}\n", PLANT), ("orgs[0] needs a name",)),
    ("org name a number", org_spec(ORDERER, "  - {name: 7, kind: plant}\n"), ("orgs[1]: name must be a string", "7")),
    ("org name uppercase", org_spec(ORDERER, "  - {name: Plant1, kind: plant}\n"), ("orgs[1]: name 'Plant1'", "lowercase")),
    ("org name unicode", org_spec(ORDERER, "  - {name: plänt1, kind: plant}\n"), ("name 'plänt1'", "lowercase")),
    ("org name too long", org_spec(ORDERER, "  - {name: p" + "x" * 40 + ", kind: plant}\n"), ("name 'pxxx", "at most 31")),
    ("org name newline", org_spec(ORDERER, '  - {name: "plant1\\n", kind: plant}\n'), ("name 'plant1\\n'",)),
    ("duplicate org", org_spec(ORDERER, PLANT, PLANT), ("org 'plant1' appears twice",)),
    ("no kind", org_spec(ORDERER, "  - {name: plant1}\n"), ("org plant1: kind must be hospital, plant or orderer", "None")),
    ("bad kind", org_spec(ORDERER, "  - {name: lab1, kind: lab}\n"), ("org lab1: kind must be", "'lab'")),
    ("kind a list", org_spec(ORDERER, "  - {name: lab1, kind: [plant]}\n"), ("org lab1: kind must be", "['plant']")),
    ("two orderer orgs", org_spec(ORDERER, "  - {name: ord2, kind: orderer}\n", PLANT), ("exactly one org of kind orderer",)),
    ("no orderer org", org_spec(PLANT), ("exactly one org of kind orderer",)),
    ("only the orderer org", org_spec(ORDERER), ("at least one hospital or plant",)),
    ("peers a word", org_spec(ORDERER, "  - {name: plant1, kind: plant, peers: many}\n"),
     ("org plant1: peers must be a whole number", "'many'")),
    ("peers a float", org_spec(ORDERER, "  - {name: plant1, kind: plant, peers: 1.5}\n"), ("peers must be a whole number", "1.5")),
    ("peers a bool", org_spec(ORDERER, "  - {name: plant1, kind: plant, peers: true}\n"), ("peers must be a whole number", "True")),
    ("peers a list", org_spec(ORDERER, "  - {name: plant1, kind: plant, peers: [1, 2]}\n"), ("peers must be a whole number",)),
    ("peers zero", org_spec(ORDERER, "  - {name: plant1, kind: plant, peers: 0}\n"), ("org plant1: peers 0 must be between 1 and 4",)),
    ("peers huge", org_spec(ORDERER, "  - {name: plant1, kind: plant, peers: 99999999999999999999999}\n"),
     ("peers 9999", "between 1 and 4")),
    ("orderer org with peers", org_spec("  - {name: orderer, kind: orderer, peers: 1}\n", PLANT), ("an orderer org runs no peers",)),
    ("plant with orderers", org_spec(ORDERER, "  - {name: plant1, kind: plant, orderers: 1}\n"),
     ("only the orderer org runs orderers",)),
    ("raft of two", org_spec("  - {name: orderer, kind: orderer, orderers: 2}\n", PLANT), ("Raft needs 1, 3 or 5", "not 2")),
    ("raft negative", org_spec("  - {name: orderer, kind: orderer, orderers: -3}\n", PLANT), ("orderers -3 must be between",)),
    ("msp id with a slash", org_spec(ORDERER, "  - {name: plant1, kind: plant, msp_id: ../../etc}\n"),
     ("org plant1: msp_id '../../etc'", "MSP ID")),
    ("msp id clash", org_spec(ORDERER, "  - {name: plant1, kind: plant, msp_id: SameMSP}\n",
                              "  - {name: plant2, kind: plant, msp_id: SameMSP}\n"), ("org plant2: msp_id 'SameMSP' is already",)),
    ("name a list", with_(name=["a"]), ("name must be a string", "['a']")),
    ("name uppercase", with_(name="TwinLedger"), ("name 'TwinLedger'", "lowercase")),
    ("channel underscore", with_(channel="Bad_Channel"), ("channel 'Bad_Channel' is not a valid Fabric channel name",)),
    ("channel a number", with_(channel=5), ("channel must be a string", "5")),
    ("channel emoji", with_(channel="chän🙂"), ("channel 'chän🙂'", "not a valid Fabric channel name")),
    ("port_base a word", with_(port_base="high"), ("port_base must be a whole number", "'high'")),
    ("port_base null", with_(port_base=None), ("port_base must be a whole number", "None")),
    ("port_base a float", with_(port_base=17000.5), ("port_base must be a whole number", "17000.5")),
    ("port_base privileged", with_(port_base=80), ("port_base 80 must be between 1025 and 64999",)),
    ("port_base negative", with_(port_base=-17000), ("port_base -17000 must be between",)),
    ("port_base huge", with_(port_base=10 ** 30), ("port_base 1000000000000", "must be between")),
    ("ports past 65535", with_(port_base=64000, orgs=GOOD["orgs"] + [{"name": f"p{i}", "kind": "plant", "peers": 4}
                                                                      for i in range(30)]),
     ("port_base 64000 leaves no room for 162 nodes",)),
    ("batch a list", with_(batch=[1]), ("batch must be a mapping", "[1]")),
    ("batch timeout zero", with_(batch={"timeout_ms": 0}), ("batch.timeout_ms 0 must be between 1 and 10000",)),
    ("batch timeout a word", with_(batch={"timeout_ms": "fast"}), ("batch.timeout_ms must be a whole number", "'fast'")),
    ("batch count huge", with_(batch={"max_message_count": 10 ** 9}), ("batch.max_message_count 1000000000 must be between",)),
    ("batch bytes negative", with_(batch={"absolute_max_bytes": -5}), ("batch.absolute_max_bytes -5 must be between",)),
    ("batch preferred above absolute", with_(batch={"absolute_max_bytes": 8192, "preferred_max_bytes": 9000}),
     ("batch.preferred_max_bytes 9000 must be between 1 and 8192",)),
    ("deep nesting", "orgs: " + "[" * 1000 + "]" * 1000 + "\n", ("nests too deeply",)),
    ("anchor fan-out", "a: &a [x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\norgs: *b\n",
     ("unknown key 'a'",)),
]


def _snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its mode and (for files) the SHA-256 of its bytes."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() and not p.is_symlink() else ""
            out[str(p.relative_to(root))] = f"{st.st_mode:o} {st.st_size} {digest}"
    return out


def _up(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(["up", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def stopped_home(tmp_path: Path) -> Path:
    """A home holding a network's state but no running process: its spec and an identity file."""
    home = tmp_path / "stopped"
    (home / "orgs" / "plant1" / "msp").mkdir(parents=True)
    (home / "spec.yaml").write_text(dump_spec(load_spec(port_base=23000)))
    (home / "orgs" / "plant1" / "msp" / "cert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return home


@pytest.mark.parametrize("case, content, needles", CASES, ids=[c[0] for c in CASES])
def test_a_malformed_spec_is_one_line_exit_1_and_changes_nothing(
        case: str, content: str | bytes, needles: tuple[str, ...], tmp_path: Path, stopped_home: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_bytes(content if isinstance(content, bytes) else content.encode())
    # A case the parser accepted would make `up` start a real network: refuse to go on instead.
    with pytest.raises(SpecError):
        load_spec(spec)
    before = _snapshot(stopped_home)
    for home in (tmp_path / "fresh", stopped_home):
        code, out, err = _up(capsys, "--spec", str(spec), "--home", str(home))
        assert code == 1, (case, out, err)
        assert out == "", "nothing may be announced before the spec is accepted"
        line = err.rstrip("\n")
        assert "\n" not in line and line.startswith(f"twinledger: spec file {spec}"), line
        for needle in needles:
            assert needle in line, f"{case}: {needle!r} not in {line!r}"
    assert not (tmp_path / "fresh").exists(), "a refused spec must not create the home"
    assert _snapshot(stopped_home) == before, "a refused spec must not touch an existing home"


def test_the_case_table_is_wide() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("what", ["directory", "fifo", "device", "missing", "unreadable", "too big"])
def test_a_spec_path_that_is_not_a_readable_small_file(what: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "spec.yaml"
    if what == "directory":
        path.mkdir()
        needle = "is not a regular file"
    elif what == "fifo":
        os.mkfifo(path)  # reading it would block forever
        needle = "is not a regular file"
    elif what == "device":
        path = Path("/dev/zero")  # reading it would never end
        needle = "is not a regular file"
    elif what == "missing":
        needle = "not found"
    elif what == "unreadable":
        path.write_text(dump_spec(load_spec()))
        path.chmod(0)
        if os.access(path, os.R_OK):  # root reads anything: make it unreadable another way
            path.unlink()
            path.symlink_to(path)  # a symlink loop: the OS refuses to open it
        needle = "spec file"
    else:
        path.write_text("name: tl\n" + "#" * (MAX_SPEC_BYTES + 1) + "\n")
        needle = f"at most {MAX_SPEC_BYTES}"
    with pytest.raises(SpecError):
        load_spec(path)
    code, out, err = _up(capsys, "--spec", str(path), "--home", str(tmp_path / "fresh"))
    assert code == 1 and out == "" and err.count("\n") == 1 and needle in err and err.startswith("twinledger: "), err
    assert not (tmp_path / "fresh").exists()


def test_the_default_spec_and_its_own_dump_still_load(tmp_path: Path) -> None:
    spec = load_spec()
    f = tmp_path / "spec.yaml"
    f.write_text(dump_spec(spec))
    assert load_spec(f) == spec


def test_load_spec_raises_spec_error_only() -> None:
    """parse_spec refuses what YAML can hold but a spec cannot, always as a SpecError."""
    from network.spec import parse_spec

    for junk in (None, 0, "x", [], {"orgs": None}, {"orgs": [None]}, {"orgs": [{"name": None}]},
                 {"orgs": [{"name": "o", "kind": "orderer", "orderers": "3"}]}, {1: 2}, {("a",): 1}):
        with pytest.raises(SpecError):
            parse_spec(junk)


@pytest.mark.parametrize("content, needle", [
    ("orgs: [unclosed\n", "not valid YAML at line 2"),
    ("- a\n", "must be a YAML mapping"),
    (org_spec(ORDERER, "  - {name: plant1, kind: plant, peers: 9}\n"), "org plant1: peers 9 must be between 1 and 4"),
])
def test_the_real_process_prints_the_same_one_line(content: str, needle: str, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(content)
    with pytest.raises(SpecError):
        load_spec(spec)
    env = {k: v for k, v in os.environ.items() if k not in ("TL_HOME", "TL_AS")}
    p = subprocess.run([sys.executable, "-m", "orchestrator.cli", "up", "--spec", str(spec), "--home", str(tmp_path / "h")],
                       capture_output=True, text=True, timeout=60, cwd=REPO, env=env)
    assert p.returncode == 1 and p.stdout == "", p
    assert p.stderr.count("\n") == 1 and p.stderr.startswith("twinledger: ") and needle in p.stderr, p.stderr
    assert "Traceback" not in p.stderr and not (tmp_path / "h").exists()


def test_a_port_base_clashing_with_a_listener_is_refused_before_the_home_exists(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from orchestrator.bringup import _require_free_ports
    from tests.ports import free_port_base

    base = free_port_base(200)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", base + 37))  # the ports of some node in the middle of the range
        listener.listen()
        with pytest.raises(SpecError):  # (were it not refused, `up` below would start a network)
            _require_free_ports(load_spec(port_base=base))
        code, out, err = _up(capsys, "--port-base", str(base), "--home", str(tmp_path / "fresh"))
    assert code == 1 and out == "" and err.count("\n") == 1, err
    assert err.startswith(f"twinledger: port {base + 37} on 127.0.0.1 is in use") and "--port-base" in err, err
    assert not (tmp_path / "fresh").exists()
