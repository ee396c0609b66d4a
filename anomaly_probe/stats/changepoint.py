"""A single mean-shift changepoint, found from the data (least squares on block means)."""

from __future__ import annotations

import numpy as np


def mean_shift_changepoint(y: np.ndarray, min_size: int = 2) -> tuple[int | None, float]:
    """Split ``y`` into two constant segments minimising the squared error.

    Parameters
    ----------
    y : np.ndarray
        A series, shape (n,), e.g. the NLL gap averaged per block of positions.
    min_size : int
        Smallest segment length.

    Returns
    -------
    index : int or None
        First index of the second segment, or None if ``y`` is too short.
    gain : float
        Fraction of the total sum of squares the split explains (0..1).
    """
    y = np.asarray(y, dtype=float)
    n = y.size
    if n < 2 * min_size:
        return None, 0.0
    total = ((y - y.mean()) ** 2).sum()
    c1, c2 = np.cumsum(y), np.cumsum(y ** 2)
    best, best_k = np.inf, None
    for k in range(min_size, n - min_size + 1):
        left = c2[k - 1] - c1[k - 1] ** 2 / k
        rs, rs2 = c1[-1] - c1[k - 1], c2[-1] - c2[k - 1]
        right = rs2 - rs ** 2 / (n - k)
        if left + right < best:
            best, best_k = left + right, k
    gain = 1 - best / total if total > 0 else 0.0
    return best_k, float(gain)
