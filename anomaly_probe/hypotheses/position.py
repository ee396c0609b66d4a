"""position: positions beyond the trained context (not in the seed).

Intervention: a baseline that never sees a position past its trained context, the strided
sliding-window re-computation ("recompute oracle", window = trained context). Evidence: the NLL by
position for baseline, method and oracle, and where the gap rises (the location judge shared with
``import``, :mod:`anomaly_probe.hypotheses.location`), as a multiple of the trained context. The
status comes from the oracle's share, except that a REFUTED becomes INCONCLUSIVE when the dense model
breaks inside what the config calls its trained context (the config is doubted, not the cause).
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.curves import Curve
from anomaly_probe.hypotheses.location import judge_location
from anomaly_probe.hypotheses.share import binned, judge_share, position_edges
from anomaly_probe.verdict import Verdict


def oracle_method(trained_context: int, stride_fraction: float):
    from anomaly_probe.methods.recompute import RecomputeOracle

    return RecomputeOracle(window=trained_context, stride=max(1, int(trained_context * stride_fraction)))


class Position(Hypothesis):
    name = "position"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec]:
        return {"oracle": RoleSpec(oracle_method(ctx.trained_context, ctx.settings.recompute_stride_fraction),
                                   "recompute")}

    def judge(self, data: JudgeInput) -> Verdict:
        th = data.thresholds
        region = data.paired("baseline", "method", "oracle")
        gap = [c[:, 0] - c[:, 1] for c in region]
        effect = [c[:, 0] - c[:, 2] for c in region]
        cols = data.paired("baseline", "method", "oracle", whole=True)  # curves and changepoint: all positions
        n = min(len(c) for c in cols)
        mean_cols = np.mean([c[:n] for c in cols], axis=0)  # (n, 3) averaged over samples
        gap_curve = mean_cols[:, 0] - mean_cols[:, 1]
        # where the gap rises, from the curves alone (entry i scores position i + 1)
        loc = judge_location([Curve(np.arange(1, len(c) + 1), c[:, 0] - c[:, 1], c[:, 0]) for c in cols],
                             data.trained_context, th)
        cp_tokens = loc.rise.onset if loc.rise else None
        positions = np.arange(1, n + 1)
        edges = position_edges(n)
        centers = [float((a + b) / 2) for a, b in zip(edges[:-1], edges[1:])]
        tc = data.trained_context
        vlines = [{"x": tc, "label": f"trained context {tc}"}] if tc <= n else []
        spans = ([{"x0": data.analysis_start + 1, "x1": n, "label": f"analysis region ({data.region_text()})"}]
                 if data.analysis_start else [])
        figures = [
            {"id": "position-nll", "kind": "line", "title": f"NLL by position ({data.max_tokens} tokens, "
             f"mean of {len(cols)} sample(s))", "xlabel": "token position", "ylabel": "NLL (nats/token)",
             "x": centers, "vlines": vlines,
             "series": [{"name": "full cache", "y": binned(mean_cols[:, 0], positions, edges), "color_key": "baseline"},
                        {"name": data.method.label(), "y": binned(mean_cols[:, 1], positions, edges), "color_key": "method"},
                        {"name": "recompute oracle", "y": binned(mean_cols[:, 2], positions, edges), "color_key": "oracle",
                         "linestyle": "--"}], "spans": spans},
            {"id": "position-gap", "kind": "line", "title": "Gap (baseline - method) by position",
             "xlabel": "token position", "ylabel": "NLL gap (nats/token)", "x": centers,
             "hlines": [{"y": 0.0, "label": "no gap"}],
             "vlines": vlines + ([{"x": cp_tokens, "label": f"changepoint {cp_tokens}"}] if cp_tokens else []),
             "series": [{"name": "baseline - method", "y": binned(gap_curve, positions, edges), "color_key": "gap"}],
             "spans": spans},
        ]
        evidence = {"trained_context": tc, "changepoint_tokens": cp_tokens,
                    **{k: v for k, v in loc.evidence().items() if k != "finding"},
                    "location_message": loc.message, "max_position": int(n), "figures": figures}
        verdict = judge_share(self.name, gap, effect, th, region=data.region_text(),
                              what=f"recomputing the baseline in windows of at most {tc} tokens (trained context)",
                              effect_label="mean NLL(full) - NLL(recompute oracle) (nats/token)", evidence=evidence)
        if loc.rise and loc.rise.significant:
            verdict.message += (f" The gap rises at position {cp_tokens} ({cp_tokens / tc:.2f} x the trained context; "
                                f"permutation p={loc.rise.p_value:.3f}).")
        if n <= tc:
            verdict.message += f" All {n} positions lie inside the trained context ({tc})."
        return _doubt_the_config(verdict, loc)


def _doubt_the_config(verdict: Verdict, loc) -> Verdict:
    """A config that claims too much is caught, not believed: when the dense model breaks inside the
    claimed trained context (:mod:`~anomaly_probe.hypotheses.location`), the oracle (windows of the
    claimed length) cannot repair it, so its REFUTED becomes INCONCLUSIVE with the finding."""
    if loc.finding is None or verdict.status == "supported":
        return verdict
    if verdict.status == "refuted":
        verdict.status = "inconclusive"
        verdict.message += " Not refuted: the oracle's windows are as long as the config claims, and"
    else:
        verdict.message += " Also:"
    verdict.message += f" {loc.finding}."
    verdict.evidence["finding"] = loc.finding
    return verdict
