"""eval-bias: one-token-at-a-time scoring vs one batched forward (seed section 4).

Intervention: score the baseline both ways on the same tokens and dtype and compare per token: on a
stepwise prefix, and on spot windows at long positions (``hypotheses/spots.py``), judged together. Also
checks the accounting (same tokens scored, targets shifted by one, first token not scored) and the
statistical power of the method-vs-baseline difference in PPL and accuracy: the seed's "+0.14% Acc"
on 3 x 1000 tokens needs a CI before anyone reads it.
"""

from __future__ import annotations

import math

import numpy as np

from anomaly_probe.hypotheses.base import Hypothesis, JudgeInput, PlanContext, RoleSpec
from anomaly_probe.hypotheses.share import gap_stats, judge_share
from anomaly_probe.hypotheses.spots import compared_entries, spot_evidence, spot_windows, window_stats
from anomaly_probe.methods import FullCache
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.verdict import Verdict


class EvalBias(Hypothesis):
    name = "eval-bias"

    def roles(self, ctx: PlanContext) -> dict[str, RoleSpec]:
        prefix = ctx.settings.stepwise_tokens or None
        out = {"stepwise": RoleSpec(FullCache(), "stepwise", prefix=prefix),
               "batched": RoleSpec(FullCache(), "batched")}
        windows = spot_windows(ctx.max_tokens, ctx.trained_context, ctx.settings.spot_tokens, prefix)
        if windows:  # past the prefix: batched prefill, then one token at a time (hypotheses/spots.py)
            out["spot"] = RoleSpec(FullCache(), "spot", windows=tuple(windows))
        return out

    def judge(self, data: JudgeInput) -> Verdict:
        th = data.thresholds
        tol = th.tolerance(data.dtype)
        cols = data.paired("stepwise", "batched", whole=True)
        prefix_diff = [c[:, 0] - c[:, 1] for c in cols]
        prefix_max = float(max(np.abs(d).max() for d in prefix_diff))
        n_prefix = max(len(d) for d in prefix_diff)
        windows, spot_nll = self._windows(data), data.nll.get("spot", [])
        spots = window_stats(windows, spot_nll, data.nll["batched"], data.analysis_start)
        max_abs = max([prefix_max] + [w["max_abs_dnll"] for w in spots if w["max_abs_dnll"] is not None])
        compared = compared_entries(prefix_diff, spot_nll, data.nll["batched"], windows)  # (entries, dNLL)
        where = f"positions 1-{n_prefix}" + self._listing(spots, data.analysis_start)
        accounting = self._accounting(data)
        power = self._power(data)
        full = data.paired("baseline", "method")
        gap_all = gap_stats([c[:, 0] - c[:, 1] for c in full], th)
        evidence = {"max_abs_dnll": max_abs, "tolerance_nats": tol, "accounting": accounting, "power": power,
                    "stepwise_tokens": int(sum(len(e) for e, _ in compared)),
                    "stepwise_prefix_positions": f"1-{n_prefix}", "prefix_max_abs_dnll": prefix_max}
        if spots:
            evidence |= spot_evidence(spots, windows, spot_nll, data.nll["batched"])
        if not accounting["ok"]:
            return Verdict(self.name, "supported", effect_size=max_abs, effect_label="max |dNLL| (nats)",
                           n={"tokens": evidence["stepwise_tokens"]}, evidence=evidence,
                           message=f"Token accounting differs between the two scorings: {accounting['problem']}.")
        diff = [d for _, d in compared]
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
                           message=f"Stepwise and batched scoring agree on {where}: max |dNLL| {max_abs:.1e} "
                                   f"nats/token (tolerance {tol:.0e} for {data.dtype}) over {blocks.n_tokens} "
                                   f"tokens; {power['sentence']}")
        # Beyond the tolerance: the common judgement on the compared tokens inside the analysis region
        # (the tokens every judge of this length uses); too few of them is INCONCLUSIVE.
        gap = [c[:, 0] - c[:, 1] for c in data.paired("baseline", "method", whole=True)]
        a = data.analysis_start
        inside = [(e >= a) & (e < len(g)) for (e, _), g in zip(compared, gap)]
        verdict = judge_share(self.name, [g[e[k]] for (e, _), g, k in zip(compared, gap, inside)],
                              [d[k] for d, k in zip(diff, inside)], th,
                              region=f"the stepwise-scored tokens in {data.region_text()}" if a else
                              "the stepwise prefix and spot windows",
                              what="scoring the baseline in one batched forward instead of token by token",
                              effect_label="mean NLL(stepwise) - NLL(batched) (nats/token)", evidence=evidence)
        verdict.message += self._window_guard(verdict, spots, tol, gap_all, th)
        worst = max(spots, key=lambda w: w["max_abs_dnll"] or 0.0) if spots else None
        at = (f" (largest in the window at positions {worst['positions']}, {worst['region']} the analysis region)"
              if worst is not None and (worst["max_abs_dnll"] or 0.0) > prefix_max else " (largest in the prefix)")
        verdict.message += (f" Stepwise vs batched on {where}: max |dNLL| {max_abs:.1e}{at} exceeds the {data.dtype} "
                            f"tolerance {tol:.0e}. {power['sentence']}")
        return verdict

    @staticmethod
    def _window_guard(verdict: Verdict, spots: list[dict], tol: float, gap: dict, th) -> str:
        """Keep a share computed mostly on the prefix from refuting what a diverging window shows.

        A spot window beyond the tolerance whose mean dNLL is at least ``refute_share`` of the gap
        (``null_effect_nats`` without an anomaly) could explain the gap at its positions, and its few
        tokens cannot be judged on their own: a REFUTED becomes INCONCLUSIVE. Returns the sentence to add.
        """
        bar = th.refute_share * abs(gap["mean"]) if gap["anomaly"] else th.null_effect_nats
        big = [w for w in spots if (w["max_abs_dnll"] or 0.0) > tol and abs(w["mean_dnll"] or 0.0) >= bar]
        if verdict.status != "refuted" or not big:
            return ""
        verdict.status = "inconclusive"
        where = ", ".join(w["positions"] for w in big)
        means = ", ".join(f"{w['mean_dnll']:+.3f}" for w in big)
        return (f" Not refuted: the spot window(s) at positions {where} differ by a mean of {means} nats/token "
                f"(>= {bar:.3f}) on too few tokens to judge alone; --stepwise-tokens 0 compares every token (slow).")

    @staticmethod
    def _windows(data: JudgeInput) -> list[tuple[int, int]]:
        """The spot windows the runs recorded (the same for every sample of one length); [] without."""
        runs = data.runs.get("spot") or []
        if "spot" not in data.nll or not runs:
            return []
        return [(int(a), int(b)) for a, b in runs[0].get("windows") or []]

    @staticmethod
    def _listing(spots: list[dict], analysis_start: int) -> str:
        """`` and spot windows 1025-1056, 11968-11999 (in the analysis region: 11968-11999)`` or ``""``."""
        if not spots:
            return ""
        text = " and spot windows " + ", ".join(w["positions"] for w in spots)
        inside = [w["positions"] for w in spots if w["region"] != "outside"]
        if analysis_start and inside:
            text += f" (in the analysis region: {', '.join(inside)})"
        return text

    @staticmethod
    def _accounting(data: JudgeInput) -> dict:
        for s, (a, b) in enumerate(zip(data.runs.get("stepwise", []), data.runs.get("batched", []))):
            n_a, n_b = a.get("tokens_scored"), b.get("tokens_scored")
            expect_a = (a.get("prefix") or a["max_tokens"]) - 1
            if n_a != expect_a or n_b != b["max_tokens"] - 1:
                return {"ok": False, "problem": f"sample {s}: scored {n_a} and {n_b} tokens, expected "
                                                f"{expect_a} and {b['max_tokens'] - 1} (first token never scored)"}
        for s, run in enumerate(data.runs.get("spot", [])):
            if run.get("tokens_scored") != run["max_tokens"] - 1:
                return {"ok": False, "problem": f"sample {s}: the spot-window run scored {run.get('tokens_scored')} "
                                                f"tokens, expected {run['max_tokens'] - 1} (first token never scored)"}
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

