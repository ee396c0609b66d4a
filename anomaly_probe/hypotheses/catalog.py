"""Hypothesis names accepted by ``--hypothesis`` (kept apart so the CLI imports nothing heavy)."""

from __future__ import annotations

from anomaly_probe.errors import UserError

HYPOTHESES = ("numerics", "dilution", "memory", "eval-bias", "position", "handling", "sinks")
HYPOTHESIS_CHOICES = (*HYPOTHESES, "all", "none")
METHOD_SIDE = ("handling", "sinks")
"""Hypotheses whose intervention changes the compressed cache, not the baseline: method-side checks,
ranked after the causes (see ``Hypothesis.acts_on``)."""


def acts_on(name: str) -> str:
    """``"method"`` for a method-side check, else ``"baseline"``."""
    return "method" if name in METHOD_SIDE else "baseline"


def resolve_hypotheses(names: list[str]) -> list[str]:
    """Expand ``all``; ``none`` alone means baseline vs method only."""
    import difflib

    out: list[str] = []
    for name in names:
        if name not in HYPOTHESIS_CHOICES:
            close = difflib.get_close_matches(name, HYPOTHESIS_CHOICES, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UserError(f"Unknown hypothesis {name!r}.{hint} Available: {', '.join(HYPOTHESIS_CHOICES)}")
        if name == "all":
            out.extend(h for h in HYPOTHESES if h not in out)
        elif name != "none" and name not in out:
            out.append(name)
    if "none" in names and len(set(names)) > 1:
        raise UserError("--hypothesis none cannot be combined with other hypotheses")
    return out or ["none"]
