"""eval-bias from logs: the token accounting the logs show, and the power of method vs baseline.

The stepwise-vs-batched comparison needs the model, so the verdict is INCONCLUSIVE; its evidence holds
what the logs do settle: the method-vs-baseline PPL ratio and accuracy difference with block-bootstrap
CIs (as ``anomaly-probe run`` reports them), or a note that accuracy is not in the logs.
"""

from __future__ import annotations

import math

import numpy as np

from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

NAME = "eval-bias"
SETTLE = ("`anomaly-probe run --hypothesis eval-bias --model MODEL` scores the baseline token by token and batched "
          "and settles it")


def power(pairs: list[PairedSample], th: Thresholds) -> dict:
    """Method - baseline NLL (hence the PPL ratio) and accuracy difference with 95% block-bootstrap CIs."""
    blocks = make_blocks([(p.method.nll - p.baseline.nll)[:, None] for p in pairs], th.block_tokens)
    dn, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    sig_n = lo > 0 or hi < 0
    out = {"dnll_mean": dn, "dnll_ci": [lo, hi], "ppl_ratio": math.exp(dn),
           "ppl_ratio_ci": [math.exp(lo), math.exp(hi)], "nll_significant": sig_n, "tokens": blocks.n_tokens,
           "blocks": blocks.n_blocks}
    sentence = (f"method vs baseline: PPL x{math.exp(dn):.3f} (CI x{math.exp(lo):.3f}..x{math.exp(hi):.3f}, "
                f"{'significant' if sig_n else 'not significant'}) over {blocks.n_tokens} tokens in {blocks.n_blocks} "
                "blocks")
    if all(p.baseline.correct is not None and p.method.correct is not None for p in pairs):
        acc = make_blocks([(p.method.correct.astype(float) - p.baseline.correct.astype(float))[:, None] for p in pairs],
                          th.block_tokens)
        da, alo, ahi = mean_ci(acc, 0, th.n_boot, th.ci_level, seed=3)
        sig_a = alo > 0 or ahi < 0
        out.update({"acc_diff": da, "acc_diff_ci": [alo, ahi], "acc_significant": sig_a})
        sentence += (f", Acc {100 * da:+.2f} pp (CI {100 * alo:+.2f}..{100 * ahi:+.2f}, "
                     f"{'significant' if sig_a else 'not significant'})")
    else:
        out.update({"acc_diff": None, "acc_diff_ci": None, "acc_significant": None,
                    "acc_note": "accuracy unavailable: the logs have no top-1 correct column"})
        sentence += "; accuracy unavailable (no correct column in the logs)"
    out["sentence"] = sentence + "."
    return out


def accounting(pairs: list[PairedSample]) -> dict:
    """What the logs show of the token accounting: first position and gaps per sample."""
    first = sorted({int(p.position[0]) for p in pairs})
    holes = [p.sample_id for p in pairs if p.n > 1 and np.any(np.diff(p.position) != 1)]
    note = ("both logs score the same positions in every sample (checked on import); first position "
            f"{', '.join(map(str, first))}")
    if holes:
        note += f"; positions skip tokens in sample(s) {', '.join(holes[:3])}"
    return {"ok": True, "first_positions": first, "samples_with_holes": holes, "problem": None, "rule": note}


def judge_evalbias(pairs: list[PairedSample], th: Thresholds) -> Verdict:
    pw = power(pairs, th)
    evidence = {"power": pw, "accounting": accounting(pairs)}
    return Verdict(NAME, "inconclusive", effect_size=pw["dnll_mean"],
                   effect_label="mean NLL(method) - NLL(baseline) (nats/token)",
                   n={"tokens": pw["tokens"], "blocks": pw["blocks"], "samples": len(pairs)}, evidence=evidence,
                   message=f"Logs cannot compare token-by-token with batched scoring; {SETTLE}. Statistics from the "
                           f"logs: {pw['sentence']}")
