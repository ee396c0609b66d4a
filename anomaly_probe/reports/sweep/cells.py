"""Per-cell statistics: baseline vs method PPL and accuracy with CIs, and the gap (all tokens, the cell's
headline region and past the trained context), each from the judges' block bootstrap
(:mod:`anomaly_probe.reports.intervals`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from anomaly_probe.finite_prefix import common_cut
from anomaly_probe.reports import intervals, roles
from anomaly_probe.reports.sweep.data import CellData
from anomaly_probe.reports.sweep.region import HeadlineRegion, headline_region

Interval = tuple  # (mean, low, high); low/high None without an interval


@dataclass
class CellStats:
    """One cell at one sample length.

    Attributes
    ----------
    gap : Interval
        NLL(baseline) - NLL(method), nats/token over every scored token (> 0: the method looks better).
    gap_past : Interval or None
        The same on the entries that score positions past the trained context (None: none there).
    base_ppl, meth_ppl : Interval
        exp of the mean NLL and of its CI bounds.
    base_acc, meth_acc, acc_diff : Interval or None
        Top-1 accuracy (fraction) and method minus baseline, paired on the same tokens.
    region : HeadlineRegion or None
        The tokens the cell's own run computed its headline on (``results.json`` ``analysis_regions``).
    gap_region : Interval or None
        The gap on those tokens: the cell's headline gap, same bootstrap (None: no token there).
    """

    cell: CellData
    max_tokens: int
    num_samples: int
    tokens: int
    trained_context: int | None
    parameters: int | None
    method: str
    gap: Interval
    gap_past: Interval | None
    base_ppl: Interval
    meth_ppl: Interval
    base_acc: Interval | None
    meth_acc: Interval | None
    acc_diff: Interval | None
    region: HeadlineRegion | None = None
    gap_region: Interval | None = None

    @property
    def gap_headline(self) -> Interval:
        """The gap the cell's headline states: in its headline region, else over all scored tokens."""
        return self.gap_region if self.region is not None and self.gap_region is not None else self.gap

    @property
    def ratio(self) -> float | None:
        """Sample length / trained context."""
        return self.max_tokens / self.trained_context if self.trained_context else None


def cell_stats(cell: CellData) -> list[CellStats]:
    """Statistics of every length the cell's run compared (a sweep cell has one)."""
    data = cell.run
    if data is None:
        return []
    th = intervals.run_thresholds(data)
    ctx = data.trained_context
    params = data.section("model").get("num_parameters")
    out = []
    for L, pairs in _pairs(data).items():
        if not pairs:
            continue
        nll_b = [b["nll"] for b, _ in pairs]
        nll_m = [m["nll"] for _, m in pairs]
        gaps = [b - m for b, m in zip(nll_b, nll_m)]
        past = [g[ctx - 1:] for g in gaps] if ctx else []  # entry i scores position i + 1
        region = headline_region(data, L)
        out.append(CellStats(
            cell=cell, max_tokens=L, num_samples=len(pairs), tokens=int(sum(g.size for g in gaps)),
            trained_context=ctx, parameters=params if isinstance(params, int) else None,
            method=roles.method_label(data) or "method", gap=_gap(gaps, th),
            gap_past=_gap(past, th) if sum(p.size for p in past) else None,
            base_ppl=_exp(intervals.mean_with_ci(nll_b, th)), meth_ppl=_exp(intervals.mean_with_ci(nll_m, th)),
            base_acc=_acc([b.get("correct") for b, _ in pairs], th),
            meth_acc=_acc([m.get("correct") for _, m in pairs], th),
            acc_diff=_acc_diff(pairs, th), region=region, gap_region=_gap(gaps, th, region.start)))
    return out


def _pairs(data) -> dict[int, list[tuple[dict, dict]]]:
    """Per length, per sample: the baseline's and the method's arrays on the same tokens (both runs cut at
    the first non-finite NLL of either, as the headline does)."""
    base = roles.by_length_sample(roles.role_runs(data, "baseline"))
    meth = roles.by_length_sample(roles.role_runs(data, "method"))
    out: dict[int, list] = {}
    for L in sorted(set(base) & set(meth)):
        out[L] = []
        for s in sorted(set(base[L]) & set(meth[L])):
            a, b = data.tokens(base[L][s]), data.tokens(meth[L][s])
            if a is None or b is None or "nll" not in a or "nll" not in b:
                continue
            n = min(a["nll"].size, b["nll"].size)
            x, y = np.asarray(a["nll"][:n], np.float64), np.asarray(b["nll"][:n], np.float64)
            n = common_cut([x, y])
            out[L].append(({"nll": x[:n], "correct": _cut(a.get("correct"), n)},
                           {"nll": y[:n], "correct": _cut(b.get("correct"), n)}))
    return out


def _cut(arr, n: int):
    return None if arr is None else np.asarray(arr[:n], dtype=np.float64)


def _gap(gaps: list[np.ndarray], th, start: int = 0) -> Interval:
    stats = intervals.gap_with_ci([g for g in gaps], th, start)
    if stats is None:
        return (None, None, None)
    return (stats["mean"], stats["ci_low"], stats["ci_high"])


def _exp(iv: Interval) -> Interval:
    return tuple(None if v is None else (math.exp(v) if v < 700 else math.inf) for v in iv)


def _acc(correct: list, th) -> Interval | None:
    if not correct or any(c is None for c in correct):
        return None
    return intervals.mean_with_ci(correct, th)


def _acc_diff(pairs: list, th) -> Interval | None:
    if any(b["correct"] is None or m["correct"] is None for b, m in pairs):
        return None
    return intervals.mean_with_ci([m["correct"] - b["correct"] for b, m in pairs], th)


def beyond_noise(iv: Interval | None, better: str, worse: str) -> str:
    """``better`` when the interval lies above 0, ``worse`` below, ``within noise`` when it holds 0."""
    if iv is None or iv[0] is None:
        return "n/a"
    _, lo, hi = iv
    if lo is None or hi is None:
        return "no interval (too few tokens)"
    if lo > 0:
        return better
    if hi < 0:
        return worse
    return "within noise"
