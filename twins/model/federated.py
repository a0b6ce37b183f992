"""The federated models of the twins: used only when their bytes hash to what the ledger committed.

The consortium trains the plants' maintenance model and the hospitals' sepsis model with Flower (``federated/``); each committed round of a task is a
record of the models contract (``models:ListRounds``: ``round``, ``status`` "committed", ``result_sha256``)
and the round's global model is a file of the model store named by that hash (``federated.store``: the
canonical array serialization of ``federated.hashing``, SHA-256 of the bytes = file name = ledger hash).

* ``latest_committed(rounds)`` picks the last committed round of a task from the contract's answer.
* ``load_committed(store, committed)`` reads ``store/<sha256>``, hashes the bytes and refuses them
  (``ModelHashMismatch``, naming both hashes) unless they hash to the ledger's ``result_sha256``; a missing
  file (or a directory, or a file that cannot be read) is ``ModelUnavailable``; bytes that hash right but are
  not a model this twin can run (another architecture, other features, a loader that fails) are
  ``ModelFormatError``. Only then is the model built; every refusal is one line naming the file.
* ``Ai4iMlp`` (machine twins) and ``SepsisMlp`` (patient twins, over ``federated.sepsis.FEATURES`` computed by
  ``federated.sepsis.window_features``) run the MLP of ``federated.model`` (Linear/ReLU layers, dropout is the identity at inference)
  in numpy on the twin's features scaled with the federation's ``scaler.mean``/``scaler.std`` that travel
  inside the model (so they are hashed and committed with it). numpy, not torch: the bridge predicts a few
  times per product and must not pay torch's import, memory and threads; tests/unit/twins/test_ledger_model.py
  checks it against ``federated.model.predict_proba`` on the same arrays.

Every prediction names the model: ``federated:<task>:round<N>:<first 12 hex of its SHA-256>`` (and the full
hash beside it); before the first committed round a machine twin predicts with the AI4I rules, labelled
``fallback:ai4i-rules-v1`` (``twins.model.ai4i``), and a patient twin's only risk is the NEWS2-like score, labelled
``fallback:news2-like-v1`` (``twins.model.news2``). ``twins.model.ledger_watch`` follows the ledger and swaps.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from federated import sepsis
from federated.data import AI4I_FEATURES
from federated.hashing import CanonicalFormError, arrays_from_canonical
from twins.model import ai4i

#: Hex digits of the model hash in a label (the full hash goes along as ``model_sha256``).
LABEL_HEX = 12
_SHA_RE = re.compile(r"[0-9a-f]{64}")
#: A failure model is kilobytes; a file far larger in the store is not one (and is not read into memory).
MAX_MODEL_BYTES = 256 * 1024 * 1024
SCALER_MEAN, SCALER_STD = "scaler.mean", "scaler.std"  # federated.model's names (no torch import for two strings)


class ModelRefused(Exception):
    """A committed round's model that the twin does not use (the message says why, naming the hashes)."""


class ModelHashMismatch(ModelRefused):
    """The model file's bytes do not hash to the ledger's committed hash."""


class ModelUnavailable(ModelRefused):
    """No file of the committed hash in the model store (yet)."""


class ModelFormatError(ModelRefused):
    """The bytes hash right but are not a model this twin can run."""


def model_label(task: str, round_no: int, sha256: str) -> str:
    return f"federated:{task}:round{round_no}:{sha256[:LABEL_HEX]}"


@dataclass(frozen=True)
class CommittedRound:
    """One committed round of a task as the models contract records it."""

    task: str
    round: int
    sha256: str  # result_sha256: the round's global model
    commit_tx_id: str | None = None
    committed_at_utc: str | None = None

    @property
    def label(self) -> str:
        return model_label(self.task, self.round, self.sha256)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "round": self.round, "sha256": self.sha256, "label": self.label,
                "commit_tx_id": self.commit_tx_id, "committed_at_utc": self.committed_at_utc}


def latest_committed(task: str, rounds: Iterable[Mapping[str, Any]]) -> CommittedRound | None:
    """The highest-numbered committed round of ``task`` in ``models:ListRounds``'s answer (None if none is).
    A record of another task or without a well-formed result hash is skipped: the twin never guesses a model."""
    best: CommittedRound | None = None
    for r in rounds:
        sha = r.get("result_sha256")
        if r.get("task") != task or r.get("status") != "committed" or not isinstance(sha, str) or not _SHA_RE.fullmatch(sha):
            continue
        try:
            n = int(r["round"])
        except (KeyError, TypeError, ValueError):
            continue
        if best is None or n > best.round:
            best = CommittedRound(task, n, sha, r.get("commit_tx_id"), r.get("committed_at_utc"))
    return best


class FailureModel(Protocol):
    """A verified federated model a twin predicts with (``Ai4iMlp`` for machines, ``SepsisMlp`` for patients): what
    every twin needs of it is its label and hash, which name it on each prediction, alert and decision."""

    label: str
    sha256: str


class TabularMlp:
    """A task's MLP (``federated.model.MLP``: Linear/ReLU layers, dropout the identity at inference) over the task's
    features, in numpy, with the federation's scaler that travels inside the model. A feature that was never
    observed (NaN) becomes the scaled mean (0), exactly as ``federated.model.Scaler.transform`` feeds it in training."""

    features: tuple[str, ...] = ()
    what = "a tabular model"  # what the twin expects, for the refusal messages
    twin = "a twin"

    def __init__(self, arrays: Mapping[str, np.ndarray], label: str, sha256: str) -> None:
        weights = sorted((k for k in arrays if k.startswith("net.") and k.endswith(".weight")),
                         key=lambda k: int(k.split(".")[1]))
        if not weights:
            raise ModelFormatError(f"model {sha256[:16]}… holds no MLP weights (net.N.weight): not a model {self.twin} "
                                   "can run")
        self.layers: list[tuple[np.ndarray, np.ndarray]] = []
        for k in weights:
            w = np.asarray(arrays[k], dtype=np.float64)
            b = np.asarray(arrays.get(k[: -len("weight")] + "bias"), dtype=np.float64)
            if w.ndim != 2 or b.shape != (w.shape[0],):
                raise ModelFormatError(f"model {sha256[:16]}…: layer {k} has shape {w.shape} with bias {b.shape}")
            if self.layers and self.layers[-1][0].shape[0] != w.shape[1]:
                raise ModelFormatError(f"model {sha256[:16]}…: layer {k} does not follow the previous one")
            self.layers.append((w, b))
        n_in = len(self.features)
        if self.layers[0][0].shape[1] != n_in or self.layers[-1][0].shape[0] != 1:
            raise ModelFormatError(f"model {sha256[:16]}… maps {self.layers[0][0].shape[1]} inputs to "
                                   f"{self.layers[-1][0].shape[0]} outputs; {self.what} maps {n_in} to 1")
        if SCALER_MEAN not in arrays or SCALER_STD not in arrays:
            # trained with per-site standardization: the twin cannot know how the model's inputs were scaled
            raise ModelFormatError(f"model {sha256[:16]}… carries no federated scaler (trained with standardize=local); "
                                   "a twin cannot scale its inputs as the model expects")
        self.mean = np.asarray(arrays[SCALER_MEAN], dtype=np.float64).reshape(-1)
        self.std = np.asarray(arrays[SCALER_STD], dtype=np.float64).reshape(-1)
        if self.mean.shape != (n_in,) or self.std.shape != (n_in,) or not np.all(self.std > 0):
            raise ModelFormatError(f"model {sha256[:16]}…: its scaler does not fit the {n_in} features of {self.what}")
        if not all(np.all(np.isfinite(a)) for layer in self.layers for a in layer) or not (
                np.all(np.isfinite(self.mean)) and np.all(np.isfinite(self.std))):
            # a NaN weight would make every prediction NaN: the twin's risk, its alerts, its ledger records
            raise ModelFormatError(f"model {sha256[:16]}… holds NaN or infinite weights; not a model to predict with")
        self.label = label
        self.sha256 = sha256

    def _logits(self, x: np.ndarray) -> np.ndarray:
        h = np.nan_to_num((x - self.mean) / self.std, nan=0.0)
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h[:, 0]

    def predict_rows(self, x: np.ndarray) -> np.ndarray:
        """P(positive) of rows in the task's feature order (unscaled, NaN = never observed)."""
        z = self._logits(np.asarray(x, dtype=np.float64).reshape(-1, len(self.features)))
        return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


class Ai4iMlp(TabularMlp):
    """The maintenance task's MLP over the 11 AI4I features."""

    features = AI4I_FEATURES
    what = "the AI4I maintenance model"
    twin = "a machine twin"

    def predict(self, features: dict[str, float], type_mix: Mapping[str, float] | None = None) -> float:
        """The next product's P(failure): the model's probability for each product type at the twin's current
        estimates, weighted by the twin's observed type mix (the next product's type is not known yet)."""
        mix = {t: w for t, w in (type_mix or ai4i.TYPE_SHARE).items() if w > 0} or dict(ai4i.TYPE_SHARE)
        rows = [[1.0 if t == "L" else 0.0, 1.0 if t == "M" else 0.0, 1.0 if t == "H" else 0.0,
                 features["air_k"], features["process_k"], features["rpm"], features["torque_nm"], features["wear_min"],
                 features["temp_diff_k"], features["power_w"], features["strain_min_nm"]] for t in mix]
        p = self.predict_rows(np.array(rows))
        total = sum(mix.values())
        return float(sum(w * pi for w, pi in zip(mix.values(), p)) / total)


class SepsisMlp(TabularMlp):
    """The hospitals' sepsis task's MLP over ``federated.sepsis.FEATURES`` (the bedside vitals, their not-yet-observed
    flags and 3 h / 6 h trends): P(sepsis onset within ``federated.sepsis.HORIZON_H`` hours)."""

    features = sepsis.FEATURES
    what = "the sepsis early-warning model"
    twin = "a patient twin"

    def predict_features(self, x: np.ndarray) -> float:
        """P(onset within the horizon) of one hour's feature vector (``federated.sepsis.window_features``)."""
        return float(self.predict_rows(x)[0])


def _arrays(data: bytes, committed: CommittedRound) -> dict[str, np.ndarray]:
    try:
        return arrays_from_canonical(data)
    except (CanonicalFormError, KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"model {committed.sha256[:16]}… of {committed.task} round {committed.round} is not a "
                               f"canonical array file ({exc})") from None


def ai4i_mlp(data: bytes, committed: CommittedRound) -> Ai4iMlp:
    """The loader of the plants' maintenance task: canonical arrays -> ``Ai4iMlp``."""
    return Ai4iMlp(_arrays(data, committed), committed.label, committed.sha256)


def sepsis_mlp(data: bytes, committed: CommittedRound) -> SepsisMlp:
    """The loader of the hospitals' sepsis task: canonical arrays -> ``SepsisMlp``."""
    return SepsisMlp(_arrays(data, committed), committed.label, committed.sha256)


def verify_bytes(data: bytes, committed: CommittedRound, where: str | Path) -> None:
    digest = hashlib.sha256(data).hexdigest()
    if digest != committed.sha256:
        raise ModelHashMismatch(
            f"REFUSED model file {where}: its sha256 is {digest}, but the ledger committed {committed.sha256} for "
            f"{committed.task} round {committed.round}; not loading it"
        )


def _read_model_file(path: Path, committed: CommittedRound) -> bytes:
    try:
        if not path.is_file() and path.exists():  # a directory, or a FIFO whose read would never end
            kind = "a directory" if path.is_dir() else "not a regular file"
            raise ModelUnavailable(f"model file {path} for {committed.task} round {committed.round} is {kind}")
        if path.exists() and path.stat().st_size > MAX_MODEL_BYTES:
            raise ModelHashMismatch(f"REFUSED model file {path}: {path.stat().st_size} bytes, more than any model "
                                    f"({MAX_MODEL_BYTES}); the ledger committed {committed.sha256}; not loading it")
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelUnavailable(f"no model file {path} for {committed.task} round {committed.round} "
                               f"(ledger sha256 {committed.sha256})") from None
    except OSError as exc:
        raise ModelUnavailable(f"cannot read model file {path}: {exc.strerror or exc}") from None


def load_committed(store: str | Path, committed: CommittedRound, loader=ai4i_mlp) -> FailureModel:  # noqa: ANN001
    """The model of a committed round from the content-addressed store, after checking its bytes against the
    ledger's hash. ``ModelUnavailable`` / ``ModelHashMismatch`` / ``ModelFormatError`` otherwise, each one
    line naming the file; the model is returned whole or not at all (the caller keeps the one it had)."""
    path = Path(store) / committed.sha256
    data = _read_model_file(path, committed)
    if not data:
        raise ModelHashMismatch(f"REFUSED model file {path}: it is empty (a write that never finished?), but the "
                                f"ledger committed {committed.sha256} for {committed.task} round {committed.round}")
    verify_bytes(data, committed, path)
    try:
        return loader(data, committed)
    except ModelFormatError as exc:  # the loader names the hash; the user needs the file too
        raise ModelFormatError(f"model file {path}: {exc}") from None
    except ModelRefused:
        raise
    except Exception as exc:  # any other failure of a loader is a model this twin cannot run, said in one line
        raise ModelFormatError(f"model file {path} ({committed.task} round {committed.round}) hashes right but "
                               f"cannot be loaded: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}") from None
