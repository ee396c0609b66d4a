"""position: positions beyond the trained context (not in the seed).

Intervention: a baseline that never sees a position past its trained context, the strided
sliding-window re-computation ("recompute oracle", window = trained context). Evidence: the NLL by
position for baseline, method and oracle, and a changepoint in the gap found from the data and
compared with the trained context.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import binned, judge_share, position_edges
from anomaly_probe.stats import mean_shift_changepoint
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
        block = th.block_tokens
        nb = n // block
        cp_tokens, gain = None, 0.0
        if nb >= 4:
            block_gap = gap_curve[: nb * block].reshape(nb, block).mean(axis=1)
            cp, gain = mean_shift_changepoint(block_gap)
            cp_tokens = None if cp is None else int(cp * block + 1)  # +1: entry i scores position i+1
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
        evidence = {"trained_context": tc, "changepoint_tokens": cp_tokens, "changepoint": cp_tokens, "changepoint_gain": gain,
                    "changepoint_over_trained_context": (cp_tokens / tc) if cp_tokens else None,
                    "max_position": int(n), "figures": figures}
        verdict = judge_share(self.name, gap, effect, th, region=data.region_text(),
                              what=f"recomputing the baseline in windows of at most {tc} tokens (trained context)",
                              effect_label="mean NLL(full) - NLL(recompute oracle) (nats/token)", evidence=evidence)
        if cp_tokens:
            verdict.message += (f" The gap changes level at token {cp_tokens} ({cp_tokens / tc:.2f} x the trained "
                                f"context; {100 * gain:.0f}% of its variance).")
        if n <= tc:
            verdict.message += f" All {n} positions lie inside the trained context ({tc})."
        return verdict
