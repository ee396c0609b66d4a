"""handling: how the compressed cache assigns positions (not in the seed).

Intervention: the same method with another position mode. The reference alternative is ``absolute``
(keys keep their positions, like the baseline's), or ``in-cache`` when the user's method already is
absolute; ``naive`` is also scored and shown. Effect: NLL(method, alternative) - NLL(method, user mode).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import judge_share, wide_range
from anomaly_probe.methods.base import POSITION_MODES
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.verdict import Verdict


def alternative_mode(mode: str) -> str:
    return "absolute" if mode != "absolute" else "in-cache"


class Handling(Hypothesis):
    name = "handling"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec] | None:
        if ctx.method.capacity is None or not hasattr(ctx.method, "position_mode"):
            return None  # nothing is evicted, so positions are never handled: not planned
        return {f"mode:{m}": RoleSpec(dataclasses.replace(ctx.method, position_mode=m))
                for m in POSITION_MODES if m != ctx.method.position_mode}

    def judge(self, data: JudgeInput) -> Verdict:
        if data.method.capacity is None:
            return Verdict(self.name, "inconclusive", message="the method keeps every key; it has no position handling")
        user, alt = data.method.position_mode, alternative_mode(data.method.position_mode)
        cols = data.paired("baseline", "method", f"mode:{alt}")
        gap = [c[:, 0] - c[:, 1] for c in cols]
        effect = [c[:, 2] - c[:, 1] for c in cols]
        bars = self._bars(data, user)
        verdict = judge_share(self.name, gap, effect, data.thresholds, region=data.region_text(),
                              what=f"switching the method's positions from {user} to {alt}",
                              effect_label=f"mean NLL({alt}) - NLL({user}) (nats/token)",
                              evidence={"user_mode": user, "alternative_mode": alt, "figures": [bars]})
        return verdict

    @staticmethod
    def _bars(data: JudgeInput, user: str) -> dict:
        th = data.thresholds
        roles = [("baseline", "full cache", "baseline")] + [
            ("method" if m == user else f"mode:{m}", f"{m}{' (yours)' if m == user else ''}", f"mode:{m}")
            for m in POSITION_MODES]
        cats, y, lo, hi, keys = [], [], [], [], []
        for role, name, _ in roles:
            if role not in data.nll:
                continue
            blocks = make_blocks([a[:, None] for a in data.region(data.nll[role])], th.block_tokens)
            m, l, h = mean_ci(blocks, 0, th.n_boot, th.ci_level)
            cats.append(name)
            keys.append("baseline" if role == "baseline" else "method" if role == "method"
                        else data.runs[role][0]["label"] if data.runs.get(role) else role)
            y.append(float(np.exp(m)))
            lo.append(float(np.exp(l)))
            hi.append(float(np.exp(h)))
        return {"id": "handling-modes", "kind": "bar", "title": f"PPL by position mode ({data.max_tokens} tokens, "
                f"{data.region_short()})", "log_y": wide_range(lo + hi),
                "xlabel": "position mode", "ylabel": "PPL (exp mean NLL)", "categories": cats, "style": "dots",
                "series": [{"name": "PPL, 95% CI", "y": y, "ci_low": lo, "ci_high": hi, "color_keys": keys}]}

