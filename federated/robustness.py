"""Poisoned updates for robustness tests, and which of Flower's strategies resist them.

Robust aggregation is selected per task with the run-config key ``strategy`` (``fedmedian``,
``fedtrimmedavg``, ``krum``: Flower's own, built by ``federated.serverapp.make_strategy``).

To test it, an org's ClientApp can be made to poison its update with the node-config key ``attack``
(TESTS ONLY -- a real SuperNode never sets it):

* ``scale:K``  -- send ``base + K * (trained - base)`` (e.g. ``scale:-10``: a boosted, reversed update)
* ``signflip`` -- ``scale:-1``

Only the MLP weights (``net.*``) are poisoned; carried arrays (the federation's scaler) are unchanged. The
attack is applied *before* the client hashes its update, so the poisoned update hashes to the SHA-256 it
declares, passes the server's integrity check and is committed to the ledger like any other: integrity is
not robustness.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ROBUST_STRATEGIES = ("fedmedian", "fedtrimmedavg", "krum")


def attack_factor(spec: str) -> float:
    """The update multiplier of an attack spec (``scale:K`` or ``signflip``)."""
    s = spec.strip().lower()
    if s == "signflip":
        return -1.0
    if s.startswith("scale:"):
        try:
            return float(s.split(":", 1)[1])
        except ValueError:
            pass
    raise ValueError(f"unknown attack {spec!r}; use 'scale:K' (e.g. 'scale:-10') or 'signflip'")


def poison_update(
    new: Mapping[str, np.ndarray], base: Mapping[str, np.ndarray], spec: str
) -> dict[str, np.ndarray]:
    """``base + K * (new - base)`` for the model weights (``net.*``); other arrays as in ``new``."""
    k = attack_factor(spec)
    out: dict[str, np.ndarray] = {}
    for name, v in new.items():
        if name.startswith("net.") and name in base:
            b = np.asarray(base[name])
            out[name] = (b + k * (np.asarray(v) - b)).astype(np.asarray(v).dtype)
        else:
            out[name] = v
    return out
