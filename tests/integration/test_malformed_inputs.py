"""Malformed input to `twinledger` on the real network: one clear line, the right exit status, nothing changed.

On the session network (``fabric_net``, running): a malformed spec given to `up` for the running home
leaves its files, its processes and its ledger alone; and bad command lines of every ledger-touching
command -- unknown orgs and users in ``--as``, bad data set IDs, purposes, expiries, digests, schema
files, task IDs, alert and decision IDs, an org that is not a member -- each print ONE ``twinledger:``
line (exit 1; argparse's own errors exit 2) and leave the world state they would touch as it was:
the data set's record, grants and audit trail, the list of data sets, and the channel's height (a call
refused at endorsement never reaches the orderers; nothing here may add a block).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.fabric_net import FabricNet

pytestmark = pytest.mark.integration


def _static_files(home: Path) -> dict[str, str]:
    """The parts of a running home that only `up` writes: spec, identities, node configs and TLS, the
    channel's genesis, the supervisor's process list. (Ledgers, logs and CA databases change by themselves.)"""
    out: dict[str, str] = {}
    roots = [home / "spec.yaml", home / "channel", home / "run" / "processes.json"]
    roots += [p for org in (home / "orgs").iterdir() for p in org.iterdir() if p.name != "ca"]
    roots += [p / sub for p in (home / "nodes").iterdir() for sub in ("config", "tls", "msp")]
    for root in roots:
        files = [root] if root.is_file() else [Path(d) / f for d, _, fs in os.walk(root) for f in fs]
        for f in files:
            out[str(f.relative_to(home))] = f"{f.stat().st_mode:o} " + hashlib.sha256(f.read_bytes()).hexdigest()
    out["<top>"] = " ".join(sorted(p.name for p in home.iterdir()))
    return out


def _height(net: FabricNet) -> int:
    """The channel's height as the consortium sees it: the lowest of the peers' (all caught up when idle)."""
    nodes = net.ok("status")["nodes"]
    return min(n["height"] for n in nodes if n["type"] == "peer")


def test_a_malformed_spec_leaves_the_running_network_alone(fabric_net: FabricNet, tmp_path: Path) -> None:
    files = _static_files(fabric_net.home)
    pids = {name: p["pid"] for name, p in fabric_net.processes().items()}
    height = _height(fabric_net)
    cases = {
        "list.yaml": ("- orderer\n- plant1\n", "must be a YAML mapping"),
        "bad-yaml.yaml": ("orgs: [unclosed\n", "not valid YAML at line 2"),
        "unknown.yaml": ("name: twinledger\nhost: 0.0.0.0\norgs: []\n", "host is not a setting"),
        "peers.yaml": ("orgs:\n  - {name: orderer, kind: orderer}\n  - {name: plant1, kind: plant, peers: lots}\n",
                       "org plant1: peers must be a whole number"),
        "kind.yaml": ("orgs:\n  - {name: orderer, kind: orderer}\n  - {name: lab1, kind: lab}\n", "org lab1: kind must be"),
        "binary.yaml": (b"\x00\xff\xfe", "not UTF-8 text"),
        # a good spec, but not the one this home runs: refused the same way, nothing restarted
        "other.yaml": ("orgs:\n  - {name: orderer, kind: orderer, orderers: 1}\n  - {name: plant1, kind: plant}\n",
                       "already holds network"),
    }
    for name, (content, needle) in cases.items():
        spec = tmp_path / name
        spec.write_bytes(content if isinstance(content, bytes) else content.encode())
        line = fabric_net.fails("up", "--spec", str(spec))
        assert needle in line, line
    other_base = str(fabric_net.port_base + 1000)  # the only `up` option besides --spec
    assert f"already runs on port base {fabric_net.port_base}" in fabric_net.fails("up", "--port-base", other_base)
    line = fabric_net.fails("up", "--port-base", "x", code=2)
    assert line.startswith("twinledger: error: up: argument --port-base"), line
    assert _static_files(fabric_net.home) == files
    assert {name: p["pid"] for name, p in fabric_net.processes().items()} == pids, "no process was restarted"
    assert _height(fabric_net) == height


@pytest.fixture(scope="module")
def dataset(fabric_net: FabricNet, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A data set of plant1 with one grant to plant2: the state the bad commands below must leave alone."""
    ds = fabric_net.unique("malformed")
    fabric_net.ok("data", "register", ds, "--kind", "tabular", "--sha256", "ab" * 32, "--as", "plant1")
    fabric_net.ok("data", "grant", ds, "--to", "plant2", "--purpose", "train:maintenance-v1", "--as", "plant1")
    return ds


def _world(net: FabricNet, ds: str) -> dict:
    return {
        "list": net.ok("data", "list"),
        "audit": net.ok("data", "audit", ds),
        "grants": net.ok("data", "grants", ds),
        "height": _height(net),
    }


def _bad_commands(ds: str, tmp: Path) -> list[tuple[tuple[str, ...], int, str]]:
    """(argv, exit status, what the one line must say)."""
    not_utf8 = tmp / "schema-latin1.json"
    not_utf8.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    bad_json = tmp / "schema-bad.json"
    bad_json.write_text('{"rows": ')
    a_dir = tmp / "a-dir"
    a_dir.mkdir(exist_ok=True)
    hexid = "0" * 64
    grant = ("data", "grant", ds, "--purpose", "train:maintenance-v1")
    return [
        # --as: unknown org, unknown user, no org, extra colon, the orderer org (no peer), not enrolled
        ((*grant, "--to", "hospital1", "--as", "nowhere"), 1, "unknown org 'nowhere'"),
        ((*grant, "--to", "hospital1", "--as", "plant1:janitor"), 1, "unknown user 'janitor'"),
        ((*grant, "--to", "hospital1", "--as", ":steward"), 1, "unknown org ''"),
        ((*grant, "--to", "hospital1", "--as", "plant1:steward:x"), 1, "unknown user 'steward:x'"),
        (("data", "list", "--as", "orderer"), 1, "runs no peer"),
        ((*grant, "--to", "hospital1", "--as", "PLANT1"), 1, "unknown org 'PLANT1'"),
        # the wrong org or role for the call: the chaincode refuses, in one line
        ((*grant, "--to", "hospital1", "--as", "hospital1:steward"), 1, "plant1"),
        ((*grant, "--to", "hospital1", "--as", "plant1:client"), 1, "steward"),
        # grantee, purpose, expiry
        ((*grant, "--to", "nowhere", "--as", "plant1"), 1, "unknown org 'nowhere'"),
        ((*grant, "--to", "orderer", "--as", "plant1"), 1, "the orderer org holds no data"),
        (("data", "grant", ds, "--to", "hospital1", "--purpose", "", "--as", "plant1"), 1, "purpose"),
        (("data", "grant", ds, "--to", "hospital1", "--purpose", "no colon", "--as", "plant1"), 1, "purpose"),
        (("data", "grant", ds, "--to", "hospital1", "--purpose", "t:" + "x" * 200, "--as", "plant1"), 1, "purpose"),
        (("data", "grant", ds, "--to", "hospital1", "--purpose", "train:ü", "--as", "plant1"), 1, "purpose"),
        ((*grant, "--to", "hospital1", "--expires", "yesterday", "--as", "plant1"), 1, "--expires 'yesterday'"),
        ((*grant, "--to", "hospital1", "--expires", "2020-01-01T00:00:00Z", "--as", "plant1"), 1, "not in the future"),
        ((*grant, "--to", "hospital1", "--expires", "2031-01-01T00:00:00", "--as", "plant1"), 1, "no time zone"),
        ((*grant, "--to", "hospital1", "--expires=-5d", "--as", "plant1"), 1, "--expires '-5d'"),
        ((*grant, "--to", "hospital1", "--expires", "-5d", "--as", "plant1"), 2, "--expires: expected one argument"),
        ((*grant, "--to", "hospital1", "--expires", "0s", "--as", "plant1"), 1, "--expires"),
        ((*grant, "--to", "hospital1", "--expires", "9999999d", "--as", "plant1"), 1, "past the year 9999"),
        # revoke what was never granted; check and audit a data set that does not exist
        (("data", "revoke", ds, "--to", "hospital2", "--purpose", "train:maintenance-v1", "--as", "plant1"), 1, ds),
        (("data", "check", "no-such-" + ds, "--purpose", "train:maintenance-v1", "--as", "plant2"), 1, "no-such-"),
        (("data", "check", ds, "--purpose", "bad purpose", "--as", "plant2"), 1, "purpose"),
        (("data", "audit", "no-such-" + ds), 1, "no-such-"),
        (("data", "grants", "../" + ds), 1, "is not valid"),
        # register: the ID again, bad IDs, digests and schemas
        (("data", "register", ds, "--kind", "tabular", "--sha256", "cd" * 32, "--as", "plant1"), 1, ds),
        (("data", "register", "bad/id", "--kind", "tabular", "--sha256", "cd" * 32, "--as", "plant1"), 1, "is not valid"),
        (("data", "register", "-x", "--kind", "tabular", "--sha256", "cd" * 32, "--as", "plant1"), 2, "required"),
        (("data", "register", "d" * 65, "--kind", "tabular", "--sha256", "cd" * 32, "--as", "plant1"), 1, "data set ID"),
        (("data", "register", "ünïcode", "--kind", "tabular", "--sha256", "cd" * 32, "--as", "plant1"), 1, "is not valid"),
        (("data", "register", ds + "-b", "--kind", "", "--sha256", "cd" * 32, "--as", "plant1"), 1, "kind"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", "cd" * 31, "--as", "plant1"), 1, "--sha256"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", str(tmp / "missing"), "--as", "plant1"), 1, "--sha256"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", str(a_dir), "--as", "plant1"), 1, "--sha256"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", "cd" * 32, "--schema", "{", "--as", "plant1"), 1, "--schema"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", "cd" * 32, "--schema", "[1]", "--as", "plant1"), 1,
         "must be a JSON object"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", "cd" * 32, "--schema", str(bad_json), "--as", "plant1"), 1,
         "--schema"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", "cd" * 32, "--schema", str(not_utf8), "--as", "plant1"), 1,
         "--schema"),
        (("data", "register", ds + "-b", "--kind", "t", "--sha256", "cd" * 32, "--sensitivity", "secret", "--as", "plant1"), 2,
         "invalid choice: 'secret'"),
        # consent: a plant has no consent collection; a digest that is not one
        (("consent", "record", "p-1", "train:cardiac-v1", "--as", "plant1"), 1, "hospital"),
        (("consent", "verify", "hospital1", "p-1", "train:cardiac-v1", "--sha256", "zz", "--as", "hospital2"), 1, "--sha256"),
        (("consent", "show", "p-1", "bad scope", "--as", "hospital1"), 1, "scope"),
        # twins: unknown alert and decision ids, nothing to show
        (("twins", "decide", "no-such-alert", "--action", "monitor", "--as", "plant1:operator"), 1, "no twins state"),
        (("twins", "ack", "xyz"), 1, "is not a decision id"),
        (("twins", "ack", hexid, "--as", "plant1:operator"), 1, hexid[:16]),
        (("twins", "status"), 1, "no twins state"),
        (("twins", "whatif", "plant1.m1", "--speed", "fast"), 1, "no twins state"),
        (("verify", "reading", "plant1.m1", "0"), 2, "sequence number"),
        # fl: tasks and orgs that cannot be
        (("fl", "rounds", "no-such-task-9"), 1, "has no task no-such-task-9"),
        (("fl", "verify", "maintenance-never-run-9"), 1, "no rounds of task maintenance-never-run-9"),
        (("fl", "rounds", "maintenance-v1/../x"), 1, "task"),
        (("fl", "run", "maintenance-v1", "--min-orgs", "3", "--timeout", "5"), 1, "--min-orgs must be between 1 and the 2"),
        (("fl", "run", "maintenance-v1", "--orgs", "plant1", "nowhere", "--timeout", "5"), 1, "nowhere"),
        (("fl", "run", "cardiac-v1", "--sector", "plant", "--timeout", "5"), 1, "drop one of them"),
        (("fl", "run", "--rounds", "0"), 2, "--rounds"),
        # dashboard and logs
        (("dashboard", "--as", "nowhere:steward"), 1, "unknown org 'nowhere'"),
        (("dashboard", "--url"), 1, "no dashboard is serving"),
        (("logs", "peer9.nowhere"), 1, "no log for 'peer9.nowhere'"),
        (("logs", "../spec"), 1, "is not a node name"),
        (("logs", "supervisor", "-n", "0"), 2, "-n/--lines"),
        # twins run refuses before starting anything (a --duration in case it would not)
        (("twins", "run", "--machines", "plant1:1", "--opcua-org", "hospital1", "--duration", "1"), 1, "--opcua-org hospital1"),
        (("twins", "run", "--machines", "nowhere:1", "--duration", "1"), 1, "nowhere"),
        (("twins", "run", "--machines", "plant1:0", "--duration", "1"), 2, "ORG:COUNT"),
        (("twins", "run", "--machines", "plant1:1", "--model-task", "bad task!", "--duration", "1"), 1, "task ID"),
        (("twins", "run", "--machines", "plant1:1", "--model-poll", "0", "--duration", "1"), 2, "--model-poll"),
    ]


def test_bad_command_lines_are_one_line_and_change_nothing(fabric_net: FabricNet, dataset: str, tmp_path: Path) -> None:
    before = _world(fabric_net, dataset)
    files = _static_files(fabric_net.home)
    failures = []
    for argv, code, needle in _bad_commands(dataset, tmp_path):
        result = fabric_net.run(*argv)
        line = result.stderr.strip()
        ok = (result.returncode == code and result.stdout == "" and "\n" not in line and "Traceback" not in line
              and line.startswith("twinledger: ") and needle in line)
        if not ok:
            failures.append(f"{' '.join(argv)} -> exit {result.returncode}, want {code} and {needle!r}:\n"
                            f"{result.stdout}{result.stderr}")
    assert not failures, "\n".join(failures)
    assert len(_bad_commands(dataset, tmp_path)) >= 60
    assert _world(fabric_net, dataset) == before, "a refused command changed the world state"
    assert _static_files(fabric_net.home) == files
    assert not (fabric_net.home / "twins").exists(), "a refused `twins run` created its state folder"
