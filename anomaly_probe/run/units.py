"""A unit: one scored job, one method on one sample with one engine (and maybe one intervention).

Units are keyed by a stable string so that hypotheses asking for the same run share it, and a
resumed run can skip what is done. :func:`make_unit` is the one way to name a unit (it resolves the
engine); :func:`pair_units` the one way to name the baseline and the method at a length and sample.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from anomaly_probe.engines import pick_engine
from anomaly_probe.methods import FullCache
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


def make_unit(max_tokens: int, sample: int, method: CacheMethod, engine: str = "auto", intervention: str = "none",
              prefix: int | None = None, windows: tuple = ()) -> Unit:
    """The unit for these settings: ``engine`` resolved (``auto`` -> the fastest exact engine for the
    method; internal engines such as ``spot`` are allowed, since only experiments plan them), a ``prefix``
    that covers the whole sample dropped (so it shares the whole sample's key)."""
    if prefix is not None and prefix >= max_tokens:
        prefix = None
    return Unit(max_tokens, sample, method, pick_engine(engine, method, internal=True), intervention, prefix,
                tuple(tuple(w) for w in windows))


def pair_units(max_tokens: int, sample: int, method: CacheMethod, engine: str) -> tuple[Unit, Unit]:
    """The baseline (full cache) and the method under test at one length and sample, same engine flag."""
    return (make_unit(max_tokens, sample, FullCache(), engine), make_unit(max_tokens, sample, method, engine))
