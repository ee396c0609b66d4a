"""Trace files: one ``.npz`` of named columns per scored unit (``traces/<unit key>.npz``)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

COMPRESS_LEVEL = 1  # zlib level: a 12k-token trace is ~170 MB raw; level 1 writes it ~3x faster than numpy's 6


def save_trace(path: Path, columns: dict[str, np.ndarray]) -> int:
    """Write ``columns`` atomically as a compressed npz (read back by ``np.load``/:func:`load_trace`).

    Returns
    -------
    int
        Bytes written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL) as archive:
            for name, array in columns.items():
                with archive.open(f"{name}.npy", "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asanyarray(array), allow_pickle=False)
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
