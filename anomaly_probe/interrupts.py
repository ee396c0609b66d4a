"""SIGTERM (``kill``, a batch scheduler's time limit) ends a run the way Ctrl-C does.

Python turns SIGINT into :class:`KeyboardInterrupt`; SIGTERM would kill the process without running
any ``except`` or ``finally``. Inside :func:`sigterm_as_interrupt` it raises ``KeyboardInterrupt``
too, so the run command can mark the run folder ``interrupted`` and say how to resume it.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from typing import Iterator


def _raise_interrupt(signum, frame) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Convert SIGTERM to KeyboardInterrupt for the block; the previous handler comes back after.

    Does nothing outside the main thread (signal handlers can only be set there).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
