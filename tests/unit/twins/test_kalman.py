import math
import random

from twins.model.kalman import SIGNAL_PARAMS, ScalarKalman


def test_constant_signal_converges_to_steady_state_gain():
    rng = random.Random(1)
    kf = ScalarKalman(q=0.01, r=4.0)
    truth = 300.0
    for _ in range(2000):
        kf.update(truth + rng.gauss(0, 2.0))
    # steady-state: P⁻ = (q + sqrt(q² + 4qr)) / 2, P = (1-K) P⁻
    p_prior = (0.01 + math.sqrt(0.01**2 + 4 * 0.01 * 4.0)) / 2
    k = p_prior / (p_prior + 4.0)
    assert math.isclose(kf.p, (1 - k) * p_prior, rel_tol=1e-6)
    assert math.isclose(kf.steady_state_gain(), k, rel_tol=1e-12)
    assert abs(kf.x - truth) < 4 * kf.std + 0.1


def test_random_walk_is_tracked_better_than_raw_measurements():
    rng = random.Random(2)
    q, r = 0.05, 1.0
    kf = ScalarKalman(q, r)
    x, err_f, err_z = 0.0, 0.0, 0.0
    n = 5000
    for _ in range(n):
        x += rng.gauss(0, math.sqrt(q))
        z = x + rng.gauss(0, math.sqrt(r))
        est = kf.update(z)
        err_f += (est - x) ** 2
        err_z += (z - x) ** 2
    assert err_f / n < 0.5 * err_z / n
    # filter's own variance estimate is calibrated (within 20 %)
    assert 0.8 < (err_f / n) / kf.p < 1.25


def test_first_measurement_initialises_and_state_roundtrips():
    kf = ScalarKalman.for_signal("HR")
    assert (kf.q, kf.r) == SIGNAL_PARAMS["HR"]
    assert kf.update(80.0) == 80.0
    kf.update(90.0)
    again = ScalarKalman.from_dict(kf.to_dict())
    assert again == kf
