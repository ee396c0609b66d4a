"""A sweep's grid: rows of axes, expanded into cells (one ordinary run each).

A grid is a list of rows; each row maps a setting to one value or a list of values (an axis). A row is
expanded into the cross product of its axes; the grid's cells are the rows' cells in order, duplicates
dropped. Settings a row does not give take the ``run`` defaults (:class:`~anomaly_probe.config.RunConfig`).
Nothing here checks whether a value makes sense for a run (a negative size, an unknown method): that is
the cell's own ``run`` validation, so one bad row fails its cells and not the sweep.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field

from anomaly_probe.config import RunConfig

INT_AXES = ("max_tokens", "num_samples", "sink_size", "recent_size", "seed", "chunk_size", "stepwise_tokens")
"""Settings whose values are whole numbers."""
STR_AXES = ("model", "method", "position_mode", "dtype", "device", "engine", "probes", "text")
"""Settings whose values are strings."""
CONTEXT_AXIS = "trained_context"
"""Whole number, or ``auto`` (the model config's): the trained-context override."""
LIST_SETTINGS = ("hypotheses",)
"""Settings whose one value is a list (every cell of the row runs all of them)."""
RESOURCES = ("cpus", "gpus")
"""Per-cell resources for the Ray executor (numbers, not axes)."""
AXES = ("model", CONTEXT_AXIS, "max_tokens", "num_samples", "method", "sink_size", "recent_size", "position_mode",
        "dtype", "device", "seed", "engine", "chunk_size", "probes", "stepwise_tokens", "text")
"""Every axis, in the order a cell's name lists them."""
KEYS = AXES + LIST_SETTINGS + RESOURCES


@dataclass(frozen=True)
class Cell:
    """One grid point: the settings of one ``run`` and the resources it asks for.

    Attributes
    ----------
    settings : dict
        RunConfig fields (``max_tokens`` a single int; ``out`` absent).
    cpus, gpus : float
        Resources a Ray task of this cell reserves.
    name : str
        Folder name under ``SWEEP_DIR/cells/``: the axes that vary across the grid, plus a short hash.
    """

    settings: dict
    cpus: float = 1.0
    gpus: float = 0.0
    name: str = ""

    @property
    def key(self) -> str:
        """Stable identity of the cell: a hash of its settings (resources and name aside)."""
        text = json.dumps(self.settings, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def config(self, out: str) -> RunConfig:
        """The :class:`RunConfig` of this cell's run, written to ``out``."""
        values = dict(self.settings)
        values["max_tokens"] = [values["max_tokens"]]
        return RunConfig(**values, out=out)

    def model_key(self) -> tuple:
        """What decides the loaded weights: cells with the same key can share one model load."""
        s = self.settings
        seeded = s["model"].startswith("tiny-neox")  # random weights drawn from the seed
        return (s["model"], s["device"], s["dtype"], s["seed"] if seeded else None)


@dataclass
class Grid:
    """Rows of axes (see the module docstring); ``rows`` is what ``sweep.json`` saves."""

    rows: list[dict] = field(default_factory=list)

    def cells(self) -> list[Cell]:
        """Every row's cross product, in order, duplicates dropped, each with its folder name."""
        out: list[Cell] = []
        seen: set[str] = set()
        for row in self.rows:
            for cell in _expand(row):
                if cell.key not in seen:
                    seen.add(cell.key)
                    out.append(cell)
        return _named(out)

    def to_dict(self) -> dict:
        return {"rows": self.rows}


def _expand(row: dict) -> list[Cell]:
    defaults = asdict(RunConfig())
    del defaults["out"]
    axes = {k: v if isinstance(v, list) else [v] for k, v in row.items() if k in AXES}
    names = list(axes)
    hypotheses = list(row.get("hypotheses", ["none"]))
    cells = []
    for values in itertools.product(*(axes[n] for n in names)):
        settings = dict(defaults) | dict(zip(names, values)) | {"hypotheses": hypotheses}
        if settings[CONTEXT_AXIS] == "auto":
            settings[CONTEXT_AXIS] = None
        if isinstance(settings["max_tokens"], list):  # the default [1024]
            settings["max_tokens"] = settings["max_tokens"][0]
        gpus = row.get("gpus", 1 if str(settings["device"]).startswith("cuda") else 0)
        cells.append(Cell(settings, cpus=float(row.get("cpus", 1)), gpus=float(gpus)))
    return cells


def _named(cells: list[Cell]) -> list[Cell]:
    """Give each cell a folder name from the axes whose values differ between cells (model and length always)."""
    varying = [a for a in AXES if len({json.dumps(c.settings.get(a)) for c in cells}) > 1 or a in ("model", "max_tokens")]
    if len({json.dumps(c.settings["hypotheses"]) for c in cells}) > 1:
        varying.append("hypotheses")
    out = []
    for c in cells:
        parts = [_part(a, c.settings[a]) for a in varying]
        slug = re.sub(r"[^A-Za-z0-9.+=_-]+", "_", "-".join(parts))[:100].strip("_-")
        out.append(Cell(c.settings, c.cpus, c.gpus, f"{slug}-{c.key[:6]}"))
    return out


SHORT = {"max_tokens": "L", "seed": "seed", "trained_context": "ctx", "sink_size": "sink", "recent_size": "recent",
         "num_samples": "n", "chunk_size": "chunk", "stepwise_tokens": "stepwise"}


def _part(axis: str, value) -> str:
    if axis == "hypotheses":
        return "+".join(value)
    if axis in SHORT:
        return f"{SHORT[axis]}{'auto' if value is None else value}"
    return str(value)
