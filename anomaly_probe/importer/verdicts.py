"""Every hypothesis judged from imported logs, ranked, and the headline sentence.

Ranking and the sentence are :mod:`anomaly_probe.ranking`'s, the same as for ``anomaly-probe run``.
"""

from __future__ import annotations

from anomaly_probe.hypotheses_names import HYPOTHESES
from anomaly_probe.importer.memory import judge_memory
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.importer.position import judge_position
from anomaly_probe.importer.power import judge_evalbias
from anomaly_probe.ranking import IMPORTED, Gap, rank
from anomaly_probe.ranking import headline as headline_sentence
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


def headline(pairs: list[PairedSample], verdicts: list[Verdict], method_label: str, th: Thresholds) -> str:
    """One sentence: the gap with its CI over every imported token, the supported cause (if any), every
    other verdict (:func:`anomaly_probe.ranking.headline` with the :data:`~anomaly_probe.ranking.IMPORTED` wording)."""
    blocks = make_blocks([p.gap[:, None] for p in pairs], th.block_tokens)
    g, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    subject = f"In the imported logs ({blocks.n_tokens} tokens, {blocks.n_samples} sample(s)) {method_label}"
    return headline_sentence(subject, Gap(g, lo, hi), verdicts, TITLES, IMPORTED)
