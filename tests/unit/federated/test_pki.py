"""federated/pki.py writes private keys 0600 from creation, public material as usual."""

from __future__ import annotations

import os
from pathlib import Path

from federated.pki import make_ca_and_server_cert, make_node_key


def _mode(p: Path) -> int:
    return p.stat().st_mode & 0o777


def test_private_keys_are_0600_and_public_files_are_not_narrowed(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        tls = make_ca_and_server_cert(tmp_path / "tls")
        node = make_node_key(tmp_path / "keys", "plant1")
    finally:
        os.umask(old)
    assert _mode(tls.key) == 0o600 and _mode(tmp_path / "tls" / "ca.key") == 0o600 and _mode(node.private) == 0o600
    assert _mode(tls.cert) == 0o644 and _mode(tls.ca_cert) == 0o644 and _mode(node.public) == 0o644
    assert b"PRIVATE KEY" in node.private.read_bytes() and node.public.read_bytes().startswith(b"ecdsa-sha2-nistp384 ")
