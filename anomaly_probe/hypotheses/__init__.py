"""Hypothesis experiments: each declares its runs and judges them (see ``docs/HYPOTHESES.md``).

The experiments (and torch, which their methods need) load on first use of ``ALL`` or a class
below, so the pure judges in this package (``location``, ``curves``, ``region``) stay importable by
torch-free commands (``import``, ``report``).
"""

from __future__ import annotations

_BASE = ("ExperimentSettings", "Hypothesis", "JudgeInput", "PlanContext", "RoleSpec")

__all__ = ["ALL", *_BASE]


def __getattr__(name: str):
    if name in _BASE:
        from anomaly_probe.hypotheses import base

        return getattr(base, name)
    if name == "ALL":
        from anomaly_probe.hypotheses.dilution import Dilution
        from anomaly_probe.hypotheses.evalbias import EvalBias
        from anomaly_probe.hypotheses.handling import Handling
        from anomaly_probe.hypotheses.memory import Memory
        from anomaly_probe.hypotheses.numerics import Numerics
        from anomaly_probe.hypotheses.position import Position
        from anomaly_probe.hypotheses.sinks import Sinks

        table = {h.name: h for h in (Numerics(), Dilution(), Memory(), EvalBias(), Position(), Handling(), Sinks())}
        globals()["ALL"] = table  # one table of instances for the whole process
        return table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
