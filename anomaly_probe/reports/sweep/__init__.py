"""The trend report of a sweep (``SWEEP_DIR/report.html``): the cells' runs read back, no torch.

``data`` (sweep.json and every cell's run folder), ``region`` (each cell's headline region, from its
results.json ``analysis_regions``), ``cells`` (per-cell statistics with CIs: the seed's table), ``trend``
(pure: do the gap curves collapse against tokens / trained context, and the regression of the gap on
that and on model size), ``claim`` (both tests on the headline-region and the all-token gaps),
``crossing`` (where each line's gap crosses 0), ``verdicts`` (side by side, disagreements), ``figures``
(gap against length, twice), ``build`` (the report tree) and ``write``.
"""

from __future__ import annotations


def write_sweep_report(sweep_dir, out=None, console=None):
    """Write ``SWEEP_DIR/report.html`` (and ``SWEEP_DIR/figures/*.png``); see :func:`.write.write_sweep_report`."""
    from anomaly_probe.reports.sweep.write import write_sweep_report as _write

    return _write(sweep_dir, out=out, console=console)


__all__ = ["write_sweep_report"]
