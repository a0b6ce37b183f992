"""Flower's differential-privacy wrappers, selected by run config (federated.privacy), in process.

Cardiac, three hospitals, one round of FedAvg, so the round-1 updates are deterministic (seeded) and a
private run can be compared with the plain one update by update.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
from flwr.supercore.differential_privacy import compute_adaptive_noise_params

from federated.data import task_spec
from federated.local_grid import LocalGrid
from federated.privacy import KEY_CLIPPING_NORM, DPSettings, clip_update, wrap_dp
from federated.serverapp import run_governed
from federated.store import ModelStore
from tests.unit.federated.fake_ledger import FakeLedger

CARDIAC = task_spec("cardiac")
ORGS = ["hospital1", "hospital2", "hospital3"]
C = 0.05  # well below the plain updates' norms (measured ~0.3-0.5), so clipping is visible


def _norm(a: dict, b: dict) -> float:
    return float(np.sqrt(sum(float(((a[k] - b[k]).astype(np.float64) ** 2).sum()) for k in a if k.startswith("net."))))


LEDGERS: dict[str, FakeLedger] = {}  # name -> the last run's ledger


def _run(tmp_path, name: str, rounds: int = 1, **extra):
    logging.getLogger("flwr").setLevel(logging.WARNING)
    led = LEDGERS[name] = FakeLedger()
    led.grant_federation([CARDIAC.dataset_id(o) for o in ORGS], CARDIAC.purpose)
    grid = LocalGrid({o: {"task": "cardiac", "ledger": led.spec} for o in ORGS})
    store = ModelStore(tmp_path / "store")
    cfg = {"task": "cardiac", "orgs": ",".join(ORGS), "min-nodes": 3, "num-server-rounds": rounds, "seed": 0,
           "wait-for-nodes": 0.0, "poll-interval": 0.0, "ledger": led.spec, "ledger-task": f"cardiac/{name}",
           "store": str(store.root), **extra}  # fmt: skip
    np.random.seed(1234)  # Flower's DP noise draws from numpy's global generator
    _, info = run_governed(grid, cfg)
    r1 = led.get_round(f"cardiac/{name}", 1)
    start, result = store.get_arrays(r1.global_sha256), store.get_arrays(r1.result_sha256)
    updates = {u.org: (store.get_arrays(u.sha256), u.num_examples) for u in r1.updates}
    return info, r1, start, result, updates, grid


def test_settings_and_wrapping():
    assert not DPSettings.from_config({}).enabled
    dp = DPSettings.from_config({"dp": "server-fixed", "dp-noise-multiplier": 1.0, "dp-clipping-norm": 0.5})
    assert isinstance(wrap_dp(FedAvg(), dp, 3), DifferentialPrivacyServerSideFixedClipping)
    with pytest.raises(ValueError, match="dp-clipping-norm > 0"):
        DPSettings.from_config({"dp": "client-fixed"})
    with pytest.raises(ValueError, match="unknown dp mode"):
        DPSettings.from_config({"dp": "local"})
    base = {"net.0.weight": np.zeros(4, np.float32), "scaler.std": np.ones(2, np.float32)}
    new = {"net.0.weight": np.full(4, 1.0, np.float32), "scaler.std": np.ones(2, np.float32)}
    out = clip_update(new, base, 0.5)  # norm 2 -> 0.5
    np.testing.assert_allclose(out["net.0.weight"], 0.25, rtol=1e-6)
    assert out["net.0.weight"].dtype == np.float32


def test_server_side_fixed_clipping_bounds_the_aggregate_and_is_recorded(tmp_path):
    _, _, start0, plain, ups0, _ = _run(tmp_path, "plain")
    _, r1, start, result, ups, _ = _run(tmp_path, "clip", dp="server-fixed", **{"dp-clipping-norm": C})
    assert all(np.array_equal(start[k], start0[k]) for k in start)
    plain_norm, dp_norm = _norm(plain, start), _norm(result, start)
    upd_norms = {o: _norm(a, start) for o, (a, _) in ups.items()}
    print(f"update norms {upd_norms}; aggregate step: plain {plain_norm:.4f}, clipped (C={C}) {dp_norm:.6f}")
    assert min(upd_norms.values()) > 2 * C and plain_norm > 2 * C  # clipping had something to do
    assert dp_norm <= C * (1 + 1e-5)  # a weighted mean of updates clipped to C
    # exactly FedAvg of the clipped updates (the store keeps what the orgs sent, i.e. unclipped)
    n = sum(k for _, k in ups.values())
    for key in (k for k in start if k.startswith("net.")):
        want = start[key].astype(np.float64) + sum(
            k / n * min(1.0, C / upd_norms[o]) * (a[key].astype(np.float64) - start[key]) for o, (a, k) in ups.items()
        )
        np.testing.assert_allclose(result[key], want, rtol=1e-4, atol=1e-6)
    for key in (k for k in start if k.startswith("scaler.")):  # the scaler is carried, not clipped or noised
        np.testing.assert_array_equal(result[key], start[key])
    assert r1.metrics["dp-mode"] == 1.0 and r1.metrics["dp-clipping-norm"] == C
    assert r1.metrics["dp-noise-multiplier"] == 0.0 and r1.metrics["dp-noise-std"] == 0.0


def test_server_side_noise_has_the_expected_scale(tmp_path):
    z = 1.0
    _, _, _, clipped, _, _ = _run(tmp_path, "clip", dp="server-fixed", **{"dp-clipping-norm": C})
    _, r1, start, noisy, _, _ = _run(tmp_path, "noisy", dp="server-fixed",
                                     **{"dp-clipping-norm": C, "dp-noise-multiplier": z})  # fmt: skip
    sigma = z * C / len(ORGS)  # Flower's compute_stdv: z * C / sampled clients
    diff = np.concatenate([(noisy[k].astype(np.float64) - clipped[k]).ravel() for k in start if k.startswith("net.")])
    m = diff.size
    print(f"noise over {m} weights: mean {diff.mean():+.5f}, std {diff.std():.5f}, expected std {sigma:.5f}")
    # the std of m Gaussian draws has relative standard error 1/sqrt(2m) (~3.6 % at m = 385): allow 5 SE
    assert abs(diff.std() / sigma - 1) < 5 / np.sqrt(2 * m)
    assert abs(diff.mean()) < 5 * sigma / np.sqrt(m)
    assert r1.metrics["dp-noise-std"] == pytest.approx(sigma) and r1.metrics["dp-noise-multiplier"] == z
    for key in (k for k in start if k.startswith("scaler.")):
        np.testing.assert_array_equal(noisy[key], start[key])


def test_client_side_fixed_clipping_clips_before_hashing(tmp_path):
    info, r1, start, result, ups, grid = _run(tmp_path, "client", dp="client-fixed", **{"dp-clipping-norm": C})
    train_cfgs = [m.content["config"] for m in grid.sent if m.metadata.message_type == "train"]
    assert train_cfgs and all(float(c[KEY_CLIPPING_NORM]) == C for c in train_cfgs)  # the wrapper announced C
    norms = {o: _norm(a, start) for o, (a, _) in ups.items()}
    print(f"client-clipped update norms {norms}")
    assert info.rejected[1] == [] and sorted(ups) == ORGS  # clipped updates still hash to what they declare
    assert all(C * 0.999 <= v <= C * (1 + 1e-5) for v in norms.values())
    assert _norm(result, start) <= C * (1 + 1e-5)
    assert r1.metrics["dp-mode"] == 2.0


def test_server_side_adaptive_clipping_adapts_and_is_recorded(tmp_path):
    _run(tmp_path, "adaptive", rounds=2, dp="server-adaptive", **{"dp-clipping-norm": C, "dp-noise-multiplier": 0.1})
    rounds = LEDGERS["adaptive"].list_rounds("cardiac/adaptive")
    norms = [r.metrics["dp-clipping-norm"] for r in rounds]
    print(f"adaptive clipping norm after each round: {norms}")
    assert all(r.metrics["dp-mode"] == 3.0 for r in rounds)
    # the wrapper noises the model with an effective multiplier that leaves room for the noised clip count
    z_eff = compute_adaptive_noise_params(0.1, 3, None)[1]  # (count stddev, multiplier)
    assert z_eff > 0.1 and all(r.metrics["dp-noise-multiplier"] == pytest.approx(z_eff) for r in rounds)
    assert all(r.metrics["dp-noise-std"] == pytest.approx(z_eff * c / 3) for r, c in zip(rounds, norms))
    # Every update exceeds C. Flower 1.41 counts *clipped* updates and sets C *= exp(-0.2 (clipped fraction
    # - 0.5)), so C shrinks here (Andrew et al. count unclipped ones, which would make it grow): this pins
    # the installed behaviour; revisit if an upgrade flips it.
    assert norms[0] < C and norms[1] < norms[0]
