"""Write a sweep's trend report: ``SWEEP_DIR/report.html`` and ``SWEEP_DIR/figures/*.png``."""

from __future__ import annotations

from pathlib import Path


def write_sweep_report(sweep_dir, out=None, console=None) -> Path:
    """Render the trend report from ``sweep.json`` and the cells' run folders (no model, no torch).

    Returns the HTML path. Raises :class:`~anomaly_probe.errors.UserError` when the folder holds no
    readable sweep.json or the HTML cannot be written.
    """
    from anomaly_probe.reports.html import render_html
    from anomaly_probe.reports.render import render_figures
    from anomaly_probe.reports.summary import print_summary
    from anomaly_probe.reports.sweep.build import build_sweep_report
    from anomaly_probe.reports.sweep.data import load_sweep
    from anomaly_probe.reports.write import _check_out, _remove_stale, _write_text

    data = load_sweep(sweep_dir)
    path = Path(out).expanduser() if out else data.sweep_dir / "report.html"
    _check_out(path)
    report = build_sweep_report(data)
    figures_dir = path.parent / ("figures" if out is None else f"{path.stem}-figures")
    _remove_stale(figures_dir, keep=lambda p: False)
    rendered = render_figures(report, figures_dir)
    _write_text(path, render_html(report, rendered))
    if console is not None:
        print_summary(report, rendered, path, console)
    return path
