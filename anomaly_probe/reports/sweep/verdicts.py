"""Every cell's verdicts side by side, and the hypotheses on which cells disagree."""

from __future__ import annotations

import json

from anomaly_probe.hypotheses.catalog import HYPOTHESES
from anomaly_probe.reports.fmt import share_ci
from anomaly_probe.reports.sweep.data import SweepData
from anomaly_probe.reports.tree import Cell, Table, Text


def hypotheses_of(data: SweepData) -> list[str]:
    found = {str(v.get("hypothesis")) for c in data.with_runs for v in c.run.verdicts}
    return [h for h in HYPOTHESES if h in found] + sorted(found - set(HYPOTHESES))


def side_by_side(data: SweepData) -> Table | Text:
    """One row per cell, one column per hypothesis: status and explained share [CI] at the cell's length."""
    names = hypotheses_of(data)
    if not names:
        return Text("No cell tested a hypothesis (the sweep ran with --hypothesis none): no verdicts to compare.",
                    "note")
    rows = []
    for c in data.with_runs:
        row = [Cell(c.entry.name)]
        for h in names:
            v = c.run.verdict(h)
            if v is None:
                row.append(Cell("not tested"))
                continue
            status = str(v.get("status", "?"))
            row.append(Cell(f"{status.upper()} {share_ci(v.get('explained_share'), v.get('ci_low'), v.get('ci_high'))}",
                            status))
        rows.append(row)
    return Table("Verdicts per cell", ["cell", *names], rows,
                 caption="Status and explained share [CI] of each hypothesis in each cell (each cell's own report "
                         "has the evidence).", ci="explained share: each cell's block-bootstrap CI")


def disagreements(data: SweepData) -> Table | Text | None:
    """Hypotheses whose status differs between cells; replicates (cells that differ only in the seed) flagged."""
    rows = []
    for h in hypotheses_of(data):
        by_status: dict[str, list[str]] = {}
        for c in data.with_runs:
            v = c.run.verdict(h)
            if v is not None:
                by_status.setdefault(str(v.get("status")), []).append(c.entry.name)
        if len(by_status) < 2:
            continue
        replicates = _replicates_disagree(data, h)
        for status, cells in sorted(by_status.items()):
            rows.append([Cell(h), Cell(status.upper(), status), Cell(", ".join(cells)),
                         Cell("yes: " + "; ".join(replicates) if replicates else "no")])
    if not rows:
        return Text("Every cell that tested a hypothesis reached the same status for it.", "note") \
            if hypotheses_of(data) else None
    return Table("Cells whose verdicts disagree", ["hypothesis", "status", "cells", "replicates disagree"], rows,
                 caption="Cells that differ only in the seed are replicates: a disagreement between them is noise "
                         "or a fragile judgement, not a trend.")


def _replicates_disagree(data: SweepData, hypothesis: str) -> list[str]:
    groups: dict[str, dict[str, str]] = {}
    for c in data.with_runs:
        v = c.run.verdict(hypothesis)
        if v is None:
            continue
        key = json.dumps({k: x for k, x in c.settings.items() if k != "seed"}, sort_keys=True)
        groups.setdefault(key, {})[c.entry.name] = str(v.get("status"))
    return [", ".join(f"{n} {s.upper()}" for n, s in g.items()) for g in groups.values() if len(set(g.values())) > 1]
