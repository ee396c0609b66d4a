"""A unit of work: one method scored on one sample with one engine (and later, one intervention).

Units are keyed by a stable string so that hypotheses asking for the same run share it, and a
resumed run can skip what is done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from anomaly_probe.methods.base import CacheMethod


@dataclass(frozen=True)
class Unit:
    """One scoring job.

    Attributes
    ----------
    max_tokens : int
        Sample length in tokens.
    sample : int
        Sample index (non-overlapping windows of the text).
    method : CacheMethod
        KV-cache policy.
    engine : str
        Resolved engine name (never ``auto``).
    intervention : str
        ``none`` for a plain run; otherwise the name of an experiment's change
        (see :mod:`anomaly_probe.interventions`).
    prefix : int or None
        Score only the first ``prefix`` tokens of the sample (``None``: all of it). Expensive engines
        (the token loop) use it to check a prefix of a long sample.
    windows : tuple of (start, stop)
        Entry ranges an engine scores in a special way (the ``spot`` engine: one query per forward);
        empty for every other run.
    """

    max_tokens: int
    sample: int
    method: CacheMethod
    engine: str
    intervention: str = "none"
    prefix: int | None = None
    windows: tuple[tuple[int, int], ...] = ()

    @property
    def n_tokens(self) -> int:
        """Tokens fed to the model (the sample, or its prefix)."""
        return self.max_tokens if self.prefix is None else min(self.prefix, self.max_tokens)

    @property
    def key(self) -> str:
        raw = f"L{self.max_tokens}-s{self.sample}-{self.method.label()}-{self.engine}-{self.intervention}"
        if self.prefix is not None and self.prefix < self.max_tokens:
            raw += f"-prefix{self.prefix}"
        if self.windows:
            raw += "-w" + ".".join(f"{a}x{b - a}" for a, b in self.windows)
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", raw).strip("_")
