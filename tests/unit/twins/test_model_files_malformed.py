"""Malformed model files: one line naming the file and the reason, nothing half-loaded, the previous model kept.

Two loaders read model files: the machine twins' federated model (``twins.model.federated.load_committed``,
through ``ledger_watch.ModelWatcher``, which swaps models live) and the federated model store
(``federated.store.ModelStore.get_arrays``, which `fl run` resumes from). Both get the same bad files:
missing, a directory, a FIFO, empty, truncated, one byte changed, another model, a file too big, and --
named by their own hash, as if the ledger had committed them -- garbage, a truncated serialization, a
header that lies, NaN weights. Models are real ones of ``federated.model`` (an MLP with the federation's
scaler) in a real ModelStore.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from federated.hashing import canonical_bytes
from federated.store import ModelStore, StoreError
from tests.unit.twins.test_ledger_model import TASK, arrays, rnd
from twins.model import federated as fm
from twins.model.federated import (
    CommittedRound, ModelFormatError, ModelHashMismatch, ModelRefused, ModelUnavailable, load_committed,
)
from twins.model.ledger_watch import ModelWatcher

GOOD = canonical_bytes(arrays(seed=1))
GOOD_SHA = hashlib.sha256(GOOD).hexdigest()


def _own(store: ModelStore, data: bytes) -> str:
    """Bytes stored under their own hash: what the ledger would name had a round committed them."""
    sha = hashlib.sha256(data).hexdigest()
    store.path(sha).write_bytes(data)
    return sha


def _nan_model() -> bytes:
    a = arrays(seed=2)
    first = next(k for k in a if k.endswith(".weight"))
    a[first] = a[first].copy()
    a[first][0, 0] = np.nan
    return canonical_bytes(a)


# kind -> (prepare the store, returning the hash the ledger names; the exception; what the line must say)
def _case(kind: str, store: ModelStore) -> tuple[str, type[ModelRefused], str]:
    path = store.path(GOOD_SHA)
    if kind == "missing":
        return GOOD_SHA, ModelUnavailable, "no model file"
    if kind == "directory":
        path.mkdir()
        return GOOD_SHA, ModelUnavailable, "is a directory"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block the watcher's thread forever
        return GOOD_SHA, ModelUnavailable, "is not a regular file"
    if kind == "empty":
        path.write_bytes(b"")
        return GOOD_SHA, ModelHashMismatch, "it is empty"
    if kind == "truncated":
        path.write_bytes(GOOD[: len(GOOD) // 2])
        return GOOD_SHA, ModelHashMismatch, "the ledger committed"
    if kind == "one byte changed":
        path.write_bytes(GOOD[:-1] + bytes([GOOD[-1] ^ 1]))
        return GOOD_SHA, ModelHashMismatch, "the ledger committed"
    if kind == "another model":
        path.write_bytes(canonical_bytes(arrays(seed=3)))
        return GOOD_SHA, ModelHashMismatch, "the ledger committed"
    if kind == "too big":
        with path.open("wb") as f:
            f.truncate(fm.MAX_MODEL_BYTES + 1)  # sparse: no disk used, and never read
        return GOOD_SHA, ModelHashMismatch, "more than any model"
    if kind == "garbage, own hash":
        return _own(store, b"\x89PNG\r\n\x1a\n" + os.urandom(64)), ModelFormatError, "not a canonical array file"
    if kind == "truncated, own hash":
        return _own(store, GOOD[:-4]), ModelFormatError, "truncated data for array"
    if kind == "header lies, own hash":
        return _own(store, GOOD.replace(b'"shape":[16,11]', b'"shape":[16,12]', 1)), ModelFormatError, "not a canonical"
    if kind == "NaN weights, own hash":
        return _own(store, _nan_model()), ModelFormatError, "NaN or infinite weights"
    if kind == "another architecture, own hash":
        return _own(store, canonical_bytes({"w": np.ones(3, np.float32)})), ModelFormatError, "holds no MLP weights"
    raise AssertionError(kind)


KINDS = ["missing", "directory", "fifo", "empty", "truncated", "one byte changed", "another model", "too big",
         "garbage, own hash", "truncated, own hash", "header lies, own hash", "NaN weights, own hash",
         "another architecture, own hash"]


class Rounds:
    def __init__(self) -> None:
        self.rounds: list[dict[str, Any]] = []

    async def list_rounds(self, task: str) -> list[dict[str, Any]]:
        return list(self.rounds)


@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_model_file_is_one_line_and_the_twins_keep_their_model(kind: str, tmp_path: Path, caplog) -> None:
    store = ModelStore(tmp_path / "store")
    good_sha = store.put_arrays(arrays(seed=0))
    sha, error, needle = _case(kind, store)
    committed = CommittedRound(TASK, 2, sha)
    with pytest.raises(error) as err:
        load_committed(store.root, committed)
    line = str(err.value)
    assert "\n" not in line and str(store.path(sha)) in line and needle in line, line

    # the watcher: round 1 (good) in use, round 2 (this bad file) refused with one line, round 1 kept
    swapped: list[Any] = []
    reader = Rounds()
    watcher = ModelWatcher("machine", TASK, store.root, reader, swapped.append)
    reader.rounds = [rnd(1, good_sha)]
    assert asyncio.run(watcher.check_once()) and watcher.in_use.round == 1
    before = watcher.model
    caplog.set_level(logging.WARNING, logger="twins.models")
    reader.rounds.append(rnd(2, sha))
    for _ in range(3):  # asked again and again: said once
        assert not asyncio.run(watcher.check_once())
    assert watcher.model is before and swapped == [before], "nothing half-loaded, the previous model kept"
    assert watcher.refused["round"] == 2 and needle in watcher.refused["detail"]
    lines = [r.getMessage() for r in caplog.records if r.name == "twins.models"]
    assert len(lines) == 1 and "\n" not in lines[0] and lines[0].endswith(f"keeping {before.label}"), lines
    assert 0.0 <= before.predict({"air_k": 300, "process_k": 310, "rpm": 1500, "torque_nm": 40, "wear_min": 100,
                                  "temp_diff_k": 10, "power_w": 6000, "strain_min_nm": 4000}) <= 1.0


def test_a_loader_that_fails_its_own_way_is_a_format_error(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    sha = store.put_bytes(GOOD)

    def broken(data: bytes, committed: CommittedRound):  # noqa: ANN202
        raise IndexError("list index out of range\nwith a second line")

    with pytest.raises(ModelFormatError, match="cannot be loaded: IndexError: list index out of range with a second line"):
        load_committed(store.root, CommittedRound(TASK, 1, sha), broken)


# --- the federated model store --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["missing", "directory", "empty", "truncated", "one byte changed", "another model",
                                  "garbage, own hash", "truncated, own hash", "header lies, own hash", "not a name",
                                  "big-endian, own hash"])
def test_a_bad_artefact_in_the_store_is_one_store_error(kind: str, tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "store")
    sha = store.put_bytes(GOOD)
    assert store.get_arrays(sha).keys() == arrays(seed=1).keys()
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
        path.write_bytes(canonical_bytes(arrays(seed=3)))
    elif kind == "not a name":
        sha = "../" + sha[3:]
    else:
        data = {"garbage, own hash": os.urandom(100), "truncated, own hash": GOOD[:-4],
                "header lies, own hash": GOOD.replace(b'"shape":[16,11]', b'"shape":[16,12]', 1),
                "big-endian, own hash": GOOD.replace(b'"<f4"', b'">f4"')}[kind]
        assert data != GOOD
        sha = _own(store, data)
        path = store.path(sha)
    with pytest.raises(StoreError) as err:
        store.get_arrays(sha)
    line = str(err.value)
    assert "\n" not in line and needle in line, line
    assert kind in ("not a name", "missing") or str(path) in line


def test_a_store_folder_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a folder")
    with pytest.raises(StoreError, match="cannot create it"):
        ModelStore(tmp_path / "store")
