"""Hook for the federated failure model: a model is used only if its file hash matches the ledger's.

``federated/`` trains the maintenance model; the ledger holds the SHA-256 of the committed global model.
``load_federated_model(path, ledger_sha256, loader)`` reads the file, refuses it on any mismatch
(``ModelHashMismatch``), and only then calls ``loader(bytes)`` to build the ``FailureModel``. Until then
machine twins use ``twins.model.ai4i.fallback_failure_probability`` and label their output ``fallback:…``;
a loaded model labels it ``federated:<first 12 hex of its hash>``.

A model file that cannot be used -- missing, a directory, empty, unreadable, not the bytes the ledger
committed (truncated, replaced), or the right bytes that the loader cannot build a model from -- raises a
``ModelFileError`` whose one-line message names the path and the reason. Nothing is half-loaded: the
model is returned whole or not at all, so a caller that assigns the result keeps its previous model on
an error (``replace_model`` does exactly that, and logs the one line).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

log = logging.getLogger("twins.model")

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
#: A failure model is a few kilobytes; a file far larger is not one (and must not be read into memory).
MAX_MODEL_BYTES = 256 * 1024 * 1024


class ModelFileError(Exception):
    """A model file that cannot be used; the message names the path and the reason."""


class ModelHashMismatch(ModelFileError):
    """The file's bytes are not the ones the ledger committed."""


class FailureModel(Protocol):
    label: str

    def predict(self, features: dict[str, float]) -> float:
        """P(failure of the next product) from the twin's features (see ``MachineTwin.features``)."""
        ...


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def _read(p: Path) -> bytes:
    try:
        if not p.exists():
            raise ModelFileError(f"model {p}: no such file")
        if not p.is_file():
            raise ModelFileError(f"model {p}: not a regular file ({'a directory' if p.is_dir() else 'a special file'})")
        size = p.stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelFileError(f"model {p}: {size} bytes is not a failure model (at most {MAX_MODEL_BYTES})")
        data = p.read_bytes()
    except OSError as exc:
        raise ModelFileError(f"model {p}: cannot read it: {exc.strerror or exc}") from None
    if not data:
        raise ModelFileError(f"model {p}: the file is empty")
    return data


def load_federated_model(path: str | Path, ledger_sha256: str, loader: Callable[[bytes], FailureModel]) -> FailureModel:
    p = Path(path)
    if not isinstance(ledger_sha256, str) or not _SHA256.fullmatch(ledger_sha256):
        raise ModelFileError(f"model {p}: the ledger's hash {ledger_sha256!r:.80} is not a SHA-256 (64 hexadecimal digits)")
    data = _read(p)
    digest = hashlib.sha256(data).hexdigest()
    if digest != ledger_sha256.lower():
        raise ModelHashMismatch(
            f"model {p} has sha256 {digest[:16]}…, the ledger committed {ledger_sha256[:16]}…: refusing to load it"
        )
    try:
        model = loader(data)
    except Exception as exc:  # the loader's own failure, whatever it is: the caller needs the path and the reason
        raise ModelFileError(f"model {p} matches the ledger (sha256 {digest[:12]}…) but cannot be loaded: "
                             f"{_one_line(exc)}") from exc
    if not callable(getattr(model, "predict", None)):
        raise ModelFileError(f"model {p}: the loader built {type(model).__name__}, which has no predict()")
    try:
        model.label = f"federated:{digest[:12]}"
    except AttributeError as exc:
        raise ModelFileError(f"model {p}: the loaded {type(model).__name__} cannot be labelled: {_one_line(exc)}") from exc
    return model


def replace_model(current: FailureModel | None, path: str | Path, ledger_sha256: str,
                  loader: Callable[[bytes], FailureModel]) -> FailureModel | None:
    """The model at ``path`` if it loads, else ``current`` unchanged, with one warning saying why."""
    try:
        return load_federated_model(path, ledger_sha256, loader)
    except ModelFileError as exc:
        kept = current.label if current is not None else "the fallback model"
        log.warning("%s; keeping %s", exc, kept)
        return current
