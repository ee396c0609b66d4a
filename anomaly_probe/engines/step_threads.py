"""The stepwise engine's intra-op thread count, chosen by measurement.

A single-token forward is a chain of small matrix-vector products: handing each to the intra-op pool
costs a wake-up per op, and on a busy machine (another CPU-bound process on a 2-core CPU) a descheduled
worker stalls every op it takes part in. One thread is then often faster, sometimes by several times;
on an idle machine with large weights more threads can win. So the count is measured, not assumed:
:func:`stepwise_threads` times a few single-token forwards of the model at each candidate count
(interleaved, median per candidate) and picks the fastest. The choice is made once per process, model
and starting count (cached), so every stepwise unit of a run uses the same count.

Results do not depend on it beyond float rounding: the engine equality tests and ``check`` compare
engines within 1e-4 nats.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from anomaly_probe.threads import can_toggle, intra_op_threads

ENV = "ANOMALY_PROBE_STEPWISE_THREADS"
"""Environment variable that fixes the count (a positive integer) instead of measuring."""
ROUNDS, STEPS = 3, 4  # interleaved rounds per candidate, forwards timed per round
_CHOSEN: dict[tuple, int] = {}


def candidates(current: int) -> list[int]:
    """Thread counts worth measuring: one, and the current count (and half of it, when above 2)."""
    return sorted({1, current, max(1, current // 2)})


def stepwise_threads(model: torch.nn.Module, device: torch.device) -> int:
    """The intra-op thread count for single-token forwards of ``model`` (see the module docstring).

    Returns the current count unchanged on an accelerator, with one thread already, or where the count
    cannot be changed and restored exactly.
    """
    current = torch.get_num_threads()
    fixed = os.environ.get(ENV, "").strip()
    if fixed.isdigit() and int(fixed) > 0:
        return int(fixed)
    if device.type != "cpu" or current == 1 or not can_toggle(current):
        return current
    key = (id(model), current)
    if key not in _CHOSEN:
        _CHOSEN[key] = _measure(model, device, candidates(current))
    return _CHOSEN[key]


@torch.no_grad()
def _measure(model: torch.nn.Module, device: torch.device, counts: list[int]) -> int:
    """Median seconds of a single-token forward at each count; the fastest count."""
    from transformers import DynamicCache

    times: dict[int, list[float]] = {n: [] for n in counts}
    prefix = torch.zeros(1, 32, dtype=torch.long, device=device)
    one = torch.zeros(1, 1, dtype=torch.long, device=device)
    for _ in range(ROUNDS):
        for n in counts:
            with intra_op_threads(n):
                cache = DynamicCache(config=model.config)
                model(input_ids=prefix, cache=cache, use_cache=True)
                model(input_ids=one, cache=cache, use_cache=True)  # warm at this count
                for _ in range(STEPS):
                    start = time.perf_counter()
                    model(input_ids=one, cache=cache, use_cache=True)
                    times[n].append(time.perf_counter() - start)
    return min(counts, key=lambda n: (statistics.median(times[n]), n))


def measured_times() -> dict[tuple, int]:
    """The choices made so far in this process: (model id, starting count) -> threads (for benchmarks)."""
    return dict(_CHOSEN)
