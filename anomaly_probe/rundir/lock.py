"""One writer per run folder: an exclusive lock file holding the owner's pid.

``RUN_DIR/.lock`` is created with ``O_CREAT | O_EXCL`` (atomic: of two processes exactly one creates
it) and holds ``{"pid", "started", "host"}``. A lock whose process is gone (no such pid, or the pid was
reused by a process started later) is stale and is taken over; breaking it is serialised by a second
exclusive file, ``.lock.break``, so two contenders never both take over. Locks from another host are
never broken (the pid cannot be checked there).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import psutil

from anomaly_probe.errors import UserError

LOCK_NAME = ".lock"
BREAK_STALE_S = 30.0  # a ``.lock.break`` older than this was left by a crashed contender
FRESH_S = 5.0  # an empty lock file younger than this is being written by its owner


class RunLock:
    """The held lock of one run folder; :meth:`release` (or leaving the ``with`` block) removes it.

    Parameters
    ----------
    run_dir : Path
        The run folder (must exist).
    what : str
        How an error names the folder (``--out 'x'``, ``--resume 'x'``).
    """

    def __init__(self, run_dir: Path, what: str) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self.what = what
        self.held = False

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; raises UserError when a live process holds it."""
        for _ in range(50):
            if self._create():
                self.held = True
                return
            owner = _read(self.path)
            if owner is None:  # removed meanwhile, or being written right now
                if _age(self.path) > FRESH_S:
                    self._break(None)
                else:
                    time.sleep(0.05)
                continue
            if _alive(owner):
                raise UserError(f"{self.what} is in use by another anomaly-probe process (pid {owner.get('pid')}"
                                f" on {owner.get('host')}); wait for it to finish, or remove {str(self.path)!r} "
                                "if that process is gone")
            self._break(owner)
        raise UserError(f"{self.what}: could not take the lock {str(self.path)!r} (another process keeps taking it)")

    def release(self) -> None:
        """Remove the lock file if this process holds it (idempotent)."""
        if not self.held:
            return
        self.held = False
        owner = _read(self.path)
        if owner is not None and owner.get("pid") == os.getpid():
            try:
                self.path.unlink()
            except OSError:
                pass

    def _create(self) -> bool:
        me = {"pid": os.getpid(), "started": _started(os.getpid()), "host": socket.gethostname()}
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except FileExistsError:
            return False
        except OSError as exc:
            raise UserError(f"{self.what}: cannot create the lock file {str(self.path)!r} "
                            f"({exc.strerror or exc})") from None
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(me))
        return True

    def _break(self, owner: dict | None) -> None:
        """Remove a stale lock, unless another contender is doing so or the lock changed meanwhile."""
        guard = self.path.with_name(LOCK_NAME + ".break")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if _age(guard) > BREAK_STALE_S:
                _unlink(guard)
            time.sleep(0.05)
            return
        except OSError:
            time.sleep(0.05)
            return
        os.close(fd)
        try:
            if _read(self.path) == owner:  # still the stale lock we judged, not a fresh one
                _unlink(self.path)
        finally:
            _unlink(guard)


def _read(path: Path) -> dict | None:
    """The lock's owner record, or None when it is missing, empty or not ours."""
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("pid"), int) else None


def _alive(owner: dict) -> bool:
    """Whether the lock's owner still runs (a lock from another host counts as alive)."""
    if owner.get("host") != socket.gethostname():
        return True
    pid = owner["pid"]
    if pid <= 0 or not psutil.pid_exists(pid):
        return False
    started = _started(pid)
    saved = owner.get("started")
    if started is None or not isinstance(saved, (int, float)):
        return True
    return abs(started - saved) < 1.0  # else the pid was reused by a later process


def _started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except OSError:
        pass
