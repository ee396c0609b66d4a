"""``anomaly-probe check``: the reference engines pass, the outputs (table, JSON, JUnit) and bad input.

The diagnosis of a user's scorer is unit-tested here on hand-made series; the planted bugs in
``tests/sample_scorers.py`` run end to end in ``test_check_scorers.py``.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from anomaly_probe.check.diagnose import diagnose
from anomaly_probe.cli import main

SCORERS = Path(__file__).parent / "sample_scorers.py"
SMALL = ["--max-tokens", "160", "--recent-size", "28"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tiny model's token loop is slower with threads on a shared 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run_cli(capsys, args):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_check_passes_on_the_reference_engines(tmp_path, capsys):
    js, xml = tmp_path / "check.json", tmp_path / "check.xml"
    code, out, err = run_cli(capsys, ["check", "--model", "tiny-neox", "--json", str(js), "--junit", str(xml)])
    assert code == 0, out + err
    assert "PASSED" in out and "engines.full.stepwise-vs-batched" in out
    res = json.loads(js.read_text())
    names = [c["name"] for c in res["checks"]]
    for expected in ("engines.full.stepwise-vs-batched", "cache.capacity-ge-length.in-cache",
                     "cache.capacity-ge-length.naive", "engines.streaming_llm.in-cache.stepwise-vs-parallel",
                     "engines.streaming_llm.absolute.stepwise-vs-parallel",
                     "engines.streaming_llm.naive.stepwise-vs-parallel", "engines.window.stepwise-vs-parallel",
                     "accounting.scored-tokens", "probes.logits-unchanged", "reproducibility.same-seed",
                     "numerics.finite"):
        assert expected in names
    assert all(c["status"] == "pass" for c in res["checks"]), [c for c in res["checks"] if c["status"] != "pass"]
    assert res["passed"] is True and res["exit_code"] == 0 and res["tolerance_nats"] == 1e-4
    for c in res["checks"]:
        assert c["reason"] and "\n" not in c["reason"]
    # JUnit: parses, one testcase per check, no failures
    root = ET.parse(xml).getroot()
    cases = root.findall(".//testcase")
    assert [c.get("name") for c in cases] == names
    assert root.get("tests") == str(len(names)) and root.get("failures") == "0" and root.get("errors") == "0"


def test_junit_marks_failures_and_errors(tmp_path, capsys):
    xml = tmp_path / "check.xml"
    code, out, _ = run_cli(capsys, ["check", *SMALL, "--only", "scorer", "--scorer", f"{SCORERS}:crashes",
                                    "--junit", str(xml)])
    assert code == 1
    assert "planted crash" in out and "sample_scorers.py" in out
    root = ET.parse(xml).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 2 and all(c.find("error") is not None for c in cases)
    assert root.get("errors") == "2"


@pytest.mark.parametrize("args, message", [
    (["--scorer", "no_colon_here"], "expected module:function"),
    (["--scorer", "/nonexistent/file.py:fn"], "no such file"),
    (["--scorer", "nosuchmodule_xyz:fn"], "cannot import 'nosuchmodule_xyz'"),
    (["--scorer", f"{SCORERS}:corect"], "Did you mean 'correct'"),
    (["--scorer", f"{SCORERS}:wrong_type"], "returned a str"),
    (["--scorer", f"{SCORERS}:wrong_length"], "returned 10 values for a 160-token sample; expected T-1 = 159"),
    (["--only", "nosuch"], "matches no check"),
    (["--max-tokens", "20"], "must be >= sink + recent + 2"),
    (["--method", "full"], "needs a compressed cache"),
    (["--scorer", f"{SCORERS}:correct", "--num-samples", "1"], "--num-samples >= 2"),
    (["--json", "/nonexistent/dir/x.json"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    code, out, err = run_cli(capsys, ["check", *SMALL, *args])
    assert code == 2, out + err
    assert message in err and err.count("\n") == 1 and err.startswith("error:")


def test_scorer_whose_import_raises_is_bad_input(tmp_path, capsys):
    bad = tmp_path / "broken.py"
    bad.write_text("import nonexistent_module_abc\n")
    code, _, err = run_cli(capsys, ["check", *SMALL, "--scorer", f"{bad}:fn"])
    assert code == 2 and "ModuleNotFoundError" in err and err.count("\n") == 1


def test_scorer_as_importable_module(tmp_path, capsys, monkeypatch):
    (tmp_path / "my_eval_mod.py").write_text(SCORERS.read_text())
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, ["check", *SMALL, "--only", "scorer", "--scorer", "my_eval_mod:correct"])
    assert code == 0, out + err
    assert "scorer.full" in out and "scorer.streaming_llm.in-cache" in out


# --------------------------------------------------------------------------- diagnosis, no model
REF = np.random.default_rng(0).gamma(2.0, 1.5, 199)  # T = 200 tokens


def test_diagnose_matching_series_is_ok():
    assert diagnose(REF + 1e-6, REF, 1e-4).cause == "ok"


def test_diagnose_shift_late_and_early():
    late = np.concatenate([[0.0], REF[:-1]])
    early = np.concatenate([REF[1:], [0.0]])
    assert diagnose(late, REF, 1e-4).cause == "shifted-target"
    assert "late" in diagnose(late, REF, 1e-4).text
    assert "early" in diagnose(early, REF, 1e-4).text


def test_diagnose_lengths():
    first = diagnose(np.concatenate([[5.5], REF]), REF, 1e-4)
    assert first.cause == "first-token-scored" and first.first_mismatch == 0
    assert diagnose(np.concatenate([REF, [1.0]]), REF, 1e-4).cause == "extra-value"
    assert diagnose(REF[1:], REF, 1e-4).cause == "missing-value"


def test_diagnose_variants_and_priority():
    other = REF + 0.5
    d = diagnose(other, REF, 1e-4, variants={"mode:naive": other}, requested_mode="in-cache")
    assert d.cause == "no-position-shift" and "naive" in d.text
    d = diagnose(other, REF, 1e-4, variants={"mode:in-cache": other}, requested_mode="absolute")
    assert d.cause == "wrong-position-mode"
    d = diagnose(other, REF, 1e-4, variants={"concat": other})
    assert d.cause == "no-cache-reset"
    d = diagnose(other, REF, 1e-4, variants={"same_token": other[:50]})  # a prefix is enough
    assert d.cause == "shifted-target" and "input_ids[idx]" in d.text
    noise = REF + np.random.default_rng(1).normal(0, 1, REF.size)
    assert diagnose(noise, REF, 1e-4, variants={"concat": other}).cause == "unknown"


def test_diagnose_nan_is_a_mismatch():
    bad = REF.copy()
    bad[7] = np.nan
    d = diagnose(bad, REF, 1e-4)
    assert d.cause != "ok" and d.first_mismatch == 7 and d.max_abs_dnll == float("inf")
