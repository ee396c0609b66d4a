"""What ``anomaly-probe run`` does once the session is loaded: plan, score, judge, rank, save."""

from __future__ import annotations

from anomaly_probe.errors import UserError
from anomaly_probe.hypotheses.base import ExperimentSettings
from anomaly_probe.ranking import rank
from anomaly_probe.rundir import Failure
from anomaly_probe.rundir.files import WriteError
from anomaly_probe.run.judging import headline, judge, plan, regions, role_entries
from anomaly_probe.run.session import Session
from anomaly_probe.run.units import Unit
from anomaly_probe.stats.thresholds import DEFAULT_THRESHOLDS, Thresholds


def run_pipeline(session: Session, settings: ExperimentSettings | None = None,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
    """Score baseline vs method and every requested hypothesis' units, then judge them.

    Everything lands in ``session`` (and ``results.json`` after every unit): runs, comparisons, the
    role table, verdicts ranked by :func:`anomaly_probe.ranking.rank`, the headline, thresholds and
    experiment settings.
    """
    session.settings = settings or ExperimentSettings(stepwise_tokens=session.config.stepwise_tokens)
    session.thresholds = thresholds
    names = [h for h in session.config.hypotheses if h != "none"]
    if not names:
        run_units(session, session.pair_units())
        session.compute_comparisons()
    else:
        units, roles, errors = plan(session.scored(), names, session.settings)
        session.roles = role_entries(session.scored(), roles)  # saved before scoring: an interrupted run has it
        _note_not_planned(session, names, roles, errors)
        failed = run_units(session, units)
        session.compute_comparisons()
        view = session.scored()
        where = regions(view, session.config.max_tokens, thresholds)  # once: judges and headline share it
        session.regions = where
        session.verdicts = rank(errors + judge(view, roles, thresholds, failed, where))
        try:
            session.headline = headline(view, session.verdicts, thresholds, where)
        except KeyError:  # a baseline or method unit failed: no gap to describe
            session.headline = "The baseline or the method run failed; see failures."
        except Exception as exc:  # noqa: BLE001 - e.g. no finite tokens left; the verdicts are saved
            session.headline = f"No headline: {type(exc).__name__}: {str(exc)[:160]}; see the verdicts."
    session.headline = (session.headline + _nonfinite_sentence(session)).strip()
    session.status = "partial" if session.failures else "complete"  # partial: --retry-failed scores them again
    session.save()


def run_units(session: Session, units: list[Unit]) -> dict[str, str]:
    """Score ``units`` with rich progress bars (overall ETA plus one bar per unit).

    Returns
    -------
    dict
        Unit key -> error message for units that failed; the others still run.
    """
    from anomaly_probe.console import progress_bars
    from anomaly_probe.device import dtype_name
    from anomaly_probe.engines import CHUNKED_ENGINES
    from anomaly_probe.failures import failure_message, is_out_of_memory, release_memory

    seen: set[str] = set()
    todo = []
    for u in units:  # scored once, whoever asked for it
        if u.key not in session.arrays and u.key not in seen:
            seen.add(u.key)
            todo.append(u)
    total = sum(u.n_tokens - 1 for u in todo)
    failed: dict[str, str] = {}
    with progress_bars(total) as (bars, overall):
        for u in todo:
            extra = "" if u.intervention == "none" else f" +{u.intervention}"
            task = bars.add_task(f"L={u.max_tokens} s={u.sample} {u.method.label()}{extra} [{u.engine}]",
                                 total=u.n_tokens - 1)

            def advance(n: int, task=task) -> None:
                bars.advance(task, n)
                bars.advance(overall, n)

            oom = False
            try:
                session.score(u, progress=advance)
            except UserError as exc:
                if u.intervention == "none" or isinstance(exc, WriteError):  # bad input or a folder that
                    raise  # cannot be written: the run stops (resumable)
                # the model cannot take this intervention (e.g. BLOOM's attention cannot be switched): only
                # the verdicts that need it fail (ERROR, quoting this line); the run goes on
                failed[u.key] = f"{u.intervention} cannot run on this model: {exc}"
                session.failures.append(Failure(u.key, failed[u.key]))
                session.save()
                bars.console.print(f"failed: {u.key}: {failed[u.key]}", markup=False, highlight=False)
            except Exception as exc:  # noqa: BLE001 - one failed unit must not lose the others
                oom = is_out_of_memory(exc)
                failed[u.key] = failure_message(exc, u, session.config.chunk_size, dtype_name(session.dtype),
                                                chunked=u.engine in CHUNKED_ENGINES)
                session.failures.append(Failure(u.key, failed[u.key]))
                session.save()
                from anomaly_probe.console import visible

                bars.console.print(visible(f"failed: {u.key}: {failed[u.key]}"), markup=False, highlight=False)
            if oom:  # outside the except block: its traceback no longer pins the failed forward's tensors
                release_memory()
    return failed


def _nonfinite_sentence(session: Session) -> str:
    """`` Non-finite NLL in N run(s) (first: KEY, ...)...`` or ``""``: a NaN is never averaged silently."""
    from anomaly_probe.nonfinite import describe

    bad = [r for r in session.runs if r.nonfinite]
    if not bad:
        return ""
    return (f" Non-finite NLL in {len(bad)} run(s) (first: {bad[0].key}: {describe(bad[0].nonfinite)}); "
            "the comparisons and verdicts that use them keep only the tokens before the first NaN/inf of each "
            "sample.")


def _note_not_planned(session: Session, names: list[str], roles: dict, errors: list) -> None:
    """Say which hypotheses do not apply to the method (e.g. sinks for a policy without sinks): they are
    neither scored nor judged, and a user who asked for one by name must not be left guessing."""
    from anomaly_probe.console import err_console, visible

    planned = {name for name, _ in roles} | {v.hypothesis for v in errors}
    skipped = [n for n in names if n not in planned]
    if skipped:
        err_console.print(visible(f"note: {', '.join(skipped)} not run: does not apply to "
                                  f"{session.method.label()} (see docs/HYPOTHESES.md)"),
                          markup=False, highlight=False, soft_wrap=True)
