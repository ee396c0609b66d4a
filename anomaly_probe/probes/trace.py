"""Trace files: one ``.npz`` of named columns per scored unit (``traces/<unit key>.npz``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def save_trace(path: Path, columns: dict[str, np.ndarray]) -> int:
    """Write ``columns`` atomically as a compressed npz.

    Returns
    -------
    int
        Bytes written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        np.savez_compressed(tmp, **columns)
        os.replace(tmp, path)
    except BaseException:  # disk full, interrupt: no temp file left behind
        tmp.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def load_trace(path: Path) -> dict[str, np.ndarray]:
    """Read a trace written by :func:`save_trace`."""
    with np.load(Path(path)) as z:
        return {name: z[name] for name in z.files}


def trace_steps(columns: dict[str, np.ndarray]) -> int:
    """Number of rows S (recorded query steps)."""
    step = columns.get("step")
    return 0 if step is None else int(step.shape[0])


def raw_bytes_per_step(columns: dict[str, np.ndarray]) -> float:
    """Uncompressed bytes of all columns per recorded step (what the probes hold in memory)."""
    steps = trace_steps(columns)
    return sum(a.nbytes for a in columns.values()) / steps if steps else 0.0
