"""Hypothesis experiments: each declares its runs and judges them (see ``docs/HYPOTHESES.md``).

The names, titles and sides live in :mod:`anomaly_probe.hypotheses.catalog` (plain data). This package
imports nothing until a name is used, so importing the catalog (CLI, report, importer) loads neither
torch nor the judges; ``ALL`` and the contract classes load on first access.
"""

from __future__ import annotations

import importlib

_CONTRACT = ("ExperimentSettings", "Hypothesis", "JudgeInput", "PlanContext", "RoleSpec")
_IMPLEMENTATIONS = (("numerics", "Numerics"), ("dilution", "Dilution"), ("memory", "Memory"),
                    ("evalbias", "EvalBias"), ("position", "Position"), ("handling", "Handling"),
                    ("sinks", "Sinks"))
"""(module, class) of every hypothesis; each class's ``name`` is a key of the catalog."""


def _build_all() -> dict:
    out = {}
    for module, cls in _IMPLEMENTATIONS:
        hypothesis = getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
        out[hypothesis.name] = hypothesis
    return out


def __getattr__(name: str):
    """``ALL`` (name -> Hypothesis instance) and the contract classes of :mod:`.base`, loaded on first use."""
    if name == "ALL":
        value = _build_all()
    elif name in _CONTRACT:
        value = getattr(importlib.import_module(f"{__name__}.base"), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


__all__ = ["ALL", *_CONTRACT]
