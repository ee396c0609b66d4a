"""The shared judgement: how much of the gap does an intervention remove?

``gap`` = NLL(baseline) - NLL(method) per token (> 0: the method looks better). An intervention's
``effect`` is the per-token part of the gap it removes, so the explained share is
``mean(effect) / mean(gap)`` on the same tokens, with a block-bootstrap CI (both resampled together).
"""

from __future__ import annotations

import math

import numpy as np

from anomaly_probe.stats import make_blocks, mean_ci, paired_block_test, ratio_ci
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict


def _f(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"


def gap_stats(gap: list[np.ndarray], th: Thresholds) -> dict:
    """Mean gap (nats/token) with its CI, and whether it is positive beyond noise."""
    blocks = make_blocks([g[:, None] for g in gap], th.block_tokens)
    mean, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    return {"mean": mean, "ci_low": lo, "ci_high": hi, "anomaly": bool(lo > 0), "tokens": blocks.n_tokens,
            "blocks": blocks.n_blocks, "samples": blocks.n_samples}


def judge_share(hypothesis: str, gap: list[np.ndarray], effect: list[np.ndarray], th: Thresholds, *,
                what: str, effect_label: str = "mean NLL change removed by the intervention (nats/token)",
                evidence: dict | None = None, region: str = "") -> Verdict:
    """Verdict from the explained share of the gap.

    Parameters
    ----------
    gap, effect : list of np.ndarray
        Per sample, per-token series of equal length.
    what : str
        The intervention in a few words ("attention in fp32"), used in the sentence.

    Notes
    -----
    With an anomaly (gap CI above 0): SUPPORTED if the share CI lies above ``support_share``, REFUTED
    if it lies below ``refute_share``, otherwise INCONCLUSIVE. Without one the share is undefined; the
    hypothesis is REFUTED when its intervention changes NLL by less than ``null_effect_nats`` (CI
    inside +-tolerance): it cannot create an effect here. Too little data is INCONCLUSIVE.
    """
    evidence = dict(evidence or {})
    where = f" on {region}" if region else ""
    evidence["analysis_region"] = region or "all scored tokens"
    series = [np.stack([e, g], axis=1) for e, g in zip(effect, gap)]
    blocks = make_blocks(series, th.block_tokens)
    n = {"tokens": blocks.n_tokens, "blocks": blocks.n_blocks, "samples": blocks.n_samples}
    if blocks.n_tokens < th.min_tokens or blocks.n_blocks < th.min_blocks:
        return Verdict(hypothesis, "inconclusive", n=n, evidence=evidence,
                       message=f"too little data{where} ({n['tokens']} tokens in {n['blocks']} blocks; need "
                               f">= {th.min_tokens} tokens and >= {th.min_blocks} blocks): score longer or more samples.")
    eff, eff_lo, eff_hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    gap_mean, gap_lo, gap_hi = mean_ci(blocks, 1, th.n_boot, th.ci_level, seed=1)
    d, p = paired_block_test(blocks, 0)
    evidence.update({"gap_mean_nats": gap_mean, "gap_ci": [gap_lo, gap_hi], "effect_mean_nats": eff,
                     "effect_ci": [eff_lo, eff_hi], "cohens_d_blocks": d})
    common = dict(effect_size=eff, effect_label=effect_label, p_value=p, n=n, evidence=evidence)
    if gap_lo <= 0:
        if -th.null_effect_nats <= eff_lo and eff_hi <= th.null_effect_nats:
            status, verb = "refuted", "changes NLL by less than the null tolerance"
        else:
            status, verb = "inconclusive", "changes NLL"
        return Verdict(hypothesis, status, **common,
                       message=f"No anomaly to explain{where} (gap {gap_mean:+.3f} nats/token, CI {_f(gap_lo)}..{_f(gap_hi)}); "
                               f"{what} {verb} ({eff:+.4f}, CI {eff_lo:+.4f}..{eff_hi:+.4f}).")
    share, lo, hi = ratio_ci(blocks, 0, 1, th.n_boot, th.ci_level, seed=2)
    if lo > th.support_share:
        status = "supported"
    elif hi < th.refute_share:
        status = "refuted"
    else:
        status = "inconclusive"
    return Verdict(hypothesis, status, explained_share=share, ci_low=lo, ci_high=hi, **common,
                   message=f"{what[0].upper() + what[1:]} removes {_f(share)} of the {gap_mean:.3f} nats/token gap "
                           f"(95% CI {_f(lo)}..{_f(hi)}){where}.")


def binned(values: np.ndarray, positions: np.ndarray, edges: np.ndarray) -> list[float]:
    """Mean of ``values`` in each position bin (NaN-free: empty bins give None)."""
    idx = np.digitize(positions, edges[1:-1])
    out = []
    for b in range(len(edges) - 1):
        sel = values[idx == b]
        out.append(float(sel.mean()) if sel.size else None)
    return out


def wide_range(values: list[float | None]) -> bool:
    """True when the positive finite ``values`` span more than a factor of 10 (plot them on a log scale)."""
    finite = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    return bool(finite) and max(finite) / min(finite) > 10


def position_edges(n: int, bins: int = 60) -> np.ndarray:
    return np.unique(np.linspace(0, n, bins + 1).astype(int))
