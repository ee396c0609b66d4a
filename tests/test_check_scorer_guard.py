"""``check --scorer`` with a scorer that hangs, exits or changes the model: a failed check, never a hang,
a silent exit or a blame on the reference engines (issue 17, item 10)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from anomaly_probe.cli import main

HERE = Path(__file__).parent
HOSTILE = HERE / "hostile_scorers.py"
SMALL = ["--max-tokens", "160", "--recent-size", "28"]


@pytest.fixture(autouse=True)
def setup(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # hostile_scorers imports sample_scorers
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def check(tmp_path, capsys, fn: str, *extra: str):
    js = tmp_path / f"{fn}.json"
    code = main(["check", *SMALL, "--scorer", f"{HOSTILE}:{fn}", "--json", str(js), *extra])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err, {c["name"]: c for c in json.loads(js.read_text())["checks"]}


def test_a_scorer_that_hangs_times_out_and_the_other_scorer_check_is_not_run(tmp_path, capsys):
    code, out, err, checks = check(tmp_path, capsys, "hangs", "--only", "scorer", "--scorer-timeout", "0.5")
    assert code == 1 and "Traceback" not in err
    full = checks["scorer.full"]
    assert full["status"] == "error" and "did not return within 0.5 s on sample 0 (--scorer-timeout)" in full["reason"]
    assert full["seconds"] < 10
    other = checks["scorer.streaming_llm.in-cache"]
    assert other["status"] == "error" and "not run: the scorer timed out" in other["reason"]


def test_a_scorer_stuck_outside_python_ends_check_with_one_error_line(tmp_path):
    code = ("import sys; import anomaly_probe.check.scorer_guard as g; g.HARD_GRACE_S = 1.0; "
            "from anomaly_probe.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "check", *SMALL, "--only", "scorer", "--scorer",
                           f"{HOSTILE}:blocks_signals", "--scorer-timeout", "0.5"],
                          capture_output=True, text=True, timeout=120, cwd=HERE,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: --scorer ") and "did not return within 0.5 s" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_a_scorer_that_calls_sys_exit_is_a_failed_check_with_its_message(tmp_path, capsys):
    code, out, err, checks = check(tmp_path, capsys, "exits", "--only", "scorer")
    assert code == 1, out + err
    for c in checks.values():
        assert c["status"] == "error" and "the scorer called sys.exit(3) on sample 0" in c["reason"]
    assert "sys.exit(3)" in out


@pytest.mark.parametrize("fn, what", [("nan_weights", "parameter/buffer tensor(s) (gpt_neox.layers.0."),
                                      ("to_train_mode", "train mode False -> True")])
def test_a_scorer_that_changes_the_model_fails_and_the_engines_are_not_blamed(tmp_path, capsys, fn, what):
    code, out, err, checks = check(tmp_path, capsys, fn)
    assert code == 1, out + err
    for name, c in checks.items():
        if name.startswith("scorer."):
            assert c["status"] == "fail" and "the scorer changed the model on sample 0" in c["reason"], c
            assert what in c["reason"] and "fresh copy" in c["reason"]
        else:  # the engine checks and numerics.finite (after the scorer) pass on the fresh model
            assert c["status"] == "pass", c
    assert "numerics.finite" in checks


def test_scorer_timeout_must_be_positive(capsys):
    for bad in ("0", "-1", "nan", "inf"):
        assert main(["check", *SMALL, "--scorer-timeout", bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: --scorer-timeout") and err.count("\n") == 1
