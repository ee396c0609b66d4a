"""The comparison report across runs: verdicts side by side, NLL curves overlaid, environment differences."""

from __future__ import annotations

from anomaly_probe.hypotheses.catalog import HYPOTHESES
from anomaly_probe.reports import binning, intervals, roles, tables
from anomaly_probe.reports.build import colormap_for, resolve_colors, safe, unique_figure_ids
from anomaly_probe.reports.colors import linestyle
from anomaly_probe.reports.figures.common import POSITION_XLABEL, band, curve, paired, role_tokens
from anomaly_probe.reports.fmt import command_line, num, plain, share_ci
from anomaly_probe.reports.rundata import RunData, dropped_note
from anomaly_probe.reports.tree import Cell, Figure, Report, Section, Table, Text

ROLES = ("baseline", "method")


def names(datas: list[RunData]) -> list[str]:
    """Column names: ``A: folder``, ``B: folder`` ... (letters keep duplicate folder names apart)."""
    return [f"{chr(65 + i) if i < 26 else i + 1}: {d.name}" for i, d in enumerate(datas)]


def build_comparison(datas: list[RunData]) -> Report:
    cols = names(datas)
    report = Report(title=f"anomaly-probe: comparison of {len(datas)} runs",
                    subtitle="; ".join(f"{c} = {d.run_dir}" for c, d in zip(cols, datas)))
    overview = Section("Runs compared", id="runs")
    overview.add(runs_table(datas, cols))
    overview.add(verdicts_side_by_side(datas, cols))
    overview.add(gaps_side_by_side(datas, cols))
    report.sections.append(overview)
    curves = Section("NLL by position, overlaid", id="curves")
    curves.blocks += safe(lambda: overlay(datas, cols), "NLL overlay")
    curves.blocks += safe(lambda: gap_overlay(datas, cols), "gap overlay")
    if not curves.blocks:
        curves.add(Text("No per-token data to overlay.", "note"))
    report.sections.append(curves)
    env = Section("Environment differences", id="environment")
    env.blocks += environment_diff(datas, cols)
    for c, d in zip(cols, datas):
        command = command_line(d.section("environment").get("argv"))
        if command:
            env.add(Text(f"{c} was produced by:"))
            env.add(Text(command, "code"))
    report.sections.append(env)
    notes = [n for n in map(dropped_note, datas) if n]
    for note in notes:  # a sample left out changes the intervals: never silently
        overview.blocks.insert(0, Text(f"Samples left out: {note}.", "note"))
    report.warnings += notes
    unique_figure_ids(report)
    report.colors = resolve_colors(report, colormap_for(datas, first_keys=cols))
    return report


def runs_table(datas: list[RunData], cols: list[str]) -> Table:
    rows = []
    for c, d in zip(cols, datas):
        model, env = d.section("model"), d.section("environment")
        rows.append([Cell(c), Cell(str(model.get("spec", "?"))), Cell(plain(d.trained_context), "num"),
                     Cell(str(roles.method_label(d) or "?")), Cell(plain(roles.lengths(d))),
                     Cell(plain(d.section("config").get("num_samples")), "num"),
                     Cell(f"{env.get('device', '?')} / {env.get('dtype', '?')}"),
                     Cell(str(d.results.get("status", "?"))), Cell(d.headline or "")])
    return Table("Runs", ["run", "model", "trained context (tokens)", "method", "sample lengths (tokens)",
                          "samples per length", "device / dtype", "status", "headline"], rows)


def verdicts_side_by_side(datas: list[RunData], cols: list[str]) -> Table | Text:
    found = [h for h in HYPOTHESES if any(d.verdict(h) for d in datas)]
    found += sorted({str(v.get("hypothesis")) for d in datas for v in d.verdicts} - set(found))
    if not found:
        return Text("None of these runs has verdicts.", "note")
    rows = []
    for h in found:
        row = [Cell(h)]
        for d in datas:
            v = d.verdict(h)
            if v is None:
                row.append(Cell("not tested"))
            else:
                status = str(v.get("status", "?"))
                share = share_ci(v.get("explained_share"), v.get("ci_low"), v.get("ci_high"))
                at = f" at {v['max_tokens']} tokens" if isinstance(v.get("max_tokens"), int) else ""
                row.append(Cell(f"{status.upper()} {share}{at}", status))
        rows.append(row)
    return Table("Verdicts side by side", ["hypothesis", *cols], rows,
                 caption="Status and explained share [CI] of each hypothesis in each run, at the run's longest "
                         "sample length (each run's own report has every length).", ci=ci_of_runs(datas, cols))


def ci_of_runs(datas: list[RunData], cols: list[str]) -> str:
    """The interval the runs' verdicts hold: one text when every run was judged alike, else one per run."""
    texts = [intervals.ci_text(intervals.run_thresholds(d)) for d in datas]
    if len(set(texts)) == 1:
        return texts[0]
    return "; ".join(f"{c}: {t}" for c, t in zip(cols, texts))


def gaps_side_by_side(datas: list[RunData], cols: list[str]) -> Table | None:
    rows = [[Cell(c), Cell(plain(cmp.get("max_tokens")), "num"), Cell(plain(cmp.get("num_samples")), "num"),
             Cell(num(cmp.get("baseline_ppl"), ".3f"), "num"), Cell(num(cmp.get("method_ppl"), ".3f"), "num"),
             Cell(num(cmp.get("nll_gap_mean"), "+.4f"), "num")]
            for c, d in zip(cols, datas) for cmp in d.comparisons]
    if not rows:
        return None
    return Table("Baseline vs method per run and length", ["run", "tokens per sample", "samples", "baseline PPL",
                                                            "method PPL", "NLL gap (nats/token)"], rows,
                 caption="NLL gap = baseline minus method on the same tokens (> 0: the method looks better).")


def _role_curves(d: RunData, role: str) -> tuple[int, dict] | None:
    per_length = role_tokens(d, role)
    if not per_length:
        return None
    L = max(per_length)
    return L, curve(per_length[L], binning.edges_for(0, L - 2))


def overlay(datas: list[RunData], cols: list[str]) -> list:
    by_tokens, by_fraction = [], []
    for i, (c, d) in enumerate(zip(cols, datas)):
        for role in ROLES:
            got = _role_curves(d, role)
            if got is None:
                continue
            L, cv = got
            runs = roles.role_runs(d, role)
            label = str(runs[0].get("label")) if runs else role
            s = {"name": f"{c}, {label} ({L} tokens)", "y": binning.finite_list(cv["y"]), "color_key": label,
                 "linestyle": linestyle(i), "x": binning.finite_list(cv["x"])}
            by_tokens.append(s)
            if d.trained_context:
                by_fraction.append(s | {"x": binning.finite_list(cv["x"] / d.trained_context)})
    if not by_tokens:
        return []
    panels = [{"kind": "line", "title": "by position", "series": by_tokens, "xlabel": POSITION_XLABEL}]
    if by_fraction:
        panels.append({"kind": "line", "title": "by position as a fraction of each model's trained context",
                       "series": by_fraction, "xlabel": "position / trained context (1 = trained context)",
                       "vlines": [{"x": 1.0, "label": "trained context"}]})
    spec = {"kind": "panels", "title": "NLL by position across runs", "ylabel": "NLL (nats/token)", "panels": panels}
    caption = ("Binned mean per-token NLL of each run's baseline and method at its longest sample length, pooled over "
               "samples. Colour: the method (same colour, same method); line style: the run.")
    return [Figure("nll-overlay", spec, caption)]


def gap_overlay(datas: list[RunData], cols: list[str]) -> list:
    series = []
    for i, (c, d) in enumerate(zip(cols, datas)):
        base, meth = role_tokens(d, "baseline"), role_tokens(d, "method")
        common = sorted(set(base) & set(meth))
        if not common or not d.trained_context:
            continue
        L = common[-1]
        cv = curve([b - m for b, m in paired(base[L], meth[L])], binning.edges_for(0, L - 2))
        lo, hi = band(cv)
        series.append({"name": f"{c} ({L} tokens)", "x": binning.finite_list(cv["x"] / d.trained_context),
                       "y": binning.finite_list(cv["y"]), "ci_low": lo, "ci_high": hi, "color_key": c,
                       "linestyle": linestyle(i)})
    if not series:
        return []
    spec = {"kind": "line", "title": "Gap (baseline minus method NLL) across runs",
            "xlabel": "position / trained context (1 = trained context)", "ylabel": "NLL gap (nats/token)",
            "series": series, "vlines": [{"x": 1.0, "label": "trained context"}],
            "hlines": [{"y": 0.0, "label": "no gap"}]}
    caption = ("Per-token gap on the same tokens, binned, at each run's longest length; x in units of each model's "
               "trained context so that models with different windows line up. Shaded: \u00b11.96 standard errors "
               "of the tokens in each bin.")
    return [Figure("gap-overlay", spec, caption)]


def _fields(d: RunData) -> dict[str, str]:
    out = {f"environment.{k}": v for k, v in tables.environment_rows(d) if not k.startswith("model.")}
    out |= {k: v for k, v in tables.environment_rows(d) if k.startswith("model.")}
    out |= {f"config.{k}": plain(v) for k, v in d.section("config").items() if k != "out"}
    return out


def environment_diff(datas: list[RunData], cols: list[str]) -> list:
    fields = [_fields(d) for d in datas]
    keys = list(dict.fromkeys(k for f in fields for k in f))
    differ = [k for k in keys if len({f.get(k, "n/a") for f in fields}) > 1]
    rows, tags = [], []
    for k in keys:
        values = [f.get(k, "n/a") for f in fields]
        tag = "diff" if k in differ else ""
        rows.append([Cell(k), *[Cell(v, tag) for v in values]])
        tags.append(tag)
    lead = (f"{len(differ)} of {len(keys)} fields differ (highlighted): {', '.join(differ)}." if differ
            else "The environments, models and configurations are identical.")
    return [Text(lead), Table("Environment, model and configuration", ["field", *cols], rows, row_tags=tags)]
