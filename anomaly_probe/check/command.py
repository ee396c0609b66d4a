"""``anomaly-probe check``: load the model, run the checks, print the table, write JSON / JUnit, exit code."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomaly_probe.check.context import CheckOptions, validate_options
from anomaly_probe.errors import UserError


def options_from_args(args: argparse.Namespace) -> CheckOptions:
    return CheckOptions(model=args.model, text=args.text, max_tokens=args.max_tokens, num_samples=args.num_samples,
                        method=args.method, sink_size=args.sink_size, recent_size=args.recent_size,
                        position_mode=args.position_mode, method_args=tuple(getattr(args, "method_args", None) or ()),
                        compress_every=getattr(args, "compress_every", 1), device=args.device, dtype=args.dtype, seed=args.seed,
                        tolerance=args.tolerance, scorer=args.scorer, only=tuple(args.only or ()),
                        scorer_timeout=args.scorer_timeout,
                        policy_on_sliding=bool(getattr(args, "policy_on_sliding", False)))


def run_check(args: argparse.Namespace) -> int:
    """Run the suite; returns 0 (all passed), 1 (a check failed or errored). Bad input raises UserError (2)."""
    from anomaly_probe.check.context import CheckContext
    from anomaly_probe.check.output import exit_code, json_payload, results_table, summary_line
    from anomaly_probe.check.scorer_checks import ScorerSuite
    from anomaly_probe.check.scorer_load import load_scorer
    from anomaly_probe.check.suite import all_checks, run_suite, selected
    from anomaly_probe.console import console, safe
    from anomaly_probe.rundir import write_json

    options = options_from_args(args)
    method = validate_options(options)
    for flag, path in (("--json", args.json), ("--junit", args.junit)):
        _check_writable(flag, path)
    scorer = (ScorerSuite(load_scorer(options.scorer), options.scorer, options.scorer_timeout)
              if options.scorer else None)
    checks = selected(all_checks(method, scorer), options.only)  # bad --only fails before the model loads
    ctx = CheckContext(options)
    console.print(f"[bold]anomaly-probe check[/] {safe(ctx.loaded.spec)} ({safe(ctx.loaded.arch)}) on "
                  f"{ctx.device.type}/"
                  f"{ctx.dtype_name}; {options.num_samples} samples x {options.max_tokens} tokens; method "
                  f"{method.label()}; tolerance {ctx.tolerance:.0e} nats"
                  + (f"; scorer {safe(options.scorer)}" if options.scorer else ""), highlight=False)
    with console.status("running checks") as status:
        results = run_suite(ctx, checks, on_result=lambda r: status.update(f"done: {safe(r.name)} ({r.status})"))
    console.print(results_table(results))
    console.print(f"[bold]{summary_line(results)}[/]", highlight=False)
    model = {"spec": ctx.loaded.spec, "source": ctx.loaded.source, "arch": ctx.loaded.arch,
             "trained_context": ctx.loaded.trained_context}
    if args.json:
        _write(args.json, lambda p: write_json(p, json_payload(results, options.to_dict(), ctx.environment(), model,
                                                                ctx.tolerance)))
        console.print(f"json: {safe(args.json)}", highlight=False)
    if args.junit:
        from anomaly_probe.check.junit import junit_xml

        props = {"model": ctx.loaded.spec, "device": ctx.device.type, "dtype": ctx.dtype_name,
                 "tolerance_nats": ctx.tolerance, "scorer": options.scorer or ""}
        _write(args.junit, lambda p: p.write_text(junit_xml(results, props), encoding="utf-8"))
        console.print(f"junit: {safe(args.junit)}", highlight=False)
    return exit_code(results)


def _check_writable(flag: str, path: str | None) -> None:
    if not path:
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{flag} {path!r} is a folder; give a file name")
    if not p.parent.is_dir():
        raise UserError(f"{flag} {path!r}: folder {str(p.parent)!r} does not exist")


def _write(path: str, write) -> None:
    try:
        write(Path(path).expanduser())
    except OSError as exc:
        raise UserError(f"cannot write {path!r}: {exc.strerror or exc}") from None
