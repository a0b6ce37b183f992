"""Malformed model files: one line naming the path and the reason, nothing half-loaded, the previous model kept.

Two loaders of model files: the twins' federated failure model (``twins.model.federated``, checked against
the hash the ledger committed) and the federated model store (``federated.store.ModelStore``, content-
addressed: the file name is the hash the ledger holds). Each gets the same bad files: missing, a
directory, empty, truncated, one byte changed, garbage, the right bytes under another hash, a file too
big, the right hash of bytes that are not a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from federated.hashing import canonical_bytes
from federated.store import ModelStore, StoreError
from twins.model.federated import MAX_MODEL_BYTES, ModelFileError, ModelHashMismatch, load_federated_model, replace_model
from twins.model.twin import MachineTwin


class Logistic:
    """A tiny failure model: its bytes are the canonical arrays of one weight vector."""

    label = "unloaded"

    def __init__(self, data: bytes) -> None:
        from federated.hashing import arrays_from_canonical

        self.w = arrays_from_canonical(data)["w"]  # raises on anything that is not such a file

    def predict(self, features: dict[str, float]) -> float:
        return float(1 / (1 + np.exp(-self.w.sum())))


GOOD = canonical_bytes({"w": np.array([0.1, -0.2, 0.3], np.float32)})
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


def _bad(kind: str, tmp: Path) -> tuple[Path, str, str]:
    """(path, the hash the ledger holds, what the one line must say)."""
    p = tmp / "model.bin"
    if kind == "missing":
        return p, GOOD_SHA, "no such file"
    if kind == "directory":
        p.mkdir()
        return p, GOOD_SHA, "a directory"
    if kind == "fifo":
        os.mkfifo(p)
        return p, GOOD_SHA, "a special file"
    if kind == "empty":
        p.write_bytes(b"")
        return p, GOOD_SHA, "the file is empty"
    if kind == "truncated":
        p.write_bytes(GOOD[: len(GOOD) // 2])
        return p, GOOD_SHA, "the ledger committed"
    if kind == "one byte changed":
        p.write_bytes(GOOD[:-1] + bytes([GOOD[-1] ^ 1]))
        return p, GOOD_SHA, "the ledger committed"
    if kind == "another model":
        p.write_bytes(canonical_bytes({"w": np.array([9.0], np.float32)}))
        return p, GOOD_SHA, "refusing to load it"
    if kind == "too big":
        with p.open("wb") as f:
            f.truncate(MAX_MODEL_BYTES + 1)  # sparse: no disk used
        return p, GOOD_SHA, "is not a failure model"
    if kind == "garbage with its own hash":  # right hash (the ledger committed garbage), wrong format
        data = b"\x89PNG\r\n\x1a\n" + os.urandom(64)
        p.write_bytes(data)
        return p, hashlib.sha256(data).hexdigest(), "cannot be loaded: CanonicalFormError"
    if kind == "truncated with its own hash":
        data = GOOD[:-4]
        p.write_bytes(data)
        return p, hashlib.sha256(data).hexdigest(), "truncated data for array 'w'"
    if kind == "ledger hash not a hash":
        p.write_bytes(GOOD)
        return p, "../../etc/passwd", "is not a SHA-256"
    raise AssertionError(kind)


KINDS = ["missing", "directory", "fifo", "empty", "truncated", "one byte changed", "another model", "too big",
         "garbage with its own hash", "truncated with its own hash", "ledger hash not a hash"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_model_file_is_one_line_and_the_twin_keeps_its_model(kind: str, tmp_path: Path, caplog) -> None:
    path, sha, needle = _bad(kind, tmp_path)
    with pytest.raises(ModelFileError) as err:
        load_federated_model(path, sha, Logistic)
    line = str(err.value)
    assert "\n" not in line and str(path) in line and needle in line, line
    assert isinstance(err.value, ModelHashMismatch) == (needle in ("the ledger committed", "refusing to load it"))

    # the caller keeps what it had: a twin with the previous federated model, and one with none
    good = tmp_path / "good.bin"
    good.write_bytes(GOOD)
    twin = MachineTwin("plant1.m1", "plant1")
    twin.model = load_federated_model(good, GOOD_SHA, Logistic)
    before = twin.model
    caplog.set_level(logging.WARNING, logger="twins.model")
    twin.model = replace_model(twin.model, path, sha, Logistic)
    assert twin.model is before and twin.model.label == f"federated:{GOOD_SHA[:12]}"
    assert replace_model(None, path, sha, Logistic) is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and all(str(path) in x and "\n" not in x for x in lines), lines
    assert lines[0].endswith(f"keeping federated:{GOOD_SHA[:12]}") and lines[1].endswith("keeping the fallback model")


def test_the_good_file_loads_and_a_loader_that_returns_no_model_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "m.bin"
    p.write_bytes(GOOD)
    model = load_federated_model(p, GOOD_SHA.upper(), Logistic)
    assert model.label == f"federated:{GOOD_SHA[:12]}" and 0 < model.predict({}) < 1
    with pytest.raises(ModelFileError, match="which has no predict"):
        load_federated_model(p, GOOD_SHA, lambda b: object())


# --- the federated model store --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "truncated", "one byte changed", "another model",
                                  "garbage with its own hash", "truncated with its own hash", "not a name",
                                  "header lies", "big-endian"])
def test_a_bad_artefact_in_the_store_is_one_store_error(kind: str, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    sha = store.put_bytes(GOOD)
    assert set(store.get_arrays(sha)) == {"w"}
    path = store.path(sha)
    needle = {"missing": "no artefact", "directory": "is a directory", "empty": "is empty",
              "truncated": "do not hash to its name", "one byte changed": "do not hash to its name",
              "another model": "do not hash to its name", "not a name": "is not an artefact name"}.get(kind, "is not a model")
    if kind == "missing":
        path.unlink()
    elif kind == "directory":
        path.unlink()
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(GOOD[:20])
    elif kind == "one byte changed":
        path.write_bytes(GOOD[:-1] + b"\x00")
    elif kind == "another model":
        path.write_bytes(canonical_bytes({"w": np.zeros(3, np.float32)}))
    elif kind == "not a name":
        sha = "../" + sha[3:]
    else:  # bytes named by their own hash, as a buggy writer or an attacker with the store could leave them
        data = {"garbage with its own hash": os.urandom(100),
                "truncated with its own hash": GOOD[:-4],
                "header lies": GOOD.replace(b'"shape":[3]', b'"shape":[9]'),
                "big-endian": GOOD.replace(b'"<f4"', b'">f4"')}[kind]
        sha = hashlib.sha256(data).hexdigest()
        path = store.path(sha)
        path.write_bytes(data)
    with pytest.raises(StoreError) as err:
        store.get_arrays(sha)
    line = str(err.value)
    assert "\n" not in line and needle in line, line
    assert kind == "not a name" or str(path) in line or kind == "missing"
    assert sha not in store or kind not in ("not a name", "directory", "missing")


def test_a_store_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create it"):
        ModelStore(tmp_path / "store")
