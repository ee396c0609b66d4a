"""Where the statistics are computed: the analysis region of one length, shared by every judge.

An anomaly of a compressed cache is usually local: the seed's appears at 5000 tokens and not at 1000,
and a dense baseline fails only once its positions leave the trained context (SmolLM2 tolerates ~1.3x
its 8192 before its NLL climbs). Averaging the gap over tokens where nothing happens dilutes it into
noise. The rule, the same for every model and fixed before any judge runs:

1. **Pre-specified start.** When the samples reach past the trained context, the region starts there
   (entry ``trained_context`` scores the first position past it); otherwise it is every scored token.
2. **Data-driven refinement.** Inside that region, the sample-mean gap (baseline - method) is averaged
   per block of ``block_tokens`` and split at its best single mean shift (at least ``min_blocks``
   blocks after the split). If the gap *rises* there and a block-permutation test of the split's
   explained variance gives p <= ``region_alpha``, the region starts at the changepoint instead.

The refinement only ever shrinks the region towards the end, and only to where the anomaly is. It
uses the baseline and method runs only, never an intervention, so it cannot favour one hypothesis;
choosing the tokens where the gap is largest does bias the *gap's* own CI upwards, so the headline
says when the region came from the data (see docs/HYPOTHESES.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anomaly_probe.stats import changepoint_test
from anomaly_probe.stats.thresholds import Thresholds


@dataclass(frozen=True)
class AnalysisRegion:
    """The per-token entries ``start:`` that every judge of one length uses.

    Attributes
    ----------
    start : int
        First per-token entry (entry i scores position i + 1).
    basis : str
        ``"all"`` (every scored token), ``"trained-context"`` (past the trained context) or
        ``"changepoint"`` (from a significant rise of the gap).
    max_tokens, trained_context : int
        The length and the model's trained context.
    changepoint : int or None
        Entry where the best split of the gap puts its second segment (whether or not it was used).
    changepoint_p : float or None
        Its permutation p-value.
    gap_before, gap_after : float or None
        Mean gap (nats/token) before and after that split, inside the pre-specified region.
    """

    start: int
    basis: str
    max_tokens: int
    trained_context: int
    changepoint: int | None = None
    changepoint_p: float | None = None
    gap_before: float | None = None
    gap_after: float | None = None

    def text(self) -> str:
        """Where the statistics were computed, for messages and the headline."""
        last = self.max_tokens - 1
        if self.basis == "all":
            return "all scored tokens"
        if self.basis == "trained-context":
            return f"positions {self.start + 1}-{last} (past the trained context {self.trained_context})"
        return (f"positions {self.start + 1}-{last} (from the gap's changepoint, p={self.changepoint_p:.3f}; "
                f"trained context {self.trained_context})")

    def to_dict(self) -> dict:
        return {"max_tokens": self.max_tokens, "start_entry": self.start, "first_position": self.start + 1,
                "basis": self.basis, "trained_context": self.trained_context, "changepoint_entry": self.changepoint,
                "changepoint_p": self.changepoint_p, "gap_before": self.gap_before, "gap_after": self.gap_after,
                "text": self.text()}


def prespecified_start(max_tokens: int, trained_context: int) -> int:
    """Entries scoring positions past the trained context if the sample reaches past it, else 0."""
    return trained_context if max_tokens - 1 > trained_context else 0


def find_region(gaps: list[np.ndarray], max_tokens: int, trained_context: int, th: Thresholds) -> AnalysisRegion:
    """The analysis region of one length from the per-sample gap series (baseline - method).

    Parameters
    ----------
    gaps : list of np.ndarray
        Per sample, the per-token gap over all scored entries, shape (T_s,) (finite prefix only).
    max_tokens, trained_context : int
        The length and the model's trained context.
    th : Thresholds
        ``block_tokens``, ``min_blocks``, ``region_alpha`` and ``region_permutations`` are used.
    """
    pre = prespecified_start(max_tokens, trained_context)
    basis = "trained-context" if pre else "all"
    region = AnalysisRegion(pre, basis, max_tokens, trained_context)
    gaps = [np.asarray(g, dtype=float) for g in gaps if len(g)]
    if not gaps:
        return region
    n = min(len(g) for g in gaps)
    mean_gap = np.mean([g[pre:n] for g in gaps], axis=0)  # (n - pre,) averaged over samples
    nb = mean_gap.size // th.block_tokens
    if nb < 2 + th.min_blocks:
        return region
    block_gap = mean_gap[: nb * th.block_tokens].reshape(nb, th.block_tokens).mean(axis=1)  # (nb,)
    k, _, p = changepoint_test(block_gap, min_size=2, min_right=th.min_blocks, n_perm=th.region_permutations)
    if k is None:
        return region
    before, after = float(block_gap[:k].mean()), float(block_gap[k:].mean())
    cp = pre + k * th.block_tokens
    if after > before and p <= th.region_alpha:
        return AnalysisRegion(cp, "changepoint", max_tokens, trained_context, cp, p, before, after)
    return AnalysisRegion(pre, basis, max_tokens, trained_context, cp, p, before, after)
