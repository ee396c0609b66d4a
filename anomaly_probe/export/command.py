"""``anomaly-probe export RUN_DIR [--out DIR]``: one per-token CSV log per scored unit of a run folder.

Each run of ``results.json`` with a readable ``tokens/<unit>.npz`` becomes ``DIR/<unit key>.csv`` in
our per-token log layout (:mod:`anomaly_probe.importer.ours`). Positions are absolute token indices:
entry ``i`` of a unit scored by a model scores token ``i + 1``; an imported unit keeps the positions
it was imported with (its ``query_pos``). ``anomaly-probe import`` reads the files back, and the
baseline and method files of one length reproduce the run's comparison on the same tokens.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from anomaly_probe.errors import UserError

IMPORTED_ENGINE = "imported"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``anomaly-probe export``."""
    parser.description = ("Write every scored unit of a run folder (RUN_DIR/results.json + tokens/*.npz) as a "
                          "per-token CSV log that `anomaly-probe import` reads back.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run folder written by `anomaly-probe run` or `import`")
    parser.add_argument("--out", default=None, metavar="DIR", help="folder for the CSV files (default RUN_DIR/export)")


def run_export(args: argparse.Namespace) -> int:
    """Returns 0; a bad run folder or output folder is a UserError (one line, exit code 2)."""
    from anomaly_probe.console import console, err_console, safe, visible
    from anomaly_probe.reports.rundata import load_run

    data = load_run(args.run_dir)
    if not data.runs:
        raise UserError(f"{str(data.run_dir)!r}: results.json lists no scored runs; nothing to export")
    out = _out_dir(args.out, data.run_dir)
    written: dict[str, Path] = {}
    skipped = []
    for run in data.runs:
        arrays = data.tokens(run)
        if arrays is None or "nll" not in arrays:
            skipped.append(str(run.get("key") or run.get("tokens_file") or "?"))
            continue
        path = out / f"{_file_stem(run, len(written))}.csv"
        write_unit(path, data, run, arrays)
        written[str(run.get("key"))] = path
    if skipped:
        err_console.print(f"skipped {len(skipped)} unit(s) without a readable tokens file: "
                          f"{visible(', '.join(skipped[:5]))}"
                          + (" ..." if len(skipped) > 5 else ""), markup=False, highlight=False, soft_wrap=True)
    if not written:
        raise UserError(f"{str(data.run_dir)!r}: no run has a readable tokens file; nothing exported")
    console.print(f"exported {len(written)} per-token log(s) to {safe(out)}", highlight=False)
    suggestion = import_command(data, written)
    if suggestion:
        console.print(f"re-import the baseline and method: {visible(suggestion)}", highlight=False, markup=False,
                      soft_wrap=True)
    return 0


def write_unit(path: Path, data, run: dict, arrays: dict[str, np.ndarray]) -> None:
    """One unit's CSV: header facts from ``results.json``, one row per scored token."""
    from anomaly_probe.importer.ours import write_log

    nll = np.asarray(arrays["nll"], dtype=np.float64)  # (n,) nats
    n = nll.size
    qpos = arrays.get("query_pos")
    if run.get("engine") == IMPORTED_ENGINE and qpos is not None and len(qpos) == n:
        position = np.asarray(qpos, dtype=np.int64) + 1  # imported: query_pos holds the absolute query index
    else:
        position = np.arange(1, n + 1, dtype=np.int64)  # entry i scores token i + 1
    extra = {k: arrays[k] for k in ("correct", "query_pos", "n_keys") if k in arrays and len(arrays[k]) == n}
    model = data.section("model")
    meta = {"label": run.get("label"), "role": _role(data, run), "method": run.get("method"),
            "engine": run.get("engine"), "intervention": run.get("intervention"),
            "position_mode": run.get("position_mode"), "max_tokens": run.get("max_tokens"),
            "sample": run.get("sample"), "key": run.get("key"), "model": model.get("spec"),
            "trained_context": data.trained_context, "run_dir": str(data.run_dir)}
    sample_id = run.get("sample_id", run.get("sample", 0))
    write_log(path, {k: v for k, v in meta.items() if v is not None}, _clean_id(sample_id), position, nll, extra)


def import_command(data, written: dict[str, Path]) -> str | None:
    """``anomaly-probe import`` of the baseline and method files of the longest length, when both exist
    (the units come from the run's saved role table, so an eval-bias or oracle run is never taken)."""
    from anomaly_probe.reports.roles import role_runs

    base = [r for r in role_runs(data, "baseline") if str(r.get("key")) in written]
    meth = [r for r in role_runs(data, "method") if str(r.get("key")) in written]
    L = max((r.get("max_tokens") for r in base + meth if isinstance(r.get("max_tokens"), int)), default=None)
    base, meth = ([r for r in rs if r.get("max_tokens") == L] for rs in (base, meth))
    if not base or not meth:
        return None
    files = lambda rs: " ".join(_quote(str(written[str(r["key"])])) for r in rs)  # noqa: E731
    return f"anomaly-probe import --baseline {files(base)} --method {files(meth)}"


def _role(data, run: dict) -> str:
    """baseline, method, oracle (the run's role table), else intervention or other."""
    from anomaly_probe.reports.roles import role_runs

    for role in ("baseline", "method", "oracle"):
        if any(r is run or r.get("key") == run.get("key") for r in role_runs(data, role)):
            return role
    return "intervention" if run.get("intervention", "none") not in ("none", None) else "other"


def _out_dir(out: str | None, run_dir: Path) -> Path:
    if out is not None and not out.strip():
        raise UserError("--out '': give a folder name, or leave --out out for RUN_DIR/export")
    path = Path(out).expanduser() if out else run_dir / "export"
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {str(path)!r} is a file; give a folder for the CSV files")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise UserError(f"--out {str(path)!r} is not writable ({exc.strerror or exc}); choose another folder") from None
    return path


def _file_stem(run: dict, index: int) -> str:
    stem = re.sub(r"[^A-Za-z0-9._+-]+", "_", str(run.get("key") or "")).strip("._")
    return stem or f"unit{index}"


def _clean_id(value) -> str:
    """A sample id safe in one CSV cell."""
    return re.sub(r'[,"\r\n]+', "_", str(value)).strip() or "0"


def _quote(path: str) -> str:
    import shlex

    return shlex.quote(path)
