"""Writing and reading the files of a run folder: results.json (atomically) and the npz arrays."""

from __future__ import annotations

import json
import math
import os
import zipfile
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from anomaly_probe.errors import UserError
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


class WriteError(UserError):
    """A run folder file could not be written (disk full, read-only folder, a link out of the folder).

    The message names the file and the reason; ``run`` adds the resume hint. Exit code 1: not a bad flag,
    but the run did not finish.
    """

    exit_code = 1


def inside(run_dir: Path, path: Path) -> bool:
    """Whether ``path`` (links resolved) lies inside ``run_dir`` (links resolved)."""
    try:
        Path(path).resolve().relative_to(Path(run_dir).resolve())
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def safe_rel(rel) -> bool:
    """Whether a path read from results.json may be opened: relative, without ``..``, not empty."""
    if not isinstance(rel, str) or not rel or "\0" in rel:
        return False
    parts = rel.replace("\\", "/").split("/")
    drive = len(rel) > 1 and rel[1] == ":"  # C:... on Windows
    return not Path(rel).is_absolute() and not rel.startswith(("/", "\\")) and not drive and ".." not in parts


def atomic_write(path: Path, write: Callable) -> None:
    """Write ``path`` atomically: ``write(f)`` fills a fresh temp file (binary), which then replaces ``path``.

    The temp file is created exclusively and never through a link (``O_EXCL | O_NOFOLLOW``), and it is
    removed on every failure (disk full, interrupt); a link at ``path`` itself is replaced, never followed.
    Raises OSError.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileExistsError:  # left by a killed process with our pid: a link or a stale file, never written into
        tmp.unlink()
        fd = os.open(tmp, flags, 0o644)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` atomically (:func:`atomic_write`); numpy scalars become numbers, NaN/inf null."""
    text = json.dumps(_clean(data), indent=2, allow_nan=False).encode("utf-8")
    atomic_write(Path(path), lambda f: f.write(text))


def write_results(run_dir: Path, results: Results) -> None:
    """``RUN_DIR/results.json``, atomically: a reader never sees a half-written file.

    Raises
    ------
    WriteError
        It cannot be written; the previous results.json is left as it was.
    """
    path = Path(run_dir) / "results.json"
    try:
        write_json(path, results.to_dict())
    except OSError as exc:
        raise WriteError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def own_folder(run_dir: Path, rel: str) -> Path:
    """``RUN_DIR/rel`` created if needed, checked to lie inside the run folder (not a link out of it).

    Raises
    ------
    WriteError
        It cannot be created, or it is a link out of the run folder (never written through).
    """
    folder = Path(run_dir) / rel
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WriteError(f"cannot create {str(folder)!r}: {exc.strerror or exc}") from None
    if not inside(run_dir, folder):
        raise WriteError(f"{str(folder)!r} is a link out of the run folder {str(run_dir)!r}; refusing to write "
                         "through it (replace it with a folder)")
    return folder


def save_npz(run_dir: Path, rel: str, arrays: Mapping[str, np.ndarray]) -> str:
    """Write ``arrays`` to ``RUN_DIR/rel`` (compressed npz, atomically, folders created); returns ``rel``.

    Raises
    ------
    WriteError
        The file cannot be written, or its folder is a link out of the run folder (never written through).
    """
    path = own_folder(run_dir, str(Path(rel).parent)) / Path(rel).name
    try:
        atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    except OSError as exc:
        raise WriteError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
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
    """Every array of ``RUN_DIR/rel``, or None when ``rel`` is not a safe relative path (:func:`safe_rel`), leads
    out of the folder, or the file is missing or unreadable."""
    if not safe_rel(rel) or not inside(run_dir, Path(run_dir) / rel):
        return None  # an absolute path, ``..`` or a link out of the folder: never followed
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
