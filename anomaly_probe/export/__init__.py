"""``anomaly-probe export RUN_DIR``: a run folder's per-token arrays as shareable, re-importable CSV logs.

:mod:`~anomaly_probe.export.command` holds the subcommand; the file layout (and its reader) lives in
:mod:`anomaly_probe.importer.ours`. Nothing here imports torch.
"""
