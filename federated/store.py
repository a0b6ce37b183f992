"""Content-addressed model store: each artefact is a file named by the SHA-256 of its bytes.

The bytes are the canonical array serialization (``federated.hashing``), so the file name, the hash of
the file's content and the hash recorded on the ledger are one and the same. ``verify`` re-hashes stored
artefacts against ledger records (``twinledger fl verify``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from federated.governance import RoundLedger
from federated.hashing import arrays_from_canonical, canonical_bytes, sha256_hex
from network.files import write_private


class StoreError(RuntimeError):
    pass


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
        self.root.mkdir(parents=True, exist_ok=True)

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
        """Load an artefact, refusing one whose content no longer matches its name."""
        try:
            data = self.path(sha256).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"no artefact {sha256} in {self.root}") from None
        if sha256_hex(data) != sha256:
            raise StoreError(f"artefact {self.path(sha256)} is corrupt: its content does not hash to its name")
        return arrays_from_canonical(data)

    def __contains__(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def list(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))

    def verify(self, hashes: Iterable[str]) -> VerifyReport:
        """Re-hash each named artefact: ok, missing, or mismatched."""
        report = VerifyReport()
        for sha in dict.fromkeys(hashes):  # unique, in order
            p = self.path(sha)
            if not p.is_file():
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
