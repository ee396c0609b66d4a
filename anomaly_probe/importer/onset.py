"""Where the gap starts to change: a flat segment followed by a shifted, possibly sloped one.

Used by the memory verdict of imported logs (does the gap change where latency jumps?); position uses
the permutation-tested split of :mod:`anomaly_probe.hypotheses.curves` instead. A plain mean shift (``stats.mean_shift_changepoint``) puts the split of a ramp in its
middle; this fit finds the onset of both a step and a ramp.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.importer.pair import PairedSample


def binned_gap(pairs: list[PairedSample], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean gap per position bin, pooled over samples.

    Returns
    -------
    starts, means, counts : np.ndarray
        First position of each non-empty bin, the mean gap (nats/token) and the tokens in it, shape (B,).
    """
    pos = np.concatenate([p.position for p in pairs])
    gap = np.concatenate([p.gap for p in pairs])
    b = pos // width
    keys, inv = np.unique(b, return_inverse=True)
    sums = np.bincount(inv, weights=gap)
    counts = np.bincount(inv).astype(np.float64)
    return keys * width, sums / counts, counts


def onset_changepoint(x: np.ndarray, y: np.ndarray, w: np.ndarray | None = None,
                      min_size: int = 2) -> tuple[float | None, float]:
    """Weighted least-squares fit of ``y = a`` before ``k`` and ``a + c + b (x - k)`` from ``k`` on.

    Parameters
    ----------
    x, y : np.ndarray
        Bin positions (increasing) and values, shape (n,).
    w : np.ndarray, optional
        Weights (tokens per bin).
    min_size : int
        Fewest bins on each side.

    Returns
    -------
    onset : float or None
        ``x`` of the first bin of the second segment; None when there are too few bins.
    gain : float
        Fraction of the weighted variance the split model explains (0..1).
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    w = np.ones_like(y) if w is None else np.asarray(w, dtype=np.float64)
    n = y.size
    if n < 2 * min_size + 1:
        return None, 0.0
    sw = np.sqrt(w)
    total = float((w * (y - np.average(y, weights=w)) ** 2).sum())
    best, best_j = np.inf, None
    for j in range(min_size, n - min_size + 1):
        after = (np.arange(n) >= j).astype(np.float64)
        design = np.stack([np.ones(n), after, after * (x - x[j])], axis=1)  # (n, 3)
        coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
        sse = float((w * (y - design @ coef) ** 2).sum())
        if sse < best:
            best, best_j = sse, j
    gain = 1 - best / total if total > 0 else 0.0
    return float(x[best_j]), float(max(gain, 0.0))
