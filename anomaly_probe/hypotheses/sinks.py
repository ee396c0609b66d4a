"""sinks: the same cache without attention-sink tokens (not in the seed).

Intervention: a plain window of the same capacity and position mode, with no sinks. Effect:
NLL(window) - NLL(method): the part of the method's advantage that the sinks carry.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import judge_share, wide_range
from anomaly_probe.methods import WindowCache
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.verdict import Verdict


class Sinks(Hypothesis):
    name = "sinks"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec] | None:
        m = ctx.method
        if m.capacity is None or m.sink_size == 0:
            return None  # no sinks to remove: not planned (the policy's own checks are the ablation hypothesis)
        return {"window": RoleSpec(WindowCache(recent_size=m.capacity, position_mode=m.position_mode,
                                               compress_every=m.compress_every))}

    def judge(self, data: JudgeInput) -> Verdict:
        m = data.method
        if m.capacity is None or m.sink_size == 0 or "window" not in data.nll:
            return Verdict(self.name, "inconclusive", message="the method keeps no sink tokens; there are none to remove")
        cols = data.paired("baseline", "method", "window")
        gap = [c[:, 0] - c[:, 1] for c in cols]
        effect = [c[:, 2] - c[:, 1] for c in cols]
        th = data.thresholds
        cats, y, lo, hi = [], [], [], []
        for role, name in (("baseline", "full cache"), ("method", m.label()), ("window", f"window({m.capacity}), no sinks")):
            blocks = make_blocks([a[:, None] for a in data.region(data.nll[role])], th.block_tokens)
            mean, l, h = mean_ci(blocks, 0, th.n_boot, th.ci_level)
            cats.append(name)
            y.append(float(np.exp(mean)))
            lo.append(float(np.exp(l)))
            hi.append(float(np.exp(h)))
        bars = {"id": "sinks", "kind": "bar", "title": f"PPL with and without sinks ({data.max_tokens} tokens, "
                f"{data.region_short()})", "log_y": wide_range(lo + hi),
                "xlabel": "cache", "ylabel": "PPL (exp mean NLL)", "categories": cats, "style": "dots",
                "series": [{"name": "PPL, 95% CI", "y": y, "ci_low": lo, "ci_high": hi,
                            "color_keys": ["baseline", "method",
                                           data.runs["window"][0]["label"] if data.runs.get("window") else "window"]}]}
        return judge_share(self.name, gap, effect, th, region=data.region_text(), what=f"dropping the {m.sink_size} sink tokens",
                           effect_label="mean NLL(window) - NLL(method) (nats/token)", evidence={"figures": [bars]})
