"""Rich console output: progress bars with ETA, the summary tables, and :func:`safe` for user strings.

Every string a user or a file supplied (paths, labels, model names, strings read from results.json or a
log, exception messages from scorers) goes through :func:`safe` before it reaches a terminal: rich
markup in it is escaped (``--out 'x[/]y'`` prints ``x[/]y``) and control characters are shown as
escapes (an OSC 8 hyperlink or OSC 52 clipboard write in a file prints as ``\\x1b]52;...``).
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table
from rich.text import Text as RichText

import sys as _sys

# Not a terminal (CI logs, pipes): rich would fold tables at 80 columns; logs are read wide.
console = Console(stderr=False, width=None if _sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if _sys.stderr.isatty() else 200)


_OUTER: list[Progress] = []
"""The display a sweep shows (cells done/total); runs inside it add their bars to it (rich allows one live display)."""


class _UnitColumn(ProgressColumn):
    """The unit of a bar: its ``unit`` field, ``tok`` by default."""

    def render(self, task) -> RichText:
        return RichText(str(task.fields.get("unit", "tok")))


def new_progress() -> Progress:
    """Bars with a description, count, unit, elapsed time and ETA (the one layout of every command)."""
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), _UnitColumn(),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )


@contextmanager
def outer_progress(progress: Progress) -> Iterator[Progress]:
    """Show ``progress`` (e.g. a sweep's cells bar) and let every :func:`progress_bars` inside add to it."""
    with progress:
        _OUTER.append(progress)
        try:
            yield progress
        finally:
            _OUTER.pop()


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
"""C0/C1 control characters (ESC, BEL, CR, line breaks...), Unicode line separators and bidirectional
overrides: what can move the cursor, talk to the terminal, or make text read differently than it is."""


def visible(text: object) -> str:
    """``text`` on one line with every control character written as its Python escape (``\\x1b``,
    ``\\n``, ``\\u202e``); for output printed with markup off."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], str(text))


def safe(text: object) -> str:
    """A user-supplied string ready for a rich markup string: control characters made :func:`visible`,
    rich markup escaped (``[red]`` prints as ``[red]``, ``[/]`` cannot close a style)."""
    from rich.markup import escape

    return escape(visible(text))


@contextmanager
def progress_bars(total_tokens: int) -> Iterator[tuple[Progress, int]]:
    """An overall bar (tokens, with ETA); per-unit bars are added by the runner."""
    if _OUTER:  # inside a sweep: the bars join its display and leave it when the run ends
        progress = _OUTER[-1]
        before = set(progress.task_ids)
        overall = progress.add_task("all runs", total=total_tokens)
        try:
            yield progress, overall
        finally:
            for task in [t for t in progress.task_ids if t not in before]:
                progress.remove_task(task)
        return
    progress = new_progress()
    with progress:
        overall = progress.add_task("all runs", total=total_tokens)
        yield progress, overall


def _fmt(x, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


def runs_table(runs: list[dict]) -> Table:
    table = Table(title="Runs", title_justify="left")
    for col in ("tokens", "sample", "method", "engine", "dtype", "scored", "PPL", "NLL (nats)", "Acc", "tok/s",
                "peak RSS (MiB)", "time (s)"):
        table.add_column(col, justify="right" if col not in ("method", "engine", "dtype") else "left")
    for r in runs:
        table.add_row(str(r["max_tokens"]), str(r["sample"]), safe(r["label"]), safe(r["engine"]), safe(r["dtype"]),
                      str(r["tokens_scored"]), _fmt(r["ppl"], ".3f"), _fmt(r["nll_mean"], ".4f"),
                      _fmt(100 * r["acc"], ".2f") + "%", _fmt(r["tok_per_s"], ".1f"),
                      _fmt(r["peak_rss_bytes"] / 2**20, ".0f"), _unit_time(r))
    if runs:
        total = sum(r.get("unit_seconds") or 0.0 for r in runs)
        table.caption = f"time (s): wall time of each unit (scoring, probes, saving); all units {total:.1f} s"
    return table


def _unit_time(r: dict) -> str:
    """A unit's wall time, with the part its probe trace took when there is one."""
    total, trace = r.get("unit_seconds"), r.get("trace_seconds")
    if total is None:
        return "n/a"
    return f"{total:.1f}" + (f" ({trace:.1f} trace)" if trace is not None and trace >= 0.05 else "")


def comparisons_table(comparisons: list[dict]) -> Table:
    table = Table(title="Baseline vs method (same tokens)", title_justify="left")
    level = next((c["ci_level"] for c in comparisons if c.get("ci_level")), 0.95)
    for col in ("tokens", "samples", "baseline", "method", "baseline PPL", "method PPL", "NLL gap (nats)",
                f"{100 * level:.0f}% CI", "Acc diff (pp)"):
        table.add_column(col, justify="right" if col not in ("baseline", "method") else "left")
    for c in comparisons:
        lo, hi = c.get("nll_gap_ci_low"), c.get("nll_gap_ci_high")
        ci = "n/a" if lo is None or hi is None else f"{lo:+.4f}..{hi:+.4f}"
        table.add_row(str(c["max_tokens"]), str(c["num_samples"]), safe(c["baseline"]), safe(c["method"]),
                      _fmt(c["baseline_ppl"], ".3f"), _fmt(c["method_ppl"], ".3f"), _fmt(c["nll_gap_mean"], "+.4f"),
                      ci, _fmt(None if c.get("acc_diff") is None else 100 * c["acc_diff"], "+.2f"))
    return table


def verdicts_table(verdicts: list[dict], thresholds=None) -> Table:
    """The verdict table every command prints: the report's (``reports.tables.verdict_table``) in the
    console's columns and the one status style (``reports.status``).

    ``thresholds``: what the verdicts were judged with (names the CI); default ``Thresholds()``, the run's.
    """
    from anomaly_probe.reports.summary import CONSOLE_COLUMNS, rich_table
    from anomaly_probe.reports.tables import verdict_table

    return rich_table(verdict_table(verdicts, thresholds), CONSOLE_COLUMNS)
