"""The statistics of a degradation curve: where the gap rises, and the gap on either side of a boundary.

Pure numpy, no model and no torch: ``run`` (the position experiment) and ``import`` (logs) use the
same functions, so "a significant rise" means the same thing in both, and the same as in the
analysis region (:mod:`anomaly_probe.hypotheses.region`): the gap averaged per ``block_tokens``
positions, split at its best single mean shift (:func:`~anomaly_probe.stats.changepoint_test`), a
rise (second segment higher) with a block-permutation p-value <= ``region_alpha``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomaly_probe.stats import changepoint_test, make_blocks, resample_sums
from anomaly_probe.stats.bootstrap import percentile_ci
from anomaly_probe.stats.thresholds import Thresholds


@dataclass(frozen=True)
class Curve:
    """One sample's per-token series on the same tokens, shape (n,) each.

    Attributes
    ----------
    position : np.ndarray
        Index of the scored token (``run``: entry + 1; the query sits one position before it), increasing.
    gap : np.ndarray
        NLL(baseline) - NLL(method), nats/token (> 0: the method looks better).
    baseline : np.ndarray or None
        NLL of the baseline (dense cache), nats/token, when known.
    """

    position: np.ndarray
    gap: np.ndarray
    baseline: np.ndarray | None = None


@dataclass(frozen=True)
class Rise:
    """The best single mean shift of the block-mean gap over all positions.

    Attributes
    ----------
    onset : int or None
        First position of the second segment (None: too few blocks to split).
    p_value : float
        Block-permutation p-value of the split's explained variance (1.0 without a split).
    before, after : float or None
        Mean gap of the block means before / from the onset (nats/token).
    significant : bool
        The gap *rises* there (``after > before``) with ``p_value <= region_alpha``.
    blocks_after : int
        Position blocks from the onset to the end.
    baseline_before, baseline_after : float or None
        The baseline's mean NLL before / from the onset (pooled tokens), when the curves carry it.
    """

    onset: int | None
    p_value: float
    before: float | None
    after: float | None
    significant: bool
    blocks_after: int
    baseline_before: float | None = None
    baseline_after: float | None = None

    @property
    def baseline_rises(self) -> bool | None:
        """Whether the dense model's own NLL is higher from the onset on (None when unknown)."""
        if self.baseline_before is None or self.baseline_after is None:
            return None
        return self.baseline_after > self.baseline_before


def binned(curves: list[Curve], width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Pooled means per position block of ``width`` tokens, counted from the first position.

    Blocks with fewer than half the median block's tokens (a trailing partial block, holes of an
    aligned log) are dropped: their mean is too noisy to split on.

    Returns
    -------
    starts : np.ndarray
        First position of each kept block, shape (B,).
    gap : np.ndarray
        Mean gap per block (nats/token), shape (B,).
    baseline : np.ndarray or None
        Mean baseline NLL per block, shape (B,), when every curve carries it.
    counts : np.ndarray
        Tokens per block (all samples), shape (B,).
    """
    pos = np.concatenate([c.position for c in curves]).astype(np.int64)
    p0 = int(pos.min())
    keys, inv = np.unique((pos - p0) // width, return_inverse=True)
    counts = np.bincount(inv).astype(np.float64)
    gap = np.bincount(inv, weights=np.concatenate([c.gap for c in curves])) / counts
    base = None
    if all(c.baseline is not None for c in curves):
        base = np.bincount(inv, weights=np.concatenate([c.baseline for c in curves])) / counts
    keep = counts >= 0.5 * np.median(counts)
    return p0 + keys[keep] * width, gap[keep], None if base is None else base[keep], counts[keep]


def find_rise(curves: list[Curve], th: Thresholds) -> Rise:
    """The gap's best split over all positions and whether it is a significant rise.

    Each side keeps at least 2 blocks (``min_size``), so a break near the end can still be located;
    the permutation test takes the search over every split into account.
    """
    starts, gap, base, counts = binned(curves, th.block_tokens)
    k, _, p = changepoint_test(gap, min_size=2, min_right=2, n_perm=th.region_permutations)
    if k is None:
        return Rise(None, 1.0, None, None, False, 0)
    before, after = float(gap[:k].mean()), float(gap[k:].mean())
    b_before = b_after = None
    if base is not None:
        b_before = float(np.average(base[:k], weights=counts[:k]))
        b_after = float(np.average(base[k:], weights=counts[k:]))
    return Rise(int(starts[k]), float(p), before, after, bool(after > before and p <= th.region_alpha),
                int(gap.size - k), b_before, b_after)


def split_stats(curves: list[Curve], within_end: int, region_start: int, th: Thresholds) -> dict:
    """The gap inside a boundary and in a region after it, with block-bootstrap CIs.

    Parameters
    ----------
    within_end : int
        Positions ``<= within_end`` are "within" (inside the trained context).
    region_start : int
        Positions ``>= region_start`` are the region (past the trained context, or from the rise);
        positions in between belong to neither.

    Returns
    -------
    dict
        ``gap_within_nats``, ``gap_region_nats``, ``excess_nats`` (region - within) and
        ``estimated_share`` (excess / region gap: the part of the region's gap that would go if its
        tokens behaved like those within), each with a ``*_ci`` [low, high]; ``p_value`` (two-sided
        bootstrap p of "no excess", floored at 1 / resamples); ``tokens_within``, ``tokens_region``.
    """
    series = []
    for c in curves:
        w = (c.position <= within_end).astype(np.float64)
        r = (c.position >= region_start).astype(np.float64)
        series.append(np.stack([c.gap * r, r, c.gap * w, w], axis=1))  # (n, 4)
    blocks = make_blocks(series, th.block_tokens)
    total = blocks.sums.sum(axis=(0, 1))
    sums, _ = resample_sums(blocks, th.n_boot, seed=5)
    point, boot = _stats(total[None, :]), _stats(sums)
    ci = {k: list(percentile_ci(v, th.ci_level)) for k, v in boot.items()}
    ex = boot["excess"][np.isfinite(boot["excess"])]
    p = (float(min(1.0, max(2 * min((ex <= 0).mean(), (ex >= 0).mean()), 1 / ex.size))) if ex.size else float("nan"))
    return {"gap_within_nats": float(point["within"][0]), "gap_within_ci": ci["within"],
            "gap_region_nats": float(point["region"][0]), "gap_region_ci": ci["region"],
            "excess_nats": float(point["excess"][0]), "excess_ci": ci["excess"],
            "estimated_share": float(point["share"][0]), "estimated_share_ci": ci["share"], "p_value": p,
            "tokens_within": int(total[3]), "tokens_region": int(total[1])}


def _stats(s: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of sums (gap*region, region, gap*within, within): the means, the excess and the share."""
    with np.errstate(divide="ignore", invalid="ignore"):
        region = s[:, 0] / s[:, 1]
        within = s[:, 2] / s[:, 3]
        excess = region - within
        share = excess / region
    return {"region": region, "within": within, "excess": excess, "share": share}
