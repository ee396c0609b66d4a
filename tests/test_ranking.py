"""One ranking and one headline for ``run`` and ``import``; judging reads a typed view, not a session."""

from __future__ import annotations

import numpy as np

from anomaly_probe.ranking import IMPORTED, RUN, Gap, headline, rank
from anomaly_probe.verdict import Verdict

TITLES = {"position": "positions beyond the trained context", "memory": "memory pressure"}


def _verdicts(L: int = 12000) -> list[Verdict]:
    return [Verdict("numerics", "refuted", explained_share=0.01, ci_low=-0.02, ci_high=0.03, max_tokens=L),
            Verdict("sinks", "supported", explained_share=0.62, ci_low=0.5, ci_high=0.79, max_tokens=L),
            Verdict("position", "supported", explained_share=1.18, ci_low=1.11, ci_high=1.28, max_tokens=L),
            Verdict("eval-bias", "refuted", max_tokens=L),
            Verdict("handling", "inconclusive", max_tokens=L)]


def test_rank_longest_length_then_causes_then_checks_by_share():
    vs = _verdicts() + [Verdict("position", "refuted", explained_share=0.0, ci_low=0.0, ci_high=0.0, max_tokens=4000)]
    order = [(v.hypothesis, v.max_tokens) for v in rank(vs)]
    assert order == [("position", 12000), ("numerics", 12000), ("eval-bias", 12000), ("sinks", 12000),
                     ("handling", 12000), ("position", 4000)]


def test_run_headline_names_the_top_cause_never_a_method_side_check():
    text = headline("At 12000 tokens streaming_llm", Gap(0.957, 0.768, 1.177), _verdicts(), TITLES, RUN)
    assert text == ("At 12000 tokens streaming_llm beats the full cache by 0.957 nats/token (95% CI 0.768..1.177); "
                    "the gap is explained by positions beyond the trained context (share 1.18, 95% CI 1.11..1.28); "
                    "numerics refuted (0.01 [-0.02, 0.03]); eval-bias refuted; method-side checks: sinks supported "
                    "(0.62 [0.50, 0.79]), handling inconclusive.")
    only_checks = [v for v in _verdicts() if v.hypothesis != "position"]
    text = headline("At 12000 tokens m", Gap(0.9, 0.7, 1.1), only_checks, TITLES, RUN)
    assert "no tested cause explains it: numerics refuted" in text and "explained by" not in text


def test_imported_headline_says_so_and_estimates_shares():
    vs = _verdicts(1024)
    text = headline("In the imported logs (2046 tokens, 2 sample(s)) m", Gap(0.3, 0.2, 0.4), vs, TITLES, IMPORTED)
    assert text.startswith("In the imported logs (2046 tokens, 2 sample(s)) m beats the full cache by 0.300")
    assert "the logs point to positions beyond the trained context (est. share 1.18, 95% CI 1.11..1.28)" in text
    assert "numerics refuted (est. share 0.01 [-0.02, 0.03])" in text
    text = headline("In the imported logs m", Gap(-0.01, -0.05, 0.03), vs, TITLES, IMPORTED)
    assert "does not beat the full cache beyond noise (gap -0.010 nats/token, 95% CI -0.050..+0.030)" in text
    assert "no cause is supported by the logs alone" not in text


def test_judging_reads_a_typed_view_built_by_hand():
    """Plan the position experiment, fill the units' arrays with a planted cause, judge: no model, no session."""
    from anomaly_probe.hypotheses import ExperimentSettings
    from anomaly_probe.methods import StreamingLLM
    from anomaly_probe.run.judging import ScoredRuns, headline as run_headline, judge, plan, regions, role_entries
    from anomaly_probe.stats.thresholds import Thresholds

    L, tc, samples = 1500, 300, 2
    arrays: dict = {}
    view = ScoredRuns(method=StreamingLLM(4, 60, "in-cache"), trained_context=tc, dtype="float32",
                      environment={"dtype": "float32"}, lengths=(L,), num_samples=samples, engine="auto",
                      arrays=arrays, records={})
    units, roles, errors = plan(view, ["position"], ExperimentSettings())
    assert not errors and set(roles[("position", L)]) == {"baseline", "method", "oracle"}
    assert len({u.key for u in units}) == 3 * samples
    table = role_entries(view, roles)
    assert [(e.hypothesis, e.role) for e in table] == [("none", "baseline"), ("none", "method"),
                                                        ("position", "baseline"), ("position", "method"),
                                                        ("position", "oracle")]
    rng = np.random.default_rng(0)
    t = np.arange(L - 1)
    for s in range(samples):
        meth = 3.0 + rng.normal(0, 0.3, L - 1)
        cols = {"baseline": meth + 0.8 * (t >= tc) + rng.normal(0, 0.05, L - 1), "method": meth,
                "oracle": meth + rng.normal(0, 0.05, L - 1)}
        for role, nll in cols.items():
            arrays[roles[("position", L)][role][s].key] = {"nll": nll, "correct": np.zeros(L - 1, bool)}
    view = ScoredRuns(**{**view.__dict__, "records": {u.key: {"key": u.key} for u in units}})
    th = Thresholds(n_boot=300)
    where = regions(view, (L,), th)
    (v,) = judge(view, roles, th, where=where)
    assert v.hypothesis == "position" and v.status == "supported", v.message
    assert "explained by positions beyond the trained context" in run_headline(view, [v], th, where)


def test_a_headline_with_only_the_explaining_cause_ends_cleanly():
    from anomaly_probe.ranking import Gap, headline
    from anomaly_probe.verdict import Verdict

    v = Verdict(hypothesis="position", status="supported", explained_share=1.18, ci_low=1.11, ci_high=1.28)
    gap = Gap(mean=0.957, ci_low=0.768, ci_high=1.177)
    text = headline("At 12000 tokens", gap, [v], {"position": "positions beyond the trained context"})
    assert text.endswith("(share 1.18, 95% CI 1.11..1.28).") and "; ." not in text, text
