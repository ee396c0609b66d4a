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
    "numerics": (numerics.precision_comparison, attention.logit_range, numerics.underflow,
                 numerics.underflow_by_cache_length),
    "dilution": (attention.entropy_heatmap,),
    "memory": (memory.memory_over_steps, memory.memory_table),
    "eval-bias": (evalbias.stepwise_vs_batched,),
    "handling": (),
    "sinks": (attention.sink_mass,),
    "ablation": (),
}

SUPERSEDED: dict[str, str] = {"position-nll": "nll-by-position", "position-gap": "gap-by-position"}
"""Evidence figure ``id`` (``verdict.evidence["figures"]``) -> the built-in figure that shows the same
thing from the saved tokens. The position judge records its NLL and gap curves so that a report still
has them without the npz files; when the built-in figure is drawn (with every length, the oracle, CI
bands and the analysis region), the evidence copy is left out, so each curve is drawn once."""

__all__ = ["BUILDERS", "Builder", "SUPERSEDED"]
