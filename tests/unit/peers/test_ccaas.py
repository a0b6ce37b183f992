"""The CCaaS package format, the package ID, and the builder scripts run as real processes."""

from __future__ import annotations

import filecmp
import gzip
import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from peers.ccaas import (
    BUILDER_CONTEXT_ENV,
    BUILDER_CONTEXT_FILE,
    BUILDER_SCRIPTS,
    BUILDER_SOURCE,
    CHAINCODE_ADDRESS_TEMPLATE,
    CHAINCODE_ROOT_CERT_TEMPLATE,
    PEER_CLIENT_CERT_TEMPLATE,
    PEER_CLIENT_KEY_TEMPLATE,
    CcaasTLS,
    PackageError,
    builder_context_env,
    install_builder,
    package_ccaas,
    package_id,
    read_package,
    write_builder_context,
)

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"


@pytest.fixture(scope="module")
def builder(tmp_path_factory) -> Path:
    return install_builder(tmp_path_factory.mktemp("builder"))


def peer_env(**extra: str) -> dict[str, str]:
    """What the peer gives a builder: PATH and the propagated variables, nothing else."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **extra}


def run(builder: Path, script: str, *args: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(builder / "bin" / script), *map(str, args)], env=env or peer_env(),
                          capture_output=True, text=True, timeout=30)


def unpack_like_peer(pkg: Path, root: Path) -> tuple[Path, Path]:
    """metadata.json into a metadata dir, code.tar.gz extracted into a source dir (as the peer does)."""
    src, meta = root / "src", root / "meta"
    src.mkdir(parents=True)
    meta.mkdir(parents=True)
    with tarfile.open(pkg, "r:gz") as outer:
        (meta / "metadata.json").write_bytes(outer.extractfile("metadata.json").read())
        code = outer.extractfile("code.tar.gz").read()
    with tarfile.open(fileobj=io.BytesIO(code), mode="r:gz") as inner:
        inner.extractall(src, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return src, meta


# -- package -----------------------------------------------------------------------------------------
def test_package_format_and_id(tmp_path):
    out = tmp_path / "pkg" / "registry.tar.gz"
    pkg = package_ccaas("registry_1.0", "127.0.0.1:17083", out)
    assert pkg.path == out and pkg.label == "registry_1.0"
    data = out.read_bytes()
    assert pkg.package_id == package_id("registry_1.0", data)
    assert pkg.package_id == "registry_1.0:" + hashlib.sha256(data).hexdigest()
    with tarfile.open(out, "r:gz") as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == ["metadata.json", "code.tar.gz"]
        assert all(m.isreg() for m in members)  # the peer rejects anything but regular files
        assert json.loads(tar.extractfile("metadata.json").read()) == {"type": "ccaas", "label": "registry_1.0"}
    metadata, conn = read_package(data)
    assert metadata["type"] == "ccaas"
    assert conn == {"address": "127.0.0.1:17083", "dial_timeout": "10s", "tls_required": False,
                    "client_auth_required": False, "root_cert": "", "client_key": "", "client_cert": ""}


def test_package_is_reproducible(tmp_path):
    a = package_ccaas("cc_1", "127.0.0.1:1", tmp_path / "a.tgz")
    b = package_ccaas("cc_1", "127.0.0.1:1", tmp_path / "b.tgz")
    assert a.package_id == b.package_id
    assert gzip.decompress((tmp_path / "a.tgz").read_bytes())  # a valid gzip stream
    c = package_ccaas("cc_1", "127.0.0.1:2", tmp_path / "c.tgz")
    assert c.package_id != a.package_id


def test_package_tls_fields(tmp_path):
    root = tmp_path / "ca.pem"
    root.write_text(PEM)
    pkg = package_ccaas("cc", "127.0.0.1:9", tmp_path / "p.tgz", CcaasTLS(root_cert=root, client_cert=PEM, client_key=KEY.encode()))
    _, conn = read_package(pkg.path.read_bytes())
    assert conn["tls_required"] is True and conn["client_auth_required"] is True
    assert conn["root_cert"] == PEM and conn["client_cert"] == PEM and conn["client_key"] == KEY
    _, conn = read_package(package_ccaas("cc", "127.0.0.1:9", tmp_path / "q.tgz", CcaasTLS(root_cert=PEM)).path.read_bytes())
    assert conn["tls_required"] is True and conn["client_auth_required"] is False


@pytest.mark.parametrize(
    ("label", "address", "tls", "dial", "match"),
    [
        ("bad label", "127.0.0.1:1", None, "10s", "label"),
        ("_x", "127.0.0.1:1", None, "10s", "label"),
        ("ok", "", None, "10s", "address"),
        ("ok", "127.0.0.1:1", None, "ten", "dial_timeout"),
        ("ok", "127.0.0.1:1", CcaasTLS(root_cert="not pem"), "10s", "PEM"),
        ("ok", "127.0.0.1:1", CcaasTLS(root_cert=PEM, client_cert=PEM), "10s", "both"),
    ],
)
def test_package_rejects_what_fabric_would(tmp_path, label, address, tls, dial, match):
    with pytest.raises(PackageError, match=match):
        package_ccaas(label, address, tmp_path / "x.tgz", tls, dial_timeout=dial)


# -- builder -----------------------------------------------------------------------------------------
def test_install_builder_writes_executables(builder):
    for name in BUILDER_SCRIPTS:
        script = builder / "bin" / name
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
        assert filecmp.cmp(script, BUILDER_SOURCE / "bin" / name, shallow=False)
        assert script.read_text().startswith("#!/usr/bin/env python3\n")
    install_builder(builder)  # idempotent


def test_detect_claims_only_ccaas(builder, tmp_path):
    pkg = package_ccaas("cc", "127.0.0.1:9", tmp_path / "p.tgz")
    src, meta = unpack_like_peer(pkg.path, tmp_path / "ok")
    assert run(builder, "detect", src, meta).returncode == 0
    (meta / "metadata.json").write_text(json.dumps({"type": "CCAAS", "label": "cc"}))
    assert run(builder, "detect", src, meta).returncode == 0
    for other in ("golang", "node", "external", "remote"):
        (meta / "metadata.json").write_text(json.dumps({"type": other, "label": "cc"}))
        assert run(builder, "detect", src, meta).returncode == 1, other
    (meta / "metadata.json").unlink()
    assert run(builder, "detect", src, meta).returncode == 1


def test_build_and_release(builder, tmp_path):
    pkg = package_ccaas("cc", "127.0.0.1:17083", tmp_path / "p.tgz")
    src, meta = unpack_like_peer(pkg.path, tmp_path)
    (src / "META-INF" / "statedb" / "couchdb" / "indexes").mkdir(parents=True)
    (src / "META-INF" / "statedb" / "couchdb" / "indexes" / "i.json").write_text("{}")
    out, rel = tmp_path / "bld", tmp_path / "rel"
    r = run(builder, "build", src, meta, out)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "metadata.json").read_text())["type"] == "ccaas"
    assert (out / "META-INF" / "statedb" / "couchdb" / "indexes" / "i.json").is_file()
    conn = json.loads((out / "connection.json").read_text())
    assert conn["address"] == "127.0.0.1:17083" and conn["tls_required"] is False
    r = run(builder, "release", out, rel)
    assert r.returncode == 0, r.stderr
    assert json.loads((rel / "chaincode" / "server" / "connection.json").read_text()) == conn
    assert (rel / "statedb" / "couchdb" / "indexes" / "i.json").is_file()


def test_build_rejects_non_ccaas_and_release_needs_build(builder, tmp_path):
    src, meta = unpack_like_peer(package_ccaas("cc", "127.0.0.1:1", tmp_path / "p.tgz").path, tmp_path)
    (meta / "metadata.json").write_text(json.dumps({"type": "golang", "label": "cc"}))
    r = run(builder, "build", src, meta, tmp_path / "bld")
    assert r.returncode == 1 and "ccaas" in r.stderr
    assert run(builder, "release", tmp_path / "empty", tmp_path / "rel").returncode == 1


def test_build_fills_address_template_per_peer(builder, tmp_path):
    pkg = package_ccaas("cc", CHAINCODE_ADDRESS_TEMPLATE, tmp_path / "p.tgz")
    src, meta = unpack_like_peer(pkg.path, tmp_path)

    # 1. from the context file next to the peer's core.yaml ($FABRIC_CFG_PATH)
    cfg = tmp_path / "peer0cfg"
    write_builder_context(cfg, {"chaincode_address": "127.0.0.1:17083"})
    assert (cfg / BUILDER_CONTEXT_FILE).is_file()
    r = run(builder, "build", src, meta, tmp_path / "b1", env=peer_env(FABRIC_CFG_PATH=str(cfg)))
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b1" / "connection.json").read_text())["address"] == "127.0.0.1:17083"

    # 2. Fabric's variable wins over the file
    env = peer_env(FABRIC_CFG_PATH=str(cfg), **builder_context_env("127.0.0.1:17093"))
    assert BUILDER_CONTEXT_ENV in env
    r = run(builder, "build", src, meta, tmp_path / "b2", env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "b2" / "connection.json").read_text())["address"] == "127.0.0.1:17093"

    # 3. no value anywhere: fail at build time with a message, not at launch
    r = run(builder, "build", src, meta, tmp_path / "b3")
    assert r.returncode == 1 and "chaincode_address" in r.stderr


def test_build_keeps_tls_material(builder, tmp_path):
    pkg = package_ccaas("cc", "127.0.0.1:9", tmp_path / "p.tgz", CcaasTLS(root_cert=PEM, client_cert=PEM, client_key=KEY))
    src, meta = unpack_like_peer(pkg.path, tmp_path)
    r = run(builder, "build", src, meta, tmp_path / "bld")
    assert r.returncode == 0, r.stderr
    conn = json.loads((tmp_path / "bld" / "connection.json").read_text())
    assert conn["tls_required"] is True and conn["client_auth_required"] is True
    assert conn["root_cert"] == PEM and conn["client_key"] == KEY


def test_tls_placeholders_keep_keys_out_of_the_package_and_the_builder_fills_them_0600(builder, tmp_path):
    """One package for every org: the peer's client key lives only in its own builder context (0600) and in
    the built connection.json (0600), never in the package that every org installs."""
    tls = CcaasTLS(root_cert=CHAINCODE_ROOT_CERT_TEMPLATE, client_cert=PEER_CLIENT_CERT_TEMPLATE,
                   client_key=PEER_CLIENT_KEY_TEMPLATE)
    pkg = package_ccaas("cc", CHAINCODE_ADDRESS_TEMPLATE, tmp_path / "p.tgz", tls)
    _, packaged = read_package(pkg.path.read_bytes())
    assert packaged["client_auth_required"] is True and "PRIVATE KEY" not in pkg.path.read_bytes().decode("latin-1")
    assert packaged["client_key"] == PEER_CLIENT_KEY_TEMPLATE

    cfg = tmp_path / "peercfg"
    ctx = write_builder_context(cfg, {"chaincode_address": "127.0.0.1:9", "chaincode_root_cert": PEM,
                                      "peer_client_cert": PEM, "peer_client_key": KEY})
    assert stat.S_IMODE(ctx.stat().st_mode) == 0o600
    src, meta = unpack_like_peer(pkg.path, tmp_path)
    r = run(builder, "build", src, meta, tmp_path / "bld", env=peer_env(FABRIC_CFG_PATH=str(cfg)))
    assert r.returncode == 0, r.stderr
    built = tmp_path / "bld" / "connection.json"
    conn = json.loads(built.read_text())
    assert (conn["root_cert"], conn["client_cert"], conn["client_key"]) == (PEM, PEM, KEY)
    assert stat.S_IMODE(built.stat().st_mode) == 0o600
    assert run(builder, "release", tmp_path / "bld", tmp_path / "rel").returncode == 0
    released = tmp_path / "rel" / "chaincode" / "server" / "connection.json"
    assert json.loads(released.read_text()) == conn and stat.S_IMODE(released.stat().st_mode) == 0o600
