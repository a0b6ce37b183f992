"""Differential privacy per task, with Flower 1.41's own DP strategy wrappers (``flwr.serverapp.strategy``).

Run-config keys (``federated.serverapp``):

==================  ===================================================================================
dp                  "" (off) | ``server-fixed`` | ``client-fixed`` | ``server-adaptive``
dp-noise-multiplier  z: Gaussian noise of std ``z * C / n`` is added to the aggregate (n = granted orgs)
dp-clipping-norm     C: every update ``w_i - w`` is clipped to L2 norm <= C (the initial norm for adaptive)
==================  ===================================================================================

* ``server-fixed``    -- ``DifferentialPrivacyServerSideFixedClipping``: the ServerApp clips each accepted
  update (after it checked the update's hash; the stored/committed update is what the org sent), the
  wrapped strategy aggregates, the wrapper adds the noise.
* ``client-fixed``    -- ``DifferentialPrivacyClientSideFixedClipping``: the wrapper announces C in the train
  config (``KEY_CLIPPING_NORM``) and adds the noise. Flower's ``fixedclipping_mod`` would clip the reply
  *after* our ClientApp hashed it (the server would then reject it), so our ClientApp clips with Flower's
  own ``compute_clip_model_update`` *before* hashing (``clip_update``) -- the same operation.
* ``server-adaptive`` -- ``DifferentialPrivacyServerSideAdaptiveClipping``: C starts at dp-clipping-norm and
  adapts per round; z must be < n/10 (Flower noises the clip count with std n/20 and raises otherwise) and
  the model noise uses Flower's derived effective multiplier, which is what is recorded, with the C after the
  round's update (the C the noise used). Note: Flower 1.41 counts *clipped* updates and sets
  ``C *= exp(-lr * (clipped fraction - quantile))``, so C shrinks when most updates are clipped (Andrew et al.
  count unclipped ones); ``test_privacy`` pins this.

Only the model weights are clipped/noised: the federation's scaler (``scaler.*``) is carried unchanged
(``GovernedStrategy(keep_global=...)``); the DP settings of each round are committed with its result
(``dp-noise-multiplier``, ``dp-clipping-norm``, ``dp-noise-std``, ``dp-mode``: 1 server-fixed, 2 client-fixed,
3 server-adaptive). No privacy accounting is done (epsilon is not tracked).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    DifferentialPrivacyServerSideAdaptiveClipping,
    DifferentialPrivacyServerSideFixedClipping,
    Strategy,
)
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM, compute_clip_model_update, compute_stdv

__all__ = ["KEY_CLIPPING_NORM", "DPSettings", "clip_update", "dp_round_metrics", "wrap_dp"]

DP_MODES = {"server-fixed": 1, "client-fixed": 2, "server-adaptive": 3}
NOT_NOISED = ("scaler.",)  # carried arrays, never clipped nor noised


@dataclass(frozen=True)
class DPSettings:
    mode: str = ""
    noise_multiplier: float = 0.0
    clipping_norm: float = 0.0

    @staticmethod
    def from_config(cfg: Mapping[str, object]) -> DPSettings:
        mode = str(cfg.get("dp", "") or "").strip().lower()
        if mode in ("", "none", "off"):
            return DPSettings()
        if mode not in DP_MODES:
            raise ValueError(f"unknown dp mode {mode!r}; use one of {', '.join(DP_MODES)} or ''")
        z = float(cfg.get("dp-noise-multiplier", 0.0) or 0.0)
        c = float(cfg.get("dp-clipping-norm", 0.0) or 0.0)
        if c <= 0:
            raise ValueError(f"dp={mode} needs dp-clipping-norm > 0")
        return DPSettings(mode, z, c)

    @property
    def enabled(self) -> bool:
        return bool(self.mode)


def wrap_dp(inner: Strategy, dp: DPSettings, num_sampled: int) -> Strategy:
    """Flower's DP wrapper around ``inner`` (or ``inner`` itself when DP is off)."""
    if not dp.enabled:
        return inner
    if dp.mode == "server-fixed":
        return DifferentialPrivacyServerSideFixedClipping(inner, dp.noise_multiplier, dp.clipping_norm, num_sampled)
    if dp.mode == "client-fixed":
        return DifferentialPrivacyClientSideFixedClipping(inner, dp.noise_multiplier, dp.clipping_norm, num_sampled)
    return DifferentialPrivacyServerSideAdaptiveClipping(
        inner, dp.noise_multiplier, num_sampled, initial_clipping_norm=dp.clipping_norm
    )


def dp_round_metrics(strategy: Strategy) -> dict[str, float]:
    """The DP settings a wrapper applied (read from the wrapper itself), for the round's ledger record."""
    for mode, cls in (("server-fixed", DifferentialPrivacyServerSideFixedClipping),
                      ("client-fixed", DifferentialPrivacyClientSideFixedClipping),
                      ("server-adaptive", DifferentialPrivacyServerSideAdaptiveClipping)):  # fmt: skip
        if isinstance(strategy, cls):
            z, c, n = float(strategy.noise_multiplier), float(strategy.clipping_norm), int(strategy.num_sampled_clients)
            return {"dp-mode": float(DP_MODES[mode]), "dp-noise-multiplier": z, "dp-clipping-norm": c,
                    "dp-noise-std": compute_stdv(z, c, n)}  # fmt: skip
    return {}


def clip_update(new: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray], clipping_norm: float) -> dict[str, np.ndarray]:
    """``base + clip(new - base, C)`` over the model weights, with Flower's ``compute_clip_model_update``."""
    names = [k for k in new if k in base and not k.startswith(NOT_NOISED)]
    upd = [np.asarray(new[k]).copy() for k in names]
    compute_clip_model_update(upd, [np.asarray(base[k]) for k in names], clipping_norm)
    out = dict(new)
    for k, v in zip(names, upd, strict=True):
        out[k] = np.asarray(v, dtype=np.asarray(new[k]).dtype)
    return out

# SecAgg+ (not wired). Flower 1.41 has it only in the legacy API: ``flwr.server.workflow.SecAggPlusWorkflow``
# needs a ``LegacyContext`` with a legacy ``flwr.server.strategy.Strategy`` (configure_fit/aggregate_fit over
# ClientProxy, FitIns/FitRes records), and ``flwr.client.mod.secaggplus_mod`` reads the reply as a legacy
# FitRes and empties its ArrayRecords; ``flwr.serverapp``/``flwr.clientapp`` have no SecAgg. Beyond the API,
# it conflicts with this project's governance by design: the ServerApp verifies, stores and commits every
# org's update by its SHA-256, and under SecAgg+ it only ever sees masked vectors. Using it needs a different
# commit scheme (each org commits its own update hash to the ledger; the server commits only the aggregate).
