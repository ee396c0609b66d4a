"""The location judge of position on synthetic degradation curves shaped like real ones, in ``import`` and ``run``.

Real dense models hold on past their trained context and then break (SmolLM2-135M, trained at 8192,
breaks at 10753 = 1.31x); inside the context a 256-token cache is usually a little *worse* than the
full cache. The curves below have that shape: a small negative gap within, a break at a chosen onset.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from anomaly_probe.cli import main
from anomaly_probe.hypotheses.curves import Curve, find_rise
from anomaly_probe.hypotheses.findings import finding_clause, finding_of, findings_sentence
from anomaly_probe.hypotheses.location import judge_location
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.verdict import Verdict

TH = Thresholds(n_boot=500)


def _ar(rng, n, scale):
    """Autocorrelated noise, like neighbouring tokens' NLL."""
    e = rng.normal(0, scale, n)
    out, acc = np.empty(n), 0.0
    for i in range(n):
        acc = 0.8 * acc + e[i]
        out[i] = acc
    return out


def curves(n: int, onset: int | None, samples: int = 2, within: float = -0.15, jump: float = 1.5, seed: int = 0,
           method_improves: bool = False) -> tuple[list[Curve], list[np.ndarray], list[np.ndarray]]:
    """Per sample: method NLL ~3 with text-like noise; the baseline ``within`` nats/token better than it
    until ``onset`` (scored-token position), then breaking: a step of half ``jump`` growing to ``jump``.
    With ``method_improves`` the gap rises because the *method* gets better, not the baseline worse."""
    rng = np.random.default_rng(seed)
    out, bases, meths = [], [], []
    for _ in range(samples):
        pos = np.arange(1, n + 1)
        meth = 3.0 + _ar(rng, n, 0.3) + 0.4 * np.sin(pos / 700.0)  # the text gets harder and easier
        rise = np.zeros(n)
        if onset is not None:
            after = pos >= onset
            rise[after] = jump * (0.5 + 0.5 * np.minimum(1.0, (pos[after] - onset) / max(1, n - onset)))
        if method_improves:
            meth = meth - rise
            base = meth + rise - within + _ar(rng, n, 0.1)
        else:
            base = meth - within + rise + _ar(rng, n, 0.1)
        out.append(Curve(pos, base - meth, base))
        bases.append(base)
        meths.append(meth)
    return out, bases, meths


@pytest.mark.parametrize("multiple", [1.0, 1.2, 1.5])
def test_onsets_at_or_past_the_trained_context_are_supported(multiple):
    tc = 2048
    onset = int(multiple * tc)
    loc = judge_location(curves(onset + 1600, onset)[0], tc, TH)
    assert loc.status == "supported", loc.message
    assert abs(loc.rise.onset - onset) <= TH.block_tokens and loc.rise.significant
    assert abs(loc.onset_multiple - multiple) <= TH.block_tokens / tc
    assert f"{loc.rise.onset / tc:.2f} x the trained context" in loc.message
    assert loc.stats["estimated_share_ci"][0] > TH.support_share and loc.finding is None


def test_the_smollm2_shape_is_supported_at_1_31x():
    """The demo's numbers: gap -0.24 within, a break at 10753 to about +1 nats/token (trained at 8192)."""
    cs = curves(11999, 10753, samples=1, within=-0.24, jump=1.3, seed=4)[0]
    loc = judge_location(cs, 8192, TH)
    assert loc.status == "supported", loc.message
    assert 1.28 <= loc.onset_multiple <= 1.34
    assert loc.stats["region_start"] == loc.rise.onset  # the statistics use the tokens from the rise on


def test_an_onset_well_before_the_trained_context_points_away_and_doubts_the_config():
    tc = 2048
    loc = judge_location(curves(4096, 1024)[0], tc, TH)
    assert loc.status == "inconclusive", loc.message
    assert "well before the trained context" in loc.message
    assert loc.break_at is not None and abs(loc.break_at - 1024) <= TH.block_tokens


def test_a_rise_that_is_not_the_dense_model_breaking_only_points_away():
    """The gap rises early because the method gets better: no finding about the config."""
    loc = judge_location(curves(4096, 1024, method_improves=True)[0], 2048, TH)
    assert loc.status != "supported"
    assert loc.rise.significant and loc.rise.baseline_rises is False
    assert "points away from positions past it" in loc.message and loc.finding is None


def test_a_config_four_times_too_long_is_caught_not_believed():
    """Trained at 2048, config says 8192; the dense NLL explodes past 1.1x 2048 (+3.8 nats/token)."""
    real, claimed = 2048, 8192
    onset = int(1.1 * real)
    loc = judge_location(curves(2 * real, onset, jump=3.8)[0], claimed, TH, settle_suffix=" --model MODEL")
    assert loc.status == "inconclusive", loc.message
    assert abs(loc.break_at - onset) <= TH.block_tokens
    b = loc.break_at
    assert f"breaks at ~{b} tokens although its config says {claimed}" in loc.finding
    assert f"behaves as if trained at about {b}" in loc.finding
    assert f"anomaly-probe run --hypothesis position --trained-context {b} --model MODEL" in loc.finding
    assert loc.finding in loc.message


def test_without_a_rise_a_short_context_claim_is_still_refuted():
    loc = judge_location(curves(4096, None)[0], 8192, TH)
    assert loc.status == "refuted", loc.message
    assert loc.finding is None and "No scored position passes the trained context" in loc.message


def test_a_flat_gap_is_refuted():
    for within in (0.0, -0.3, 0.3):
        loc = judge_location(curves(4096, None, within=within)[0], 2048, TH)
        assert loc.status == "refuted", (within, loc.message)
        assert loc.finding is None


def test_short_logs_are_inconclusive():
    loc = judge_location(curves(200, None, samples=1)[0], 128, TH)
    assert loc.status == "inconclusive" and "Too little data" in loc.message


def test_an_unknown_trained_context_is_inconclusive_and_says_where_the_gap_rises():
    loc = judge_location(curves(4096, 3000)[0], None, TH)
    assert loc.status == "inconclusive" and "--trained-context" in loc.message
    assert loc.rise.significant and "rises at position" in loc.message


def test_the_rise_uses_the_same_test_as_the_analysis_region():
    """A gap with a planted rise at 10753 (as in tests/test_region.py): the same changepoint."""
    rng = np.random.default_rng(5)
    g = rng.normal(0, 0.3, 11999) - 0.25
    g[10752:] += 1.0
    rise = find_rise([Curve(np.arange(1, 12000), g)], TH)
    assert rise.significant and rise.onset == 10753 and rise.p_value <= TH.region_alpha


# --------------------------------------------------------------------------- findings in headlines and reports
def test_finding_helpers():
    v = Verdict("position", "inconclusive", evidence={"finding": "the dense model breaks at ~10753 tokens"})
    assert finding_of(v) == finding_of(v.to_dict()) == "the dense model breaks at ~10753 tokens"
    assert finding_clause(v) == " (finding: the dense model breaks at ~10753 tokens)"
    assert findings_sentence([v, Verdict("sinks", "supported")]) == \
        "Finding (position): the dense model breaks at ~10753 tokens."
    assert finding_clause(Verdict("sinks", "refuted")) == "" and findings_sentence([]) == ""


def _write_logs(tmp_path, cs, bases, meths):
    for name, arrays in (("base", bases), ("meth", meths)):
        rows = ["sample_id,position,nll"] + [f"doc{s},{p},{x:.6f}" for s, (c, a) in enumerate(zip(cs, arrays))
                                               for p, x in zip(c.position, a)]
        (tmp_path / f"{name}.csv").write_text("\n".join(rows) + "\n")
    return str(tmp_path / "base.csv"), str(tmp_path / "meth.csv")


def test_import_with_a_config_that_claims_too_much(tmp_path, capsys):
    real, claimed = 2048, 8192
    b, m = _write_logs(tmp_path, *curves(2 * real, int(1.1 * real), jump=3.8))
    out = tmp_path / "run"
    assert main(["import", "--baseline", b, "--method", m, "--trained-context", str(claimed), "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    v = next(v for v in res["verdicts"] if v["hypothesis"] == "position")
    assert v["status"] == "inconclusive", v["message"]
    finding = v["evidence"]["finding"]
    assert re.search(r"breaks at ~\d+ tokens although its config says 8192", finding)
    assert finding in v["message"] and finding in res["headline"]
    html = (out / "report.html").read_text()
    assert "breaks at ~" in html and "--trained-context" in html


def test_import_of_a_break_past_the_trained_context_reports_the_multiple(tmp_path, capsys):
    b, m = _write_logs(tmp_path, *curves(4096, int(1.3 * 2048)))
    out = tmp_path / "run"
    assert main(["import", "--baseline", b, "--method", m, "--trained-context", "2048", "--out", str(out)]) == 0
    capsys.readouterr()
    v = next(v for v in json.loads((out / "results.json").read_text())["verdicts"] if v["hypothesis"] == "position")
    assert v["status"] == "supported", v["message"]
    assert 1.25 <= v["evidence"]["changepoint_over_trained_context"] <= 1.36
    assert v["ci_low"] > TH.support_share and "finding" not in v["evidence"]


# ----------------------------------------------------------------- run: the oracle decides, the config is doubted
def _run_input(claimed: int, real: int, oracle_fixes: bool):
    from anomaly_probe.hypotheses import JudgeInput
    from anomaly_probe.methods import StreamingLLM

    n = 2 * real
    cs, bases, meths = curves(n, int(1.1 * real), jump=3.8)
    oracle = [m - 0.15 if oracle_fixes else b.copy() for b, m in zip(bases, meths)]
    if oracle_fixes:  # the oracle's windows never pass the real context: before the break it is the baseline
        for o, b in zip(oracle, bases):
            o[: int(1.1 * real)] = b[: int(1.1 * real)]
    return JudgeInput(hypothesis="position", max_tokens=n + 1, trained_context=claimed, dtype="float32",
                      method=StreamingLLM(4, 252, "in-cache"), nll={"baseline": bases, "method": meths,
                                                                     "oracle": oracle}, thresholds=TH)


def test_run_does_not_refute_position_when_the_config_claims_too_much():
    from anomaly_probe.hypotheses import ALL

    v = ALL["position"].judge(_run_input(claimed=8192, real=2048, oracle_fixes=False))
    assert v.status == "inconclusive", v.message
    b = v.evidence["break_inside_trained_context"]
    assert abs(b - int(1.1 * 2048)) <= TH.block_tokens
    assert v.evidence["finding"] in v.message and f"--trained-context {b}" in v.evidence["finding"]
    assert v.evidence["changepoint_over_trained_context"] < 0.5


def test_run_with_the_right_config_is_supported_by_the_oracle_without_a_finding():
    from anomaly_probe.hypotheses import ALL

    v = ALL["position"].judge(_run_input(claimed=2048, real=2048, oracle_fixes=True))
    assert v.status == "supported", v.message
    assert "finding" not in v.evidence and v.evidence["location_status"] == "supported"
    assert 1.0 <= v.evidence["changepoint_over_trained_context"] <= 1.2


# --------------------------------------------------------------------------- the real model (slow)
@pytest.mark.slow
def test_smollm2_with_a_config_that_claims_too_much_is_not_refuted(tmp_path, capsys):
    """SmolLM2-135M is trained at 8192 and breaks at ~10.7k; told 32768, the oracle (windows of 32768)
    repairs nothing, but the break is in the data: INCONCLUSIVE with the finding, never REFUTED."""
    out = tmp_path / "run"
    assert main(["run", "--model", "smollm2-135m", "--max-tokens", "12000", "--trained-context", "32768",
                 "--hypothesis", "position", "--probes", "none", "--out", str(out)]) == 0
    capsys.readouterr()
    res = json.loads((out / "results.json").read_text())
    (v,) = res["verdicts"]
    assert v["status"] == "inconclusive", v["message"]
    b = v["evidence"]["break_inside_trained_context"]
    assert 10000 <= b <= 11500, v["message"]
    assert f"breaks at ~{b} tokens although its config says 32768" in v["evidence"]["finding"]
    assert f"--trained-context {b}" in v["message"] and v["evidence"]["finding"] in res["headline"]
