"""A sweep folder read back: ``sweep.json`` and the run folder of every cell that has one."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from anomaly_probe.errors import UserError
from anomaly_probe.reports.rundata import RunData, load_run
from anomaly_probe.sweep.grid import AXES
from anomaly_probe.sweep.index import CellEntry, SweepIndex, read_index


@dataclass
class CellData:
    """One cell: its index entry and its run folder (None when it has no readable run)."""

    entry: CellEntry
    run: RunData | None
    line: str = ""  # the curve it belongs to: the settings that vary across cells, length and seed aside

    @property
    def settings(self) -> dict:
        return self.entry.settings


@dataclass
class SweepData:
    """The sweep folder, its index and its cells (in index order)."""

    sweep_dir: Path
    index: SweepIndex
    cells: list[CellData] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def with_runs(self) -> list[CellData]:
        return [c for c in self.cells if c.run is not None and c.run.comparisons]


def load_sweep(sweep_dir: str | Path) -> SweepData:
    """Read ``SWEEP_DIR/sweep.json`` and each cell's ``results.json``.

    Raises
    ------
    UserError
        No readable sweep.json (:func:`~anomaly_probe.sweep.index.read_index`). A cell folder that cannot
        be read is a note in the report, not an error.
    """
    folder = Path(sweep_dir).expanduser()
    if not folder.is_dir():
        raise UserError(f"{str(sweep_dir)!r} is not a folder (expected a sweep folder holding sweep.json)")
    index = read_index(folder)
    data = SweepData(folder, index)
    for entry in index.cells:
        run = None
        path = folder / entry.folder
        if (path / "results.json").is_file() and _inside(folder, path):
            try:
                run = load_run(path)
            except UserError as exc:
                data.notes.append(f"cell {entry.name}: {exc}")
        data.cells.append(CellData(entry, run))
    labels = line_labels([c.settings for c in data.cells])
    for c, label in zip(data.cells, labels):
        c.line = label
    return data


def _inside(root: Path, path: Path) -> bool:
    """A cell folder must lie inside the sweep folder (sweep.json is data, not a pointer anywhere)."""
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def line_labels(settings: list[dict]) -> list[str]:
    """Each cell's curve: the model plus every axis (length and seed aside) whose value differs between cells."""
    varying = [a for a in AXES if a not in ("model", "max_tokens", "seed")
               and len({json.dumps(s.get(a), sort_keys=True) for s in settings}) > 1]
    out = []
    for s in settings:
        parts = [str(s.get("model"))]
        for a in varying:
            value = s.get(a)
            parts.append(f"{a.replace('_', ' ')} {'auto' if value is None else value}")
        out.append(", ".join(parts))
    return out
