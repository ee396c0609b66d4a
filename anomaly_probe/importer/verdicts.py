"""Every hypothesis judged from imported logs, ranked, and the headline sentence."""

from __future__ import annotations

import math

from anomaly_probe.hypotheses.catalog import CATALOG, HYPOTHESES, title
from anomaly_probe.importer.memory import judge_memory
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.importer.position import judge_position
from anomaly_probe.importer.power import judge_evalbias
from anomaly_probe.stats import make_blocks, mean_ci
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

LOG_JUDGES = {"position": judge_position,
              "memory": lambda pairs, trained_context, th: judge_memory(pairs, th),
              "eval-bias": lambda pairs, trained_context, th: judge_evalbias(pairs, th)}
"""``fn(pairs, trained_context, thresholds) -> Verdict`` for every catalog entry that needs no model."""


def judge_all(pairs: list[PairedSample], trained_context: int | None, th: Thresholds, max_tokens: int) -> list[Verdict]:
    """One verdict per hypothesis; a judge that crashes gives an ERROR verdict and the others still run.

    A hypothesis that needs a model (``catalog.Entry.needs_model``) is INCONCLUSIVE, naming the run that
    settles it.
    """
    out = []
    for name in HYPOTHESES:
        entry = CATALOG[name]
        if entry.needs_model:
            v = Verdict(name, "inconclusive", evidence={"needs": entry.model_run},
                        message=f"Needs {entry.model_run}, which logs cannot supply; run `anomaly-probe run "
                                f"--hypothesis {name} --model MODEL` to settle it.")
        else:
            try:
                v = LOG_JUDGES[name](pairs, trained_context, th)
            except Exception as exc:  # noqa: BLE001 - one judge's failure must not lose the others
                v = Verdict(name, "error", message=f"{type(exc).__name__}: {str(exc)[:300]}")
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
    parts = [f"{v.hypothesis} {v.status}{_share(v)}" for v in verdicts]
    where = f"In the imported logs ({blocks.n_tokens} tokens, {blocks.n_samples} sample(s)) {method_label}"
    if not lo > 0:
        return (f"{where} does not beat the full cache beyond noise (gap {g:+.3f} nats/token, 95% CI {lo:+.3f}.."
                f"{hi:+.3f}); " + "; ".join(parts) + ".")
    lead = f"{where} beats the full cache by {g:.3f} nats/token (95% CI {lo:.3f}..{hi:.3f}); "
    top = next((v for v in verdicts if v.status == "supported"), None)
    if top is None:
        return lead + "no cause is supported by the logs alone: " + "; ".join(parts) + "."
    rest = [p for p, v in zip(parts, verdicts) if v is not top]
    return lead + f"the logs point to {title(top.hypothesis)} ({parts[verdicts.index(top)]}); " + "; ".join(rest) + "."


def _share(v: Verdict) -> str:
    if v.explained_share is None or not math.isfinite(v.explained_share) or v.ci_low is None or v.ci_high is None:
        return ""
    return f" (est. share {v.explained_share:.2f}, 95% CI {v.ci_low:.2f}..{v.ci_high:.2f})"
