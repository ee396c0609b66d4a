"""``run`` and ``import`` agree: a run's per-token logs, exported and imported, give the same position verdict.

``import`` has no recompute oracle; its position verdict is the location judge
(:mod:`anomaly_probe.hypotheses.location`), which ``run`` records as the location part of its own position
evidence (``evidence["location_status"]``). On the same tokens the two must give the same location status,
the same onset and the same finding, and a run whose oracle SUPPORTS position must be SUPPORTED by its logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomaly_probe.cli import main


def _results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _position(res: dict) -> dict:
    return next(v for v in res["verdicts"] if v["hypothesis"] == "position")


def export_and_import(run_dir: Path, out: Path) -> dict:
    """``export RUN_DIR`` then ``import`` of its baseline and method files (no other flag: the trained
    context and the label come from the exported headers); the import's results.json."""
    assert main(["export", str(run_dir)]) == 0
    res = _results(run_dir)
    pair = next(e for e in res["roles"] if e["hypothesis"] == "none")  # the run's own pair, from the role table
    by_role: dict[str, list[str]] = {}
    for e in res["roles"]:
        if e["hypothesis"] == "none":
            by_role[e["role"]] = [str(run_dir / "export" / f"{k}.csv") for k in e["units"]]
    assert pair and set(by_role) == {"baseline", "method"}
    assert main(["import", "--baseline", *by_role["baseline"], "--method", *by_role["method"], "--out", str(out)]) == 0
    return _results(out)


def assert_agree(run_res: dict, imp_res: dict) -> tuple[dict, dict]:
    run_v, imp_v = _position(run_res), _position(imp_res)
    ev_run, ev_imp = run_v["evidence"], imp_v["evidence"]
    assert imp_res["model"]["trained_context"] == run_res["model"]["trained_context"]
    assert imp_res["comparisons"][0]["tokens_scored"] == run_res["comparisons"][0]["tokens_scored"]
    assert imp_res["comparisons"][0]["nll_gap_mean"] == pytest.approx(run_res["comparisons"][0]["nll_gap_mean"])
    # the same judge on the same tokens: the same location, onset and finding
    assert imp_v["status"] == ev_run["location_status"], (imp_v["message"], ev_run["location_message"])
    assert ev_imp["changepoint"] == ev_run["changepoint"]
    assert ev_imp.get("finding") == ev_run.get("finding")
    # and never a contradiction: an oracle-supported cause is supported by its logs
    assert (run_v["status"] == "supported") == (imp_v["status"] == "supported"), (run_v["message"], imp_v["message"])
    return run_v, imp_v


def test_tiny_neox_run_and_its_exported_logs_agree_on_position(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["run", "--model", "tiny-neox", "--hypothesis", "position", "--max-tokens", "1200",
                 "--num-samples", "2", "--recent-size", "28", "--out", str(run_dir)]) == 0
    run_v, imp_v = assert_agree(_results(run_dir), export_and_import(run_dir, tmp_path / "imported"))
    assert run_v["status"] != "supported"  # a random model does not degrade past its trained context


@pytest.mark.slow
def test_smollm2_12k_run_and_its_exported_logs_agree_on_position(smollm2_12k_position_run, tmp_path):
    """The demo's case: the dense model breaks at ~1.3x its trained context (10753 / 8192)."""
    run_res = _results(smollm2_12k_position_run)
    run_v, imp_v = assert_agree(run_res, export_and_import(smollm2_12k_position_run, tmp_path / "imported"))
    assert run_v["status"] == imp_v["status"] == "supported", imp_v["message"]
    multiple = imp_v["evidence"]["changepoint_over_trained_context"]
    assert 1.2 <= multiple <= 1.45, imp_v["message"]
