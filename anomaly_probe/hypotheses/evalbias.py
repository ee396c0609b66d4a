"""eval-bias: one-token-at-a-time scoring vs one batched forward (seed section 4).

Intervention: score the baseline both ways on the same tokens and dtype and compare per token. Also
checks the accounting (same tokens scored, targets shifted by one, first token not scored) and the
statistical power of the method-vs-baseline difference in PPL and accuracy: the seed's "+0.14% Acc"
on 3 x 1000 tokens needs a CI before anyone reads it.
"""

from __future__ import annotations

import math

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import gap_stats, judge_share
from anomaly_probe.methods import FullCache
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.verdict import Verdict


class EvalBias(Hypothesis):
    name = "eval-bias"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec]:
        prefix = ctx.settings.stepwise_tokens or None
        return {"stepwise": RoleSpec(FullCache(), "stepwise", prefix=prefix),
                "batched": RoleSpec(FullCache(), "batched")}

    def judge(self, data: JudgeInput) -> Verdict:
        th = data.thresholds
        tol = th.tolerance(data.dtype)
        cols = data.paired("stepwise", "batched", whole=True)
        diff = [c[:, 0] - c[:, 1] for c in cols]
        max_abs = float(max(np.abs(d).max() for d in diff))
        accounting = self._accounting(data)
        power = self._power(data)
        full = data.paired("baseline", "method")
        gap_all = gap_stats([c[:, 0] - c[:, 1] for c in full], th)
        evidence = {"max_abs_dnll": max_abs, "tolerance_nats": tol, "accounting": accounting, "power": power,
                    "stepwise_tokens": int(sum(len(d) for d in diff))}
        if not accounting["ok"]:
            return Verdict(self.name, "supported", effect_size=max_abs, effect_label="max |dNLL| (nats)",
                           n={"tokens": evidence["stepwise_tokens"]}, evidence=evidence,
                           message=f"Token accounting differs between the two scorings: {accounting['problem']}.")
        if max_abs <= tol:
            blocks = make_blocks([d[:, None] for d in diff], th.block_tokens)
            mean, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
            share = lo_s = hi_s = None
            if gap_all["anomaly"]:
                share, lo_s, hi_s = mean / gap_all["mean"], lo / gap_all["mean"], hi / gap_all["mean"]
            return Verdict(self.name, "refuted", explained_share=share, ci_low=lo_s, ci_high=hi_s,
                           effect_size=max_abs, effect_label="max |dNLL| stepwise vs batched (nats)",
                           n={"tokens": blocks.n_tokens, "blocks": blocks.n_blocks, "samples": blocks.n_samples},
                           evidence=evidence,
                           message=f"Stepwise and batched scoring agree to {max_abs:.1e} nats/token (tolerance "
                                   f"{tol:.0e} for {data.dtype}) on {blocks.n_tokens} tokens; {power['sentence']}")
        gap = [c[:, 0] - c[:, 1] for c in data.paired("baseline", "method", whole=True)]
        n = min(len(d) for d in diff)  # the stepwise prefix: judged on its own tokens
        verdict = judge_share(self.name, [g[:n] for g in gap], [d[:n] for d in diff], th, region="the stepwise prefix",
                              what="scoring the baseline in one batched forward instead of token by token",
                              effect_label="mean NLL(stepwise) - NLL(batched) (nats/token)", evidence=evidence)
        verdict.message += f" Max |dNLL| {max_abs:.1e} exceeds the {data.dtype} tolerance {tol:.0e}. {power['sentence']}"
        return verdict

    @staticmethod
    def _accounting(data: JudgeInput) -> dict:
        for s, (a, b) in enumerate(zip(data.runs.get("stepwise", []), data.runs.get("batched", []))):
            n_a, n_b = a.get("tokens_scored"), b.get("tokens_scored")
            expect_a = (a.get("prefix") or a["max_tokens"]) - 1
            if n_a != expect_a or n_b != b["max_tokens"] - 1:
                return {"ok": False, "problem": f"sample {s}: scored {n_a} and {n_b} tokens, expected "
                                                f"{expect_a} and {b['max_tokens'] - 1} (first token never scored)"}
        return {"ok": True, "problem": None, "rule": "T-1 targets per sample of T tokens: ids[1:], first token unscored"}

    @staticmethod
    def _power(data: JudgeInput) -> dict:
        """CIs of method - baseline in NLL (hence PPL ratio) and accuracy, over blocks and samples."""
        th = data.thresholds
        series = []
        for s in range(len(data.nll["baseline"])):
            a = data.analysis_start
            nb, nm = data.nll["baseline"][s][a:], data.nll["method"][s][a:]
            cb = data.correct["baseline"][s][a:] if data.correct.get("baseline") else None
            cm = data.correct["method"][s][a:] if data.correct.get("method") else None
            acc = (cm.astype(float) - cb.astype(float)) if cb is not None and cm is not None else np.zeros_like(nb)
            series.append(np.stack([nm - nb, acc], axis=1))
        blocks = make_blocks(series, th.block_tokens)
        dn, dn_lo, dn_hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
        da, da_lo, da_hi = mean_ci(blocks, 1, th.n_boot, th.ci_level, seed=3)
        sig_n = dn_lo > 0 or dn_hi < 0
        sig_a = da_lo > 0 or da_hi < 0
        sentence = (f"method vs baseline: PPL x{math.exp(dn):.3f} (CI x{math.exp(dn_lo):.3f}..x{math.exp(dn_hi):.3f}, "
                    f"{'significant' if sig_n else 'not significant'}), Acc {100 * da:+.2f} pp "
                    f"(CI {100 * da_lo:+.2f}..{100 * da_hi:+.2f}, {'significant' if sig_a else 'not significant'}) "
                    f"over {blocks.n_tokens} tokens in {blocks.n_blocks} blocks ({data.region_text()}).")
        return {"dnll_mean": dn, "dnll_ci": [dn_lo, dn_hi], "ppl_ratio": math.exp(dn),
                "ppl_ratio_ci": [math.exp(dn_lo), math.exp(dn_hi)], "acc_diff": da, "acc_diff_ci": [da_lo, da_hi],
                "nll_significant": sig_n, "acc_significant": sig_a, "sentence": sentence}
