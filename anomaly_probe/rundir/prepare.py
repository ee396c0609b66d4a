"""Creating a run folder: the one place that picks its name and checks that it can be written."""

from __future__ import annotations

import os
import re
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from anomaly_probe.errors import UserError
from anomaly_probe.rundir.lock import RunLock

REPORTS_DIR = Path("reports")
"""Where a run folder goes without ``--out`` (relative to the working directory)."""


def default_folder(name: str) -> Path:
    """``reports/<time>-<name>``, the name made safe for a folder."""
    return REPORTS_DIR / f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9._-]+', '_', name)}"


def check_out(out: str | None, what: str) -> None:
    """Refuse ``--out ''`` (cheap: before anything is loaded). ``what`` names the default folder's last part."""
    if out is not None and not out.strip():
        raise UserError(f"--out '': give a folder name, or leave --out out for reports/<time>-{what}")


def check_writable(run_dir: Path) -> None:
    """Create ``run_dir`` if needed and write and remove a test file; raises OSError when it cannot."""
    run_dir.mkdir(parents=True, exist_ok=True)
    probe = run_dir / f".write-test-{os.getpid()}"  # per process: two runs checking at once do not collide
    try:
        probe.write_text("ok")
    finally:  # a full disk may have created it empty
        probe.unlink(missing_ok=True)


def prepare(out: str | None, default_name: str, *, resume_hint: bool = False, what: str | None = None) -> Path:
    """Create the run folder ``out`` (default ``reports/<time>-<default_name>``).

    Parameters
    ----------
    out : str or None
        ``--out`` as given.
    default_name : str
        Last part of the default folder's name (the model, or ``import``).
    resume_hint : bool
        A folder that already holds a run is refused with the ``run --resume`` command that continues it.
    what : str or None
        How the ``--out ''`` error names the default folder (default: ``default_name``).

    Raises
    ------
    UserError
        ``--out ''``, a folder that already holds a run, a file, or a folder that cannot be written.
    """
    run_dir = _folder(out, default_name, what)
    _refuse_a_run(run_dir, resume_hint)
    _make_writable(run_dir)
    return run_dir


@contextmanager
def claim(out: str | None, default_name: str, *, resume_hint: bool = False,
          what: str | None = None) -> Iterator[Path]:
    """:func:`prepare` under the folder's exclusive lock (:class:`~anomaly_probe.rundir.lock.RunLock`), held
    for the block: of two processes given one ``--out`` exactly one gets the folder, the other one error line.

    The folder is checked for a run *after* the lock is taken (no check-then-act race). When the block
    fails and leaves the folder empty (e.g. the model did not load), the folder is removed.
    """
    run_dir = prepare(out, default_name, resume_hint=resume_hint, what=what)
    lock = RunLock(run_dir, f"--out {str(run_dir)!r}")
    lock.acquire()
    try:
        _refuse_a_run(run_dir, resume_hint)
        yield run_dir
    except BaseException:
        lock.release()
        _remove_if_empty(run_dir)
        raise
    lock.release()


def _folder(out: str | None, default_name: str, what: str | None) -> Path:
    check_out(out, what or default_name)
    return Path(out).expanduser() if out else default_folder(default_name)


def _make_writable(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {str(run_dir)!r} is a file; give a folder for the run")
    try:
        check_writable(run_dir)
    except OSError as exc:
        raise UserError(f"--out {str(run_dir)!r} is not writable ({exc.strerror or exc}); "
                        "choose another folder") from None


def _refuse_a_run(run_dir: Path, resume_hint: bool) -> None:
    if (run_dir / "results.json").exists():
        hint = f", or continue it with `anomaly-probe run --resume {run_dir}`" if resume_hint else ""
        raise UserError(f"--out {str(run_dir)!r} already holds a run; choose another folder{hint}")


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
