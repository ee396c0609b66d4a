"""The report's confidence intervals: the judges' block bootstrap (``stats.bootstrap``), never a second one.

Every interval a report shows comes from :func:`anomaly_probe.stats.mean_ci` with the thresholds the
run was judged with (``results.json`` ``thresholds``: block length, resamples, level, fixed seed), and
the gap uses the headline's own function (:func:`anomaly_probe.hypotheses.share.gap_stats`) on the same
tokens (non-finite entries cut as in :mod:`anomaly_probe.finite_prefix`). So the comparisons table and
the headline print the same numbers, and :func:`ci_text` says which interval a table shows.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from anomaly_probe.finite_prefix import common_cut
from anomaly_probe.hypotheses.share import gap_stats
from anomaly_probe.reports import roles
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.stats import describe_ci, make_blocks, mean_ci
from anomaly_probe.stats.thresholds import Thresholds


def run_thresholds(data: RunData) -> Thresholds:
    """The thresholds ``data`` was judged with; fields results.json lacks keep their defaults."""
    saved = data.section("thresholds")
    known = {f.name for f in dataclasses.fields(Thresholds)}
    values = {k: v for k, v in saved.items() if k in known}
    if isinstance(values.get("tolerance_nats"), dict):  # written as a dict, held as pairs (hashable)
        values["tolerance_nats"] = tuple(values["tolerance_nats"].items())
    try:
        return Thresholds(**values)
    except TypeError:
        return Thresholds()


def ci_text(th: Thresholds) -> str:
    """Which interval a table or figure shows, e.g. ``95% block-bootstrap CI (128-token blocks; ...)``."""
    return describe_ci(th.block_tokens, th.n_boot, th.ci_level)


def mean_with_ci(samples: list[np.ndarray], th: Thresholds) -> tuple[float | None, float | None, float | None]:
    """Mean per token over every sample's finite prefix, and its block-bootstrap CI.

    Parameters
    ----------
    samples : list of np.ndarray
        Per sample, a per-token series (e.g. NLL in nats), shape (T_s,); each is cut at its first
        non-finite entry.

    Returns
    -------
    (mean, low, high)
        None where there is no finite token; no interval (None, None) with fewer than 2 blocks.
    """
    cut = [np.asarray(a, dtype=np.float64)[:common_cut([a])] for a in samples]
    cut = [a for a in cut if a.size]
    if not cut:
        return None, None, None
    blocks = make_blocks([a[:, None] for a in cut], th.block_tokens)
    mean, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    if blocks.n_blocks < 2:
        return mean, None, None
    return mean, lo, hi


def paired_gaps(data: RunData, max_tokens: int) -> list[np.ndarray]:
    """Per sample, NLL(baseline) - NLL(method) (nats/token) on the same tokens, cut at the first non-finite
    entry of either run (the headline's rule); samples without both npz files are left out."""
    base = roles.by_length_sample(roles.role_runs(data, "baseline")).get(max_tokens, {})
    meth = roles.by_length_sample(roles.role_runs(data, "method")).get(max_tokens, {})
    out = []
    for s, run in sorted(meth.items()):
        a, b = data.tokens(base.get(s, {})), data.tokens(run)
        if a is None or b is None or "nll" not in a or "nll" not in b:
            continue
        n = min(a["nll"].size, b["nll"].size)
        x, y = np.asarray(a["nll"][:n], dtype=np.float64), np.asarray(b["nll"][:n], dtype=np.float64)
        out.append((x - y)[:common_cut([x, y])])
    return out


def region_start(data: RunData, max_tokens: int) -> tuple[int, str]:
    """The analysis region of a length (``results.json`` ``analysis_regions``): first entry and its text.

    ``(0, "all scored tokens")`` when the run recorded none for that length.
    """
    for r in data.listing("analysis_regions"):
        start = r.get("start_entry")
        if r.get("max_tokens") == max_tokens and isinstance(start, int) and start > 0:
            return start, str(r.get("text") or f"positions {start + 1}-{max_tokens - 1}")
    return 0, "all scored tokens"


def gap_with_ci(gaps: list[np.ndarray], th: Thresholds, start: int = 0) -> dict | None:
    """:func:`~anomaly_probe.hypotheses.share.gap_stats` on entries ``start:`` of every sample, exactly as
    the headline computes it (a sample left empty still counts in the resampling). None without tokens."""
    part = [g[start:] for g in gaps]
    if not sum(g.size for g in part):
        return None
    return gap_stats(part, th)
