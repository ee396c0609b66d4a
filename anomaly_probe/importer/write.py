"""The run folder of an import: results.json (schema 1), tokens/*.npz and traces/*.npz built from the logs."""

from __future__ import annotations

import math
import platform
import re
import sys
import time
from pathlib import Path

import numpy as np

from anomaly_probe.errors import UserError
from anomaly_probe.importer.logs import TokenLog
from anomaly_probe.importer.pair import PairedSample
from anomaly_probe.results import SCHEMA_VERSION, write_json

REPORTS_DIR = Path("reports")
ENGINE = "imported"


def prepare_dir(out: str | None) -> Path:
    """Create the run folder (default ``reports/<time>-import``); refuse one that already holds a run."""
    if out is not None and not out.strip():
        raise UserError("--out '': give a folder name, or leave --out out for reports/<time>-import")
    run_dir = Path(out).expanduser() if out else REPORTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-import"
    if (run_dir / "results.json").exists():
        raise UserError(f"--out {str(run_dir)!r} already holds a run; choose another folder")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {str(run_dir)!r} is a file; give a folder for the run")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {str(run_dir)!r} is not writable ({exc.strerror or exc}); "
                        "choose another folder") from None
    return run_dir


def max_tokens_of(pairs: list[PairedSample]) -> int:
    """Tokens per sample as the run command counts them: the longest sample's scored tokens + 1."""
    return max(p.n for p in pairs) + 1


def _run(run_dir: Path, pair: PairedSample, role: str, label: str, L: int, source: str) -> dict:
    log = pair.baseline if role == "baseline" else pair.method
    key = re.sub(r"[^A-Za-z0-9._+-]+", "_", f"L{L}-s{pair.index}-{role}-imported").strip("_")
    arrays = {"nll": log.nll, "query_pos": pair.position}
    if log.correct is not None:
        arrays["correct"] = log.correct
    tokens_file = f"tokens/{key}.npz"
    (run_dir / "tokens").mkdir(parents=True, exist_ok=True)
    np.savez_compressed(run_dir / tokens_file, **arrays)
    n = int(log.nll.size)
    nll_mean = float(log.nll.mean())
    seconds = float(np.nansum(log.latency)) if log.latency is not None and np.isfinite(log.latency).any() else None
    record = {"key": key, "method": "full" if role == "baseline" else "imported", "label": label,
              "sink_size": None, "recent_size": None, "position_mode": None, "capacity": None, "engine": ENGINE,
              "intervention": "none", "intervention_info": {}, "prefix": None, "dtype": "unknown", "max_tokens": L,
              "sample": pair.index, "sample_id": pair.sample_id, "source_file": log.path or source, "tokens_scored": n,
              "nll_mean": nll_mean, "ppl": math.exp(nll_mean) if nll_mean < 700 else float("inf"),
              "acc": float(log.correct.mean()) if log.correct is not None else None,
              "tok_per_s": n / seconds if seconds else None, "seconds": seconds,
              "peak_rss_bytes": float(np.nanmax(log.memory)) if log.memory is not None and np.isfinite(log.memory).any()
              else None, "tokens_file": tokens_file}
    if log.memory is not None or log.latency is not None:
        trace = {"step": pair.position, "query_pos": pair.position}
        if log.memory is not None:
            trace["process.rss_bytes"] = log.memory
        if log.latency is not None:
            trace["process.step_seconds"] = log.latency
        record["trace_file"] = f"traces/{key}.npz"
        (run_dir / "traces").mkdir(parents=True, exist_ok=True)
        np.savez_compressed(run_dir / record["trace_file"], **trace)
    return record


def build_runs(run_dir: Path, pairs: list[PairedSample], method_label: str, files: dict[str, str]) -> list[dict]:
    L = max_tokens_of(pairs)
    runs = []
    for pair in pairs:
        runs.append(_run(run_dir, pair, "baseline", "full", L, files["baseline"]))
        runs.append(_run(run_dir, pair, "method", method_label, L, files["method"]))
    return runs


def comparison(pairs: list[PairedSample], method_label: str) -> dict:
    """Baseline vs method over every sample, on the same tokens (``results.json`` ``comparisons`` entry)."""
    b = np.concatenate([p.baseline.nll for p in pairs])
    m = np.concatenate([p.method.nll for p in pairs])
    acc_ok = all(p.baseline.correct is not None and p.method.correct is not None for p in pairs)
    ba = float(np.concatenate([p.baseline.correct for p in pairs]).mean()) if acc_ok else None
    ma = float(np.concatenate([p.method.correct for p in pairs]).mean()) if acc_ok else None
    ppl = lambda x: math.exp(x) if x < 700 else float("inf")  # noqa: E731
    return {"max_tokens": max_tokens_of(pairs), "baseline": "full", "method": method_label, "num_samples": len(pairs),
            "tokens_scored": int(b.size), "baseline_ppl": ppl(float(b.mean())), "method_ppl": ppl(float(m.mean())),
            "baseline_acc": ba, "method_acc": ma, "nll_gap_mean": float((b - m).mean()),
            "acc_diff": None if ba is None else ma - ba}


def environment(logs: dict[str, TokenLog]) -> dict:
    """What produced this run: the import, the files read and how (no model, no device)."""
    return {"source": "anomaly-probe import (per-token logs from another tool; no model was run)",
            "python": platform.python_version(), "numpy": np.__version__, "platform": platform.platform(),
            "device": "n/a (imported logs)", "dtype": "unknown",
            "files": {role: {"path": log.path, "format": log.format, "rows": log.rows, "samples": len(log.samples),
                             "columns": {k: v for k, v in log.columns.items() if v is not None}}
                      for role, log in logs.items()},
            "notes": [n for log in logs.values() for n in log.notes], "argv": list(sys.argv)}


def write_results(run_dir: Path, data: dict) -> None:
    data = {"schema_version": SCHEMA_VERSION, "status": "complete", **data}
    write_json(run_dir / "results.json", data)
