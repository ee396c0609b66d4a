"""Hypothesis experiments: each declares its runs and judges them (see ``docs/HYPOTHESES.md``)."""

from __future__ import annotations

from anomaly_probe.hypotheses.base import (ExperimentSettings, Hypothesis, JudgeInput, PlanContext,
                                           RoleSpec)
from anomaly_probe.hypotheses.dilution import Dilution
from anomaly_probe.hypotheses.evalbias import EvalBias
from anomaly_probe.hypotheses.handling import Handling
from anomaly_probe.hypotheses.memory import Memory
from anomaly_probe.hypotheses.numerics import Numerics
from anomaly_probe.hypotheses.position import Position
from anomaly_probe.hypotheses.sinks import Sinks

ALL: dict[str, Hypothesis] = {h.name: h for h in (Numerics(), Dilution(), Memory(), EvalBias(), Position(),
                                                   Handling(), Sinks())}

__all__ = ["ALL", "ExperimentSettings", "Hypothesis", "JudgeInput", "PlanContext", "RoleSpec"]
