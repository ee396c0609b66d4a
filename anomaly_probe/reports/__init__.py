"""Reports: a run folder's saved data -> report tree (plain data) -> PNG figures, HTML and a console summary.

Layers: :mod:`~anomaly_probe.reports.rundata` reads the folder, :mod:`~anomaly_probe.reports.figures`
and :mod:`~anomaly_probe.reports.tables` compute plain figure specs and tables, :mod:`build` /
:mod:`compare` assemble the :mod:`tree`, and :mod:`plot`, :mod:`html` and :mod:`summary` render it.
Every interval comes from the judges' bootstrap (:mod:`intervals`); every status is drawn in the one
style of :mod:`status`, which the console tables of every command share.
Nothing here imports torch or transformers, and nothing heavy is imported until a function is called.
"""

from __future__ import annotations

from pathlib import Path


def write_report(run_dir, out=None, console=None) -> Path:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/figures/*.png``.

    See :func:`anomaly_probe.reports.write.write_report`; returns the HTML path.
    """
    from anomaly_probe.reports.write import write_report as _write

    return _write(run_dir, out=out, console=console)


def write_comparison(run_dirs, out=None, console=None) -> Path:
    """Write one report comparing runs; see :func:`anomaly_probe.reports.write.write_comparison`."""
    from anomaly_probe.reports.write import write_comparison as _write

    return _write(run_dirs, out=out, console=console)


__all__ = ["write_report", "write_comparison"]
