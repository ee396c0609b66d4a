"""ablation: the method-side checks a policy declares for itself (not in the seed).

Intervention: each run of :meth:`CacheMethod.ablations <anomaly_probe.methods.base.CacheMethod.ablations>`,
the same cache without one of its ingredients: h2o/tova/knorm and user policies a recent-only window of
the same capacity (does the scoring matter?), kv_quant the same policy unquantised (does the
quantisation matter?). StreamingLLM declares none (its ingredient, the sinks, is the ``sinks`` check)
and the hypothesis is then not planned at all. Effect: NLL(ablated) - NLL(method), judged on the
first declared ablation; every declared one is scored and drawn.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import judge_share, wide_range
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.verdict import Verdict


class PolicyAblation(Hypothesis):
    name = "ablation"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec] | None:
        ablations = ctx.method.ablations()
        if not ablations:
            return None
        return {a.role: RoleSpec(a.method) for a in ablations}

    def judge(self, data: JudgeInput) -> Verdict:
        ablations = [a for a in data.method.ablations() if a.role in data.nll]
        if not ablations:
            return Verdict(self.name, "inconclusive", message=f"{data.method.label()} declares no ablation")
        first = ablations[0]
        cols = data.paired("baseline", "method", first.role)
        gap = [c[:, 0] - c[:, 1] for c in cols]
        effect = [c[:, 2] - c[:, 1] for c in cols]
        evidence = {"ablations": [{"role": a.role, "label": a.method.label(), "what": a.what} for a in ablations],
                    "figures": [self._bars(data, ablations)]}
        probes = [r.get("policy_probe") for r in data.runs.get("method", []) if r.get("policy_probe")]
        if probes:
            evidence["policy_probe"] = probes[0]
        loss = self._attention_loss(data, ablations)
        if loss is not None:
            evidence["figures"].append(loss)
        return judge_share(self.name, gap, effect, data.thresholds, region=data.region_text(), what=first.what,
                           effect_label=f"mean NLL({first.method.label()}) - NLL(method) (nats/token)",
                           evidence=evidence)

    @staticmethod
    def _attention_loss(data: JudgeInput, ablations) -> dict | None:
        """Bars per layer: the attention mass each eviction throws away, for the method and every
        evicting ablation (sample 0's policy probe); None when no run has one."""
        series = []
        for role in ("method", *(a.role for a in ablations)):
            runs = data.runs.get(role) or [{}]
            probe = runs[0].get("policy_probe") or {}
            per_layer = probe.get("attention_loss_per_layer")
            if per_layer:
                series.append({"name": runs[0].get("label", role), "y": per_layer,
                               "color": None, "color_key": "method" if role == "method" else runs[0].get("label")})
        if not series:
            return None
        layers = [str(i) for i in range(len(series[0]["y"]))]
        return {"id": "policy-attention-loss", "kind": "bar", "title": "Attention mass thrown away per eviction "
                "(the last query's weight on the evicted keys, mean over evictions and heads; sample 0)",
                "xlabel": "layer", "ylabel": "fraction of one query's attention", "categories": layers,
                "series": [{k: v for k, v in s.items() if v is not None} for s in series]}

    @staticmethod
    def _bars(data: JudgeInput, ablations) -> dict:
        th = data.thresholds
        rows = [("baseline", "full cache", "baseline"), ("method", data.method.label(), "method")]
        rows += [(a.role, a.method.label(), data.runs[a.role][0]["label"] if data.runs.get(a.role) else a.role)
                 for a in ablations]
        cats, y, lo, hi, keys = [], [], [], [], []
        for role, name, key in rows:
            blocks = make_blocks([a[:, None] for a in data.region(data.nll[role])], th.block_tokens)
            m, l, h = mean_ci(blocks, 0, th.n_boot, th.ci_level)
            cats.append(name)
            keys.append(key)
            y.append(float(np.exp(m)))
            lo.append(float(np.exp(l)))
            hi.append(float(np.exp(h)))
        return {"id": "policy-ablations", "kind": "bar", "title": f"PPL of the policy and its ablations "
                f"({data.max_tokens} tokens, {data.region_short()})", "log_y": wide_range(lo + hi),
                "xlabel": "cache", "ylabel": "PPL (exp mean NLL)", "categories": cats, "style": "dots",
                "series": [{"name": "PPL, 95% CI", "y": y, "ci_low": lo, "ci_high": hi, "color_keys": keys}]}
