"""Small PyTorch MLPs for the tabular tasks, feature scaling, local training and scoring (CPU only).

A model travels as named numpy arrays (the MLP's state_dict, plus ``scaler.mean``/``scaler.std`` when the
federation agreed on global feature statistics), hashed with ``federated.hashing``.

Standardization. Two modes, chosen per run (``standardize`` in the run config):
* ``local``     -- each org standardizes with the mean/std of its own training split. Nothing about the
                   data leaves the site; the shared model sees per-site standardized inputs.
* ``federated`` -- before round 1 each org sends the count, sum and sum of squares of each feature over
                   its training split; the ServerApp pools them into one mean/std and ships it inside
                   the global model (so it is hashed and committed with it). Every site then feeds the
                   model identically scaled inputs. Only these aggregates leave a site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

SCALER_MEAN = "scaler.mean"
SCALER_STD = "scaler.std"
_MIN_STD = 1e-6


# -- scaling -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FeatureStats:
    """Per-feature count, sum and sum of squares over observed (non-NaN) values."""

    count: np.ndarray
    total: np.ndarray
    total_sq: np.ndarray

    @staticmethod
    def of(x: np.ndarray) -> FeatureStats:
        x = np.asarray(x, dtype=np.float64)
        obs = ~np.isnan(x)
        z = np.where(obs, x, 0.0)
        return FeatureStats(obs.sum(axis=0).astype(np.float64), z.sum(axis=0), (z * z).sum(axis=0))

    @staticmethod
    def pooled(parts: Sequence[FeatureStats]) -> FeatureStats:
        return FeatureStats(
            np.sum([p.count for p in parts], axis=0),
            np.sum([p.total for p in parts], axis=0),
            np.sum([p.total_sq for p in parts], axis=0),
        )


@dataclass(frozen=True)
class Scaler:
    mean: np.ndarray
    std: np.ndarray

    @staticmethod
    def from_stats(stats: FeatureStats) -> Scaler:
        n = np.maximum(stats.count, 1.0)
        mean = np.where(stats.count > 0, stats.total / n, 0.0)
        var = np.maximum(stats.total_sq / n - mean * mean, 0.0)
        std = np.sqrt(var)
        std = np.where(std < _MIN_STD, 1.0, std)  # constant columns (e.g. type_L at an all-L plant)
        return Scaler(mean.astype(np.float32), std.astype(np.float32))

    @staticmethod
    def fit(x: np.ndarray) -> Scaler:
        return Scaler.from_stats(FeatureStats.of(x))

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return np.nan_to_num(z, nan=0.0).astype(np.float32)  # never-observed values -> the mean

    def arrays(self) -> dict[str, np.ndarray]:
        return {SCALER_MEAN: self.mean.astype(np.float32), SCALER_STD: self.std.astype(np.float32)}

    @staticmethod
    def from_arrays(arrays: Mapping[str, np.ndarray]) -> Scaler | None:
        if SCALER_MEAN in arrays and SCALER_STD in arrays:
            return Scaler(np.asarray(arrays[SCALER_MEAN], np.float32), np.asarray(arrays[SCALER_STD], np.float32))
        return None


# -- the network -------------------------------------------------------------------------------------


class MLP(nn.Module):
    """in -> [Linear, ReLU, Dropout] x len(hidden) -> Linear(1) (a logit)."""

    def __init__(self, in_dim: int, hidden: Sequence[int] = (32, 16), dropout: float = 0.1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_dim
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.ReLU(), nn.Dropout(dropout)]
            prev = h
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)
        self.in_dim = in_dim
        self.hidden = tuple(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


def new_model(in_dim: int, hidden: Sequence[int] = (32, 16), seed: int = 0, dropout: float = 0.1) -> MLP:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MLP(in_dim, hidden, dropout)


def model_arrays(model: nn.Module) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def model_from_arrays(arrays: Mapping[str, np.ndarray], dropout: float = 0.1) -> MLP:
    """Rebuild an MLP from its arrays (layer sizes read from the weight shapes); scaler arrays are ignored."""
    weights = sorted(
        (k for k in arrays if k.startswith("net.") and k.endswith(".weight")), key=lambda k: int(k.split(".")[1])
    )
    if not weights:
        raise ValueError("the arrays hold no MLP weights (net.N.weight)")
    shapes = [np.asarray(arrays[k]).shape for k in weights]
    in_dim = int(shapes[0][1])
    hidden = [int(s[0]) for s in shapes[:-1]]
    model = MLP(in_dim, hidden, dropout)
    state = {k: torch.from_numpy(np.asarray(v).copy()) for k, v in arrays.items() if k.startswith("net.")}
    model.load_state_dict(state, strict=True)
    return model


# -- training and scoring ----------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 2
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    pos_weight: float = 1.0  # multiplies the positive class in the loss; 0 -> sqrt(neg/pos) of the data
    prox_mu: float = 0.0  # FedProx proximal term towards the received global weights (0 = off)


def train_local(model: MLP, x: np.ndarray, y: np.ndarray, cfg: TrainConfig, seed: int) -> float:
    """Train in place with Adam; returns the mean training loss of the last epoch."""
    if len(y) == 0:
        return math.nan
    gen = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x, np.float32))
    yt = torch.from_numpy(np.asarray(y, np.float32))
    pw = cfg.pos_weight
    if pw <= 0:
        pos = float(yt.sum())
        pw = math.sqrt(max(len(yt) - pos, 1.0) / max(pos, 1.0))
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor(pw))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    anchor = [p.detach().clone() for p in model.parameters()] if cfg.prox_mu > 0 else None
    model.train()
    last = math.nan
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # dropout masks
        for _ in range(cfg.epochs):
            perm = torch.randperm(len(yt), generator=gen)
            total, count = 0.0, 0
            for i in range(0, len(yt), cfg.batch_size):
                idx = perm[i : i + cfg.batch_size]
                opt.zero_grad()
                loss = loss_fn(model(xt[idx]), yt[idx])
                if anchor is not None:
                    prox = sum(((p - a) ** 2).sum() for p, a in zip(model.parameters(), anchor))
                    loss = loss + 0.5 * cfg.prox_mu * prox
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                count += len(idx)
            last = total / max(count, 1)
    model.eval()
    return last


@torch.no_grad()
def predict_proba(model: MLP, x: np.ndarray) -> np.ndarray:
    model.eval()
    if len(x) == 0:
        return np.zeros(0, dtype=np.float64)
    return torch.sigmoid(model(torch.from_numpy(np.asarray(x, np.float32)))).double().numpy()


@torch.no_grad()
def bce_loss(model: MLP, x: np.ndarray, y: np.ndarray) -> float:
    if len(y) == 0:
        return math.nan
    logits = model(torch.from_numpy(np.asarray(x, np.float32)))
    return float(nn.functional.binary_cross_entropy_with_logits(logits, torch.from_numpy(np.asarray(y, np.float32))))
