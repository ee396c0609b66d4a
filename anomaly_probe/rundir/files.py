"""Writing and reading the files of a run folder: results.json (atomically) and the npz arrays."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Mapping

import numpy as np

from anomaly_probe.rundir.schema import Results

TOKEN_ARRAYS = ("nll", "correct", "query_pos", "n_keys")
"""Arrays of ``tokens/<key>.npz`` (docs/FORMATS.md); an imported log may lack ``correct`` and ``n_keys``."""


def _clean(obj):
    """JSON-safe copy: numpy scalars to Python, non-finite floats to None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically (temp file + rename); numpy scalars become numbers, NaN/inf null."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def write_results(run_dir: Path, results: Results) -> None:
    """``RUN_DIR/results.json``, atomically: a reader never sees a half-written file."""
    write_json(Path(run_dir) / "results.json", results.to_dict())


def save_npz(run_dir: Path, rel: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` to ``RUN_DIR/rel`` (compressed npz, folders created); returns ``rel``."""
    path = Path(run_dir) / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return rel


def save_tokens(run_dir: Path, key: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Per-token arrays of one unit to ``tokens/<key>.npz``; returns that relative path (``tokens_file``).

    Parameters
    ----------
    arrays : mapping
        ``nll`` (T-1,) float64 nats, ``correct`` (T-1,) bool, ``query_pos`` (T-1,) int64, ``n_keys``
        (T-1,) int64; entry ``i`` scores token ``i + 1``.
    """
    return save_npz(run_dir, f"tokens/{key}.npz", arrays)


def load_npz(run_dir: Path, rel) -> dict[str, np.ndarray] | None:
    """Every array of ``RUN_DIR/rel``, or None when ``rel`` is not a path or the file is missing or unreadable."""
    if not isinstance(rel, str) or not rel:
        return None
    try:
        with np.load(Path(run_dir) / rel, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return None


def load_tokens(run_dir: Path, tokens_file, tokens_scored=None,
                names: tuple[str, ...] = TOKEN_ARRAYS) -> dict[str, np.ndarray] | None:
    """The token arrays ``names`` of one unit, checked: all present, 1-D, of one length (``tokens_scored``
    when it is an int). None when the file is missing, unreadable or fails a check."""
    arrays = load_npz(run_dir, tokens_file)
    if arrays is None or any(k not in arrays for k in names):
        return None
    arrays = {k: arrays[k] for k in names}
    if any(a.ndim != 1 for a in arrays.values()) or len({a.size for a in arrays.values()}) != 1:
        return None
    if isinstance(tokens_scored, int) and not isinstance(tokens_scored, bool) and arrays[names[0]].size != tokens_scored:
        return None
    return arrays
