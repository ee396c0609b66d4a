"""A single mean-shift changepoint, found from the data (least squares on block means), and its test."""

from __future__ import annotations

import numpy as np


PERMUTATION_CHUNK = 2**20
"""Values permuted per step of :func:`changepoint_test` (a million tokens are 7813 block means; all 999
orderings at once took ~0.5 GB). Consecutive steps continue one random stream: the p-value is the same."""


def _split_sse(y: np.ndarray, min_left: int, min_right: int) -> tuple[np.ndarray, np.ndarray]:
    """Best split of every row of ``y`` (P, n): first index of the right segment and the gain (P,)."""
    n = y.shape[1]
    c1, c2 = np.cumsum(y, axis=1), np.cumsum(y ** 2, axis=1)  # (P, n)
    k = np.arange(min_left, n - min_right + 1)  # candidate first indices of the right segment, (K,)
    left = c2[:, k - 1] - c1[:, k - 1] ** 2 / k  # (P, K)
    rs, rs2 = c1[:, -1:] - c1[:, k - 1], c2[:, -1:] - c2[:, k - 1]
    right = rs2 - rs ** 2 / (n - k)
    sse = left + right  # (P, K)
    best = np.argmin(sse, axis=1)  # (P,)
    total = ((y - y.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)  # (P,)
    best_sse = sse[np.arange(y.shape[0]), best]
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.where(total > 0, 1 - best_sse / total, 0.0)
    return k[best], gain


def mean_shift_changepoint(y: np.ndarray, min_size: int = 2, min_right: int | None = None) -> tuple[int | None, float]:
    """Split ``y`` into two constant segments minimising the squared error.

    Parameters
    ----------
    y : np.ndarray
        A series, shape (n,), e.g. the NLL gap averaged per block of positions.
    min_size : int
        Smallest segment length (both segments unless ``min_right`` is given).
    min_right : int, optional
        Smallest length of the second segment.

    Returns
    -------
    index : int or None
        First index of the second segment, or None if ``y`` is too short.
    gain : float
        Fraction of the total sum of squares the split explains (0..1).
    """
    y = np.asarray(y, dtype=float)
    min_right = min_size if min_right is None else min_right
    if y.size < min_size + min_right:
        return None, 0.0
    k, gain = _split_sse(y[None, :], min_size, min_right)
    return int(k[0]), float(gain[0])


def changepoint_test(y: np.ndarray, min_size: int = 2, min_right: int | None = None, n_perm: int = 999,
                     seed: int = 0) -> tuple[int | None, float, float]:
    """The best mean-shift split of ``y`` and a permutation p-value for its gain.

    The null hypothesis is "no level shift": the block means are exchangeable. The p-value is the
    fraction of random orderings of ``y`` whose best split explains at least as much variance
    (``(1 + hits) / (1 + n_perm)``). Block means of neighbouring blocks are still somewhat correlated,
    which makes the test liberal; callers use a small alpha.

    Returns
    -------
    index : int or None
        First index of the second segment (None if ``y`` is too short).
    gain : float
        Fraction of the total sum of squares the split explains.
    p_value : float
        Permutation p-value of the gain (1.0 when there is no split).
    """
    y = np.asarray(y, dtype=float)
    min_right = min_size if min_right is None else min_right
    k, gain = mean_shift_changepoint(y, min_size, min_right)
    if k is None or gain <= 0:
        return k, gain, 1.0
    rng = np.random.default_rng(seed)
    hits = 0
    step = max(1, PERMUTATION_CHUNK // y.size)  # orderings per step: bounds memory, not the numbers
    for lo in range(0, n_perm, step):
        perms = rng.permuted(np.broadcast_to(y, (min(step, n_perm - lo), y.size)), axis=1)  # (n, len(y))
        hits += int(np.sum(_split_sse(perms, min_size, min_right)[1] >= gain - 1e-12))
    return k, gain, float((1 + hits) / (1 + n_perm))
