"""``anomaly-probe check --scorer``: a correct scorer passes; each planted bug fails with its cause named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from anomaly_probe.cli import main

SCORERS = Path(__file__).parent / "sample_scorers.py"
SMALL = ["--max-tokens", "160", "--recent-size", "28", "--only", "scorer"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def check(tmp_path, capsys, fn: str):
    js = tmp_path / f"{fn}.json"
    code = main(["check", *SMALL, "--scorer", f"{SCORERS}:{fn}", "--json", str(js)])
    out, err = capsys.readouterr()
    return code, out, err, {c["name"]: c for c in json.loads(js.read_text())["checks"]}


def test_correct_scorer_passes(tmp_path, capsys):
    code, out, err, checks = check(tmp_path, capsys, "correct")
    assert code == 0, out + err
    assert set(checks) == {"scorer.full", "scorer.streaming_llm.in-cache"}
    assert all(c["status"] == "pass" for c in checks.values())


@pytest.mark.parametrize("fn, cause, failing, words", [
    ("shifted_target", "shifted-target", ("scorer.full", "scorer.streaming_llm.in-cache"), "target shifted by one"),
    ("first_token_scored", "first-token-scored", ("scorer.full", "scorer.streaming_llm.in-cache"), "first token scored"),
    ("no_position_shift", "no-position-shift", ("scorer.streaming_llm.in-cache",), "positions not shifted"),
    ("no_reset", "no-cache-reset", ("scorer.full", "scorer.streaming_llm.in-cache"), "cache not reset"),
])
def test_planted_bug_is_caught_and_named(tmp_path, capsys, fn, cause, failing, words):
    code, out, err, checks = check(tmp_path, capsys, fn)
    assert code == 1, out + err
    assert words in " ".join(out.split())  # the table folds long reasons over lines
    for name, c in checks.items():
        if name in failing:
            assert c["status"] == "fail" and c["details"]["cause"] == cause, c
            assert words in c["reason"]
        else:
            assert c["status"] == "pass", c
    if fn == "no_reset":
        rows = checks["scorer.full"]["details"]["samples"]
        assert rows[0]["cause"] == "ok" and rows[1]["cause"] == "no-cache-reset"
    if fn == "no_position_shift":
        rows = checks["scorer.streaming_llm.in-cache"]["details"]["samples"]
        assert rows[0]["first_mismatch"] > 28  # identical until the first eviction
