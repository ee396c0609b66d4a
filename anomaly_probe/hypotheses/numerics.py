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
from anomaly_probe.hypotheses.share import judge_share
from anomaly_probe.methods import FullCache
from anomaly_probe.verdict import Verdict

HALF = ("float16", "bfloat16")


class Numerics(Hypothesis):
    name = "numerics"
    title = "fp16 softmax underflow over long caches"

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
        max_abs = float(max(np.abs(e).max() for e in effect))
        mean_t = float(np.mean(np.concatenate([c[:, 2] for c in cols])))
        mean_r = float(np.mean(np.concatenate([c[:, 3] for c in cols])))
        verdict = judge_share(
            self.name, gap, effect, data.thresholds,
            what=f"switching the baseline's attention from {test_label} to {ref_label}",
            effect_label=f"mean NLL({test_label}) - NLL({ref_label}) (nats/token)",
            evidence={"precision_under_test": test_label, "reference": ref_label, "max_abs_dnll": max_abs,
                      "figures": [{
                          "id": "numerics-precision", "kind": "bar",
                          "title": f"Baseline NLL by attention precision ({data.max_tokens} tokens)",
                          "xlabel": "attention precision", "ylabel": "mean NLL (nats/token)",
                          "categories": [test_label, ref_label],
                          "series": [{"name": "full cache", "y": [mean_t, mean_r], "color_key": "baseline"}]}]},
        )
        verdict.message += f" Max |dNLL| between precisions: {max_abs:.2e} nats."
        return verdict
