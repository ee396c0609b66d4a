"""What a failed unit leaves behind: one line for ``results.json`` (``failures``) and the verdicts.

A unit that crashes must not cost the others (the runner keeps going), and the line it leaves must
say what to do. Running out of memory is the common case on a laptop or a small GPU, so it is
recognised whatever raised it and the message names the flags that shrink the job.
"""

from __future__ import annotations

import gc

OOM_PHRASES = ("out of memory", "cannot allocate memory", "failed to allocate")
"""Lower-case phrases of out-of-memory ``RuntimeError``s (MPS, ROCm, older CUDA builds, allocators)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for ``torch.OutOfMemoryError`` (= ``torch.cuda.OutOfMemoryError``), ``MemoryError`` and
    ``RuntimeError``s whose message says the device ran out of memory (MPS raises those)."""
    import torch

    types: tuple[type, ...] = (MemoryError,)
    for owner in (torch, getattr(torch, "cuda", None)):
        oom = getattr(owner, "OutOfMemoryError", None)
        if isinstance(oom, type):
            types += (oom,)
    if isinstance(exc, types):
        return True
    return isinstance(exc, RuntimeError) and any(p in str(exc).lower() for p in OOM_PHRASES)


def failure_message(exc: BaseException, unit, chunk_size: int, dtype: str, chunked: bool) -> str:
    """The one-line record of ``exc`` raised while scoring ``unit``.

    Parameters
    ----------
    unit : Unit
        The unit that failed (its length, engine and intervention shape the remedy).
    chunk_size : int
        ``--chunk-size`` of the run.
    dtype : str
        The run's dtype name (``float32``, ``float16``, ...).
    chunked : bool
        Whether the unit's engine takes ``--chunk-size``.
    """
    first = _first_line(exc)
    if not is_out_of_memory(exc):
        return f"{type(exc).__name__}: {first[:200]}"
    remedies = [f"a shorter --max-tokens (this unit: {unit.max_tokens})"]
    if chunked:
        remedies.append(f"a smaller --chunk-size (now {chunk_size})")
    remedies.append("--dtype float16 or bfloat16" if dtype == "float32" else "another --dtype")
    remedies.append("another --device")
    hint = ", ".join(remedies[:-1]) + f" or {remedies[-1]}"
    ballast = (f"; the memory experiment held a ballast ({unit.intervention})"
               if unit.intervention.startswith("ballast-") else "")
    return f"out of memory ({type(exc).__name__}: {first[:160]}){ballast}; try {hint}"


def release_memory() -> None:
    """Give cached allocator blocks back after an out-of-memory error so the next unit can run."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    mps = getattr(torch, "mps", None)
    if mps is not None and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        mps.empty_cache()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else "(no message)"
