"""Write a run's report (HTML + PNG figures) or a comparison across runs, from saved data only."""

from __future__ import annotations

from pathlib import Path

from anomaly_probe.errors import UserError
from anomaly_probe.reports.build import build_report
from anomaly_probe.reports.compare import build_comparison
from anomaly_probe.reports.html import render_html
from anomaly_probe.reports.render import render_figures
from anomaly_probe.reports.rundata import load_run
from anomaly_probe.reports.summary import print_summary
from anomaly_probe.rundir.files import atomic_write, inside

COMPARE_PREFIX = "compare-"


def write_report(run_dir: str | Path, out: str | Path | None = None, console=None) -> Path:
    """Render ``RUN_DIR/report.html`` and ``RUN_DIR/figures/*.png`` from ``RUN_DIR/results.json``.

    Parameters
    ----------
    run_dir : path
        A run folder written by ``anomaly-probe run``.
    out : path, optional
        Write the HTML here instead of ``RUN_DIR/report.html`` (figures still go to ``RUN_DIR/figures``).
    console : rich.console.Console, optional
        Where to print the summary; nothing is printed without one.

    Returns
    -------
    Path
        The HTML file.

    Raises
    ------
    UserError
        The folder is not a readable run folder, or the HTML cannot be written.
    """
    data = load_run(run_dir)
    path = Path(out).expanduser() if out else data.run_dir / "report.html"
    _check_out(path)
    report = build_report(data)
    figures_dir = _own_folder(data.run_dir / "figures", data.run_dir, report)
    _remove_stale(figures_dir, keep=lambda p: p.name.startswith(COMPARE_PREFIX))
    rendered = render_figures(report, figures_dir)
    _write_text(path, render_html(report, rendered))
    if console is not None:
        print_summary(report, rendered, path, console)
    return path


def write_comparison(run_dirs: list[str | Path], out: str | Path | None = None, console=None) -> Path:
    """One report comparing several runs.

    Written to ``FIRST_RUN_DIR/compare.html`` with figures ``FIRST_RUN_DIR/figures/compare-*.png``, or
    to ``out`` with figures in ``<out stem>-figures/``. Returns the HTML path; raises
    :class:`~anomaly_probe.errors.UserError` like :func:`write_report`.
    """
    datas = [load_run(d) for d in run_dirs]
    path = Path(out).expanduser() if out else datas[0].run_dir / "compare.html"
    _check_out(path)
    report = build_comparison(datas)
    figures_dir = _own_folder(path.parent / ("figures" if out is None else f"{path.stem}-figures"), path.parent,
                              report)
    _remove_stale(figures_dir, keep=lambda p: not p.name.startswith(COMPARE_PREFIX))
    rendered = render_figures(report, figures_dir, prefix=COMPARE_PREFIX)
    _write_text(path, render_html(report, rendered))
    if console is not None:
        print_summary(report, rendered, path, console)
    return path


def _own_folder(folder: Path, home: Path, report) -> Path | None:
    """``folder`` when PNGs may be written and deleted in it; None (figures only embedded in the HTML, with a
    note in ``report.warnings``) when it is a link or leads out of ``home``: nothing is ever written or
    deleted through a link out of the folder."""
    if not folder.is_symlink() and (not folder.exists() or inside(home, folder)):
        return folder
    report.warnings.append(f"figures not saved to {str(folder)!r}: it is a link out of {str(home)!r} (never "
                           "written or deleted through); the HTML embeds every figure")
    return None


def _remove_stale(folder: Path | None, keep) -> None:
    """Delete PNGs a previous rendering left behind (those ``keep`` does not protect); plain files only."""
    if folder is None or not folder.is_dir():
        return
    for png in folder.glob("*.png"):
        if not keep(png) and (png.is_symlink() or png.is_file()):  # a link is removed itself, never its target
            try:
                png.unlink()
            except OSError:
                pass


def _check_out(path: Path) -> None:
    """Refuse an output path that is a folder before any work is done."""
    if path.is_dir():
        raise UserError(f"--out {str(path)!r} is a folder; give a file name such as report.html")


def _write_text(path: Path, text: str) -> None:
    """Atomic write (temp file + rename); a failure is the user's to fix (permissions, missing folder)."""
    data = text.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda f: f.write(data))  # a link at ``path`` is replaced, never written through
    except OSError as exc:
        raise UserError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
