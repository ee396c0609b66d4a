"""``anomaly-probe import``: read two logs, judge every hypothesis that needs no model, write the run folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomaly_probe.errors import UserError


def run_import(args: argparse.Namespace) -> int:
    """Returns 0; every problem with the input is a UserError (one line, exit code 2)."""
    from anomaly_probe.console import console
    from anomaly_probe.importer.context import trained_context
    from anomaly_probe.importer.logs import read_log
    from anomaly_probe.importer.pair import pair_logs
    from anomaly_probe.importer.verdicts import headline, judge_all
    from anomaly_probe.importer.write import build_runs, comparison, environment, max_tokens_of, prepare_dir, roles
    from anomaly_probe.rundir import Results, write_results
    from anomaly_probe.stats.thresholds import DEFAULT_THRESHOLDS

    th = DEFAULT_THRESHOLDS
    explicit = {"nll": args.nll_col, "position": args.pos_col, "sample": args.sample_col, "memory": args.memory_col,
                "latency": args.latency_col, "correct": args.correct_col}
    tc, tc_source = trained_context(args.trained_context, args.model_config)
    logs = {"baseline": read_log(args.baseline, explicit, args.memory_unit),
            "method": read_log(args.method, explicit, args.memory_unit)}
    pairs = pair_logs(logs["baseline"], logs["method"])
    label = args.method_label or f"{Path(args.method).stem} (imported)"
    if label == "full":
        raise UserError("--method-label full: the baseline is called full; name the method otherwise")
    run_dir = prepare_dir(args.out)
    L = max_tokens_of(pairs)
    console.print(f"[bold]anomaly-probe import[/] {len(pairs)} sample(s), {sum(p.n for p in pairs)} tokens per log; "
                  f"baseline {args.baseline}, method {args.method} ({label}); trained context "
                  f"{tc if tc is not None else 'unknown'} ({tc_source}); run folder {run_dir}", highlight=False)
    for note in logs["baseline"].notes + logs["method"].notes:
        console.print(f"note: {note}", highlight=False, markup=False)
    verdicts = judge_all(pairs, tc, th, L)
    runs = build_runs(run_dir, pairs, label, {"baseline": args.baseline, "method": args.method})
    config = {"command": "import", "baseline": args.baseline, "method": args.method, "method_label": label,
              "columns": {role: log.columns for role, log in logs.items()}, "memory_unit": args.memory_unit,
              "trained_context": tc, "trained_context_source": tc_source, "model_config": args.model_config,
              "out": str(run_dir)}
    write_results(run_dir, Results(
        status="complete", environment=environment(logs), config=config,
        model={"spec": "imported logs", "source": tc_source, "arch": None, "trained_context": tc, "num_layers": None},
        method={"method": "imported", "label": label}, runs=runs, comparisons=[comparison(pairs, label)],
        verdicts=verdicts, headline=headline(pairs, verdicts, label, th), failures=[],
        thresholds=th.to_dict(), experiment_settings={"source": "imported logs", "max_tokens": L}, roles=roles(pairs),
    ))
    _report(run_dir, console)
    console.print(f"results: {run_dir / 'results.json'}", highlight=False)
    return 0


def _report(run_dir: Path, console) -> None:
    """The report and console summary; a failure is reported but does not fail the saved import."""
    from anomaly_probe.console import err_console
    from anomaly_probe.reports import write_report

    try:
        write_report(run_dir, console=console)
    except Exception as exc:  # noqa: BLE001 - results.json is saved; the report can be re-rendered
        err_console.print(f"report not written ({type(exc).__name__}: {str(exc)[:200]}); retry with "
                          f"`anomaly-probe report {run_dir}`", markup=False, soft_wrap=True)

