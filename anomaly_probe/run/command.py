"""``anomaly-probe run``: a new run folder or ``--resume RUN_DIR``, the session, the pipeline, the tables."""

from __future__ import annotations

import argparse
from pathlib import Path

from anomaly_probe.errors import UserError


def run_command(args: argparse.Namespace, given: dict) -> int:
    """Run (or resume) and print the summary; returns 0 done, 1 finished with failed units, 130 interrupted.
    Bad input raises UserError; a run folder that cannot be written a ``WriteError`` (exit 1).

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
    from anomaly_probe.run.paths import local_path

    return RunConfig(  # local paths saved absolute: --resume works from any working directory
        model=local_path(args.model, "model"), trained_context=args.trained_context,
        text=local_path(args.text, "text"), max_tokens=args.max_tokens,
        num_samples=args.num_samples, method=args.method, sink_size=args.sink_size,
        recent_size=args.recent_size, position_mode=args.position_mode, method_args=list(args.method_args or []),
        compress_every=args.compress_every, engine=args.engine,
        chunk_size=args.chunk_size, device=args.device, dtype=args.dtype, seed=args.seed,
        out=local_path(args.out, "out"),
        hypotheses=resolve_hypotheses(args.hypothesis), probes=args.probes, stepwise_tokens=args.stepwise_tokens,
        policy_on_sliding=args.policy_on_sliding,
        probe_stride=args.probe_stride,
    )


def _run(args: argparse.Namespace, given: dict) -> int:
    from contextlib import ExitStack

    from anomaly_probe.console import console
    from anomaly_probe.rundir.lock import RunLock
    from anomaly_probe.run.session import claim_run_dir, validate_config

    retry = getattr(args, "retry_failed", None) is not None
    with ExitStack() as held:  # the run folder's lock, released on every way out
        saved = None
        if args.resume is not None:
            saved = _saved_run(args.resume, given)
            if not _resumable(saved, retry, console):
                return 0
            held.enter_context(RunLock(saved.run_dir, f"--resume {args.resume!r}"))
            saved = _saved_run(args.resume, given)  # again under the lock: another process may have moved it on
            if not _resumable(saved, retry, console):
                return 0
            config, run_dir = saved.config, saved.run_dir
        else:
            config = config_from_args(args)
            validate_config(config)
            run_dir = held.enter_context(claim_run_dir(config))  # removed again if nothing gets saved
        return _score(config, run_dir, saved)


def _resumable(saved, retry: bool, console) -> bool:
    """False (after saying so) for a complete run without failed units: there is nothing to resume."""
    if saved.status == "complete" and not saved.folder.results.failures:
        none = "no failed units to retry" if retry else "nothing to resume"
        console.print(f"{saved.run_dir} holds a complete run: {none}. Re-render its report with "
                      f"`anomaly-probe report {saved.run_dir}`, or start a new run with another --out.",
                      highlight=False, soft_wrap=True, markup=False)
        return False
    return True


def _score(config, run_dir: Path, saved) -> int:
    """Load the session (restoring ``saved``'s finished units), run the pipeline, print the tables.

    Returns 0 (every unit scored), 1 (finished, but some units failed: ``--retry-failed`` scores them again)
    or 130 (interrupted). A file of the folder that cannot be written raises a
    :class:`~anomaly_probe.rundir.files.WriteError` (exit 1) naming the resume command, after setting
    ``status`` to ``failed`` where results.json can still be written.
    """
    from anomaly_probe.console import (comparisons_table, console, err_console, runs_table, safe, verdicts_table,
                                       visible)
    from anomaly_probe.rundir.files import WriteError
    from anomaly_probe.run.pipeline import run_pipeline

    session = _load_session(config, run_dir)
    if saved is not None:
        from anomaly_probe.run.resume import restore

        for note in restore(session, saved):
            err_console.print(visible(f"note: {note}"), markup=False, highlight=False, soft_wrap=True)
        console.print(visible(f"resuming {run_dir}: {len(session.runs)} finished unit(s) kept"), highlight=False,
                      markup=False)
        failed = [f.key for f in saved.folder.results.failures]
        if failed:
            console.print(visible(f"retrying {len(failed)} failed unit(s): {', '.join(map(str, failed))}"),
                          highlight=False, markup=False, soft_wrap=True)
    console.print(f"[bold]anomaly-probe[/] {safe(session.loaded.spec)} ({safe(session.loaded.arch)}, trained context "
                  f"{session.loaded.trained_context}) on {session.device.type}/{session.environment['dtype']}; "
                  f"text {session.ids.numel()} tokens; run folder {safe(run_dir)}")
    try:
        session.save()  # from here on the folder is resumable, even after a hard kill
        run_pipeline(session)
    except KeyboardInterrupt:
        session.status = "interrupted"
        session.save()
        err_console.print(visible(f"interrupted: {len(session.runs)} finished unit(s) are saved in {run_dir}; "
                                  f"continue with `anomaly-probe run --resume {run_dir}`"), markup=False, highlight=False,
                          soft_wrap=True)
        return 130
    except WriteError as exc:
        session.status = "failed"
        try:
            session.save()  # the temp file of the failed write is gone: a small results.json may still fit
        except WriteError:
            pass  # the previous results.json stays (status running): resumable all the same
        raise WriteError(f"{exc}; {len(session.runs)} finished unit(s) are kept in {str(run_dir)!r}: free space "
                         f"or fix permissions, then continue with `anomaly-probe run --resume {run_dir}`") from None
    except Exception:
        session.status = "failed"
        try:
            session.save()
        except WriteError:
            pass
        raise
    report = _write_run_report(run_dir)
    console.print(runs_table([r.to_dict() for r in session.runs]))
    console.print(comparisons_table([c.to_dict() for c in session.comparisons]))
    if session.verdicts:
        console.print(verdicts_table([v.to_dict() for v in session.verdicts]))
        console.print(f"[bold]headline:[/] {safe(session.headline)}", soft_wrap=True)
    console.print(f"results: {safe(run_dir / 'results.json')}")
    if report is not None:
        console.print(f"report: {safe(report)}")
    if session.failures:
        err_console.print(visible(f"{len(session.failures)} unit(s) failed (see failures in results.json); the verdicts "
                                  f"that needed them are ERROR. Score them again with `anomaly-probe run --retry-failed "
                                  f"{run_dir}`"), markup=False, highlight=False, soft_wrap=True)
        return 1
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
    from anomaly_probe.console import err_console, visible
    from anomaly_probe.reports import write_report

    try:
        return write_report(run_dir)
    except Exception as exc:  # noqa: BLE001 - results.json is saved; the report can be re-rendered
        err_console.print(visible(f"report not written ({type(exc).__name__}: {str(exc)[:200]}); retry with "
                                  f"`anomaly-probe report {run_dir}`"), markup=False, soft_wrap=True)
        return None
