"""``anomaly-probe import``: read two logs, judge every hypothesis that needs no model, write the run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomaly_probe.errors import UserError


def run_import(args: argparse.Namespace) -> int:
    """Returns 0; every problem with the input is a UserError (one line, exit code 2)."""
    from anomaly_probe.console import console, safe, visible
    from anomaly_probe.importer.context import trained_context
    from anomaly_probe.importer.formats import read_role
    from anomaly_probe.importer.ours import stated_trained_context
    from anomaly_probe.importer.pair import align_logs
    from anomaly_probe.importer.verdicts import analysis_regions, headline, judge_all
    from anomaly_probe.importer.write import build_runs, comparison, environment, max_tokens_of, prepare_dir, roles
    from anomaly_probe.rundir import Results, write_results
    from anomaly_probe.stats.thresholds import DEFAULT_THRESHOLDS

    th = DEFAULT_THRESHOLDS
    explicit = {"nll": args.nll_col, "position": args.pos_col, "sample": args.sample_col, "memory": args.memory_col,
                "latency": args.latency_col, "correct": args.correct_col}
    tc, tc_source = trained_context(args.trained_context, args.model_config)
    files = {role: _paths(getattr(args, role)) for role in ("baseline", "method")}
    fmt = getattr(args, "format", None) or "auto"
    logs = {role: read_role(paths, fmt, explicit, args.memory_unit) for role, paths in files.items()}
    if tc is None and (stated := stated_trained_context(list(logs.values()))) is not None:
        tc, tc_source = stated
    pairs, alignment = align_logs(logs["baseline"], logs["method"])
    label = args.method_label or default_label(files["method"], logs["method"].meta)
    if label == "full":
        raise UserError("--method-label full: the baseline is called full; name the method otherwise")
    run_dir = prepare_dir(args.out)
    L = max_tokens_of(pairs)
    console.print(f"[bold]anomaly-probe import[/] {len(pairs)} sample(s), {sum(p.n for p in pairs)} tokens per log; "
                  f"baseline {safe(logs['baseline'].path)} ({logs['baseline'].format}), method "
                  f"{safe(logs['method'].path)} ({logs['method'].format}; {safe(label)}); trained context "
                  f"{tc if tc is not None else 'unknown'} ({safe(tc_source)}); run folder {safe(run_dir)}",
                  highlight=False)
    for note in logs["baseline"].notes + logs["method"].notes:
        console.print(visible(f"note: {note}"), highlight=False, markup=False)
    if alignment["dropped"]:
        console.print(visible(f"aligned: {alignment['note']}"), highlight=False, markup=False, soft_wrap=True)
    verdicts = judge_all(pairs, tc, th, L)
    sources = {role: _one_or_list(paths) for role, paths in files.items()}
    runs = build_runs(run_dir, pairs, label, {role: logs[role].path for role in files})
    config = {"command": "import", **sources, "method_label": label, "format": fmt,
              "formats": {role: log.format for role, log in logs.items()},
              "columns": {role: log.columns for role, log in logs.items()}, "memory_unit": args.memory_unit,
              "trained_context": tc, "trained_context_source": tc_source, "model_config": args.model_config,
              "out": str(run_dir)}
    write_results(run_dir, Results(
        status="complete", environment=environment(logs), config=config,
        model={"spec": "imported logs", "source": tc_source, "arch": None, "trained_context": tc, "num_layers": None},
        method={"method": "imported", "label": label}, runs=runs, comparisons=[comparison(pairs, label)],
        verdicts=verdicts, headline=headline(pairs, verdicts, label, th), failures=[],
        thresholds=th.to_dict(), experiment_settings={"source": "imported logs", "max_tokens": L}, roles=roles(pairs),
        alignment=alignment, analysis_regions=analysis_regions(pairs, verdicts, L),
    ))
    _report(run_dir, console)
    console.print(f"results: {safe(run_dir / 'results.json')}", highlight=False)
    return 0


def default_label(paths: list[str], meta: dict) -> str:
    """The method's name: the label our exported log states, else the file name (its folder's for a log.txt)."""
    label = meta.get("label")
    if isinstance(label, str) and label.strip() and label != "full":
        return label
    p = Path(paths[0])
    name = p.parent.name if p.stem.lower() == "log" and p.parent.name not in ("", ".") else p.stem
    return f"{name} (imported)" + (f" +{len(paths) - 1} files" if len(paths) > 1 else "")


def _paths(value) -> list[str]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _one_or_list(paths: list[str]):
    """A path as given, or the list when several files were given."""
    return paths[0] if len(paths) == 1 else list(paths)


def _report(run_dir: Path, console) -> None:
    """The report and console summary; a failure is reported but does not fail the saved import."""
    from anomaly_probe.console import err_console, visible
    from anomaly_probe.reports import write_report

    try:
        write_report(run_dir, console=console)
    except Exception as exc:  # noqa: BLE001 - results.json is saved; the report can be re-rendered
        err_console.print(visible(f"report not written ({type(exc).__name__}: {str(exc)[:200]}); retry with "
                                  f"`anomaly-probe report {run_dir}`"), markup=False, soft_wrap=True)

