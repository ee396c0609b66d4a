"""``anomaly-probe run``: a new run folder or ``--resume RUN_DIR``, the session, the pipeline, the tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomaly_probe.errors import UserError


def run_command(args: argparse.Namespace, given: dict) -> int:
    """Run (or resume) and print the summary; returns 0 done, 130 interrupted. Bad input raises UserError.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``run`` flags, defaults included.
    given : dict
        Destination -> value of the flags the user typed (checked against the saved run with ``--resume``).
    """
    from anomaly_probe.interrupts import sigterm_as_interrupt

    with sigterm_as_interrupt():  # kill / a scheduler's time limit: kept like Ctrl-C
        return _run(args, given)


def config_from_args(args: argparse.Namespace):
    """The :class:`~anomaly_probe.config.RunConfig` of a new run."""
    from anomaly_probe.config import RunConfig
    from anomaly_probe.hypotheses.catalog import resolve_hypotheses

    return RunConfig(
        model=args.model, trained_context=args.trained_context, text=args.text, max_tokens=args.max_tokens,
        num_samples=args.num_samples, method=args.method, sink_size=args.sink_size,
        recent_size=args.recent_size, position_mode=args.position_mode, engine=args.engine,
        chunk_size=args.chunk_size, device=args.device, dtype=args.dtype, seed=args.seed, out=args.out,
        hypotheses=resolve_hypotheses(args.hypothesis), probes=args.probes, stepwise_tokens=args.stepwise_tokens,
        probe_stride=args.probe_stride,
    )


def _run(args: argparse.Namespace, given: dict) -> int:
    from anomaly_probe.console import comparisons_table, console, err_console, runs_table, verdicts_table
    from anomaly_probe.run.pipeline import run_pipeline
    from anomaly_probe.run.session import prepare_run_dir, validate_config

    saved = _saved_run(args.resume, given) if args.resume is not None else None
    if saved is not None and saved.status == "complete":
        console.print(f"{saved.run_dir} holds a complete run: nothing to resume. Re-render its report with "
                      f"`anomaly-probe report {saved.run_dir}`, or start a new run with another --out.",
                      highlight=False, soft_wrap=True)
        return 0
    if saved is not None:
        config, run_dir = saved.config, saved.run_dir
    else:
        config = config_from_args(args)
        validate_config(config)
        run_dir = prepare_run_dir(config)
    try:
        session = _load_session(config, run_dir)
    except BaseException:
        if saved is None:
            _remove_if_empty(run_dir)
        raise
    if saved is not None:
        from anomaly_probe.run.resume import restore

        for note in restore(session, saved):
            err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
        console.print(f"resuming {run_dir}: {len(session.runs)} finished unit(s) kept", highlight=False)
    console.print(f"[bold]anomaly-probe[/] {session.loaded.spec} ({session.loaded.arch}, trained context "
                  f"{session.loaded.trained_context}) on {session.device.type}/{session.environment['dtype']}; "
                  f"text {session.ids.numel()} tokens; run folder {run_dir}")
    try:
        session.save()  # from here on the folder is resumable, even after a hard kill
        run_pipeline(session)
    except KeyboardInterrupt:
        session.status = "interrupted"
        session.save()
        err_console.print(f"interrupted: {len(session.runs)} finished unit(s) are saved in {run_dir}; continue with "
                          f"`anomaly-probe run --resume {run_dir}`", markup=False, highlight=False, soft_wrap=True)
        return 130
    except Exception:
        session.status = "failed"
        session.save()
        raise
    report = _write_run_report(run_dir)
    console.print(runs_table([r.to_dict() for r in session.runs]))
    console.print(comparisons_table([c.to_dict() for c in session.comparisons]))
    if session.verdicts:
        console.print(verdicts_table([v.to_dict() for v in session.verdicts]))
        console.print(f"[bold]headline:[/] {session.headline}", soft_wrap=True)
    if session.failures:
        err_console.print(f"{len(session.failures)} unit(s) failed (see failures in results.json); the verdicts "
                          "that needed them are ERROR", markup=False, highlight=False, soft_wrap=True)
    console.print(f"results: {run_dir / 'results.json'}")
    if report is not None:
        console.print(f"report: {report}")
    return 0


def _load_session(config, run_dir: Path):
    """The session (model, text); running out of memory while loading is the user's to fix."""
    from anomaly_probe.failures import is_out_of_memory
    from anomaly_probe.run.session import Session

    try:
        return Session(config, run_dir)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"out of memory while loading {config.model!r} ({first}); try --dtype float16 or "
                        "bfloat16, another --device, or a smaller model") from None


def _saved_run(path: str, given: dict):
    """The run folder named by ``--resume``, after checking that no other typed flag contradicts it."""
    from anomaly_probe.run.resume import check_flags, load_saved_run
    from anomaly_probe.run.session import validate_config

    saved = load_saved_run(path)
    check_flags(given, saved)
    try:
        validate_config(saved.config)
    except UserError as exc:
        raise UserError(f"--resume {path!r}: the saved settings are not valid here ({exc})") from None
    return saved


def _write_run_report(run_dir: Path):
    """The run's report; a failure here is reported but does not fail the finished run."""
    from anomaly_probe.console import err_console
    from anomaly_probe.reports import write_report

    try:
        return write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - results.json is saved; the report can be re-rendered
        err_console.print(f"report not written ({type(exc).__name__}: {str(exc)[:200]}); retry with "
                          f"`anomaly-probe report {run_dir}`", markup=False, soft_wrap=True)
        return None


def _remove_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass
