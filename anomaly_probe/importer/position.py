"""position from logs: is the gap concentrated past the trained context?

Without the recompute oracle the explained share cannot be measured. The logs still say where the gap
is. Rule (thresholds from :class:`~anomaly_probe.stats.thresholds.Thresholds`):

* ``excess`` = mean gap beyond the trained context (position >= ``trained_context``) - mean gap within;
* estimated share = sum over beyond tokens of (gap - mean gap within) / sum of the gap: the part of the
  gap that would go if the tokens past the trained context behaved like those inside it (what the
  oracle would measure if the gap inside the trained context is what compression alone gives);
* both with block-bootstrap CIs (samples, then blocks of ``block_tokens`` contiguous tokens);
* the gap's onset (:func:`~anomaly_probe.importer.onset.onset_changepoint`) is "at the trained
  context" within ``changepoint_tolerance`` x trained context (or one position bin).

With an anomaly (gap CI above 0): SUPPORTED when the share CI lies above ``support_share``, the excess
CI above 0 and the onset at the trained context; REFUTED when the share CI lies below ``refute_share``;
otherwise INCONCLUSIVE. Without an anomaly: REFUTED when the excess CI lies within
+-``null_effect_nats``, else INCONCLUSIVE. No position past the trained context: REFUTED. Too little
data on either side, or no trained context: INCONCLUSIVE.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.importer.onset import binned_gap, onset_changepoint
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.stats import make_blocks, resample_sums
from anomaly_probe.stats.bootstrap import percentile_ci
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

NAME = "position"
SETTLE = "`anomaly-probe run --hypothesis position --model MODEL` scores the recompute oracle and measures the share"


def judge_position(pairs: list[PairedSample], trained_context: int | None, th: Thresholds) -> Verdict:
    """The position verdict from paired per-token logs (see the module docstring for the rule)."""
    width = max(1, th.block_tokens // 4)
    starts, means, counts = binned_gap(pairs, width)
    onset, gain = onset_changepoint(starts, means, counts)
    n_tokens = sum(p.n for p in pairs)
    evidence: dict = {"trained_context": trained_context, "changepoint": onset, "changepoint_tokens": onset,
                      "changepoint_gain": gain, "changepoint_method": "onset of a flat-then-shifted fit on "
                      f"{width}-token bins", "oracle": "not available from logs",
                      "max_position": int(max(p.position.max() for p in pairs))}
    blocks = make_blocks([p.gap[:, None] for p in pairs], th.block_tokens)
    n = {"tokens": blocks.n_tokens, "blocks": blocks.n_blocks, "samples": blocks.n_samples}
    if n_tokens < th.min_tokens or blocks.n_blocks < th.min_blocks:
        return Verdict(NAME, "inconclusive", n=n, evidence=evidence,
                       message=f"too little data ({n_tokens} tokens in {blocks.n_blocks} blocks; need >= "
                               f"{th.min_tokens} tokens and >= {th.min_blocks} blocks).")
    if trained_context is None:
        return Verdict(NAME, "inconclusive", n=n, evidence=evidence,
                       message=f"The trained context is unknown: pass --trained-context N or --model-config. The gap "
                               f"changes at position {onset:g}." if onset is not None else
                               "The trained context is unknown: pass --trained-context N or --model-config.")
    if evidence["max_position"] < trained_context:
        return Verdict(NAME, "refuted", n=n, evidence=evidence,
                       message=f"No scored position reaches the trained context ({evidence['max_position']} < "
                               f"{trained_context}): positions past it cannot cause this gap.")
    beyond = [(p.position >= trained_context).astype(np.float64) for p in pairs]
    n_b = int(sum(b.sum() for b in beyond))
    if n_b < th.block_tokens or n_tokens - n_b < th.block_tokens:
        return Verdict(NAME, "inconclusive", n=n, evidence=evidence,
                       message=f"Too few tokens on one side of the trained context ({n_tokens - n_b} within, {n_b} "
                               f"beyond; need >= {th.block_tokens} each). {SETTLE}.")
    stats = _split_stats(pairs, beyond, th)
    evidence.update({k: v for k, v in stats.items() if k != "figure"})
    evidence["figures"] = [stats["figure"]]
    near = onset is not None and abs(onset - trained_context) <= max(th.changepoint_tolerance * trained_context, width)
    evidence["changepoint_near_trained_context"] = near
    evidence["changepoint_over_trained_context"] = onset / trained_context if onset is not None else None
    share, lo, hi = stats["estimated_share"], *stats["estimated_share_ci"]
    ex, ex_lo, ex_hi = stats["excess_beyond_nats"], *stats["excess_ci"]
    where = (f"The gap is {stats['gap_within_nats']:+.3f} nats/token within the trained context ({trained_context}) "
             f"and {stats['gap_beyond_nats']:+.3f} beyond it (excess {ex:+.3f}, 95% CI {ex_lo:+.3f}..{ex_hi:+.3f}); "
             + (f"it changes at position {onset:g} ({onset / trained_context:.2f} x the trained context)."
                if onset is not None else "too few position bins to locate where it changes."))
    common = dict(explained_share=share, ci_low=lo, ci_high=hi, effect_size=ex, p_value=stats["p_value"], n=n,
                  effect_label="mean gap beyond - within the trained context (nats/token)", evidence=evidence)
    status, lead = _status(stats, near, th)
    return Verdict(NAME, status, message=f"{lead} {where} Share estimated from the logs, without the oracle; {SETTLE}.",
                   **common)


def _status(stats: dict, near: bool, th: Thresholds) -> tuple[str, str]:
    """The rule of the module docstring: status and its leading sentence."""
    share, (lo, hi) = stats["estimated_share"], stats["estimated_share_ci"]
    ex_lo, ex_hi = stats["excess_ci"]
    est = f"est. share {share:.2f} (95% CI {lo:.2f}..{hi:.2f})"
    if stats["gap_ci"][0] > 0:
        if lo > th.support_share and ex_lo > 0 and near:
            return "supported", f"The gap is concentrated past the trained context: {est}."
        if hi < th.refute_share:
            return "refuted", f"The gap is not concentrated past the trained context: {est}."
        if lo > th.support_share and ex_lo > 0:
            return "inconclusive", f"The gap is concentrated past the trained context ({est}) but does not start there."
        return "inconclusive", f"The {est} lies between the thresholds."
    if -th.null_effect_nats <= ex_lo and ex_hi <= th.null_effect_nats:
        return "refuted", "No anomaly to explain, and the gap is the same on both sides of the trained context."
    return "inconclusive", "No anomaly to explain (gap CI includes 0), but the gap differs across the trained context."


def _split_stats(pairs: list[PairedSample], beyond: list[np.ndarray], th: Thresholds) -> dict:
    """Gap within / beyond, the excess and the estimated share with block-bootstrap CIs."""
    series = []
    for p, b in zip(pairs, beyond):
        g = p.gap
        series.append(np.stack([g * b, b, g * (1 - b), 1 - b], axis=1))  # (n, 4)
    blocks = make_blocks(series, th.block_tokens)
    total = blocks.sums.sum(axis=(0, 1))
    sums, _ = resample_sums(blocks, th.n_boot, seed=5)
    point = _stats(total[None, :])
    boot = _stats(sums)
    ci = {k: percentile_ci(v, th.ci_level) for k, v in boot.items()}
    ex_boot = boot["excess"][np.isfinite(boot["excess"])]
    # two-sided bootstrap p-value of "no excess", floored at 1 / resamples (the bootstrap cannot resolve less)
    p = (float(min(1.0, max(2 * min((ex_boot <= 0).mean(), (ex_boot >= 0).mean()), 1 / ex_boot.size)))
         if ex_boot.size else float("nan"))
    figure = {"id": "import-position-split", "kind": "bar", "title": "Gap within vs beyond the trained context",
              "xlabel": "positions", "ylabel": "NLL gap, baseline - method (nats/token)",
              "categories": ["within", "beyond"], "hlines": [{"y": 0.0, "label": "no gap"}],
              "series": [{"name": "mean gap, 95% CI", "y": [float(point["within"][0]), float(point["beyond"][0])],
                          "ci_low": [ci["within"][0], ci["beyond"][0]], "ci_high": [ci["within"][1], ci["beyond"][1]],
                          "color_key": "gap"}]}
    return {"gap_within_nats": float(point["within"][0]), "gap_within_ci": list(ci["within"]),
            "gap_beyond_nats": float(point["beyond"][0]), "gap_beyond_ci": list(ci["beyond"]),
            "excess_beyond_nats": float(point["excess"][0]), "excess_ci": list(ci["excess"]),
            "estimated_share": float(point["share"][0]), "estimated_share_ci": list(ci["share"]),
            "gap_nats": float(point["gap"][0]), "gap_ci": list(ci["gap"]), "p_value": p,
            "tokens_within": int(total[3]), "tokens_beyond": int(total[1]), "figure": figure}


def _stats(s: np.ndarray) -> dict[str, np.ndarray]:
    """Per row of sums (gap*beyond, beyond, gap*within, within): means, excess, share, overall gap."""
    with np.errstate(divide="ignore", invalid="ignore"):
        beyond = s[:, 0] / s[:, 1]
        within = s[:, 2] / s[:, 3]
        gap_total = s[:, 0] + s[:, 2]
        share = (s[:, 0] - s[:, 1] * within) / gap_total
        gap = gap_total / (s[:, 1] + s[:, 3])
    return {"beyond": beyond, "within": within, "excess": beyond - within, "share": share, "gap": gap}
