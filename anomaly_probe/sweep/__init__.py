"""``anomaly-probe sweep``: a grid of ordinary runs under one folder, on this machine or on a Ray cluster.

``grid`` / ``gridfile`` (the grid and how it is given), ``index`` (``sweep.json``), ``models`` (one model
load for many cells), ``cellrun`` (one cell = one run folder, new or resumed), ``folderfiles`` (a run
folder as bytes, for executors without a shared filesystem), ``local`` / ``ray_executor`` (executors),
``progress`` (cells done/total with an ETA) and ``command`` (the command). The trend report across
cells is :mod:`anomaly_probe.reports.sweep`. Nothing is imported here: ``index`` loads no torch.
"""
