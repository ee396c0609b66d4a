"""The analysis region: pre-specified past the trained context, refined to a significant rise of the gap."""

import numpy as np

from anomaly_probe.hypotheses.region import find_region, prespecified_start
from anomaly_probe.stats import Thresholds, changepoint_test, mean_shift_changepoint

TH = Thresholds()


def _noise(n, seed, scale=0.5):
    return np.random.default_rng(seed).normal(0.0, scale, n)


def test_changepoint_test_finds_a_planted_step_and_not_noise():
    y = np.r_[_noise(40, 0, 0.1), 1.0 + _noise(15, 1, 0.1)]
    k, gain, p = changepoint_test(y, min_right=8)
    assert k == 40 and gain > 0.8 and p <= 0.002
    k, gain, p = changepoint_test(_noise(55, 2, 0.1), min_right=8)
    assert p > 0.05


def test_vectorised_split_matches_the_plain_scan():
    y = _noise(30, 3)
    k, gain = mean_shift_changepoint(y, min_size=2)
    sse = []
    for j in range(2, 29):
        a, b = y[:j], y[j:]
        sse.append(((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum())
    assert k == 2 + int(np.argmin(sse))
    assert np.isclose(gain, 1 - min(sse) / ((y - y.mean()) ** 2).sum())
    assert mean_shift_changepoint(y[:3]) == (None, 0.0)


def test_inside_the_trained_context_the_region_is_every_token():
    r = find_region([_noise(3999, 4)], 4000, 8192, TH)
    assert (r.start, r.basis) == (0, "all") and r.text() == "all scored tokens"


def test_past_the_trained_context_without_a_rise_the_region_starts_there():
    gaps = [_noise(11999, s) - 0.2 for s in range(2)]
    r = find_region(gaps, 12000, 8192, TH)
    assert (r.start, r.basis) == (prespecified_start(12000, 8192), "trained-context") == (8192, "trained-context")
    assert r.changepoint_p is not None and r.changepoint_p > TH.region_alpha
    assert "past the trained context 8192" in r.text()


def test_a_significant_rise_moves_the_start_to_the_changepoint():
    g = _noise(11999, 5) - 0.25
    g[10752:] += 1.0  # the baseline explodes at 10753, a little past 1.3x its trained context
    r = find_region([g], 12000, 8192, TH)
    assert r.basis == "changepoint" and r.start == 10752 and r.changepoint_p <= TH.region_alpha
    assert r.gap_after > 0 > r.gap_before
    assert r.text().startswith("positions 10753-11999 (from the gap's changepoint")
    d = r.to_dict()
    assert d["first_position"] == 10753 and d["basis"] == "changepoint"


def test_a_fall_of_the_gap_never_moves_the_start():
    g = _noise(11999, 6)
    g[10752:] -= 1.0  # the method gets worse late: no anomaly there to zoom in on
    r = find_region([g], 12000, 8192, TH)
    assert r.basis == "trained-context" and r.start == 8192 and r.gap_after < r.gap_before


def test_the_rise_must_leave_enough_blocks_after_it():
    g = _noise(8999, 7) - 0.2
    g[8700:] += 2.0  # only ~2 blocks after the rise: too little to judge there
    r = find_region([g], 9000, 8192, TH)
    assert r.start == 8192 and r.basis == "trained-context"


def test_the_region_is_computed_from_the_sample_mean_and_the_shortest_sample():
    g1 = _noise(11999, 8) - 0.25
    g1[10752:] += 1.0
    g2 = g1[:11950] + _noise(11950, 9, 0.1)
    r = find_region([g1, g2], 12000, 8192, TH)
    assert r.basis == "changepoint" and r.start == 10752
    assert find_region([], 12000, 8192, TH).start == 8192
