"""A hypothesis' own evidence: its verdicts' figure specs (drawn generically) and scalar values (a table).

A hypothesis judged at several sample lengths has one verdict per length. Specs with the same ``id``
become one figure with a panel per length, and the scalar values one table with a column per length,
so lengths can be compared directly.
"""

from __future__ import annotations

import re

from anomaly_probe.reports.fmt import plain
from anomaly_probe.reports.tree import Cell, Figure, Table, Text

SPEC_KINDS = ("line", "bar", "scatter")
HIDDEN_KEYS = ("figures",)


def _evidence(verdict: dict) -> dict:
    return verdict.get("evidence") if isinstance(verdict.get("evidence"), dict) else {}


def _length_name(verdict: dict) -> str:
    return f"{verdict['max_tokens']} tokens" if isinstance(verdict.get("max_tokens"), int) else "value"


def evidence_figures(hypothesis: str, verdicts: list[dict], skip: frozenset[str] | set[str] = frozenset(),
                     ci: str = "") -> list:
    """Figures from ``evidence["figures"]``; a malformed spec becomes a short error note.

    ``skip``: spec ids left out because the report already draws the same figure from the saved data.
    ``ci``: which interval the judges' error bars (``ci_low``/``ci_high``) show, for the caption.
    """
    groups: dict[str, list[tuple[dict, dict]]] = {}
    out: list = []
    for verdict in verdicts:
        specs = _evidence(verdict).get("figures") or []
        for i, spec in enumerate(specs if isinstance(specs, list) else [specs]):
            if isinstance(spec, dict) and spec.get("id") in skip:
                continue
            problem = check_spec(spec)
            if problem:
                out.append(Text(f"Evidence figure {i + 1} of {hypothesis} ({_length_name(verdict)}) not drawn: "
                                f"{problem}.", "error"))
                continue
            ident = re.sub(r"[^A-Za-z0-9_-]+", "-", str(spec.get("id") or f"figure-{i + 1}"))
            groups.setdefault(ident, []).append((verdict, spec))
    for ident, members in groups.items():
        fid = ident if ident.startswith(hypothesis) else f"{hypothesis}-{ident}"
        bars = f" Error bars: {ci}." if ci and any(_has_error_bars(spec) for _, spec in members) else ""
        if len(members) == 1:
            out.append(Figure(fid, members[0][1], f"Evidence of the {hypothesis} experiment.{bars}"))
            continue
        panels = [spec | {"title": _panel_title(v, spec)} for v, spec in members]
        title = re.sub(r"\s*\(\d+ tokens\)\s*$", "", str(members[0][1].get("title", ident)))
        out.append(Figure(fid, {"kind": "panels", "title": title, "panels": panels},
                          f"Evidence of the {hypothesis} experiment, one panel per sample length.{bars}"))
    return out


def _panel_title(verdict: dict, spec: dict) -> str:
    """The spec's title, prefixed with the sample length unless it already names it."""
    title = str(spec.get("title", ""))
    L = verdict.get("max_tokens")
    if isinstance(L, int) and re.search(rf"\b{L}\b", title):
        return title
    return f"{_length_name(verdict)}: {title}"


def _names_ci(value) -> bool:
    """Whether a key of ``value`` (nested dicts included) names an interval: ``ci``, ``gap_ci``, ``ci_low`` ..."""
    if not isinstance(value, dict):
        return False
    return any("ci" in str(k).lower().split("_") or _names_ci(v) for k, v in value.items())


def _has_error_bars(spec: dict) -> bool:
    return any(isinstance(s, dict) and s.get("ci_low") is not None for s in spec.get("series") or [])


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


def evidence_table(hypothesis: str, verdicts: list[dict], ci: str = "") -> list:
    """Scalar evidence, one row per name and one column per verdict (sample length).

    ``ci``: which interval the values named ``*ci*`` hold (the judges' block bootstrap), for the table.
    """
    names = list(dict.fromkeys(k for v in verdicts for k in _evidence(v) if k not in HIDDEN_KEYS))
    if not names:
        return []
    rows = [[Cell(name), *[Cell(plain(_evidence(v).get(name)) if name in _evidence(v) else "")
                           for v in verdicts]] for name in names]
    has_ci = any(_names_ci({name: _evidence(v).get(name) for name in names}) for v in verdicts)
    return [Table(f"{hypothesis}: evidence values", ["name", *[_length_name(v) for v in verdicts]], rows,
                  caption="Scalars and short series recorded by the experiment (long series: count only).",
                  ci=ci if has_ci else "")]
