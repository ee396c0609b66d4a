"""Block bootstrap, paired tests and changepoints on data with a known truth."""

import numpy as np

from anomaly_probe.stats import make_blocks, mean_ci, mean_shift_changepoint, paired_block_test, ratio_ci


def test_block_sums_cover_every_token_once():
    x = [np.arange(10.0)[:, None], np.arange(7.0)[:, None]]
    b = make_blocks(x, 4)
    assert b.n_tokens == 17 and b.n_blocks == 3 + 2 and b.n_samples == 2
    assert b.sums.sum() == np.arange(10).sum() + np.arange(7).sum()


def test_mean_ci_covers_the_true_mean_about_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for rep in range(60):
        x = [rng.normal(1.0, 1.0, (2000, 1)) for _ in range(2)]
        _, lo, hi = mean_ci(make_blocks(x, 50), 0, 400, 0.95, seed=rep)
        hits += lo <= 1.0 <= hi
    assert 50 <= hits <= 60


def test_block_bootstrap_widens_the_interval_for_correlated_tokens():
    rng = np.random.default_rng(1)
    slow = np.repeat(rng.normal(0, 1, 40), 50)[:, None]  # 50-token plateaus: 40 effective observations
    _, lo1, hi1 = mean_ci(make_blocks([slow], 1), 0, 1000, 0.95)
    _, lo50, hi50 = mean_ci(make_blocks([slow], 50), 0, 1000, 0.95)
    assert (hi50 - lo50) > 3 * (hi1 - lo1)


def test_ratio_ci_of_a_planted_share():
    rng = np.random.default_rng(2)
    gap = rng.normal(0.5, 0.2, 4000)
    effect = 0.3 * gap + rng.normal(0, 0.02, 4000)
    share, lo, hi = ratio_ci(make_blocks([np.stack([effect, gap], 1)], 100), 0, 1, 1000, 0.95)
    assert abs(share - 0.3) < 0.01 and lo <= share <= hi and hi - lo < 0.01


def test_paired_block_test():
    rng = np.random.default_rng(3)
    d, p = paired_block_test(make_blocks([rng.normal(0.2, 1, (5000, 1))], 100), 0)
    assert p < 1e-3 and d > 0
    _, p0 = paired_block_test(make_blocks([rng.normal(0.0, 1, (5000, 1))], 100), 0)
    assert p0 > 0.01


def test_changepoint_at_the_planted_break():
    rng = np.random.default_rng(4)
    y = np.r_[rng.normal(0, 0.2, 64), rng.normal(1.5, 0.2, 30)]
    k, gain = mean_shift_changepoint(y)
    assert k == 64 and gain > 0.8
    k_flat, gain_flat = mean_shift_changepoint(rng.normal(0, 1, 94))
    assert gain_flat < 0.2


def test_resampling_in_steps_gives_the_same_numbers(monkeypatch):
    """resample_sums draws in steps of RESAMPLE_CHUNK (memory); the numbers must not depend on the step."""
    import anomaly_probe.stats.bootstrap as bs

    rng = np.random.default_rng(1)
    blocks = bs.make_blocks([rng.normal(size=(n, 2)) for n in (3000, 5000, 700)], 16)
    whole = bs.resample_sums(blocks, 300, seed=3)
    monkeypatch.setattr(bs, "RESAMPLE_CHUNK", 1000)  # ~1 resample per step
    stepped = bs.resample_sums(blocks, 300, seed=3)
    assert np.array_equal(whole[0], stepped[0]) and np.array_equal(whole[1], stepped[1])


def test_permutation_test_in_steps_gives_the_same_p_value(monkeypatch):
    """changepoint_test permutes PERMUTATION_CHUNK values per step (memory); the p-value must not depend on it."""
    import anomaly_probe.stats.changepoint as cp

    rng = np.random.default_rng(2)
    y = np.concatenate([rng.normal(0, 1, 150), rng.normal(0.3, 1, 50)])
    whole = cp.changepoint_test(y, n_perm=499)
    monkeypatch.setattr(cp, "PERMUTATION_CHUNK", 700)  # 3 orderings per step
    assert cp.changepoint_test(y, n_perm=499) == whole
    assert 0 < whole[2] < 1
