"""Every judge on synthetic per-token data with a planted cause, with none, and with too little data."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_probe.hypotheses import ALL, JudgeInput
from anomaly_probe.hypotheses.region import AnalysisRegion
from anomaly_probe.methods import FullCache, StreamingLLM
from anomaly_probe.stats.thresholds import Thresholds

TH = Thresholds(n_boot=500)
METHOD = StreamingLLM(4, 252, "in-cache")
N, S = 3000, 2  # tokens per sample, samples


def _ar_noise(rng, n, scale):
    """Autocorrelated noise, like neighbouring tokens' NLL."""
    e = rng.normal(0, scale, n)
    out = np.empty(n)
    acc = 0.0
    for i in range(n):
        acc = 0.8 * acc + e[i]
        out[i] = acc
    return out


def make_input(hypothesis: str, roles_fn, n=N, samples=S, dtype="float32", method=METHOD, runs=None,
               trained_context=1500) -> JudgeInput:
    """``roles_fn(rng, base, meth) -> {role: nll}`` adds the hypothesis' roles to one sample."""
    rng = np.random.default_rng(42)
    nll = {"baseline": [], "method": []}
    for _ in range(samples):
        meth = 3.0 + _ar_noise(rng, n, 0.3)
        base = meth + 0.5 + _ar_noise(rng, n, 0.1)  # an anomaly: the method is 0.5 nats/token better
        nll["baseline"].append(base)
        nll["method"].append(meth)
        for role, arr in roles_fn(rng, base, meth).items():
            nll.setdefault(role, []).append(arr)
    correct = {r: [rng.random(len(a)) < 0.4 for a in arrs] for r, arrs in nll.items()}
    return JudgeInput(hypothesis=hypothesis, max_tokens=n + 1, trained_context=trained_context, dtype=dtype,
                      method=method, nll=nll, correct=correct, runs=runs or {}, thresholds=TH,
                      environment={"total_memory_bytes": 2**34})


ROLE = {"numerics": "precision_test", "dilution": "topk", "memory": "ballast", "position": "oracle",
        "sinks": "window", "handling": "mode:absolute"}


def planted(hypothesis: str, cause: bool):
    """The intervention role: removes the gap (cause) or changes nothing (no cause)."""
    role = ROLE[hypothesis]

    def fn(rng, base, meth):
        small = rng.normal(0, 1e-3, len(base))
        if hypothesis == "numerics":  # NLL(test) - NLL(ref=baseline)
            return {role: base + (0.5 if cause else 0) + small}
        if hypothesis == "memory":  # NLL(ballast) - NLL(baseline)
            return {role: base + (0.5 if cause else 0) + small}
        if hypothesis in ("dilution", "position"):  # baseline - intervened
            return {role: (meth if cause else base) + small}
        # handling, sinks: NLL(alternative) - NLL(method)
        return {role: (base if cause else meth) + small}

    return fn


@pytest.mark.parametrize("hypothesis", sorted(ROLE))
def test_planted_cause_is_supported(hypothesis):
    v = ALL[hypothesis].judge(make_input(hypothesis, planted(hypothesis, True)))
    assert v.status == "supported", v.message
    assert 0.8 < v.explained_share < 1.2 and v.ci_low > TH.support_share


@pytest.mark.parametrize("hypothesis", sorted(ROLE))
def test_no_cause_is_refuted(hypothesis):
    v = ALL[hypothesis].judge(make_input(hypothesis, planted(hypothesis, False)))
    assert v.status == "refuted", v.message
    assert abs(v.explained_share) < 0.1 and v.ci_high < TH.refute_share


@pytest.mark.parametrize("hypothesis", sorted(ROLE))
def test_too_little_data_is_inconclusive(hypothesis):
    v = ALL[hypothesis].judge(make_input(hypothesis, planted(hypothesis, True), n=100, samples=1))
    assert v.status == "inconclusive"
    assert "too little data" in v.message


def test_partial_cause_is_inconclusive():
    def half(rng, base, meth):
        return {"oracle": (base + meth) / 2 + rng.normal(0, 1e-3, len(base))}

    v = ALL["position"].judge(make_input("position", half))
    assert v.status == "inconclusive"
    assert v.ci_low < TH.support_share < v.ci_high or v.ci_low < TH.refute_share < v.ci_high or \
        TH.refute_share <= v.ci_low <= v.ci_high <= TH.support_share


def test_position_changepoint_found_near_planted_break():
    """The gap appears only past token 2000; the oracle removes it."""
    def fn(rng, base, meth):
        return {"oracle": meth + rng.normal(0, 1e-3, len(base))}

    data = make_input("position", fn, trained_context=2000)
    for s in range(S):  # no gap before 2000
        data.nll["baseline"][s][:1999] = data.nll["method"][s][:1999] + np.random.default_rng(s).normal(0, .05, 1999)
        data.nll["oracle"][s][:1999] = data.nll["baseline"][s][:1999]
    v = ALL["position"].judge(data)
    assert v.status == "supported"
    assert abs(v.evidence["changepoint_tokens"] - 2000) <= 2 * TH.block_tokens
    assert {f["id"] for f in v.evidence["figures"]} == {"position-nll", "position-gap"}


def test_no_anomaly_and_no_effect_is_refuted_without_share():
    def fn(rng, base, meth):
        return {"oracle": base + rng.normal(0, 1e-4, len(base))}

    data = make_input("position", fn)
    data.nll["baseline"] = [m + np.random.default_rng(1).normal(0, 0.05, len(m)) for m in data.nll["method"]]
    data.nll["oracle"] = [b.copy() for b in data.nll["baseline"]]
    v = ALL["position"].judge(data)
    assert v.status == "refuted" and v.explained_share is None
    assert "No anomaly" in v.message


def _evalbias_runs(n, prefix=None):
    return {"stepwise": [{"tokens_scored": (prefix or n + 1) - 1, "max_tokens": n + 1, "prefix": prefix}] * S,
            "batched": [{"tokens_scored": n, "max_tokens": n + 1, "prefix": None}] * S}


def test_evalbias_refuted_when_engines_agree_within_tolerance():
    def fn(rng, base, meth):
        return {"stepwise": base + rng.normal(0, 1e-6, len(base)), "batched": base}

    v = ALL["eval-bias"].judge(make_input("eval-bias", fn, runs=_evalbias_runs(N)))
    assert v.status == "refuted"
    assert v.evidence["max_abs_dnll"] < 1e-4
    assert "significant" in v.evidence["power"]["sentence"]


def test_evalbias_supported_when_stepwise_carries_the_gap():
    def fn(rng, base, meth):
        return {"stepwise": base, "batched": meth + rng.normal(0, 1e-3, len(base))}

    v = ALL["eval-bias"].judge(make_input("eval-bias", fn, runs=_evalbias_runs(N)))
    assert v.status == "supported", v.message


def test_evalbias_accounting_mismatch_is_reported():
    def fn(rng, base, meth):
        return {"stepwise": base, "batched": base}

    runs = _evalbias_runs(N)
    runs["stepwise"] = [{"tokens_scored": N + 1, "max_tokens": N + 1, "prefix": None}] * S  # scored the first token
    v = ALL["eval-bias"].judge(make_input("eval-bias", fn, runs=runs))
    assert v.status == "supported" and "accounting" in v.message.lower()


def test_power_detects_no_difference_in_accuracy():
    def fn(rng, base, meth):
        return {"stepwise": base, "batched": base}

    data = make_input("eval-bias", fn, runs=_evalbias_runs(N))
    data.correct["method"] = [c.copy() for c in data.correct["baseline"]]
    v = ALL["eval-bias"].judge(data)
    assert v.evidence["power"]["acc_significant"] is False
    assert v.evidence["power"]["nll_significant"] is True


WINDOWS = [(1024, 1056), (2048, 2080), (2967, 2999)]  # entries; the last one ends the sample (N = 3000)


def _spot_input(windows=WINDOWS, plant=None, start=2000):
    """Stepwise prefix of 1000 tokens, the batched baseline, and a spot run agreeing with it to ~1e-6
    except where ``plant(spot, base, meth)`` changes it; the analysis region starts at entry ``start``."""
    def fn(rng, base, meth):
        spot = base + rng.normal(0, 1e-6, len(base))
        if plant:
            plant(spot, base, meth)
        return {"stepwise": base[:999] + rng.normal(0, 1e-6, 999), "batched": base, "spot": spot}

    runs = _evalbias_runs(N, prefix=1000)
    runs["spot"] = [{"tokens_scored": N, "max_tokens": N + 1, "prefix": None,
                     "windows": [list(w) for w in windows]}] * S
    data = make_input("eval-bias", fn, runs=runs)
    data.analysis_start = start
    return data


def test_evalbias_judges_prefix_and_spot_windows_together():
    v = ALL["eval-bias"].judge(_spot_input())
    assert v.status == "refuted", v.message
    assert "positions 1-999 and spot windows 1025-1056, 2049-2080, 2968-2999" in v.message
    assert "in the analysis region: 2049-2080, 2968-2999" in v.message
    ev = v.evidence
    assert ev["spot_window_entries"] == [list(w) for w in WINDOWS]
    assert ev["spot_window_region"] == ["outside", "inside", "inside"]
    assert all(m < 1e-5 for m in ev["spot_window_max_abs_dnll"]) and len(ev["spot_windows"]) == 3
    assert ev["stepwise_tokens"] == S * (999 + 3 * 32)
    assert ev["spot_batched_parts_max_abs_dnll"] < 1e-5


def test_evalbias_catches_a_divergence_inside_one_spot_window():
    """Only the last window (positions 2968-2999) diverges, as a long-context kernel would: the prefix
    alone would refute eval-bias; with the window it is not refuted, and the message says where."""
    def plant(spot, base, meth):  # stepwise scoring there differs by the whole gap
        spot[2967:2999] = 2 * base[2967:2999] - meth[2967:2999]

    for start in (2000, 0):  # the window inside a region too small to judge; the whole sample as region
        v = ALL["eval-bias"].judge(_spot_input(plant=plant, start=start))
        assert v.status == "inconclusive", v.message
        assert "2968-2999" in v.message and v.evidence["max_abs_dnll"] > 0.1
        assert v.evidence["prefix_max_abs_dnll"] < 1e-4
        assert v.evidence["spot_window_max_abs_dnll"][2] == v.evidence["max_abs_dnll"]
    prefix_only = _spot_input(plant=plant)
    del prefix_only.nll["spot"], prefix_only.runs["spot"]
    assert ALL["eval-bias"].judge(prefix_only).status == "refuted"


def test_evalbias_small_window_divergence_does_not_block_a_refutation():
    """0.02 nats/token in one window: beyond the float32 tolerance but far below the 0.5 gap."""
    def plant(spot, base, meth):
        spot[2048:2080] = base[2048:2080] + 0.02

    v = ALL["eval-bias"].judge(_spot_input(plant=plant, start=0))
    assert v.status == "refuted", v.message
    assert "2049-2080" in v.message


def test_evalbias_enough_window_tokens_in_the_region_give_a_share():
    def plant(spot, base, meth):  # NLL(stepwise) - NLL(batched) = the gap (the documented effect's sign)
        spot[2000:3000] = 2 * base[2000:3000] - meth[2000:3000]

    v = ALL["eval-bias"].judge(_spot_input(windows=[(2000, 3000)], plant=plant, start=2000))
    assert v.status == "supported", v.message
    assert 0.8 < v.explained_share < 1.2 and v.n["tokens"] == S * 1000


@pytest.mark.parametrize("hypothesis", ["dilution", "handling", "sinks"])
def test_full_cache_method_has_nothing_to_compare(hypothesis):
    data = make_input(hypothesis, lambda rng, b, m: {}, method=FullCache())
    assert ALL[hypothesis].judge(data).status == "inconclusive"


def test_half_precision_run_uses_its_own_dtype_as_the_precision_under_test():
    def fn(rng, base, meth):
        return {"precision_ref": meth + rng.normal(0, 1e-3, len(base))}  # fp32 attention removes the gap

    v = ALL["numerics"].judge(make_input("numerics", fn, dtype="float16"))
    assert v.status == "supported"
    assert v.evidence["precision_under_test"] == "float16"


def test_statistics_use_only_positions_past_the_trained_context():
    """Inside the trained context the method is worse (as a 256-token cache usually is); past it the
    baseline breaks and the oracle repairs it. Over all tokens there is no anomaly; past the trained
    context there is one, and position explains it."""
    def fn(rng, base, meth):
        return {"oracle": meth + rng.normal(0, 1e-3, len(base))}

    data = make_input("position", fn, trained_context=2000)
    for s in range(S):
        data.nll["baseline"][s][:2000] = data.nll["method"][s][:2000] - 0.8
        data.nll["oracle"][s][:2000] = data.nll["baseline"][s][:2000]
    whole = ALL["position"].judge(data)
    assert whole.explained_share is None or whole.status != "supported"
    data.analysis_start = 2000
    data.analysis_region = AnalysisRegion(2000, "trained-context", data.max_tokens, 2000)
    past = ALL["position"].judge(data)
    assert past.status == "supported", past.message
    assert "past the trained context" in past.message
    assert past.n["tokens"] == S * (N - 2000)


def test_causes_rank_before_method_side_checks():
    """Dropping the sinks wrecks the method (share >> 1), but that is what the method needs, not why the
    baseline fails: position (an intervention on the baseline) ranks first."""
    from anomaly_probe.ranking import rank
    from anomaly_probe.verdict import Verdict

    vs = [Verdict("sinks", "supported", explained_share=5.0, ci_low=4.0, ci_high=6.0, max_tokens=12000),
          Verdict("handling", "supported", explained_share=2.0, ci_low=1.5, ci_high=2.5, max_tokens=12000),
          Verdict("numerics", "refuted", explained_share=0.0, ci_low=-0.01, ci_high=0.01, max_tokens=12000),
          Verdict("position", "supported", explained_share=1.2, ci_low=1.0, ci_high=1.4, max_tokens=12000),
          Verdict("position", "refuted", explained_share=0.0, ci_low=0.0, ci_high=0.0, max_tokens=4000)]
    order = [(v.hypothesis, v.max_tokens) for v in rank(vs)]
    assert order == [("position", 12000), ("numerics", 12000), ("sinks", 12000), ("handling", 12000),
                     ("position", 4000)]
    assert {h.name for h in ALL.values() if h.acts_on == "method"} == {"handling", "sinks", "ablation"}


def test_wide_range_picks_a_log_scale_only_past_a_factor_of_ten():
    from anomaly_probe.hypotheses.share import wide_range

    assert wide_range([10.0, 12.0, 290.0]) and not wide_range([10.0, 12.0, 35.0])
    assert not wide_range([None, float("nan"), 0.0, 5.0])
