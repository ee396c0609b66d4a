"""Every hypothesis judged from imported logs, ranked, and the headline sentence."""

from __future__ import annotations

import math

from anomaly_probe.hypotheses.findings import finding_clause
from anomaly_probe.hypotheses_names import HYPOTHESES
from anomaly_probe.importer.memory import judge_memory
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.importer.position import judge_position
from anomaly_probe.importer.power import judge_evalbias
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

NEEDS_MODEL = {
    "numerics": "the baseline with attention in another precision",
    "dilution": "the full cache with each query limited to its top-k keys",
    "handling": "the method in the other position modes",
    "sinks": "a window of the same capacity without sink tokens",
}
"""Hypotheses whose intervention only a model can supply: what the run would score."""

TITLES = {"numerics": "fp16 softmax underflow", "dilution": "attention dilution", "memory": "memory pressure",
          "eval-bias": "evaluation bias", "position": "positions beyond the trained context",
          "handling": "position handling", "sinks": "attention sinks"}


def judge_all(pairs: list[PairedSample], trained_context: int | None, th: Thresholds, max_tokens: int) -> list[Verdict]:
    """One verdict per hypothesis; a judge that crashes gives an ERROR verdict and the others still run."""
    judges = {"position": lambda: judge_position(pairs, trained_context, th),
              "memory": lambda: judge_memory(pairs, th), "eval-bias": lambda: judge_evalbias(pairs, th)}
    out = []
    for name in HYPOTHESES:
        if name in judges:
            try:
                v = judges[name]()
            except Exception as exc:  # noqa: BLE001 - one judge's failure must not lose the others
                v = Verdict(name, "error", message=f"{type(exc).__name__}: {str(exc)[:300]}")
        else:
            v = Verdict(name, "inconclusive", evidence={"needs": NEEDS_MODEL[name]},
                        message=f"Needs {NEEDS_MODEL[name]}, which logs cannot supply; run `anomaly-probe run "
                                f"--hypothesis {name} --model MODEL` to settle it.")
        v.max_tokens = max_tokens
        out.append(v)
    return rank(out)


def rank(verdicts: list[Verdict]) -> list[Verdict]:
    """By explained share, highest first (None last), then SUPPORTED before the rest."""
    order = {"supported": 0, "inconclusive": 1, "refuted": 2, "error": 3}

    def key(v: Verdict):
        share = v.explained_share if v.explained_share is not None and math.isfinite(v.explained_share) else -math.inf
        return (order.get(v.status, 4), -share, v.hypothesis)

    return sorted(verdicts, key=key)


def headline(pairs: list[PairedSample], verdicts: list[Verdict], method_label: str, th: Thresholds) -> str:
    """One sentence: the gap with its CI, the supported hypothesis (if any), every other status."""
    blocks = make_blocks([p.gap[:, None] for p in pairs], th.block_tokens)
    g, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    parts = [f"{v.hypothesis} {v.status}{_share(v)}{finding_clause(v)}" for v in verdicts]
    where = f"In the imported logs ({blocks.n_tokens} tokens, {blocks.n_samples} sample(s)) {method_label}"
    if not lo > 0:
        return (f"{where} does not beat the full cache beyond noise (gap {g:+.3f} nats/token, 95% CI {lo:+.3f}.."
                f"{hi:+.3f}); " + "; ".join(parts) + ".")
    lead = f"{where} beats the full cache by {g:.3f} nats/token (95% CI {lo:.3f}..{hi:.3f}); "
    top = next((v for v in verdicts if v.status == "supported"), None)
    if top is None:
        return lead + "no cause is supported by the logs alone: " + "; ".join(parts) + "."
    rest = [p for p, v in zip(parts, verdicts) if v is not top]
    return lead + f"the logs point to {TITLES[top.hypothesis]} ({parts[verdicts.index(top)]}); " + "; ".join(rest) + "."


def _share(v: Verdict) -> str:
    if v.explained_share is None or not math.isfinite(v.explained_share) or v.ci_low is None or v.ci_high is None:
        return ""
    return f" (est. share {v.explained_share:.2f}, 95% CI {v.ci_low:.2f}..{v.ci_high:.2f})"
