"""Baseline vs method at one length, on the same tokens: the ``comparisons[]`` record and how it is computed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import numpy as np

from anomaly_probe.rundir.records import Record


@dataclass
class Comparison(Record):
    """One ``comparisons[]`` entry.

    Attributes
    ----------
    max_tokens : int
        Sample length (tokens).
    baseline, method : str
        Labels of the two runs.
    num_samples, tokens_scored : int
        Samples and per-token entries compared (after any non-finite cut).
    baseline_ppl, method_ppl : float or None
        exp(mean NLL) of each run over those entries.
    baseline_acc, method_acc : float or None
        Top-1 accuracy (None where a run has no correctness column).
    nll_gap_mean : float or None
        Mean NLL(baseline) - NLL(method), nats/token; > 0: the method looks better.
    acc_diff : float or None
        method_acc - baseline_acc.
    nonfinite_excluded_tokens : int or None
        Entries cut after a NaN/inf (only when some were).
    nll_gap_ci_low, nll_gap_ci_high : float or None
        Block-bootstrap CI of ``nll_gap_mean`` over every compared token (the headline's statistic,
        :class:`~anomaly_probe.stats.thresholds.Thresholds` defaults), nats/token; absent in older runs.
    ci_level : float or None
        Its level (0.95).
    """

    OPTIONAL: ClassVar[frozenset[str]] = frozenset({"nonfinite_excluded_tokens", "nll_gap_ci_low", "nll_gap_ci_high",
                                                    "ci_level"})
    REQUIRED: ClassVar[tuple[str, ...]] = ("max_tokens",)

    max_tokens: int
    baseline: str = ""
    method: str = ""
    num_samples: int = 0
    tokens_scored: int = 0
    baseline_ppl: float | None = None
    method_ppl: float | None = None
    baseline_acc: float | None = None
    method_acc: float | None = None
    nll_gap_mean: float | None = None
    acc_diff: float | None = None
    nonfinite_excluded_tokens: int | None = None
    nll_gap_ci_low: float | None = None
    nll_gap_ci_high: float | None = None
    ci_level: float | None = None
    extra: dict = field(default_factory=dict)


def compare(baseline_label: str, method_label: str, max_tokens: int,
            arrays: Mapping[int, Mapping[str, Mapping[str, np.ndarray | None]]]) -> Comparison:
    """Baseline vs method over all samples at one length, on the same tokens.

    Parameters
    ----------
    baseline_label, method_label : str
        The two runs' labels (keys of ``arrays[sample]``).
    max_tokens : int
        Sample length.
    arrays : mapping
        ``arrays[sample][label]`` holds the run's per-token ``nll`` (T-1,) nats and ``correct``
        (T-1,) bool; ``correct`` may be missing or None (imported logs): the accuracies are then None.

    Non-finite NLL: both runs of a sample are cut at the first NaN/inf entry of either
    (:mod:`anomaly_probe.finite_prefix`); ``nonfinite_excluded_tokens`` counts what was cut.
    """
    from anomaly_probe.finite_prefix import common_cut

    nll: dict[str, list[np.ndarray]] = {"b": [], "m": []}
    correct: dict[str, list[np.ndarray]] | None = {"b": [], "m": []}
    excluded = 0
    for s in sorted(arrays):
        b, m = arrays[s][baseline_label], arrays[s][method_label]
        n = min(len(b["nll"]), len(m["nll"]))
        cut = common_cut([b["nll"][:n], m["nll"][:n]])  # non-finite NLL: both runs cut at the first one
        excluded += 0 if cut is None else n - cut
        n = n if cut is None else cut
        nll["b"].append(b["nll"][:n])
        nll["m"].append(m["nll"][:n])
        if correct is not None and b.get("correct") is not None and m.get("correct") is not None:
            correct["b"].append(b["correct"][:n])
            correct["m"].append(m["correct"][:n])
        else:
            correct = None
    base_nll, meth_nll = np.concatenate(nll["b"]), np.concatenate(nll["m"])
    base_acc = meth_acc = None
    if correct is not None:
        base_acc, meth_acc = _mean(np.concatenate(correct["b"])), _mean(np.concatenate(correct["m"]))
    lo, hi, level = _gap_ci([b - m for b, m in zip(nll["b"], nll["m"])])
    return Comparison(
        max_tokens=max_tokens, baseline=baseline_label, method=method_label, num_samples=len(arrays),
        tokens_scored=int(base_nll.size), baseline_ppl=_ppl(_mean(base_nll)), method_ppl=_ppl(_mean(meth_nll)),
        baseline_acc=base_acc, method_acc=meth_acc, nll_gap_mean=_mean(base_nll - meth_nll),
        acc_diff=None if base_acc is None or meth_acc is None else meth_acc - base_acc,
        nonfinite_excluded_tokens=int(excluded) if excluded else None,
        nll_gap_ci_low=lo, nll_gap_ci_high=hi, ci_level=level,
    )


def _gap_ci(gaps: list[np.ndarray]) -> tuple[float | None, float | None, float | None]:
    """Block-bootstrap CI of the mean per-token gap over the samples ``gaps`` (each (T_s,), nats), the
    way the headline computes it; Nones without tokens or with a non-finite entry."""
    from anomaly_probe.stats.bootstrap import make_blocks, mean_ci
    from anomaly_probe.stats.thresholds import Thresholds

    if not sum(g.size for g in gaps) or not all(np.isfinite(g).all() for g in gaps):
        return None, None, None
    th = Thresholds()
    blocks = make_blocks([np.asarray(g, dtype=np.float64)[:, None] for g in gaps], th.block_tokens)
    _, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    return lo, hi, th.ci_level


def _mean(x: np.ndarray) -> float:
    """Mean as a float; NaN for no entries (written as null)."""
    return float(x.mean()) if x.size else float("nan")


def _ppl(nll_mean: float) -> float:
    if not math.isfinite(nll_mean):
        return float("nan") if math.isnan(nll_mean) else float("inf")
    return math.exp(nll_mean) if nll_mean < 700 else float("inf")
