"""numerics: half-precision softmax underflow over long caches (seed section 1).

Intervention: score the baseline with attention in the precision under test and in full precision,
and compare token by token. The precision under test is the model's dtype when it is a half
precision; on a float32 run it is an emulated fp16 attention (q, k, v and logits rounded, softmax
weights cast to fp16, as a half-precision backend such as MPS does). The effect is
NLL(test) - NLL(reference): the part of the baseline's NLL that precision alone adds.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import binned, judge_share, position_edges
from anomaly_probe.methods import FullCache
from anomaly_probe.verdict import Verdict

HALF = ("float16", "bfloat16")


class Numerics(Hypothesis):
    name = "numerics"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec]:
        if ctx.dtype in HALF:  # the baseline is already in the precision under test
            return {"precision_ref": RoleSpec(FullCache(), "batched", "attn-fp32")}
        return {"precision_test": RoleSpec(FullCache(), "batched", "attn-fp16-emulated")}

    def judge(self, data: JudgeInput) -> Verdict:
        test = "baseline" if data.dtype in HALF else "precision_test"
        ref = "precision_ref" if data.dtype in HALF else "baseline"
        test_label = data.dtype if data.dtype in HALF else "emulated fp16 attention"
        ref_label = "fp32 attention" if data.dtype in HALF else f"{data.dtype} attention"
        cols = data.paired("baseline", "method", test, ref)
        gap = [c[:, 0] - c[:, 1] for c in cols]
        effect = [c[:, 2] - c[:, 3] for c in cols]
        whole = [c[:, 2] - c[:, 3] for c in data.paired("baseline", "method", test, ref, whole=True)]
        max_abs = float(max(np.abs(e).max() for e in whole))
        n = min(len(e) for e in whole)
        mean_abs = np.mean([np.abs(e[:n]) for e in whole], axis=0)  # (n,) |dNLL| per position
        edges = position_edges(n)
        centers = [float((a + b) / 2) for a, b in zip(edges[:-1], edges[1:])]
        tc = data.trained_context
        verdict = judge_share(
            self.name, gap, effect, data.thresholds, region=data.region_text(),
            what=f"switching the baseline's attention from {test_label} to {ref_label}",
            effect_label=f"mean NLL({test_label}) - NLL({ref_label}) (nats/token)",
            evidence={"precision_under_test": test_label, "reference": ref_label, "max_abs_dnll": max_abs,
                      "figures": [{
                          "id": "numerics-dnll", "kind": "line", "log_y": True,
                          "title": f"|NLL({test_label}) - NLL({ref_label})| by position, full cache",
                          "xlabel": "token position", "ylabel": "mean |dNLL| (nats/token)", "x": centers,
                          "vlines": [{"x": tc, "label": f"trained context {tc}"}] if tc <= n else [],
                          "hlines": [{"y": data.thresholds.null_effect_nats, "label": "null tolerance"}],
                          "series": [{"name": "|dNLL| (bin mean)", "color_key": "baseline",
                                      "y": [None if v is None else max(v, 1e-9)
                                            for v in binned(mean_abs, np.arange(1, n + 1), edges)]}]}]},
        )
        verdict.message += f" Max |dNLL| between precisions: {max_abs:.2e} nats."
        return verdict
