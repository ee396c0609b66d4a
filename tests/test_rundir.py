"""The run folder's owner: typed records round-trip, one prepare, one read, atomic writes, checked tokens."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from anomaly_probe.errors import UserError
from anomaly_probe.rundir import (SCHEMA_VERSION, Comparison, Failure, Results, RoleEntry, UnitRecord, compare,
                                  load_tokens, prepare, read, save_tokens, write_json, write_results)
from anomaly_probe.verdict import Verdict


def _record(**kw) -> UnitRecord:
    fields = dict(key="L40-s0-full-batched-none", method="full", label="full", engine="batched", max_tokens=40,
                  tokens_scored=39, nll_mean=2.5, tokens_file="tokens/L40-s0-full-batched-none.npz")
    return UnitRecord(**(fields | kw))


def test_unit_record_round_trips_and_keeps_unknown_keys():
    saved = _record().to_dict() | {"added_by_a_newer_version": [1, 2]}
    assert "trace_file" not in saved and "nonfinite" not in saved and "window" not in saved  # optional: only when set
    back = UnitRecord.from_dict(saved)
    assert back.extra == {"added_by_a_newer_version": [1, 2]} and back.nll_mean == 2.5
    assert back.to_dict() == saved
    assert _record(trace_file="traces/x.npz").to_dict()["trace_file"] == "traces/x.npz"
    with pytest.raises(ValueError, match="no key"):
        UnitRecord.from_dict({"method": "full"})
    with pytest.raises(ValueError, match="expected an object"):
        UnitRecord.from_dict(["key"])


def test_verdict_round_trips_and_keeps_unknown_keys():
    v = Verdict("sinks", "supported", explained_share=0.6, ci_low=0.5, ci_high=0.7, max_tokens=300)
    saved = v.to_dict() | {"future": True}
    assert "extra" not in v.to_dict() and v.to_dict()["acts_on"] == "method"
    back = Verdict.from_dict(saved)
    assert back.to_dict() == saved and back.extra == {"future": True}
    with pytest.raises(ValueError):
        Verdict.from_dict({"status": "supported"})


def test_results_round_trip_in_the_documented_key_order():
    res = Results(status="complete", config={"model": "m"}, runs=[_record()],
                  comparisons=[Comparison(40, "full", "m", 1, 39)], verdicts=[Verdict("position", "refuted")],
                  failures=[Failure("k", "boom")], thresholds={"block_tokens": 64},
                  roles=[RoleEntry("none", 40, "baseline", ["L40-s0-full-batched-none"])],
                  extra={"written_by_a_newer_version": {"x": 1}})
    data = json.loads(json.dumps(res.to_dict()))
    assert list(data)[:11] == ["schema_version", "status", "environment", "config", "model", "method", "runs",
                               "comparisons", "verdicts", "headline", "failures"]
    assert data["schema_version"] == SCHEMA_VERSION and "inputs" not in data and "analysis_regions" not in data
    assert data["roles"] == [{"hypothesis": "none", "max_tokens": 40, "role": "baseline",
                              "units": ["L40-s0-full-batched-none"]}]
    assert Results.from_dict(data).to_dict() == data


def test_results_from_dict_drops_damaged_entries_and_reads_wrong_sections_as_empty():
    data = {"schema_version": 1, "status": "interrupted", "config": "oops", "runs": [{"key": "a"}, 3, {"no": "key"}],
            "verdicts": [{"hypothesis": "memory"}], "roles": "x"}
    res = Results.from_dict(data)
    assert [r.key for r in res.runs] == ["a"] and res.verdicts == [] and res.roles == [] and res.config == {}


def test_write_json_is_atomic_and_json_safe(tmp_path):
    path = tmp_path / "results.json"
    write_json(path, {"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(3), float("inf")]})
    assert json.loads(path.read_text()) == {"a": None, "b": 1.5, "c": [3, None]}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # no temp file left behind
    write_results(tmp_path, Results(status="complete", runs=[_record(nll_mean=float("nan"))]))
    assert json.loads(path.read_text())["runs"][0]["nll_mean"] is None


def test_tokens_are_saved_and_checked_when_read_back(tmp_path):
    n = 7
    arrays = {"nll": np.linspace(1, 2, n), "correct": np.ones(n, bool), "query_pos": np.arange(n),
              "n_keys": np.arange(1, n + 1)}
    rel = save_tokens(tmp_path, "k", arrays)
    assert rel == "tokens/k.npz"
    back = load_tokens(tmp_path, rel, n)
    assert back is not None and np.array_equal(back["nll"], arrays["nll"])
    assert load_tokens(tmp_path, rel, n + 1) is None  # the record says another length
    assert load_tokens(tmp_path, "tokens/missing.npz") is None and load_tokens(tmp_path, None) is None
    save_tokens(tmp_path, "ragged", arrays | {"n_keys": np.arange(n + 1)})
    assert load_tokens(tmp_path, "tokens/ragged.npz") is None
    (tmp_path / "tokens" / "bad.npz").write_bytes(b"not an npz")
    assert load_tokens(tmp_path, "tokens/bad.npz") is None


def test_prepare_one_place_for_every_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    default = prepare(None, "org/model name")
    assert default.parent.name == "reports" and default.name.endswith("-org_model_name") and default.is_dir()
    (default / "results.json").write_text("{}")
    with pytest.raises(UserError, match="already holds a run; choose another folder$"):
        prepare(str(default), "import")
    with pytest.raises(UserError, match=r"or continue it with `anomaly-probe run --resume"):
        prepare(str(default), "m", resume_hint=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="is a file; give a folder for the run"):
        prepare(str(tmp_path / "file"), "m")
    with pytest.raises(UserError, match=r"--out '': give a folder name, or leave --out out for reports/<time>-import"):
        prepare(" ", "import")


@pytest.mark.parametrize("resume, expected", [
    (False, ["is not a folder", "is not a folder", "has no results.json", "is not valid JSON (line 1, column",
             "not a results object", "has schema_version 99; this anomaly-probe reads"]),
    (True, ["is a file; give the run folder", "no such folder", "no results.json in the folder",
            "results.json is not valid JSON (line 1:", "has schema_version None", "schema_version 99; this "
            "anomaly-probe resumes"]),
])
def test_read_says_what_is_wrong_in_the_words_of_its_command(tmp_path, resume, expected):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    texts = {"corrupt": "{", "list": "[1]", "schema": json.dumps({"schema_version": 99})}
    for name, text in texts.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(text)
    for folder, needle in zip(["file", "missing", "empty", "corrupt", "list", "schema"], expected):
        with pytest.raises(UserError) as err:
            read(tmp_path / folder, resume=resume)
        assert needle in str(err.value) and "\n" not in str(err.value), (folder, str(err.value))
        assert str(err.value).startswith("--resume ") == resume
    (tmp_path / "ok").mkdir()
    write_results(tmp_path / "ok", Results(status="complete", runs=[_record()]))
    folder = read(tmp_path / "ok", resume=resume)
    assert folder.status == "complete" and folder.results.runs[0].key == _record().key


def test_compare_cuts_at_the_first_nonfinite_entry_and_leaves_accuracy_out_without_correctness():
    b = np.array([3.0, 3.0, np.nan, 3.0])
    m = np.array([2.0, 2.0, 2.0, 2.0])
    c = compare("full", "m", 5, {0: {"full": {"nll": b, "correct": np.array([1, 0, 1, 1], bool)},
                                     "m": {"nll": m, "correct": np.array([1, 1, 1, 1], bool)}}})
    assert c.tokens_scored == 2 and c.nll_gap_mean == 1.0 and c.nonfinite_excluded_tokens == 2
    assert c.baseline_acc == 0.5 and c.acc_diff == 0.5 and math.isclose(c.baseline_ppl, math.exp(3.0))
    c = compare("full", "m", 5, {0: {"full": {"nll": m + 1, "correct": None}, "m": {"nll": m}}})
    assert c.baseline_acc is None and c.acc_diff is None and "nonfinite_excluded_tokens" not in c.to_dict()


def test_reports_take_the_baseline_from_the_saved_role_table(tmp_path):
    """A run scored with ``--engine stepwise``: its baseline is the stepwise full cache, and the batched full
    cache is eval-bias' check. Guessing from the records picks the batched one; the saved table does not."""
    from anomaly_probe.reports import roles
    from anomaly_probe.reports.rundata import load_run
    from synthetic_run import write_synthetic_run

    run = write_synthetic_run(tmp_path / "run", lengths=(300,), samples=2, traces=False)
    guessed = roles.role_runs(load_run(run), "baseline")
    assert {r["engine"] for r in guessed} == {"batched"}
    res = json.loads((run / "results.json").read_text())
    stepwise = [r["key"] for r in res["runs"] if r["method"] == "full" and r["engine"] == "stepwise"
                and r["intervention"] == "none"]
    method = [r["key"] for r in res["runs"] if r["method"] == "streaming_llm"]
    res["roles"] = [{"hypothesis": "none", "max_tokens": 300, "role": "baseline", "units": stepwise},
                    {"hypothesis": "none", "max_tokens": 300, "role": "method", "units": method}]
    (run / "results.json").write_text(json.dumps(res))
    data = load_run(run)
    assert [r["key"] for r in roles.role_runs(data, "baseline")] == stepwise
    assert [r["key"] for r in roles.role_runs(data, "method")] == method
    assert roles.role_runs(data, "oracle") == []  # no position experiment in the table
    with pytest.raises(ValueError):
        roles.role_runs(data, "nonsense")


def test_comparison_carries_the_gap_ci_and_the_console_shows_it():
    """The NLL gap of baseline vs method comes with its block-bootstrap CI (issue #12: kv_quant's cost
    against fp K/V with a CI), in results.json and in the console table."""
    import numpy as np
    from rich.console import Console

    from anomaly_probe.console import comparisons_table
    from anomaly_probe.rundir.comparison import Comparison, compare

    rng = np.random.default_rng(0)
    arrays = {s: {"full": {"nll": rng.normal(3.0, 1.0, 999)}, "q": {"nll": None}} for s in range(2)}
    for s in arrays:
        arrays[s]["q"]["nll"] = arrays[s]["full"]["nll"] + 0.05 + rng.normal(0, 0.01, 999)  # costs 0.05 nats
    c = compare("full", "q", 1000, arrays)
    assert c.ci_level == 0.95 and c.nll_gap_ci_low < c.nll_gap_mean < c.nll_gap_ci_high < 0
    assert abs(c.nll_gap_mean + 0.05) < 0.01 and c.nll_gap_ci_high - c.nll_gap_ci_low < 0.01
    d = c.to_dict()
    assert Comparison.from_dict(d).nll_gap_ci_low == c.nll_gap_ci_low
    console = Console(width=200, record=True)
    console.print(comparisons_table([d]))
    text = console.export_text()
    assert f"{c.nll_gap_ci_low:+.4f}..{c.nll_gap_ci_high:+.4f}" in text and "95% CI" in text
    old = {k: v for k, v in d.items() if not k.startswith("nll_gap_ci") and k != "ci_level"}  # a run from before
    assert Comparison.from_dict(old).nll_gap_ci_low is None
    console.print(comparisons_table([old]))
    assert "n/a" in console.export_text()
