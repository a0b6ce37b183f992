"""Hook for the federated failure model: a model is used only if its file hash matches the ledger's.

``federated/`` (another team) will train the maintenance model; the ledger will hold the SHA-256 of the
committed global model. ``load_federated_model(path, ledger_sha256, loader)`` hashes the file, refuses it on
any mismatch (``ModelHashMismatch``), and only then calls ``loader(bytes)`` to build the ``FailureModel``.
Until then machine twins use ``twins.model.ai4i.fallback_failure_probability`` and label their output
``fallback:…``; a loaded model labels it ``federated:<first 12 hex of its hash>``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Protocol


class ModelHashMismatch(Exception):
    pass


class FailureModel(Protocol):
    label: str

    def predict(self, features: dict[str, float]) -> float:
        """P(failure of the next product) from the twin's features (see ``MachineTwin.features``)."""
        ...


def load_federated_model(path: str | Path, ledger_sha256: str, loader: Callable[[bytes], FailureModel]) -> FailureModel:
    data = Path(path).read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ledger_sha256.lower():
        raise ModelHashMismatch(
            f"model {path} has sha256 {digest[:16]}…, the ledger committed {ledger_sha256[:16]}…: refusing to load it"
        )
    model = loader(data)
    model.label = f"federated:{digest[:12]}"
    return model
