"""Hypothesis experiments: each declares its runs and judges them (see ``docs/HYPOTHESES.md``).

The names, titles and sides live in :mod:`anomaly_probe.hypotheses.catalog` (plain data). This package
imports nothing until a name is used, so importing the catalog (CLI, report, importer) loads neither
torch nor the judges; ``ALL`` and the contract classes load on first access.
"""

from __future__ import annotations

import importlib

_CONTRACT = ("ExperimentSettings", "Hypothesis", "JudgeInput", "PlanContext", "RoleSpec")


def _build_all() -> dict:
    """One instance per catalog entry (its ``experiment``: ``module:Class``), in catalog order."""
    from anomaly_probe.hypotheses.catalog import CATALOG

    out = {}
    for name, entry in CATALOG.items():
        module, cls = entry.experiment.split(":")
        hypothesis = getattr(importlib.import_module(module), cls)()
        if hypothesis.name != name:
            raise RuntimeError(f"catalog entry {name!r} names {entry.experiment}, whose name is {hypothesis.name!r}")
        out[name] = hypothesis
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
