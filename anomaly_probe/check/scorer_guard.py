"""Run a user's scorer so that it cannot hang CI, end the process, or leave the model changed.

``check --scorer`` calls user code on the loaded model. Three things must not escape that call:

* **time**: :func:`time_limit` interrupts a scorer that runs past ``--scorer-timeout`` seconds with
  :class:`ScorerTimeout` (``SIGALRM``, so in the main thread of a POSIX process, between two Python
  bytecodes: a single long tensor op finishes first). If the scorer is stuck outside Python or swallows
  the interruption, a watchdog thread ends the process ``HARD_GRACE_S`` later with one ``error:`` line
  and exit code 1, so a CI job never hangs.
* **the process**: ``sys.exit`` in a scorer is a ``SystemExit``; the caller turns it (like any
  exception) into a failed check instead of letting it end ``check`` silently.
* **the model**: :class:`ModelState` fingerprints every parameter and buffer (their bits, on their
  device), the train/eval flag, the attention implementation and the hooks; after each call a changed
  fingerprint names what changed, so the check fails with that and the caller reloads a fresh model
  before any reference engine runs on it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

HARD_GRACE_S = 30.0
"""Seconds after the timeout before the watchdog ends a scorer that could not be interrupted."""
_CHUNK = 1 << 22  # elements per fingerprint step: bounds the int64 copy to 32 MiB


class ScorerTimeout(BaseException):
    """The scorer ran past its time limit (a ``BaseException``: a scorer's ``except Exception`` cannot swallow it)."""


@contextmanager
def time_limit(seconds: float, what: str) -> Iterator[None]:
    """Raise :class:`ScorerTimeout` in the block after ``seconds``; end the process if that cannot work.

    Parameters
    ----------
    seconds : float
        The limit (> 0).
    what : str
        Names the call in the watchdog's last line, e.g. ``"--scorer my.py:score on sample 1"``.
    """
    done = threading.Event()

    def watchdog() -> None:
        if not done.wait(seconds + HARD_GRACE_S):
            sys.stderr.write(f"error: {what} did not return within {seconds:g} s and could not be interrupted "
                             f"(stuck outside Python?); ending check\n")
            sys.stderr.flush()
            os._exit(1)

    threading.Thread(target=watchdog, name="anomaly-probe-scorer-watchdog", daemon=True).start()
    soft = hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    previous = None
    if soft:
        def on_alarm(signum, frame):
            raise ScorerTimeout(f"did not return within {seconds:g} s (--scorer-timeout)")

        previous = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        done.set()
        if soft:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL if previous is None else previous)  # None: set outside Python


@dataclass(frozen=True)
class ModelState:
    """What a scorer must leave as it found it.

    Attributes
    ----------
    tensors : dict
        Dotted name of every parameter and buffer -> ``(shape, dtype, device, bit checksum)``.
    training : bool
        ``model.training``.
    attention : str or None
        ``config._attn_implementation`` (through :mod:`anomaly_probe.attention.hf`).
    hooks : int
        Forward (pre-)hooks registered on the model's modules.
    """

    tensors: dict
    training: bool
    attention: str | None
    hooks: int

    @classmethod
    def of(cls, model: torch.nn.Module) -> "ModelState":
        from anomaly_probe.attention.hf import current_implementation, is_switchable_model

        tensors = {name: (tuple(t.shape), str(t.dtype), str(t.device), _checksum(t))
                   for name, t in [*model.named_parameters(), *model.named_buffers()]}
        hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        attention = current_implementation(model) if is_switchable_model(model) else None
        return cls(tensors=tensors, training=model.training, attention=attention, hooks=hooks)

    def change_from(self, before: "ModelState") -> str | None:
        """One phrase naming what differs from ``before`` (the first few tensors), or None."""
        changed = [n for n in before.tensors if self.tensors.get(n) != before.tensors[n]]
        changed += [n for n in self.tensors if n not in before.tensors]
        parts = []
        if changed:
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            parts.append(f"{len(changed)} parameter/buffer tensor(s) ({', '.join(changed[:3])}{more})")
        if self.training != before.training:
            parts.append(f"train mode {before.training} -> {self.training}")
        if self.attention != before.attention:
            parts.append(f"attention implementation {before.attention!r} -> {self.attention!r}")
        if self.hooks != before.hooks:
            parts.append(f"forward hooks {before.hooks} -> {self.hooks}")
        return "; ".join(parts) or None


@torch.no_grad()
def _checksum(t: torch.Tensor) -> tuple[int, int]:
    """Sum and position-weighted sum of the tensor's bits (as integers), computed on its device."""
    flat = t.detach().reshape(-1)
    if flat.is_floating_point() or flat.is_complex():
        flat = flat.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[flat.element_size()])
    elif flat.dtype == torch.bool:
        flat = flat.view(torch.uint8)
    total = weighted = 0
    for lo in range(0, flat.numel(), _CHUNK):
        bits = flat[lo:lo + _CHUNK].to(torch.int64)  # (n,)
        weight = torch.arange(lo, lo + bits.numel(), device=bits.device) % 65521 + 1
        total += int(bits.sum())
        weighted += int((bits * weight).sum())
    return total, weighted
