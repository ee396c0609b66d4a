"""Every hypothesis judged from imported logs, ranked, and the headline sentence.

Ranking and the sentence are :mod:`anomaly_probe.ranking`'s, the same as for ``anomaly-probe run``.
"""

from __future__ import annotations

from anomaly_probe.hypotheses.catalog import CATALOG, HYPOTHESES, title
from anomaly_probe.importer.memory import judge_memory
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.importer.position import judge_position
from anomaly_probe.importer.power import judge_evalbias
from anomaly_probe.ranking import IMPORTED, Gap, rank
from anomaly_probe.ranking import headline as headline_sentence
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


def headline(pairs: list[PairedSample], verdicts: list[Verdict], method_label: str, th: Thresholds) -> str:
    """One sentence: the gap with its CI over every imported token, the supported cause (if any), every
    other verdict (:func:`anomaly_probe.ranking.headline` with the :data:`~anomaly_probe.ranking.IMPORTED` wording)."""
    blocks = make_blocks([p.gap[:, None] for p in pairs], th.block_tokens)
    g, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    subject = f"In the imported logs ({blocks.n_tokens} tokens, {blocks.n_samples} sample(s)) {method_label}"
    return headline_sentence(subject, Gap(g, lo, hi), verdicts, {n: title(n) for n in HYPOTHESES}, IMPORTED)
