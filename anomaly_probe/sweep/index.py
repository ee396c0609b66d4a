"""``SWEEP_DIR/sweep.json``: the index of a sweep's cells, their status and their run folders.

Layout (version 1)::

    sweep_version   int, :data:`SWEEP_VERSION`
    status          "running" | "interrupted" | "complete" (every cell tried; some may have failed)
    executor        "local" | "ray"
    grid            {"rows": [...]}: the grid as given (flags or TOML), re-expanded by ``sweep --resume``
    cells[]         :class:`CellEntry`: key, name, folder (relative to SWEEP_DIR), settings, resources,
                    status ("pending" | "running" | "complete" | "failed" | "interrupted"), reason (one
                    line, failed cells), seconds, attempts, unit_failures (units that failed inside a
                    complete run)

Written atomically after every change (always valid JSON). Nothing here imports torch: ``report`` reads it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from anomaly_probe.errors import UserError

SWEEP_VERSION = 1
INDEX = "sweep.json"
CELLS_DIR = "cells"
CELL_STATES = ("pending", "running", "complete", "failed", "interrupted")


@dataclass
class CellEntry:
    """One ``cells[]`` entry (see the module docstring)."""

    key: str
    name: str
    folder: str
    settings: dict
    cpus: float = 1.0
    gpus: float = 0.0
    status: str = "pending"
    reason: str = ""
    seconds: float | None = None
    attempts: int = 0
    unit_failures: int = 0

    @property
    def succeeded(self) -> bool:
        """Complete, with no failed unit inside."""
        return self.status == "complete" and not self.unit_failures


@dataclass
class SweepIndex:
    """The whole ``sweep.json``."""

    grid: dict
    cells: list[CellEntry]
    executor: str = "local"
    status: str = "running"
    sweep_version: int = SWEEP_VERSION
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"sweep_version": self.sweep_version, "status": self.status, "executor": self.executor,
                "grid": self.grid, "cells": [asdict(c) for c in self.cells], **self.extra}

    def counts(self) -> dict[str, int]:
        """Cells per status."""
        out = {s: 0 for s in CELL_STATES}
        for c in self.cells:
            out[c.status] = out.get(c.status, 0) + 1
        return out

    def write(self, sweep_dir: Path) -> None:
        """Rewrite ``SWEEP_DIR/sweep.json`` atomically."""
        from anomaly_probe.rundir.files import write_json

        write_json(Path(sweep_dir) / INDEX, self.to_dict())


def is_sweep(path: str | Path) -> bool:
    """Whether ``path`` is a folder holding ``sweep.json``."""
    return (Path(path).expanduser() / INDEX).is_file()


def read_index(path: str | Path, flag: str = "") -> SweepIndex:
    """Read and check ``SWEEP_DIR/sweep.json``.

    Raises
    ------
    UserError
        No such file, invalid JSON, another version, or cells that are not records.
    """
    where = f"{flag} {str(path)!r}".strip()
    file = Path(path).expanduser() / INDEX
    if not file.is_file():
        raise UserError(f"{where}: no {INDEX} in the folder; is it a folder written by `anomaly-probe sweep`?")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: {INDEX} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot read {INDEX} ({exc})") from None
    if not isinstance(data, dict) or data.get("sweep_version") != SWEEP_VERSION:
        version = data.get("sweep_version") if isinstance(data, dict) else None
        raise UserError(f"{where}: {INDEX} has sweep_version {version!r}; this anomaly-probe reads "
                        f"version {SWEEP_VERSION} only")
    known = {"sweep_version", "status", "executor", "grid", "cells"}
    try:
        cells = [CellEntry(**c) for c in data.get("cells") or []]
    except TypeError:
        raise UserError(f"{where}: {INDEX} has a cell entry this version cannot read") from None
    grid = data.get("grid") if isinstance(data.get("grid"), dict) else {"rows": []}
    return SweepIndex(grid=grid, cells=cells, executor=str(data.get("executor", "local")),
                      status=str(data.get("status", "running")), extra={k: v for k, v in data.items() if k not in known})
