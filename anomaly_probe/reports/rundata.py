"""A saved run folder, read back without a model: results.json plus lazily loaded npz arrays.

Every problem with the folder itself (missing, no results.json, corrupt JSON, unknown schema) is a
:class:`~anomaly_probe.errors.UserError`. A missing or unreadable npz is not: the figures that need
it are skipped and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly_probe.rundir import RoleEntry, load_npz, read


def load_run(run_dir: str | Path) -> "RunData":
    """Read and check ``RUN_DIR/results.json`` (:func:`anomaly_probe.rundir.read`).

    Raises
    ------
    UserError
        The folder is missing, has no results.json, the file is not a JSON object, or its
        ``schema_version`` is not one this version reads.
    """
    folder = read(run_dir)
    return RunData(folder.run_dir, folder.data)


@dataclass
class RunData:
    """One run folder.

    Attributes
    ----------
    run_dir : Path
        The folder.
    results : dict
        The parsed results.json.
    """

    run_dir: Path
    results: dict
    _arrays: dict = field(default_factory=dict, repr=False)

    # ------------------------------------------------------------------ results.json fields
    def section(self, name: str) -> dict:
        value = self.results.get(name)
        return value if isinstance(value, dict) else {}

    def listing(self, name: str) -> list[dict]:
        value = self.results.get(name)
        return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []

    @property
    def block_tokens(self) -> int:
        """Bootstrap block length: the judges' (``thresholds.block_tokens``) when recorded, else 64."""
        value = self.section("thresholds").get("block_tokens")
        return value if isinstance(value, int) and value > 0 else 64

    @property
    def runs(self) -> list[dict]:
        return self.listing("runs")

    @property
    def verdicts(self) -> list[dict]:
        return self.listing("verdicts")

    @property
    def comparisons(self) -> list[dict]:
        return self.listing("comparisons")

    @property
    def trained_context(self) -> int | None:
        value = self.section("model").get("trained_context")
        return int(value) if isinstance(value, (int, float)) and value > 0 else None

    @property
    def name(self) -> str:
        """Short name for the run (the folder name)."""
        return self.run_dir.resolve().name

    @property
    def headline(self) -> str | None:
        text = self.results.get("headline")
        return text if isinstance(text, str) and text.strip() else None

    @property
    def roles(self) -> list[RoleEntry] | None:
        """The planner's role table (which unit plays which role), or None in a folder written before it was saved."""
        if not isinstance(self.results.get("roles"), list):
            return None
        out = []
        for item in self.results["roles"]:
            try:
                out.append(RoleEntry.from_dict(item))
            except (TypeError, ValueError):
                continue
        return out

    def verdict(self, hypothesis: str) -> dict | None:
        """The hypothesis' verdict at the longest sample length (verdicts may come one per length)."""
        mine = [v for v in self.verdicts if v.get("hypothesis") == hypothesis]
        return max(mine, key=lambda v: v["max_tokens"] if isinstance(v.get("max_tokens"), int) else 0, default=None)

    # ------------------------------------------------------------------ npz arrays
    def tokens(self, run: dict) -> dict[str, np.ndarray] | None:
        """Per-token arrays of ``run`` (``nll``, ``correct``, ``query_pos``, ``n_keys``), or None."""
        return self._npz(run.get("tokens_file"))

    def missing_tokens(self) -> list[str]:
        """Keys of the runs whose token file is missing or unreadable: their samples are left out of every
        figure and interval of a report (which then says so, :func:`dropped_note`)."""
        return [str(r.get("key")) for r in self.runs if self.tokens(r) is None]

    def trace(self, run: dict) -> dict[str, np.ndarray] | None:
        """Probe trace of ``run`` (columnar arrays keyed by dotted name), or None when not probed."""
        return self._npz(run.get("trace_file"))

    def _npz(self, rel: str | None) -> dict[str, np.ndarray] | None:
        if not isinstance(rel, str) or not rel:
            return None
        if rel not in self._arrays:
            self._arrays[rel] = load_npz(self.run_dir, rel)
        return self._arrays[rel]


def dropped_note(data: RunData) -> str | None:
    """One sentence naming the runs a report leaves out for a missing or unreadable token file, or None."""
    keys = data.missing_tokens()
    if not keys:
        return None
    shown = ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return (f"{data.name}: {len(keys)} token file(s) missing or unreadable ({shown}); their samples are left out "
            "of this report's comparisons, confidence intervals and figures, which can therefore differ from "
            "results.json (restore the files, or rescore them with `anomaly-probe run --resume`)")

