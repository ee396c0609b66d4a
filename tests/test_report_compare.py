"""The comparison report across run folders."""

from __future__ import annotations

import pytest
from synthetic_run import write_synthetic_run

from anomaly_probe.cli import main
from anomaly_probe.reports.compare import build_comparison
from anomaly_probe.reports.rundata import load_run
from anomaly_probe.reports.tree import Table, walk


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    a = write_synthetic_run(root / "a", lengths=(200, 300), samples=1)
    b = write_synthetic_run(root / "b", lengths=(300,), samples=1, traces=False, model="other", trained_context=512,
                            device="cuda", seed=1)
    c = write_synthetic_run(root / "c", lengths=(200,), samples=1, traces=False, verdicts=False, headline=False)
    return a, b, c


def _table(report, title):
    return next(b for b in walk(report.sections) if isinstance(b, Table) and b.title.startswith(title))


def test_comparison_tree(runs):
    report = build_comparison([load_run(r) for r in runs])
    verdicts = _table(report, "Verdicts side by side")
    assert verdicts.columns == ["hypothesis", "A: a", "B: b", "C: c"]
    position = next(r for r in verdicts.rows if r[0].text == "position")
    assert position[1].tag == "supported" and position[3].text == "not tested"
    env = _table(report, "Environment, model and configuration")
    tagged = {row[0].text for row, tag in zip(env.rows, env.row_tags) if tag == "diff"}
    assert {"environment.device", "model.spec", "model.trained_context", "config.max_tokens"} <= tagged
    assert "environment.python" not in tagged
    overlay = next(f for f in report.figures() if f.id == "nll-overlay").spec
    assert [p["xlabel"].split(" ")[0] for p in overlay["panels"]] == ["token", "position"]
    assert len(overlay["panels"][0]["series"]) == 6  # baseline and method of three runs
    fraction = overlay["panels"][1]["series"][2]  # run B's baseline: x in units of 512 tokens
    assert max(x for x in fraction["x"] if x is not None) < 300 / 512
    assert not report.errors()


def test_cli_comparison_writes_compare_html(runs, capsys):
    a, b, c = runs
    assert main(["report", str(a), str(b), str(c)]) == 0
    html = (a / "compare.html").read_text(encoding="utf-8")
    assert "Verdicts side by side" in html and 'class="diff"' in html and html.count("<img ") == 2
    assert sorted(p.name for p in (a / "figures").glob("compare-*.png")) == ["compare-gap-overlay.png",
                                                                            "compare-nll-overlay.png"]
    out = a.parent / "elsewhere" / "cmp.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert out.is_file() and (out.parent / "cmp-figures").is_dir()
    assert "report:" in capsys.readouterr().out


def test_comparison_with_a_bad_folder_fails_cleanly(runs, tmp_path, capsys):
    assert main(["report", str(runs[0]), str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
