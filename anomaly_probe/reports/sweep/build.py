"""The trend report of a sweep as a plain report tree (no drawing, no HTML)."""

from __future__ import annotations

import math

from anomaly_probe.reports import intervals
from anomaly_probe.reports.build import colormap_for, resolve_colors, safe, unique_figure_ids
from anomaly_probe.reports.fmt import num
from anomaly_probe.reports.sweep.cells import CellStats, beyond_noise, cell_stats
from anomaly_probe.reports.sweep.crossing import line_sentences
from anomaly_probe.reports.sweep.data import SweepData
from anomaly_probe.reports.sweep.figures import gap_figures
from anomaly_probe.reports.sweep.trend import Point, Regression, collapse, regress
from anomaly_probe.reports.sweep.verdicts import disagreements, side_by_side
from anomaly_probe.reports.tree import Cell, Report, Section, Table, Text

RATIO = "length / trained context"
SIZE = "log10(parameters)"
TOKENS = "length (thousand tokens)"


def build_sweep_report(data: SweepData) -> Report:
    stats = [s for c in data.with_runs for s in cell_stats(c)]
    counts = data.index.counts()
    report = Report(title=f"anomaly-probe sweep: {len(data.cells)} cells",
                    subtitle=f"sweep folder {data.sweep_dir}; " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    points = trend_points(stats)
    trend = collapse(points) if points else None
    claim = regress(points, {RATIO: [p.ratio for p in points],
                             SIZE: [math.log10(p.parameters) for p in points]}) if _sized(points) else None
    report.headline = _headline(trend, claim, len(points))
    lines = line_sentences(stats)
    if report.headline and lines:
        report.headline += " " + " ".join(lines)
    ci = intervals.ci_text(intervals.run_thresholds(data.with_runs[0].run)) if data.with_runs else ""
    table = Section("The seed's table, filled in", id="table")
    table.add(seed_table(stats, ci) if stats else Text("No cell has a finished baseline vs method comparison yet.",
                                                       "note"))
    report.sections.append(table)
    curves = Section("Gap against length", id="trend")
    curves.blocks += safe(lambda: gap_figures(stats, ci), "gap figures")
    if trend is not None:
        curves.add(Text(trend.sentence))
    for sentence in lines:
        curves.add(Text(sentence))
    report.sections.append(curves)
    test = Section("A test of the claim: regression of the gap", id="regression")
    if claim is None:
        test.add(Text("Not enough cells with a known model size and gap for a regression.", "note"))
    else:
        stated = regress(points, {TOKENS: [p.tokens / 1000 for p in points],
                                  SIZE: [math.log10(p.parameters) for p in points]})
        test.add(regression_table(claim, stated))
        test.add(Text(claim.sentence))
        if len({p.context for p in points}) == 1:
            test.add(Text("Every cell has the same trained context, so length / trained context is the length in "
                          "other units: this grid cannot tell the two apart.", "note"))
        test.add(Text(f"The claim as stated (gap on length in tokens and model size): {stated.sentence}"))
    report.sections.append(test)
    verdicts = Section("Verdicts per cell", id="verdicts")
    verdicts.add(side_by_side(data))
    verdicts.add(disagreements(data))
    report.sections.append(verdicts)
    cells = Section("Cells", id="cells")
    cells.add(cells_table(data))
    for note in data.notes:
        cells.add(Text(note, "note"))
    cells.add(Text(f"Re-render this report: anomaly-probe report {data.sweep_dir}", "note"))
    report.sections.append(cells)
    unique_figure_ids(report)
    report.colors = resolve_colors(report, colormap_for([]))
    return report


def trend_points(stats: list[CellStats]) -> list[Point]:
    return [Point(s.cell.line, s.max_tokens, s.trained_context, s.parameters, s.gap[0], s.gap[1], s.gap[2])
            for s in stats if s.trained_context and s.gap[0] is not None and math.isfinite(s.gap[0])]


def _sized(points: list[Point]) -> bool:
    return len(points) >= 2 and all(isinstance(p.parameters, int) and p.parameters > 0 for p in points)


def _headline(trend, claim: Regression | None, n: int) -> str:
    if trend is None:
        return "No cell has a finished baseline vs method comparison yet."
    text = trend.sentence
    if claim is not None and claim.sentence:
        text += " Regression of the gap on length / trained context and model size: " + claim.sentence
    return text


def _iv(iv, spec: str, scale: float = 1.0, unit: str = "") -> str:
    if iv is None or iv[0] is None:
        return "n/a"
    text = num(iv[0] * scale, spec)
    if iv[1] is not None and iv[2] is not None:
        text += f" [{num(iv[1] * scale, spec)}, {num(iv[2] * scale, spec)}]"
    return f"{text} {unit}".strip()


def seed_table(stats: list[CellStats], ci: str) -> Table:
    rows = []
    for s in sorted(stats, key=lambda s: (s.cell.line, s.max_tokens)):
        ppl = beyond_noise(s.gap, "method better beyond noise", "baseline better beyond noise")
        acc = beyond_noise(s.acc_diff, "method better beyond noise", "baseline better beyond noise")
        rows.append([Cell(s.cell.line), Cell(str(s.max_tokens), "num"), Cell(num(s.ratio, ".2f"), "num"),
                     Cell(str(s.num_samples), "num"), Cell(s.method),
                     Cell(_iv(s.base_ppl, ".3f"), "num"), Cell(_iv(s.meth_ppl, ".3f"), "num"),
                     Cell(_iv(s.gap, "+.4f"), "num"), Cell(ppl, _tag(ppl)),
                     Cell(_iv(s.base_acc, ".2f", 100, "%"), "num"), Cell(_iv(s.meth_acc, ".2f", 100, "%"), "num"),
                     Cell(_iv(s.acc_diff, "+.2f", 100, "pp"), "num"), Cell(acc, _tag(acc))])
    return Table("Baseline (full cache) vs method per cell", [
        "line", "tokens per sample", "tokens / trained context", "samples", "method", "baseline PPL [CI]",
        "method PPL [CI]", "NLL gap, nats/token [CI]", "PPL: which is better", "baseline Acc [CI]",
        "method Acc [CI]", "Acc diff [CI]", "Acc: which is better"], rows,
        caption="Every scored token of every sample of the cell, baseline and method on the same tokens. PPL = "
                "exp(mean NLL) and its CI the exp of the NLL's. \"Within noise\" where the CI of the difference "
                "(NLL gap, or Acc diff = method minus baseline, paired per token) holds 0.", ci=ci)


def _tag(text: str) -> str:
    """Highlight a difference beyond noise (either way); "within noise" stays plain."""
    return "diff" if "beyond noise" in text else ""


def regression_table(claim: Regression, stated: Regression) -> Table:
    rows = []
    for model, reg in (("gap ~ length / trained context + model size", claim),
                       ("gap ~ length in tokens + model size (the claim as stated)", stated)):
        for c in reg.coefficients:
            est = "n/a" if c.estimate is None else num(c.estimate, "+.4f")
            ci = "n/a" if c.low is None else f"[{c.low:+.4f}, {c.high:+.4f}]"
            reading = c.note or ("excludes 0" if c.excludes_zero else "holds 0")
            rows.append([Cell(model), Cell(c.name), Cell(est, "num"), Cell(ci, "num"), Cell(reading),
                         Cell(f"{reg.n} cells, {reg.df} df, R² {num(reg.r_squared, '.2f')}")])
    return Table("Regression of the per-cell gap", ["model", "predictor", "coefficient (nats/token per unit)",
                                                    "95% CI", "CI", "fit"], rows,
                 caption="Least squares with an intercept over the cells' mean gaps (all scored tokens), each cell "
                         "weighted by 1 / its squared standard error (from its bootstrap CI); each coefficient is one "
                         "predictor's effect with the other held fixed. Model size = log10 of the parameter count.",
                 ci="95% CI of the coefficient: the cells' own noise, or the residual scatter (t-interval) when "
                    "larger (see docs/HYPOTHESES.md, sweep)")


def cells_table(data: SweepData) -> Table:
    rows = []
    for c in data.cells:
        e = c.entry
        status = e.status + (f" ({e.unit_failures} unit(s) failed)" if e.unit_failures else "")
        rows.append([Cell(e.name), Cell(status, {"complete": "supported", "failed": "error"}.get(e.status, "")),
                     Cell(e.folder), Cell(num(e.seconds, ".1f", "s")), Cell(e.reason or "")])
    return Table("Cells", ["cell", "status", "run folder (in the sweep folder)", "time", "reason"], rows)
