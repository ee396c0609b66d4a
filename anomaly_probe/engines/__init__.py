"""Scoring engines. ``stepwise`` is the reference; ``batched`` is the full-cache fast path.

:func:`pick_engine` resolves ``--engine auto`` to the fastest engine that is exact for a method.
"""

from __future__ import annotations

from typing import Callable

from anomaly_probe.engines.batched import score_batched
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.engines.stepwise import score_stepwise
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.registry import Registry

ENGINES: Registry[Callable[..., TokenScores]] = Registry("engine")
ENGINES.register("stepwise", score_stepwise)
ENGINES.register("batched", score_batched)
ENGINE_CHOICES = ("auto", *ENGINES.names())


def pick_engine(requested: str, method: CacheMethod) -> str:
    """Resolve ``auto`` and refuse combinations that are not exact.

    Raises
    ------
    UserError
        Unknown engine, or an engine that cannot score ``method`` exactly.
    """
    if requested == "auto":
        return "batched" if method.is_full else "stepwise"
    ENGINES.get(requested)
    if requested == "batched" and not method.is_full:
        raise UserError(f"--engine batched scores the full cache only, not {method.label()}; use stepwise or auto")
    return requested


__all__ = ["ENGINES", "ENGINE_CHOICES", "TokenScores", "pick_engine", "score_batched", "score_stepwise"]
