"""Content-addressed model store: each artefact is a file named by the SHA-256 of its bytes.

The bytes are the canonical array serialization (``federated.hashing``), so the file name, the hash of
the file's content and the hash recorded on the ledger are one and the same. ``verify`` re-hashes stored
artefacts against ledger records (``twinledger fl verify``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from federated.governance import RoundLedger
from federated.hashing import CanonicalFormError, arrays_from_canonical, canonical_bytes, sha256_hex
from network.files import write_private


class StoreError(RuntimeError):
    """An artefact that cannot be used, in one line naming its path and the reason; nothing was loaded."""


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _named(sha256: object) -> bool:
    return isinstance(sha256, str) and _SHA256.fullmatch(sha256) is not None


@dataclass
class VerifyReport:
    ok: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)  # file content no longer hashes to its name

    @property
    def passed(self) -> bool:
        return not self.missing and not self.mismatched

    def summary(self) -> str:
        return f"{len(self.ok)} verified, {len(self.missing)} missing, {len(self.mismatched)} mismatched"


class ModelStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"model store {self.root}: cannot create it: {exc.strerror or exc}") from None

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def put_bytes(self, data: bytes) -> str:
        sha = sha256_hex(data)
        target = self.path(sha)
        if not target.exists():
            write_private(target, data)  # 0600, as it was through mkstemp
        return sha

    def put_arrays(self, arrays: Mapping[str, np.ndarray]) -> str:
        """Store the arrays; returns their SHA-256 (= the file name)."""
        return self.put_bytes(canonical_bytes(arrays))

    def get_arrays(self, sha256: str) -> dict[str, np.ndarray]:
        """Load an artefact, refusing one whose content no longer matches its name or is not a model.

        Every refusal is a StoreError naming the file and why; the arrays are returned whole or not at all."""
        # a name is a hash, never a path: "../x" or "" must not reach the file system
        if not _named(sha256):
            raise StoreError(f"{sha256!r} is not an artefact name (a SHA-256: 64 lowercase hexadecimal digits)")
        path = self.path(sha256)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no artefact {sha256} in {self.root}") from None
        except IsADirectoryError:
            raise StoreError(f"artefact {path} is a directory, not a model file") from None
        except OSError as exc:
            raise StoreError(f"artefact {path}: cannot read it: {exc.strerror or exc}") from None
        if not data:
            raise StoreError(f"artefact {path} is empty (a write that never finished?)")
        if sha256_hex(data) != sha256:
            raise StoreError(f"artefact {path} is corrupt: its {len(data)} bytes do not hash to its name "
                             "(truncated or changed since it was stored)")
        try:
            return arrays_from_canonical(data)
        except CanonicalFormError as exc:
            raise StoreError(f"artefact {path} hashes to its name but is not a model: {exc}") from None

    def __contains__(self, sha256: str) -> bool:
        return _named(sha256) and self.path(sha256).is_file()

    def list(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))

    def verify(self, hashes: Iterable[str]) -> VerifyReport:
        """Re-hash each named artefact: ok, missing, or mismatched."""
        report = VerifyReport()
        for sha in dict.fromkeys(hashes):  # unique, in order
            p = self.path(sha)
            if not _named(sha) or not p.is_file():
                report.missing.append(sha)
            elif sha256_hex(p.read_bytes()) != sha:
                report.mismatched.append(sha)
            else:
                report.ok.append(sha)
        return report

    def verify_ledger(self, ledger: RoundLedger, task: str) -> VerifyReport:
        """Every hash the ledger's rounds of ``task`` name must be stored, and hash to its name."""
        hashes: list[str] = []
        for rec in ledger.list_rounds(task):
            hashes.extend(rec.hashes())
        return self.verify(hashes)
