"""A verdict's own evidence: its figure specs (drawn generically) and its scalar values (a table)."""

from __future__ import annotations

import re

from anomaly_probe.reports.fmt import plain
from anomaly_probe.reports.tree import Cell, Figure, Table, Text

SPEC_KINDS = ("line", "bar", "scatter")
HIDDEN_KEYS = ("figures",)


def evidence_figures(hypothesis: str, verdict: dict) -> list:
    """One :class:`Figure` per spec in ``evidence["figures"]``; a malformed spec becomes a short error note."""
    evidence = verdict.get("evidence") if isinstance(verdict.get("evidence"), dict) else {}
    specs = evidence.get("figures") or []
    out = []
    for i, spec in enumerate(specs if isinstance(specs, list) else [specs]):
        problem = check_spec(spec)
        if problem:
            out.append(Text(f"Evidence figure {i + 1} of {hypothesis} not drawn: {problem}.", "error"))
            continue
        ident = re.sub(r"[^A-Za-z0-9_-]+", "-", str(spec.get("id") or f"figure-{i + 1}"))
        out.append(Figure(f"{hypothesis}-{ident}", spec, f"Evidence of the {hypothesis} experiment."))
    return out


def check_spec(spec) -> str | None:
    """Why a generic figure spec cannot be drawn, or None."""
    if not isinstance(spec, dict):
        return f"expected a dict, got {type(spec).__name__}"
    if spec.get("kind") not in SPEC_KINDS:
        return f"unknown kind {spec.get('kind')!r} (expected one of {', '.join(SPEC_KINDS)})"
    series = spec.get("series")
    if not isinstance(series, list) or not series or not all(isinstance(s, dict) and "y" in s for s in series):
        return "no series with y values"
    if spec["kind"] == "bar" and not isinstance(spec.get("categories"), list):
        return "a bar figure needs categories"
    if spec["kind"] != "bar" and not isinstance(spec.get("x"), list) and not all("x" in s for s in series):
        return "a line or scatter figure needs x"
    return None


def evidence_table(hypothesis: str, verdict: dict) -> list:
    evidence = verdict.get("evidence") if isinstance(verdict.get("evidence"), dict) else {}
    rows = [[Cell(str(k)), Cell(plain(v))] for k, v in evidence.items() if k not in HIDDEN_KEYS]
    if not rows:
        return []
    return [Table(f"{hypothesis}: evidence values", ["name", "value"], rows,
                  caption="Scalars and short series recorded by the experiment (long series: count only).")]
