"""memory: memory pressure, swapping and fallbacks (seed section 3).

Intervention: repeat the baseline on the same tokens while a bounded ballast allocation holds a large
share of the available memory (and device memory on a GPU). Identical NLL under different pressure
means memory changes speed, not results. Headroom and swap activity are reported alongside.
"""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import judge_share
from anomaly_probe.interventions.ballast import ballast_name
from anomaly_probe.methods import FullCache
from anomaly_probe.verdict import Verdict


class Memory(Hypothesis):
    name = "memory"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec]:
        # the rule, not the bytes: the unit key does not depend on the memory free now (resume finds it)
        name = ballast_name(ctx.settings.ballast_fraction, ctx.settings.ballast_cap_bytes)
        return {"ballast": RoleSpec(FullCache(), ctx.engine, name)}

    def judge(self, data: JudgeInput) -> Verdict:
        cols = data.paired("baseline", "method", "ballast")
        gap = [c[:, 0] - c[:, 1] for c in cols]
        effect = [c[:, 2] - c[:, 0] for c in cols]
        max_abs = float(max(np.abs(e).max() for e in effect))
        total = data.environment.get("total_memory_bytes") or 0
        base_runs, ballast_runs = data.runs.get("baseline", []), data.runs.get("ballast", [])
        peak = max((r.get("peak_rss_bytes") or 0) for r in base_runs + ballast_runs) if base_runs else 0
        info = ballast_runs[0].get("intervention_info", {}) if ballast_runs else {}
        speed = [b["tok_per_s"] / a["tok_per_s"] for a, b in zip(base_runs, ballast_runs)
                 if a.get("tok_per_s") and b.get("tok_per_s")]
        evidence = {"max_abs_dnll": max_abs, "headroom_peak_over_total": peak / total if total else None,
                    "ballast_host_bytes": info.get("host_bytes"), "ballast_device_bytes": info.get("device_bytes"),
                    "throughput_ratio_ballast_over_plain": float(np.mean(speed)) if speed else None}
        verdict = judge_share(self.name, gap, effect, data.thresholds, region=data.region_text(),
                              what="holding a memory ballast during the baseline",
                              effect_label="mean NLL(with ballast) - NLL(plain) (nats/token)", evidence=evidence)
        gib = (info.get("host_bytes") or 0) / 2**30
        verdict.message += (f" Under a {gib:.1f} GiB ballast max |dNLL| = {max_abs:.2e} nats"
                            + (f"; throughput x{evidence['throughput_ratio_ballast_over_plain']:.2f}" if speed else "")
                            + (f"; peak RSS {100 * evidence['headroom_peak_over_total']:.0f}% of RAM." if total else "."))
        return verdict
