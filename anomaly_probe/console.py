"""Rich console output: progress bars with ETA and the summary tables."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.table import Table

import sys as _sys

# Not a terminal (CI logs, pipes): rich would fold tables at 80 columns; logs are read wide.
console = Console(stderr=False, width=None if _sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if _sys.stderr.isatty() else 200)


@contextmanager
def progress_bars(total_tokens: int) -> Iterator[tuple[Progress, int]]:
    """An overall bar (tokens, with ETA); per-unit bars are added by the runner."""
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tok"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=console, transient=False,
    )
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
        table.add_row(str(r["max_tokens"]), str(r["sample"]), r["label"], r["engine"], r["dtype"],
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
    for col in ("tokens", "samples", "baseline", "method", "baseline PPL", "method PPL", "NLL gap (nats)",
                "Acc diff (pp)"):
        table.add_column(col, justify="right" if col not in ("baseline", "method") else "left")
    for c in comparisons:
        table.add_row(str(c["max_tokens"]), str(c["num_samples"]), c["baseline"], c["method"],
                      _fmt(c["baseline_ppl"], ".3f"), _fmt(c["method_ppl"], ".3f"), _fmt(c["nll_gap_mean"], "+.4f"),
                      _fmt(100 * c["acc_diff"], "+.2f"))
    return table


def verdicts_table(verdicts: list[dict], thresholds=None) -> Table:
    """The verdict table every command prints: the report's (``reports.tables.verdict_table``) in the
    console's columns and the one status style (``reports.status``).

    ``thresholds``: what the verdicts were judged with (names the CI); default ``Thresholds()``, the run's.
    """
    from anomaly_probe.reports.summary import CONSOLE_COLUMNS, rich_table
    from anomaly_probe.reports.tables import verdict_table

    return rich_table(verdict_table(verdicts, thresholds), CONSOLE_COLUMNS)
