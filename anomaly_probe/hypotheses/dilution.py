"""dilution: attention spread over too many keys (seed section 2).

Intervention: the full cache at the baseline's own positions, each query limited to its top-k keys
with k = the method's cache size. This bounds entropy as compression does but keeps the baseline's
positions, so it separates "too many keys" from "positions too far". Also checked: inside the trained
context the baseline should already lose if dilution were the cause.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import gap_stats, judge_share
from anomaly_probe.methods import FullCache
from anomaly_probe.verdict import Verdict


class Dilution(Hypothesis):
    name = "dilution"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec]:
        if ctx.method.capacity is None:
            return {}
        return {"topk": RoleSpec(FullCache(), "batched", f"topk-{ctx.method.capacity + 1}")}

    def judge(self, data: JudgeInput) -> Verdict:
        if data.method.capacity is None or "topk" not in data.nll:
            return Verdict(self.name, "inconclusive", message="the method keeps every key; there is no compression to compare")
        k = data.method.capacity + 1  # cache + the query itself, as the method attends
        cols = data.paired("baseline", "method", "topk")
        gap = [c[:, 0] - c[:, 1] for c in cols]
        effect = [c[:, 0] - c[:, 2] for c in cols]
        inside = [c[: data.trained_context, 0] - c[: data.trained_context, 1]
                  for c in data.paired("baseline", "method", whole=True)]
        evidence: dict = {"top_k": k}
        if sum(len(g) for g in inside) >= data.thresholds.min_tokens:
            st = gap_stats(inside, data.thresholds)
            evidence["gap_inside_trained_context"] = {"mean": st["mean"], "ci": [st["ci_low"], st["ci_high"]],
                                                      "tokens": st["tokens"]}
        verdict = judge_share(self.name, gap, effect, data.thresholds, region=data.region_text(),
                              what=f"limiting each baseline query to its top-{k} keys (same positions)",
                              evidence=evidence)
        if "gap_inside_trained_context" in evidence:
            g = evidence["gap_inside_trained_context"]
            verdict.message += (f" Inside the trained context ({data.trained_context} tokens) the gap is "
                                f"{g['mean']:+.3f} nats/token (CI {g['ci'][0]:+.3f}..{g['ci'][1]:+.3f}).")
        return verdict
