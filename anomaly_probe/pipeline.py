"""What ``anomaly-probe run`` does once the session is loaded: score, judge, rank, save."""

from __future__ import annotations

from anomaly_probe.hypotheses.base import ExperimentSettings
from anomaly_probe.runner import Session, run_units
from anomaly_probe.stats.thresholds import DEFAULT_THRESHOLDS, Thresholds


def run_pipeline(session: Session, settings: ExperimentSettings | None = None,
                 thresholds: Thresholds = DEFAULT_THRESHOLDS) -> None:
    """Score baseline vs method and every requested hypothesis' runs, then judge them.

    Everything lands in ``session`` (and ``results.json`` after every unit): runs, comparisons,
    verdicts ranked by explained share, the headline, thresholds and experiment settings.
    """
    from anomaly_probe.hypotheses.runner import headline, judge, plan, rank, regions

    settings = settings or ExperimentSettings(stepwise_tokens=session.config.stepwise_tokens)
    names = [h for h in session.config.hypotheses if h != "none"]
    session.extra = {"thresholds": thresholds.to_dict(), "experiment_settings": vars(settings).copy()}
    if not names:
        run_units(session, session.baseline_and_method_units())
        session.compute_comparisons()
    else:
        units, roles, errors = plan(session, names, settings)
        failed = run_units(session, units)
        session.compute_comparisons()
        where = regions(session, session.config.max_tokens, thresholds)  # once: judges and headline share it
        session.extra["analysis_regions"] = [r.to_dict() for r in where.values()]
        verdicts = rank(errors + judge(session, roles, thresholds, failed, where))
        session.verdicts = [v.to_dict() for v in verdicts]
        try:
            session.headline = headline(session, verdicts, thresholds, where)
        except KeyError:  # a baseline or method run failed: no gap to describe
            session.headline = "The baseline or the method run failed; see failures."
        except Exception as exc:  # noqa: BLE001 - e.g. no finite tokens left; the verdicts are saved
            session.headline = f"No headline: {type(exc).__name__}: {str(exc)[:160]}; see the verdicts."
    session.headline = (session.headline + _nonfinite_sentence(session.runs)).strip()
    session.status = "complete"
    session.save()


def _nonfinite_sentence(runs: list[dict]) -> str:
    """`` Non-finite NLL in N run(s) (first: KEY, ...)...`` or ``""``: a NaN is never averaged silently."""
    from anomaly_probe.nonfinite import describe

    bad = [r for r in runs if r.get("nonfinite")]
    if not bad:
        return ""
    return (f" Non-finite NLL in {len(bad)} run(s) (first: {bad[0]['key']}: {describe(bad[0]['nonfinite'])}); "
            "the comparisons and verdicts that use them keep only the tokens before the first NaN/inf of each "
            "sample.")
