"""No secret on a command line or in a log, and every secret file private, on the session network.

The secrets a local user could steal: every org's enrolment secrets and its CA's bootstrap password (the
ca-client secrets.json files) and every private key under the home. None of them may show in any log under
the home nor in ``/proc/PID/cmdline`` (world-readable) of any process -- the network's long-lived ones,
and the short fabric-ca-client runs of a `down` -> `up` that re-enrols a removed identity from the stored
secrets (watched while they run). Keys, secret files, the CA configs holding the bootstrap password and
logs are 0600, the logs folder 0700.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_private_key, load_ssh_private_key

from tests.fabric_net import FabricNet

pytestmark = [pytest.mark.integration, pytest.mark.fabric]

KEY_NAMES = ("*_sk", "*.key", "key.pem", "IssuerSecretKey", "IssuerRevocationPrivateKey")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.lstat().st_mode)


def private_keys(home: Path) -> list[Path]:
    return sorted({p for pattern in KEY_NAMES for p in home.rglob(pattern) if p.is_file()})


def key_needles(path: Path) -> list[str]:
    """Text that shows a key's secret part, as it would appear in a log: its private scalar in hex, and the
    base64 of the key file covering only the scalar's bytes (the rest of a key file encodes the public key,
    which every certificate -- and the orderers' logs of Raft consenters -- shows too)."""
    data = path.read_bytes()
    if b"-----BEGIN" in data:
        blob = base64.b64decode("".join(ln for ln in data.decode().splitlines() if not ln.startswith("-----")))
        if b"OPENSSH" in data:
            key = load_ssh_private_key(data, None)
        else:  # fabric-ca labels its SEC1 idemix revocation key "PRIVATE KEY": read the DER either way
            key = load_der_private_key(blob, None)
        if isinstance(key, ec.EllipticCurvePrivateKey):
            scalar = key.private_numbers().private_value.to_bytes((key.curve.key_size + 7) // 8, "big")
        else:
            raise AssertionError(f"{path}: unexpected key type {type(key).__name__}")
    else:  # the CA's idemix secret key: raw bytes
        blob = scalar = data
    off = blob.find(scalar)
    assert off >= 0 and len(scalar) >= 16, path
    first, last = -(-off // 3), (off + len(scalar)) // 3  # base64 groups made of scalar bytes only
    return [scalar.hex(), base64.b64encode(blob).decode()[4 * first:4 * last], base64.b64encode(scalar).decode()[:-4]]


def known_secrets(net: FabricNet) -> dict[str, str]:
    """label -> secret text: enrolment secrets, bootstrap passwords, private keys."""
    out: dict[str, str] = {}
    for org in net.spec.orgs:
        f = net.layout.ca_client_home(org.name) / "secrets.json"
        for name, value in json.loads(f.read_text()).items():
            out[f"{org.name}:{name}"] = value
    for key in private_keys(net.home):
        for i, needle in enumerate(key_needles(key)):
            out[f"{key.relative_to(net.home)}#{i}"] = needle
    return out


def leaks(text: bytes, secrets: dict[str, str]) -> list[str]:
    return [label for label, s in secrets.items() if s.encode() in text or s.encode() in text.replace(b"\n", b"")]


def network_pids(net: FabricNet) -> dict[int, str]:
    """The supervisor, every process in its state, and all their descendants."""
    state = json.loads((net.layout.run / "state.json").read_text())
    pids = {state["supervisor_pid"]: "supervisor"}
    pids.update({p["pid"]: p["name"] for p in state["processes"] if p["pid"]})
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    todo = list(pids)
    while todo:
        parent = todo.pop()
        for child in children.get(parent, []):
            if child not in pids:
                pids[child] = f"child of {pids[parent]}"
                todo.append(child)
    return pids


class CmdlineWatch(threading.Thread):
    """Reads /proc/*/cmdline of every process, over and over, while something runs: catches short-lived
    processes (fabric-ca-client enrol runs take ~0.1 s) that a single look afterwards would miss."""

    def __init__(self, secrets: dict[str, str], home: Path) -> None:
        super().__init__(daemon=True)
        self.secrets, self.home = secrets, str(home).encode()
        self.stop = threading.Event()
        self.found: dict[str, str] = {}  # label -> offending command line
        self.seen: set[bytes] = set()  # command lines mentioning our home

    def run(self) -> None:
        while not self.stop.is_set():
            for d in os.scandir("/proc"):
                if not d.name.isdigit():
                    continue
                try:
                    with open(f"/proc/{d.name}/cmdline", "rb") as f:
                        cmd = f.read()
                except OSError:
                    continue
                if self.home in cmd:
                    argv = cmd.split(b"\0")
                    self.seen.add(b" ".join([argv[0].rsplit(b"/", 1)[-1], *argv[1:2]]))  # e.g. b"fabric-ca-client enroll"
                for label in leaks(cmd, self.secrets):
                    self.found[label] = cmd.replace(b"\0", b" ").decode(errors="replace")
            time.sleep(0.01)  # ~1 ms a pass; an enrolment run lives ~100 ms


def test_no_secret_in_logs_or_command_lines_and_secret_files_are_private(fabric_net: FabricNet) -> None:
    net = fabric_net
    t0 = time.monotonic()
    secrets = known_secrets(net)
    keys = private_keys(net.home)
    assert sum(1 for label in secrets if label.endswith(":bootstrap-admin")) == len(net.spec.orgs)
    assert len(keys) >= 30, keys  # every node and user: enrolment key + TLS key; the CAs' keys
    for key in (k for k in keys if b"-----BEGIN" in k.read_bytes()):  # the needles are right: each PEM file shows its own
        assert leaks(key.read_bytes(), {k: v for k, v in secrets.items() if k.startswith(f"{key.relative_to(net.home)}#")}), key

    # Command lines of every process of the running network, and who may read their environment.
    pids = network_pids(net)
    assert len(pids) >= len(net.processes()) + 1
    for pid, name in pids.items():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except FileNotFoundError:
            continue
        assert not leaks(cmd, secrets), f"{name} (pid {pid}) has a secret on its command line: {cmd!r}"
        # What a process's environment holds is readable by its owner only.
        environ = Path(f"/proc/{pid}/environ")
        assert _mode(environ) & 0o077 == 0 and environ.stat().st_uid == os.getuid(), (name, oct(_mode(environ)))

    # A running CA never had its bootstrap password (fabric-ca-server logs `boot: user:pass` at every start):
    # only its one-time init did, and the registrar comes from the config that init wrote.
    for org in net.spec.orgs:
        environ = Path(f"/proc/{net.processes()[f'ca.{org.name}']['pid']}/environ").read_bytes()
        assert not leaks(environ, secrets) and b"FABRIC_CA_SERVER_BOOT" not in environ, org.name

    # Modes: keys, secrets, the CA configs (they hold the bootstrap password), the manifest (every process's
    # environment), logs.
    private = keys + [net.layout.ca_client_home(o.name) / "secrets.json" for o in net.spec.orgs]
    private += [net.layout.ca_home(o.name) / "fabric-ca-server-config.yaml" for o in net.spec.orgs]
    private += [net.layout.run / "processes.json"]
    logs = sorted({*net.layout.logs.iterdir(), *net.home.rglob("*.log")})
    assert len(logs) >= len(net.processes()) + 1  # one per process, the supervisor's own
    wide = [f"{p.relative_to(net.home)} {oct(_mode(p))}" for p in private + logs if _mode(p) != 0o600]
    assert not wide, "not 0600: " + ", ".join(wide)
    assert _mode(net.layout.logs) == 0o700

    # No log holds a secret, nor the supervisor's manifest and state.
    for log in logs + sorted(net.layout.run.glob("*.json")):
        found = leaks(log.read_bytes(), secrets)
        assert not found, f"{log} holds {found}"
    print(f"{len(secrets)} secrets, {len(keys)} keys, {len(logs)} logs, {len(pids)} processes: {time.monotonic() - t0:.1f} s")


def test_down_up_reenrols_from_the_stored_secrets_with_nothing_on_a_command_line(fabric_net: FabricNet) -> None:
    net = fabric_net
    org, user = "plant2", "operator"
    old_cert = (net.layout.user_msp(org, user) / "signcerts" / "cert.pem").read_bytes()
    stored = json.loads((net.layout.ca_client_home(org) / "secrets.json").read_text())
    assert user in stored
    t0 = time.monotonic()
    down = net.run("down", timeout=120)
    assert down.returncode == 0, down.stderr
    down_s = time.monotonic() - t0
    # The identity is lost (say a disk was restored without it): `up` re-enrols it with the stored secret.
    shutil.rmtree(net.layout.user_dir(org, user))

    watch = CmdlineWatch(known_secrets(net), net.home)
    watch.start()
    try:
        up = net.run("up", timeout=180)
    finally:
        watch.stop.set()
        watch.join()
    assert up.returncode == 0, up.stdout + up.stderr
    print(f"down {down_s:.1f} s, up with one re-enrolment {time.monotonic() - t0 - down_s:.1f} s")
    assert f"{user}@{org}" in up.stdout, up.stdout  # re-enrolled ...
    assert json.loads((net.layout.ca_client_home(org) / "secrets.json").read_text()) == stored  # ... not registered anew
    new_cert = (net.layout.user_msp(org, user) / "signcerts" / "cert.pem").read_bytes()
    assert new_cert != old_cert
    assert _mode(net.layout.user_tls(org, user) / "client.key") == 0o600
    assert all(_mode(k) == 0o600 for k in (net.layout.user_msp(org, user) / "keystore").iterdir())
    # The watch saw the enrolment runs and the CA servers start, and no secret on any command line.
    assert any(b"fabric-ca-client enroll" in c for c in watch.seen), watch.seen
    assert any(b"fabric-ca-server start" in c for c in watch.seen), watch.seen
    assert not watch.found, watch.found
    # The re-enrolled identity works, with its attributes: the chaincode sees its role.
    with net.connect_sync(org, user) as gateway:
        me = json.loads(gateway.network(net.spec.channel).contract(net.chaincode, "registry").evaluate("WhoAmI"))
    assert me["role"] == user, me
    net.wait_ready()
