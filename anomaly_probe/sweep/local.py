"""``--executor local``: the cells one after another in this process; one model load per model."""

from __future__ import annotations

from pathlib import Path


def model_order(jobs: list) -> list:
    """``jobs`` (pairs of Cell and CellEntry) grouped by model, groups in order of first appearance (stable)."""
    first: dict[tuple, int] = {}
    for cell, _ in jobs:
        first.setdefault(cell.model_key(), len(first))
    return sorted(jobs, key=lambda job: first[job[0].model_key()])


def run_local(jobs: list, sweep_dir: Path, events) -> None:
    """Run every job; ``events.started(entry)`` before and ``events.finished(entry, outcome)`` after each.

    Raises
    ------
    KeyboardInterrupt
        The cell being scored is saved as ``interrupted`` (its finished units are kept) first.
    """
    from anomaly_probe.sweep.cellrun import run_cell
    from anomaly_probe.sweep.models import ModelCache

    models = ModelCache()
    for cell, entry in model_order(jobs):
        folder = Path(sweep_dir) / entry.folder
        events.started(entry)
        events.finished(entry, run_cell(cell.config(str(folder)), folder, models))
