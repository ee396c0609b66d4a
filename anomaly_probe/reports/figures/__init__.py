"""Figure builders: ``fn(data, verdicts) -> list of blocks`` (figures, tables, notes), ``[]`` without data.

:data:`BUILDERS` says which built-in figures belong to which report section. Builders compute plain
figure specs only; :mod:`anomaly_probe.reports.plot` draws them. ``verdicts`` are the section's
verdicts (one per sample length, longest first; empty without any).
"""

from __future__ import annotations

from typing import Callable

from anomaly_probe.reports.figures import attention, evalbias, memory, numerics, position, runs

Builder = Callable[..., list]

BUILDERS: dict[str, tuple[Builder, ...]] = {
    "overview": (runs.ppl_by_run,),
    "position": (position.nll_by_position, position.ppl_by_position, position.gap_curve),
    "numerics": (numerics.precision_comparison, attention.logit_range, numerics.underflow),
    "dilution": (attention.entropy_heatmap,),
    "memory": (memory.memory_over_steps, memory.memory_table),
    "eval-bias": (evalbias.stepwise_vs_batched,),
    "handling": (),
    "sinks": (),
}

__all__ = ["BUILDERS", "Builder"]
