"""Build the report tree of one run folder (no drawing, no HTML)."""

from __future__ import annotations

import re

from anomaly_probe.hypotheses.catalog import HYPOTHESES, title
from anomaly_probe.hypotheses.findings import findings_sentence
from anomaly_probe.reports import intervals, roles, tables
from anomaly_probe.reports.colors import ColorMap
from anomaly_probe.reports.figures import BUILDERS, SUPERSEDED
from anomaly_probe.reports.figures.evidence import evidence_figures, evidence_table
from anomaly_probe.reports.fmt import command_line, n_text, share_ci
from anomaly_probe.reports.rundata import RunData, dropped_note
from anomaly_probe.reports.tree import Figure, Report, Section, Text, walk
from anomaly_probe.stats.thresholds import Thresholds


def build_report(data: RunData) -> Report:
    """The whole report of ``data`` as plain data (see :mod:`anomaly_probe.reports.tree`)."""
    model = data.section("model")
    label = roles.method_label(data) or "method"
    report = Report(title=f"anomaly-probe: {model.get('spec', data.name)} \u2014 full cache vs {label}",
                    subtitle=f"run folder {data.run_dir}", headline=data.headline)
    report.sections.append(overview(data))
    grouped = tables.by_hypothesis(data.verdicts)  # ranked, each hypothesis' verdicts longest length first
    order = list(grouped) + [h for h in HYPOTHESES if h not in grouped]
    for hypothesis in order:
        section = hypothesis_section(data, hypothesis, grouped.get(hypothesis, []))
        if section.blocks:
            report.sections.append(section)
    report.sections.append(details(data))
    note = dropped_note(data)
    if note:
        report.warnings.append(note)
    unique_figure_ids(report)
    report.colors = resolve_colors(report, colormap_for([data]))
    return report


def overview(data: RunData) -> Section:
    section = Section("Overview", id="overview")
    if data.results.get("status") == "partial":
        section.add(Text(f"This run finished with {len(data.listing('failures'))} failed unit(s) (status 'partial'): "
                         "the verdicts that needed them are ERROR. Score them again with "
                         f"`anomaly-probe run --retry-failed {data.run_dir}`.", "note"))
    elif data.results.get("status") not in (None, "complete"):
        section.add(Text(f"This run did not finish (status {data.results.get('status')!r}): the report shows "
                         "what was saved so far.", "note"))
    note = dropped_note(data)
    if note:  # a sample left out changes the intervals: never silently
        section.add(Text(f"Samples left out: {note}.", "note"))
    alignment = data.section("alignment")
    if alignment.get("dropped") and alignment.get("note"):  # imported logs that covered different tokens
        section.add(Text(f"The imported logs were aligned: {alignment['note']}.", "note"))
    if data.verdicts:
        section.add(tables.verdict_table(data.verdicts, intervals.run_thresholds(data)))
        if findings_sentence(data.verdicts):  # what the data show beyond the statuses (e.g. a wrong config)
            section.add(Text(findings_sentence(data.verdicts)))
        section.add(tables.key_value_table("Decision thresholds", data.results.get("thresholds"),
                                           "The same for every hypothesis and every model."))
    else:
        section.add(Text("No hypothesis was tested in this run (no verdicts in results.json); the figures show "
                         "the baseline against the method.", "note"))
    section.add(tables.failures_table(data.results.get("failures")))
    section.add(tables.comparisons_table(data))
    section.blocks += run_builders(data, "overview", [])
    return section


def hypothesis_section(data: RunData, hypothesis: str, verdicts: list[dict]) -> Section:
    """Its verdicts (one per sample length), their evidence, then the built-in figures of the hypothesis.

    An evidence figure that a built-in figure supersedes (:data:`~anomaly_probe.reports.figures.SUPERSEDED`)
    is drawn only when the built-in one could not be (no saved tokens), so no curve appears twice.
    """
    heading = hypothesis if title(hypothesis) == hypothesis else f"{hypothesis}: {title(hypothesis)}"
    section = Section(heading, id=f"h-{slug(hypothesis)}")
    figures = run_builders(data, hypothesis, verdicts)
    drawn = {b.id for b in figures if isinstance(b, Figure)}
    skip = {spec_id for spec_id, builtin in SUPERSEDED.items() if builtin in drawn}
    th = intervals.run_thresholds(data)
    ci = intervals.ci_text(th)
    for v in verdicts:
        section.add(Text(verdict_sentence(v, th)))
    if verdicts:
        section.blocks += safe(lambda: evidence_table(hypothesis, verdicts, ci), f"{hypothesis} evidence table")
        section.blocks += safe(lambda: evidence_figures(hypothesis, verdicts, skip, ci),
                               f"{hypothesis} evidence figures")
    elif figures:
        section.add(Text("No verdict for this hypothesis in this run; its figures are shown for reference.", "note"))
    section.blocks += figures
    return section


def verdict_sentence(v: dict, th: Thresholds | None = None) -> str:
    """``600-token samples: SUPPORTED: explained share 0.97 [0.93, 1.00] (95% block-bootstrap CI ...`` + message."""
    th = th or Thresholds()
    status = str(v.get("status", "?")).upper()
    length = f"{v['max_tokens']}-token samples: " if isinstance(v.get("max_tokens"), int) else ""
    text = f"{length}{status}: explained share {share_ci(v.get('explained_share'), v.get('ci_low'), v.get('ci_high'))}"
    text += f" ({th.ci_level:.0%} block-bootstrap CI in brackets), n = {n_text(v.get('n'))}."
    return f"{text} {v.get('message', '')}".strip()


def details(data: RunData) -> Section:
    section = Section("Run details", id="details")
    section.add(tables.runs_table(data))
    section.add(tables.environment_table(data))
    section.add(tables.position_schemes_table(data))
    section.add(tables.config_table(data))
    section.add(tables.key_value_table("Experiment settings", data.results.get("experiment_settings")))
    command = command_line(data.section("environment").get("argv"))
    if command:
        section.add(Text("Command line that produced this run (change --out: a folder that already holds a run "
                         "is refused):"))
        section.add(Text(command, "code"))
    section.add(Text(f"Re-render this report without a model: anomaly-probe report {data.run_dir}", "note"))
    return section


def run_builders(data: RunData, name: str, verdicts: list[dict]) -> list:
    blocks = []
    for fn in BUILDERS.get(name, ()):
        blocks += safe(lambda fn=fn: fn(data, verdicts), fn.__name__.replace("_", " "))
    return blocks


def safe(make, what: str) -> list:
    """Call ``make()``; an exception becomes one short error note, so the rest of the report still renders."""
    try:
        return [b for b in (make() or []) if b is not None]
    except Exception as exc:  # noqa: BLE001 - a broken figure must not break the report
        return [Text(f"{what} failed: {type(exc).__name__}: {str(exc)[:200]}", "error")]


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x"


def unique_figure_ids(report: Report) -> None:
    seen: set[str] = set()
    for fig in report.figures():
        base, i = slug(fig.id), 1
        fig.id = base
        while fig.id in seen:
            i += 1
            fig.id = f"{base}-{i}"
        seen.add(fig.id)


def colormap_for(datas: list[RunData], first_keys: list[str] = ()) -> ColorMap:
    """The colour map: ``full`` takes the baseline's colour, the first run's method under test the method's.

    ``first_keys`` get the first palette colours (the runs of a comparison), then every run label and
    intervention in order, so the same method keeps one colour in every figure.
    """
    aliases = {"full": "baseline", "recompute": "oracle"}
    for data in datas:
        for run in roles.role_runs(data, "oracle"):
            aliases[str(run.get("label"))] = "oracle"
    label = roles.method_label(datas[0]) if datas else None
    if label:
        aliases[label] = "method"
    cmap = ColorMap(aliases)
    for key in first_keys:
        cmap.color(key)
    for data in datas:
        for run in data.runs:
            cmap.color(str(run.get("label")))
            if not roles.plain(run):
                cmap.color(str(run.get("intervention")))
    return cmap


def resolve_colors(report: Report, cmap: ColorMap) -> dict[str, str]:
    """Give every colour key used by a figure a colour, then return the whole map as plain data."""
    for block in walk(report.sections):
        if isinstance(block, Figure):
            for spec in [block.spec, *(block.spec.get("panels") or [])]:
                for s in spec.get("series") or []:
                    if isinstance(s, dict):
                        cmap.color(str(s.get("color_key") or s.get("name")))
    return cmap.as_dict()
