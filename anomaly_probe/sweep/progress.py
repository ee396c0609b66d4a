"""Cells done/total with an ETA, and ``sweep.json`` kept up to date as cells start and finish."""

from __future__ import annotations

import time
from pathlib import Path


class SweepEvents:
    """Receives the executors' ``started(entry)`` / ``finished(entry, outcome)`` calls.

    Each call updates the entry, rewrites ``sweep.json`` and advances the cells bar (its ETA is rich's,
    from the cells finished so far). Cells skipped because they were complete count as done at the start.
    """

    def __init__(self, index, sweep_dir: Path, progress, task) -> None:
        self.index, self.sweep_dir = index, Path(sweep_dir)
        self.progress, self.task = progress, task
        self.started_at = time.perf_counter()

    def started(self, entry) -> None:
        entry.status = "running"
        entry.attempts += 1
        self.index.write(self.sweep_dir)

    def finished(self, entry, outcome) -> None:
        entry.status, entry.reason = outcome.status, outcome.reason
        entry.unit_failures = outcome.unit_failures
        if not outcome.skipped:
            entry.seconds = round(outcome.seconds, 3)
        self.index.write(self.sweep_dir)
        self.progress.advance(self.task, 1)
        word = {"complete": "done", "failed": "FAILED"}.get(outcome.status, outcome.status)
        extra = f": {outcome.reason}" if outcome.reason else ""
        if outcome.unit_failures:
            extra += f" ({outcome.unit_failures} unit(s) failed inside the run)"
        self.progress.console.print(f"cell {entry.name}: {word}{extra}", markup=False, highlight=False,
                                    soft_wrap=True)
