"""Binned curves: the numbers behind the report's position figures.

Pure numpy, no plotting. The bands here are per-bin standard errors for drawing; every confidence
interval the report states comes from the judges' block bootstrap (:mod:`anomaly_probe.reports.intervals`).
"""

from __future__ import annotations

import numpy as np

DEFAULT_BINS = 60


def edges_for(lo: float, hi: float, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """Equal-width bin edges covering integer positions ``lo..hi`` inclusive, at most one bin per position.

    Returns
    -------
    np.ndarray
        Shape (n + 1,), float64.
    """
    n = int(max(1, min(n_bins, hi - lo + 1)))
    return np.linspace(lo, hi + 1, n + 1)


def binned(x: np.ndarray, y: np.ndarray, edges: np.ndarray, reduce: str = "mean") -> dict[str, np.ndarray]:
    """Reduce ``y`` over bins of ``x``; non-finite values of ``y`` are ignored.

    Parameters
    ----------
    x, y : np.ndarray
        Shape (N,) each.
    edges : np.ndarray
        Shape (B + 1,), ascending.
    reduce : str
        ``mean`` (also returns ``se``, the standard error of the tokens in the bin), ``max`` or ``min``.

    Returns
    -------
    dict
        ``x`` bin centres (B,), ``y`` reduced values (B,) with NaN for empty bins, ``n`` counts (B,),
        and for ``mean`` ``se`` (B,).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(y) & np.isfinite(x)
    x, y = x[ok], y[ok]
    B = len(edges) - 1
    idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, B - 1)
    n = np.bincount(idx, minlength=B).astype(np.float64)
    out = {"x": (edges[:-1] + edges[1:]) / 2, "n": n}
    with np.errstate(invalid="ignore", divide="ignore"):
        if reduce == "mean":
            s = np.bincount(idx, weights=y, minlength=B)
            s2 = np.bincount(idx, weights=y * y, minlength=B)
            mean = np.where(n > 0, s / np.maximum(n, 1), np.nan)
            var = np.where(n > 1, (s2 - n * mean**2) / np.maximum(n - 1, 1), np.nan)
            out["y"] = mean
            out["se"] = np.sqrt(np.maximum(var, 0)) / np.sqrt(np.maximum(n, 1))
        elif reduce in ("max", "min"):
            fill = -np.inf if reduce == "max" else np.inf
            acc = np.full(B, fill)
            (np.maximum if reduce == "max" else np.minimum).at(acc, idx, y)
            out["y"] = np.where(n > 0, acc, np.nan)
        else:
            raise ValueError(f"reduce must be mean, max or min, not {reduce!r}")
    return out


def finite_list(a) -> list[float | None]:
    """A JSON-friendly list: non-finite values become None."""
    return [float(v) if np.isfinite(v) else None for v in np.asarray(a, dtype=np.float64).ravel()]
