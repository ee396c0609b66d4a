"""Is the gap where positions past the trained context would put it? The location judge of position.

Pure function of the per-token curves (no oracle, no model), used as the whole position verdict of
``import`` and as the location evidence of ``run`` (whose status comes from the recompute oracle).
Why the rule is what it is: docs/HYPOTHESES.md, "Where the gap rises".

Definitions (thresholds from :class:`~anomaly_probe.stats.thresholds.Thresholds`, no model named):

* **onset**: the gap's best single mean shift over all positions (:func:`~.curves.find_rise`); a
  *significant rise* when the gap is higher after it and its permutation p <= ``region_alpha``.
* **within**: positions <= the trained context. **region**: from the onset when it is a significant
  rise at or after the trained context with >= ``min_blocks`` blocks after it, else past the trained
  context (the same rule as ``run``'s analysis region).
* **at or after** the trained context: onset >= trained context - one block (onsets are located to a
  block). **Well before**: onset < (1 - ``changepoint_tolerance``) x trained context.
* **concentrated** (:func:`concentrated`): the region's gap CI above 0, the excess (region - within)
  CI above 0, the estimated share (excess / region gap) CI above ``support_share``, and the gap within
  inside +-``null_effect_nats`` or at most ``support_share`` x the excess' CI low.
* **break inside the claimed context**: a significant rise before the trained context, with
  >= ``min_blocks`` blocks after it, the gap concentrated after it (the rule above with the onset as
  the trained context) and, when the baseline NLL is known, the baseline's own NLL higher after it.
  The config's number is then doubted, not the cause: "the dense model breaks at ~N".

Status: SUPPORTED when concentrated and the onset is a rise at or after the trained context (the
best split locates it; the excess CI already says the rise is real, so a short log whose permutation
test cannot reach ``region_alpha`` is not held back). Otherwise a break inside the claimed context
gives INCONCLUSIVE with the finding (never REFUTED). REFUTED when no position passes the trained
context; when the region has an anomaly (gap CI above 0) but its share CI lies below
``refute_share``; or when it has none and either the excess CI is inside +-``null_effect_nats`` or
the excess is not above 0 beyond noise and the gap has no significant rise anywhere (nothing for
positions to explain, and no sign of them). Everything else, too little data and an unknown trained
context: INCONCLUSIVE.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from anomaly_probe.hypotheses.curves import Curve, Rise, find_rise, split_stats
from anomaly_probe.stats import make_blocks
from anomaly_probe.stats.thresholds import Thresholds

SETTLE = "anomaly-probe run --hypothesis position --trained-context {n}"


@dataclass
class Location:
    """The location judge's result.

    Attributes
    ----------
    status : str
        ``supported``, ``refuted`` or ``inconclusive``.
    message : str
        Sentences: the verdict's reason, where the gap rises, the finding.
    rise : Rise or None
        The gap's best split (None with too little data).
    trained_context : int or None
        The trained context judged against (what the config or the user says).
    stats : dict
        :func:`~.curves.split_stats` within / region (empty when not computed), plus ``region_start``.
    break_at : int or None
        Where the dense model breaks inside the claimed trained context (config claims too much).
    finding : str or None
        The sentence for the verdict, the headline and the report when ``break_at`` is set.
    n : dict
        ``tokens``, ``blocks``, ``samples``.
    """

    status: str
    message: str
    rise: Rise | None = None
    trained_context: int | None = None
    stats: dict = field(default_factory=dict)
    break_at: int | None = None
    finding: str | None = None
    n: dict = field(default_factory=dict)

    @property
    def onset_multiple(self) -> float | None:
        """The onset as a multiple of the trained context."""
        if self.rise is None or self.rise.onset is None or not self.trained_context:
            return None
        return self.rise.onset / self.trained_context

    def evidence(self) -> dict:
        """Flat scalars for ``Verdict.evidence`` (results.json, the report's evidence table)."""
        r = self.rise
        out = {"location_status": self.status, "changepoint": r.onset if r else None,
               "changepoint_p": r.p_value if r else None, "changepoint_rise_significant": r.significant if r else None,
               "changepoint_over_trained_context": self.onset_multiple,
               "gap_before_changepoint": r.before if r else None, "gap_after_changepoint": r.after if r else None,
               "baseline_nll_before_changepoint": r.baseline_before if r else None,
               "baseline_nll_after_changepoint": r.baseline_after if r else None,
               "changepoint_method": "best mean shift of the gap on block means over all positions, "
                                     "block-permutation test", "break_inside_trained_context": self.break_at}
        out.update(self.stats)
        if self.finding:
            out["finding"] = self.finding
        return out


def judge_location(curves: list[Curve], trained_context: int | None, th: Thresholds,
                   settle_suffix: str = "") -> Location:
    """The rule of the module docstring.

    Parameters
    ----------
    curves : list of Curve
        One per sample: positions, gap and (optionally) the baseline's NLL.
    trained_context : int or None
        What the config (or the user) says the model was trained at, tokens.
    settle_suffix : str
        Appended to the settling command (e.g. `` --model MODEL`` for imported logs).
    """
    curves = [c for c in curves if c.position.size]
    tokens = sum(c.position.size for c in curves)
    blocks = make_blocks([c.gap[:, None] for c in curves], th.block_tokens) if curves else None
    n = {"tokens": tokens, "blocks": blocks.n_blocks if blocks else 0, "samples": len(curves)}
    if tokens < th.min_tokens or n["blocks"] < th.min_blocks:
        return Location("inconclusive", f"Too little data ({tokens} tokens in {n['blocks']} blocks; need >= "
                        f"{th.min_tokens} tokens and >= {th.min_blocks} blocks).", trained_context=trained_context, n=n)
    rise = find_rise(curves, th)
    loc = Location("inconclusive", "", rise, trained_context, n=n)
    tc = trained_context
    if tc is None:
        loc.message = ("The trained context is unknown: pass --trained-context N or --model-config. "
                       + _where(loc))
        return loc
    block = th.block_tokens
    max_pos = int(max(c.position.max() for c in curves))
    before = rise.significant and rise.onset < tc - block
    if before:
        loc.break_at = _break(curves, rise, th)
    if loc.break_at is not None:
        b = loc.break_at
        loc.finding = (f"the dense model breaks at ~{b} tokens although its config says {tc}; it behaves as if "
                       f"trained at about {b}: `{SETTLE.format(n=b)}{settle_suffix}` settles it")
    beyond = sum(int((c.position > tc).sum()) for c in curves)
    if max_pos <= tc or beyond < block or tokens - beyond < block:
        if loc.break_at is None and max_pos <= tc:
            loc.status = "refuted"
            lead = (f"No scored position passes the trained context ({max_pos} <= {tc}) and the gap has no "
                    "significant rise inside it that a wrong config could explain.")
        elif loc.break_at is None:
            lead = (f"Too few tokens on one side of the trained context ({tokens - beyond} within, {beyond} beyond; "
                    f"need >= {block} each).")
        else:
            lead = f"No scored position passes the trained context ({max_pos} vs {tc}), but the gap breaks inside it."
        loc.message = _join(lead, _where(loc, th), _finding(loc))
        return loc
    start = tc + 1
    if rise.significant and rise.onset >= tc - block and rise.blocks_after >= th.min_blocks:
        start = max(rise.onset, tc + 1)
    loc.stats = split_stats(curves, tc, start, th) | {"region_start": start}
    s = loc.stats
    est = (f"est. share {s['estimated_share']:.2f} (95% CI {_f(s['estimated_share_ci'][0])}.."
           f"{_f(s['estimated_share_ci'][1])})")
    nums = (f"The gap is {s['gap_within_nats']:+.3f} nats/token within the trained context ({tc}) and "
            f"{s['gap_region_nats']:+.3f} on positions {start}-{max_pos} (excess {s['excess_nats']:+.3f}, 95% CI "
            f"{s['excess_ci'][0]:+.3f}..{s['excess_ci'][1]:+.3f}).")
    loc.status, lead = _status(loc, est, th)
    loc.message = _join(lead, nums, _where(loc, th), _finding(loc))
    return loc


def _status(loc: Location, est: str, th: Thresholds) -> tuple[str, str]:
    """The status rule of the module docstring once the within / region statistics exist: status and lead."""
    rise, tc, s = loc.rise, loc.trained_context, loc.stats
    ok, why = concentrated(s, th)
    anomaly = s["gap_region_ci"][0] > 0
    ex_lo, ex_hi = s["excess_ci"]
    # located by the best split; a significant one is needed only to move the region or to doubt the config
    at_or_after = rise.onset is not None and rise.after > rise.before and rise.onset >= tc - th.block_tokens
    if ok and at_or_after:
        return "supported", f"The gap is concentrated past the trained context: {est}."
    if loc.break_at is not None:
        return "inconclusive", f"The gap rises inside what the config calls the trained context ({est} past it)."
    if anomaly and s["estimated_share_ci"][1] < th.refute_share:
        return "refuted", f"The gap is not concentrated past the trained context: {est}."
    if not anomaly and -th.null_effect_nats <= ex_lo and ex_hi <= th.null_effect_nats:
        return "refuted", "No anomaly past the trained context, and the gap is the same on both sides of it."
    if not anomaly and not ex_lo > 0 and not rise.significant:
        return "refuted", ("No anomaly past the trained context, and the gap neither rises significantly anywhere "
                           "nor is larger past the trained context.")
    if not anomaly:
        return "inconclusive", ("No anomaly past the trained context (the method does not beat the full cache there "
                                "beyond noise), but the gap changes across it.")
    if ok:
        return "inconclusive", (f"The gap is concentrated past the trained context ({est}) but its rise does not "
                                "start there.")
    return "inconclusive", f"The gap is not clearly concentrated past the trained context ({est}): {why}."


def concentrated(stats: dict, th: Thresholds) -> tuple[bool, str]:
    """Whether a split's statistics say the gap sits past the boundary, and if not, why not."""
    w, (w_lo, w_hi) = stats["gap_within_nats"], stats["gap_within_ci"]
    ex_lo = stats["excess_ci"][0]
    if not stats["gap_region_ci"][0] > 0:
        return False, "the gap past it is not above 0 beyond noise"
    if not ex_lo > 0:
        return False, "the gap past it is not larger than within beyond noise"
    if not stats["estimated_share_ci"][0] > th.support_share:
        return False, f"the share's CI does not lie above {th.support_share}"
    if not ((-th.null_effect_nats <= w_lo and w_hi <= th.null_effect_nats) or abs(w) <= th.support_share * ex_lo):
        return False, f"the gap within ({w:+.3f}) is large against the excess"
    return True, ""


def _break(curves: list[Curve], rise: Rise, th: Thresholds) -> int | None:
    """The onset, when the dense model demonstrably breaks there (module docstring), else None."""
    if rise.blocks_after < th.min_blocks or rise.baseline_rises is False:
        return None
    ok, _ = concentrated(split_stats(curves, rise.onset - 1, rise.onset, th), th)
    return rise.onset if ok else None


def _where(loc: Location, th: Thresholds | None = None) -> str:
    """Where the gap rises, as a multiple of the trained context, and what an early onset means."""
    rise, tc = loc.rise, loc.trained_context
    if rise.onset is None:
        return "Too few position blocks to locate where the gap changes."
    p = f"permutation p={rise.p_value:.3f}"
    if not rise.significant:
        kind = "falls" if rise.after < rise.before else "rises"
        return (f"The gap has no significant rise: its best split is at position {rise.onset} ({kind}, {p}"
                + (f"; {rise.onset / tc:.2f} x the trained context)." if tc else ")."))
    text = f"The gap rises at position {rise.onset} ({rise.before:+.3f} -> {rise.after:+.3f} nats/token, {p}"
    if not tc:
        return text + ")."
    text += f"; {rise.onset / tc:.2f} x the trained context {tc})"
    if th is not None and rise.onset < (1 - th.changepoint_tolerance) * tc:
        if loc.break_at is not None:
            return text + (", well before the trained context: either something other than positions past it "
                           "breaks the dense model, or the config claims too much.")
        return text + ", well before the trained context: that points away from positions past it."
    if th is not None and rise.onset < tc - th.block_tokens:
        return text + ", before the trained context."
    return text + "."


def _finding(loc: Location) -> str:
    return f"Finding: {loc.finding}." if loc.finding else ""


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def _f(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.2f}"
