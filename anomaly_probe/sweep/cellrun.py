"""One cell of a sweep = one ordinary ``run`` folder, scored in this process through ``run/``.

A folder whose ``results.json`` says ``complete`` is kept as it is; one with an unfinished run is
resumed (its finished units are kept, as ``run --resume`` does); otherwise a new run starts. Every
executor calls :func:`run_cell`, so a cell gives the same numbers wherever it runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from anomaly_probe.errors import UserError


@dataclass
class CellOutcome:
    """How one cell ended.

    Attributes
    ----------
    status : str
        ``complete`` or ``failed`` (an interrupted cell raises KeyboardInterrupt instead).
    reason : str
        One line: why it failed, or ``already complete`` for a skipped cell.
    seconds : float
        Wall time spent here.
    unit_failures : int
        Units that failed inside a complete run (``results.json`` ``failures``).
    skipped : bool
        The folder already held a complete run.
    """

    status: str
    reason: str = ""
    seconds: float = 0.0
    unit_failures: int = 0
    skipped: bool = False


def run_cell(config, run_dir: Path, models, report: bool = True) -> CellOutcome:
    """Score ``config`` (a :class:`~anomaly_probe.config.RunConfig`) into ``run_dir``.

    Parameters
    ----------
    run_dir : Path
        The cell's run folder (may differ from ``config.out``: a Ray worker writes a local copy).
    models : ModelCache
        Supplies the loaded model (:mod:`anomaly_probe.sweep.models`).
    report : bool
        Also write the run's ``report.html``.

    Raises
    ------
    KeyboardInterrupt
        Ctrl-C or SIGTERM: the run folder is saved with status ``interrupted`` first.
    """
    start = time.perf_counter()
    try:
        skipped, unit_failures = _run(config, Path(run_dir), models)
    except UserError as exc:
        return CellOutcome("failed", _line(str(exc)), time.perf_counter() - start)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the sweep
        return CellOutcome("failed", _line(f"{type(exc).__name__}: {exc}"), time.perf_counter() - start)
    if skipped:
        return CellOutcome("complete", "already complete", 0.0, unit_failures, skipped=True)
    if report:
        _write_report(run_dir)
    return CellOutcome("complete", "", time.perf_counter() - start, unit_failures)


def _run(config, run_dir: Path, models):
    """(whether the folder was already complete, units that failed inside the run)."""
    from anomaly_probe.rundir import read
    from anomaly_probe.run.pipeline import run_pipeline
    from anomaly_probe.run.resume import config_from_saved, restore, SavedRun
    from anomaly_probe.run.session import Session, validate_config

    validate_config(config)
    saved = None
    if (run_dir / "results.json").is_file():
        folder = read(run_dir, resume=True)
        if folder.status == "complete":
            return True, len(folder.results.failures)
        saved = SavedRun(folder, config_from_saved(folder.data.get("config"), f"cell {run_dir.name}"))
    run_dir.mkdir(parents=True, exist_ok=True)
    session = Session(config, run_dir, loaded=models.get(config))
    if saved is not None:
        restore(session, saved)
    try:
        session.save()
        run_pipeline(session)
    except KeyboardInterrupt:
        session.status = "interrupted"
        session.save()
        raise
    except Exception:
        session.status = "failed"
        session.save()
        raise
    return False, len(session.failures)


def _write_report(run_dir: Path) -> None:
    """The cell's own report; a failure here does not fail the finished cell (``report`` re-renders it)."""
    from anomaly_probe.reports import write_report

    try:
        write_report(run_dir)
    except Exception:  # noqa: BLE001 - results.json is saved
        pass


def _line(text: str) -> str:
    """First line, at most 300 characters: the one-line reason sweep.json keeps."""
    first = (text.strip().splitlines() or [""])[0]
    return first[:300]
