"""The run folder of an import: its records, tokens/*.npz and traces/*.npz, built from the logs.

The folder, the records and the files are :mod:`anomaly_probe.rundir`'s, as for ``anomaly-probe run``.
"""

from __future__ import annotations

import math
import platform
import re
import sys
from pathlib import Path

import numpy as np

from anomaly_probe.importer.logs import TokenLog
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.rundir import Comparison, RoleEntry, UnitRecord, compare, prepare, save_npz, save_tokens

ENGINE = "imported"
BASELINE_LABEL = "full"


def prepare_dir(out: str | None) -> Path:
    """Create the run folder (default ``reports/<time>-import``); refuse one that already holds a run."""
    return prepare(out, "import")


def max_tokens_of(pairs: list[PairedSample]) -> int:
    """Tokens per sample as the run command counts them: the longest sample's scored tokens + 1."""
    return max(p.n for p in pairs) + 1


def unit_key(L: int, sample: int, role: str) -> str:
    """The key of an imported unit (the stem of its npz files)."""
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", f"L{L}-s{sample}-{role}-imported").strip("_")


def _record(run_dir: Path, pair: PairedSample, role: str, label: str, L: int, source: str) -> UnitRecord:
    log = pair.baseline if role == "baseline" else pair.method
    key = unit_key(L, pair.index, role)
    arrays = {"nll": log.nll, "query_pos": pair.position}
    if log.correct is not None:
        arrays["correct"] = log.correct
    n = int(log.nll.size)
    nll_mean = float(log.nll.mean())
    seconds = float(np.nansum(log.latency)) if log.latency is not None and np.isfinite(log.latency).any() else None
    record = UnitRecord(
        key=key, method="full" if role == "baseline" else "imported", label=label, engine=ENGINE, max_tokens=L,
        sample=pair.index, sample_id=pair.sample_id, source_file=log.path or source, tokens_scored=n, nll_mean=nll_mean,
        ppl=math.exp(nll_mean) if nll_mean < 700 else float("inf"),
        acc=float(log.correct.mean()) if log.correct is not None else None,
        tok_per_s=n / seconds if seconds else None, seconds=seconds,
        peak_rss_bytes=(float(np.nanmax(log.memory)) if log.memory is not None and np.isfinite(log.memory).any()
                        else None),
        tokens_file=save_tokens(run_dir, key, arrays))
    if log.memory is not None or log.latency is not None:
        trace = {"step": pair.position, "query_pos": pair.position}
        if log.memory is not None:
            trace["process.rss_bytes"] = log.memory
        if log.latency is not None:
            trace["process.step_seconds"] = log.latency
        record.trace_file = save_npz(run_dir, f"traces/{key}.npz", trace)
    return record


def build_runs(run_dir: Path, pairs: list[PairedSample], method_label: str, files: dict[str, str]) -> list[UnitRecord]:
    """Both units of every sample, their tokens and traces written."""
    L = max_tokens_of(pairs)
    runs = []
    for pair in pairs:
        runs.append(_record(run_dir, pair, "baseline", BASELINE_LABEL, L, files["baseline"]))
        runs.append(_record(run_dir, pair, "method", method_label, L, files["method"]))
    return runs


def roles(pairs: list[PairedSample]) -> list[RoleEntry]:
    """The role table: which imported unit is the baseline and which the method, per sample."""
    L = max_tokens_of(pairs)
    return [RoleEntry("none", L, role, [unit_key(L, p.index, role) for p in pairs]) for role in ("baseline", "method")]


def comparison(pairs: list[PairedSample], method_label: str) -> Comparison:
    """Baseline vs method over every sample, on the same tokens (``results.json`` ``comparisons`` entry)."""
    arrays = {p.index: {BASELINE_LABEL: {"nll": p.baseline.nll, "correct": p.baseline.correct},
                        method_label: {"nll": p.method.nll, "correct": p.method.correct}} for p in pairs}
    return compare(BASELINE_LABEL, method_label, max_tokens_of(pairs), arrays)


def environment(logs: dict[str, TokenLog]) -> dict:
    """What produced this run: the import, the files read and how (no model, no device)."""
    return {"source": "anomaly-probe import (per-token logs from another tool; no model was run)",
            "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "device": "n/a (imported logs)", "dtype": "unknown",
            "files": {role: {"path": log.path, "format": log.format, "rows": log.rows, "samples": len(log.samples),
                             "columns": {k: v for k, v in log.columns.items() if v is not None}}
                      for role, log in logs.items()},
            "notes": [n for log in logs.values() for n in log.notes], "argv": list(sys.argv)}
