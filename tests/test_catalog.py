"""The hypothesis catalog is the one list: every judge, the CLI, the report and the importer read it."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_run import write_synthetic_run

from anomaly_probe.errors import UserError
from anomaly_probe.hypotheses import catalog
from anomaly_probe.hypotheses.catalog import CATALOG, HYPOTHESES, Entry, resolve_hypotheses

PACKAGE = Path(__file__).resolve().parents[1] / "anomaly_probe"


def test_every_registered_hypothesis_has_one_entry():
    from anomaly_probe.hypotheses import ALL
    from anomaly_probe.hypotheses.base import Hypothesis

    assert list(ALL) == list(HYPOTHESES)  # same names, same order
    assert all(name == entry.name for name, entry in CATALOG.items())
    for name, hypothesis in ALL.items():
        assert hypothesis.title == CATALOG[name].title and hypothesis.acts_on == CATALOG[name].acts_on
        assert "title" not in type(hypothesis).__dict__  # no subclass spells its own title
        assert isinstance(hypothesis, Hypothesis)
    assert {e.acts_on for e in CATALOG.values()} == {"baseline", "method"}
    assert catalog.METHOD_SIDE == ("handling", "sinks", "ablation")
    assert len({e.title for e in CATALOG.values()}) == len(CATALOG)


def test_no_other_module_spells_a_title():
    """A title appears as a string literal in catalog.py only."""
    titles = {e.title for e in CATALOG.values()}
    found = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "catalog.py" and path.parent.name == "hypotheses":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value in titles:
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno}: {node.value!r}")
    assert not found, found


def test_titles_come_from_the_catalog(tmp_path, monkeypatch):
    """Change one entry: the judge, the report section and the importer's headline follow."""
    from anomaly_probe.hypotheses import ALL
    from anomaly_probe.reports.build import build_report
    from anomaly_probe.reports.rundata import load_run

    monkeypatch.setitem(CATALOG, "position", Entry("position", "a planted title"))
    assert ALL["position"].title == "a planted title"
    report = build_report(load_run(write_synthetic_run(tmp_path / "run", lengths=(200,), samples=1)))
    assert "position: a planted title" in [s.title for s in report.sections]
    assert catalog.title("not-a-hypothesis") == "not-a-hypothesis"  # a newer results.json still renders
    assert catalog.acts_on("not-a-hypothesis") == "baseline"


def test_importer_judges_exactly_what_needs_no_model():
    from anomaly_probe.importer.verdicts import LOG_JUDGES

    assert set(LOG_JUDGES) == {n for n, e in CATALOG.items() if not e.needs_model}
    for entry in CATALOG.values():
        assert entry.needs_model == bool(entry.model_run)
    assert {n for n, e in CATALOG.items() if e.needs_model} == {"numerics", "dilution", "handling", "sinks", "ablation"}
    assert [n for n, e in CATALOG.items() if not e.logs] == ["ablation"]  # a policy's own check: import skips it


def test_importer_names_the_run_a_hypothesis_needs(monkeypatch):
    import numpy as np

    from anomaly_probe.importer.pair import PairedSample
    from anomaly_probe.importer.verdicts import judge_all
    from anomaly_probe.stats.thresholds import Thresholds

    monkeypatch.setitem(CATALOG, "numerics", Entry("numerics", "t", model_run="a planted run"))
    pairs = _pairs(PairedSample, np.random.default_rng(0))
    by = {v.hypothesis: v for v in judge_all(pairs, 512, Thresholds(n_boot=200), 1024)}
    assert set(by) == {n for n in HYPOTHESES if CATALOG[n].logs}  # not the policy's own ablation
    assert by["numerics"].status == "inconclusive" and "a planted run" in by["numerics"].message
    assert by["numerics"].evidence["needs"] == "a planted run"
    assert "needs" not in by["position"].evidence


def _pairs(PairedSample, rng):
    import numpy as np

    from anomaly_probe.importer.logs import SampleLog

    pos = np.arange(1, 1024)
    base = rng.gamma(2.0, 1.5, pos.size)
    return [PairedSample(0, "0", pos, SampleLog("0", pos, base), SampleLog("0", pos, base - 0.05))]


def test_resolve_hypotheses():
    assert resolve_hypotheses(["all"]) == list(HYPOTHESES)
    assert resolve_hypotheses(["sinks", "all"])[0] == "sinks"
    assert resolve_hypotheses(["none"]) == ["none"]
    with pytest.raises(UserError, match="Did you mean 'position'"):
        resolve_hypotheses(["positon"])
    with pytest.raises(UserError, match="cannot be combined"):
        resolve_hypotheses(["none", "memory"])


def test_catalog_imports_nothing_heavy():
    code = ("import sys; import anomaly_probe.hypotheses.catalog; "
            "print(sorted({'torch', 'numpy', 'transformers'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
