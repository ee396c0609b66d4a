"""position from logs: the location judge (:mod:`anomaly_probe.hypotheses.location`) as a verdict.

Without the recompute oracle the explained share cannot be measured; the logs still say where the
gap is and where it rises. The rule, the same one that ``run`` reports as its location evidence, is
in the location module's docstring and in docs/HYPOTHESES.md ("Where the gap rises").
"""

from __future__ import annotations

from anomaly_probe.hypotheses.curves import Curve
from anomaly_probe.hypotheses.location import judge_location
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

NAME = "position"
SETTLE = "`anomaly-probe run --hypothesis position --model MODEL` scores the recompute oracle and measures the share"


def judge_position(pairs: list[PairedSample], trained_context: int | None, th: Thresholds) -> Verdict:
    """The position verdict from paired per-token logs."""
    # a log's position is its query's index; the location judge (as run) speaks of the scored token's
    # position, query + 1: positions 1..C are inside a trained context of C, the same tokens in both
    curves = [Curve(p.position + 1, p.gap, p.baseline.nll) for p in pairs]
    loc = judge_location(curves, trained_context, th, settle_suffix=" --model MODEL")
    evidence = {"trained_context": trained_context, "oracle": "not available from logs",
                "max_position": int(max(p.position.max() for p in pairs)) + 1, **loc.evidence()}
    s = loc.stats
    if not s:
        return Verdict(NAME, loc.status, n=loc.n, evidence=evidence, message=_settle(loc))
    evidence["figures"] = [_figure(s, trained_context)]
    return Verdict(NAME, loc.status, explained_share=s["estimated_share"], ci_low=s["estimated_share_ci"][0],
                   ci_high=s["estimated_share_ci"][1], effect_size=s["excess_nats"], p_value=s["p_value"], n=loc.n,
                   effect_label="mean gap past the trained context (from the rise, when there is one) - within "
                                "(nats/token)", evidence=evidence,
                   message=_settle(loc, " Share estimated from the logs, without the oracle."))


def _settle(loc, note: str = "") -> str:
    """The message, and the command that settles it unless refuted or the finding already names one."""
    return f"{loc.message}{note}" + ("" if loc.status == "refuted" or loc.finding else f" {SETTLE}.")


def _figure(s: dict, tc: int) -> dict:
    """Bar chart: the mean gap within the trained context and in the region past it, with CIs."""
    return {"id": "import-position-split", "kind": "bar", "title": "Gap within vs past the trained context",
            "xlabel": "positions", "ylabel": "NLL gap, baseline - method (nats/token)",
            "categories": [f"within (<= {tc})", f"region (>= {s['region_start']})"],
            "hlines": [{"y": 0.0, "label": "no gap"}],
            "series": [{"name": "mean gap, 95% CI", "y": [s["gap_within_nats"], s["gap_region_nats"]],
                        "ci_low": [s["gap_within_ci"][0], s["gap_region_ci"][0]],
                        "ci_high": [s["gap_within_ci"][1], s["gap_region_ci"][1]], "color_key": "gap"}]}
