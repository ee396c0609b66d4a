"""The trend report of a sweep as a plain report tree (no drawing, no HTML)."""

from __future__ import annotations

from anomaly_probe.reports import intervals
from anomaly_probe.reports.build import colormap_for, resolve_colors, safe, unique_figure_ids
from anomaly_probe.reports.fmt import num
from anomaly_probe.reports.sweep.cells import CellStats, beyond_noise, cell_stats
from anomaly_probe.reports.sweep.claim import GAPS, claim_section, fit, headline_sentence
from anomaly_probe.reports.sweep.crossing import crossing_sentences, line_sentences
from anomaly_probe.reports.sweep.data import SweepData
from anomaly_probe.reports.sweep.figures import gap_figures
from anomaly_probe.reports.sweep.verdicts import disagreements, side_by_side
from anomaly_probe.reports.tree import Cell, Report, Section, Table, Text


def build_sweep_report(data: SweepData) -> Report:
    stats = [s for c in data.with_runs for s in cell_stats(c)]
    counts = data.index.counts()
    report = Report(title=f"anomaly-probe sweep: {len(data.cells)} cells",
                    subtitle=f"sweep folder {data.sweep_dir}; " + ", ".join(f"{n} {k}" for k, n in counts.items() if n))
    fits = [fit(stats, which) for which in GAPS]  # the headline's gap first (all tokens if no region has one)
    head = next((f for f in fits if f.trend is not None), fits[0])
    report.headline = headline_sentence(head)
    if head.trend is not None:
        report.headline = " ".join(crossing_sentences(stats) + [report.headline])
    ci = intervals.ci_text(intervals.run_thresholds(data.with_runs[0].run)) if data.with_runs else ""
    table = Section("The seed's table, filled in", id="table")
    table.add(seed_table(stats, ci) if stats else Text("No cell has a finished baseline vs method comparison yet.",
                                                       "note"))
    report.sections.append(table)
    curves = Section("Gap against length", id="trend")
    curves.blocks += safe(lambda: gap_figures(stats, ci), "gap figures")
    for f in fits:
        if f.trend is not None:
            curves.add(Text(f"{GAPS[f.which][:1].upper() + GAPS[f.which][1:]}: {f.trend.sentence}"))
    for sentence in line_sentences(stats):
        curves.add(Text(sentence))
    report.sections.append(curves)
    report.sections.append(claim_section(fits))
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
        head = beyond_noise(s.gap_headline, "method better beyond noise", "baseline better beyond noise")
        region = s.region.label() if s.region is not None else "all scored tokens (fallback: no region)"
        rows.append([Cell(s.cell.line), Cell(str(s.max_tokens), "num"), Cell(num(s.ratio, ".2f"), "num"),
                     Cell(str(s.num_samples), "num"), Cell(s.method),
                     Cell(region), Cell(_iv(s.gap_headline, "+.4f"), "num"), Cell(head, _tag(head)),
                     Cell(_iv(s.base_ppl, ".3f"), "num"), Cell(_iv(s.meth_ppl, ".3f"), "num"),
                     Cell(_iv(s.gap, "+.4f"), "num"), Cell(ppl, _tag(ppl)),
                     Cell(_iv(s.base_acc, ".2f", 100, "%"), "num"), Cell(_iv(s.meth_acc, ".2f", 100, "%"), "num"),
                     Cell(_iv(s.acc_diff, "+.2f", 100, "pp"), "num"), Cell(acc, _tag(acc))])
    return Table("Baseline (full cache) vs method per cell", [
        "line", "tokens per sample", "tokens / trained context", "samples", "method",
        "headline region (the cell's run)", "headline region: NLL gap, nats/token [CI]",
        "headline region: which is better", "baseline PPL [CI]", "method PPL [CI]",
        "all tokens: NLL gap, nats/token [CI]", "all tokens: PPL, which is better", "baseline Acc [CI]",
        "method Acc [CI]", "Acc diff [CI]", "Acc: which is better"], rows,
        caption="Every scored token of every sample of the cell, baseline and method on the same tokens. PPL = "
                "exp(mean NLL) and its CI the exp of the NLL's. \"Within noise\" where the CI of the difference "
                "(NLL gap, or Acc diff = method minus baseline, paired per token) holds 0. Headline region: the "
                "tokens the cell's own run computed its headline and verdicts on (results.json analysis_regions: "
                "from the gap's changepoint, past the trained context, or all tokens), its gap with the same "
                "bootstrap; a cell whose results.json records none falls back to all scored tokens and says so.",
        ci=ci)


def _tag(text: str) -> str:
    """Highlight a difference beyond noise (either way); "within noise" stays plain."""
    return "diff" if "beyond noise" in text else ""


def cells_table(data: SweepData) -> Table:
    rows = []
    for c in data.cells:
        e = c.entry
        status = e.status + (f" ({e.unit_failures} unit(s) failed)" if e.unit_failures else "")
        rows.append([Cell(e.name), Cell(status, {"complete": "supported", "failed": "error"}.get(e.status, "")),
                     Cell(e.folder), Cell(num(e.seconds, ".1f", "s")), Cell(e.reason or "")])
    return Table("Cells", ["cell", "status", "run folder (in the sweep folder)", "time", "reason"], rows)
