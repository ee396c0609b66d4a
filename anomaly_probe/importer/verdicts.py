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
        if not entry.logs:  # a policy's own ablation: nothing to say about logs
            continue
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
    """One sentence: the gap with its CI on the analysed tokens, the supported cause (if any), every other
    verdict (:func:`anomaly_probe.ranking.headline` with the :data:`~anomaly_probe.ranking.IMPORTED` wording).

    The analysed tokens are those the position verdict judged, as ``run``'s analysis region: past the
    trained context, from the gap's significant rise when it has one there, or from where the dense model
    breaks when the config claims too much; every token without a trained context.
    """
    start, why = analysed_from(verdicts)
    # a log's position is its query's index: entry at query q scores position q + 1
    kept = [p.gap[p.position + 1 >= start] for p in pairs]
    if start > 1 and sum(k.size for k in kept) < th.min_tokens:
        start, why, kept = 1, "", [p.gap for p in pairs]
    blocks = make_blocks([k[:, None] for k in kept if k.size], th.block_tokens)
    g, lo, hi = mean_ci(blocks, 0, th.n_boot, th.ci_level)
    last = max(int(p.position.max()) for p in pairs) + 1
    where = f" on positions {start}-{last} ({why})" if start > 1 else ""
    subject = (f"In the imported logs ({blocks.n_tokens} tokens, {blocks.n_samples} sample(s){where}) "
               f"{method_label}")
    return headline_sentence(subject, Gap(g, lo, hi), verdicts, {n: title(n) for n in HYPOTHESES}, IMPORTED)


def analysed_from(verdicts: list[Verdict]) -> tuple[int, str]:
    """First scored-token position of the analysed tokens and why (``(1, "")``: every token)."""
    v = next((v for v in verdicts if v.hypothesis == "position"), None)
    ev = v.evidence if v is not None else {}
    tc = ev.get("trained_context")
    broken = ev.get("break_inside_trained_context")
    if isinstance(broken, int):
        return broken, f"from where the dense model breaks, p={ev.get('changepoint_p', float('nan')):.3f}; config says {tc}"
    start = ev.get("region_start")
    if isinstance(start, int) and isinstance(tc, int):
        if start > tc + 1:
            return start, f"from the gap's rise, p={ev.get('changepoint_p', float('nan')):.3f}; trained context {tc}"
        return start, f"past the trained context {tc}"
    return 1, ""


def analysis_regions(pairs: list[PairedSample], verdicts: list[Verdict], max_tokens: int) -> list[dict] | None:
    """``results.json`` ``analysis_regions`` for the headline's tokens, so the report's gap CI is the
    headline's; None when every token is analysed, or when the logs do not start at position 0 with no
    hole (then the saved arrays' entries are not positions and the report shows all tokens, saying so)."""
    start, why = analysed_from(verdicts)
    contiguous = all(p.n and p.position[0] == 0 and p.position[-1] == p.n - 1 for p in pairs)
    if start <= 1 or not contiguous:
        return None
    last = max(int(p.position.max()) for p in pairs) + 1
    return [{"max_tokens": max_tokens, "start_entry": start - 1, "first_position": start,
             "basis": "changepoint" if why.startswith("from") else "trained-context",
             "text": f"positions {start}-{last} ({why})"}]
