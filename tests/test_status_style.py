"""One status style and one verdict table for every command (run, report, import, check, HTML)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console
from rich.text import Text
from synthetic_run import write_synthetic_run

from anomaly_probe.reports.status import STATUS_STYLES, status_css, styled
from anomaly_probe.verdict import STATUSES


def _ansi(renderable) -> str:
    out = io.StringIO()
    Console(file=out, force_terminal=True, color_system="standard", width=200).print(renderable)
    return out.getvalue()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("run") / "run", lengths=(200,), samples=1)


def test_every_status_has_a_style():
    from anomaly_probe.check.result import STATUSES as CHECK_STATUSES

    assert set(STATUSES) | set(CHECK_STATUSES) <= set(STATUS_STYLES)
    assert styled("supported") == f"[{STATUS_STYLES['supported'].terminal}]SUPPORTED[/]"
    assert styled("refuted", "[x]") == f"[{STATUS_STYLES['refuted'].terminal}]\\[x][/]"  # text is escaped
    css = status_css()
    for name, style in STATUS_STYLES.items():
        assert f"td.{name} {{ background: {style.html};" in css


def test_run_console_and_report_summary_print_the_same_verdict_table(run):
    """``run`` prints console.verdicts_table; ``report`` and ``import`` print the report's table: the same."""
    from anomaly_probe.console import verdicts_table
    from anomaly_probe.reports.build import build_report
    from anomaly_probe.reports.intervals import run_thresholds
    from anomaly_probe.reports.rundata import load_run
    from anomaly_probe.reports.summary import CONSOLE_COLUMNS, rich_table
    from anomaly_probe.reports.tree import Table, walk

    data = load_run(run)
    report_table = next(b for b in walk(build_report(data).sections) if isinstance(b, Table) and b.title == "Verdicts")
    from_report = _ansi(rich_table(report_table, CONSOLE_COLUMNS))
    from_run = _ansi(verdicts_table(data.verdicts, run_thresholds(data)))
    assert from_run == from_report
    assert "share [95% CI]" in from_run and "block-bootstrap CI (64-token blocks" in from_run
    for status in {v["status"] for v in data.verdicts}:  # each status in its one style
        assert _ansi(Text.from_markup(styled(status))).split("\n")[0] in from_run


def test_check_results_use_the_same_style():
    from anomaly_probe.check.output import results_table
    from anomaly_probe.check.result import CheckResult

    rendered = _ansi(results_table([CheckResult("a.check", "fail", "because"), CheckResult("b.check", "pass", "ok")]))
    assert _ansi(Text.from_markup(styled("fail"))).split("\n")[0] in rendered
    assert _ansi(Text.from_markup(styled("pass"))).split("\n")[0] in rendered


def test_html_status_cells_use_the_same_palette(run, tmp_path):
    from anomaly_probe.reports import write_report

    html = write_report(run, out=tmp_path / "r.html").read_text()
    results = json.loads((run / "results.json").read_text())
    for status in {v["status"] for v in results["verdicts"]}:
        assert f'<td class="{status}">{status.upper()}</td>' in html
        assert f"td.{status} {{ background: {STATUS_STYLES[status].html};" in html
    assert "Intervals: explained share: 95% block-bootstrap CI (64-token blocks" in html  # which CI the table shows
