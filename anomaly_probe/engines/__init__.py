"""Scoring engines. ``stepwise`` is the reference; the others are proven equal to it or are baselines.

* ``batched``: the full cache in chunked forwards (the standard perplexity computation).
* ``parallel``: any sinks + recent-window cache, many queries per forward, exact per token.
* ``recompute``: the strided sliding-window recomputation oracle (its own method).
* ``chunked``: any policy (head-wise eviction, ``--compress-every C``, quantised K/V), ``gcd(C, group)``
  queries per forward, equal to ``stepwise`` with the same C.
* ``spot`` (internal, not a ``--engine`` choice): batched with stepwise spot windows, the eval-bias
  check at long positions; its windows come from the experiment that plans the run.

:func:`pick_engine` resolves ``--engine auto`` to the fastest engine that is exact for a method.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Callable

from anomaly_probe.engines.batched import score_batched
from anomaly_probe.engines.chunked import chunk_queries, score_chunked
from anomaly_probe.engines.parallel import parallel_support, score_parallel
from anomaly_probe.engines.recompute import score_recompute
from anomaly_probe.engines.scores import TokenScores
from anomaly_probe.engines.spot import score_spot
from anomaly_probe.engines.stepwise import score_stepwise
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod
from anomaly_probe.methods.recompute import RecomputeOracle
from anomaly_probe.registry import Registry

ENGINES: Registry[Callable[..., TokenScores]] = Registry("engine")
ENGINES.register("stepwise", score_stepwise)
ENGINES.register("batched", score_batched)
ENGINES.register("parallel", score_parallel)
ENGINES.register("recompute", score_recompute)
ENGINES.register("spot", score_spot)
ENGINES.register("chunked", score_chunked)
INTERNAL_ENGINES = ("spot",)
"""Engines that experiments plan (with arguments a user cannot give): never a ``--engine`` choice."""
ENGINE_CHOICES = ("auto", *(n for n in ENGINES.names() if n not in INTERNAL_ENGINES))

CHUNKED_ENGINES = ("batched", "parallel", "recompute", "spot")
"""Engines that take ``chunk_size`` (queries per forward)."""


class EngineFallback(UserWarning):
    """``--engine auto`` chose the slow stepwise engine because no faster one is exact for the method."""


def pick_engine(requested: str, method: CacheMethod, internal: bool = False) -> str:
    """Resolve ``auto`` and refuse combinations that are not exact.

    ``auto`` gives ``recompute`` for the recompute oracle, ``batched`` for the full cache,
    ``parallel`` for every sinks + recent-window cache evicted after every token, and ``chunked`` for
    any other policy that evicts every C > 1 tokens or quantises in groups; a policy that evicts
    after every token by its own rule falls back to ``stepwise`` with an :class:`EngineFallback`
    warning saying why. The
    :data:`INTERNAL_ENGINES` are accepted only with ``internal=True`` (a run an experiment planned).

    Raises
    ------
    UserError
        Unknown engine, or an engine that cannot score ``method`` exactly.
    """
    if requested in INTERNAL_ENGINES and not internal:
        raise UserError(f"--engine {requested}: an engine the eval-bias experiment plans itself, not a choice; "
                        f"use one of {', '.join(ENGINE_CHOICES)}")
    if requested != "auto" and requested not in ENGINES:  # the user's choices only, not the internal ones
        close = difflib.get_close_matches(requested, ENGINE_CHOICES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UserError(f"Unknown engine {requested!r}.{hint} Available: {', '.join(ENGINE_CHOICES)}")
    if isinstance(method, RecomputeOracle):
        if requested not in ("auto", "recompute"):
            raise UserError(f"{method.label()} is scored by its own engine; use --engine recompute or auto")
        return "recompute"
    if requested == "recompute":
        raise UserError(f"--engine recompute scores the recompute method only, not {method.label()}")
    plain_full = method.is_full and type(method).quantize is CacheMethod.quantize
    if requested == "auto":
        if plain_full:
            return "batched"
        reason = parallel_support(method)
        if reason is None:
            return "parallel"
        if chunk_queries(method) > 1:
            return "chunked"
        warnings.warn(f"--engine auto: using the stepwise engine: {reason} (with --compress-every C > 1 the chunked "
                      "engine scores C tokens per forward)", EngineFallback, stacklevel=2)
        return "stepwise"
    if requested in ("batched", "spot") and not plain_full:
        raise UserError(f"--engine {requested} scores the unquantised full cache only, not {method.label()}; "
                        "use parallel, chunked or auto")
    if requested == "parallel" and (reason := parallel_support(method)) is not None:
        raise UserError(f"--engine parallel: {reason}; use stepwise or auto")
    return requested


__all__ = ["CHUNKED_ENGINES", "ENGINES", "ENGINE_CHOICES", "INTERNAL_ENGINES", "EngineFallback", "TokenScores",
           "pick_engine", "score_batched", "score_chunked", "score_parallel", "score_recompute", "score_spot", "score_stepwise"]
