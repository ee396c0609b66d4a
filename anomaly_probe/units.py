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
        ``none`` for a plain run; otherwise the name of an experiment's change.
    """

    max_tokens: int
    sample: int
    method: CacheMethod
    engine: str
    intervention: str = "none"

    @property
    def key(self) -> str:
        raw = f"L{self.max_tokens}-s{self.sample}-{self.method.label()}-{self.engine}-{self.intervention}"
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", raw).strip("_")
