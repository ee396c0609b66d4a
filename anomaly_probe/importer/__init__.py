"""``anomaly-probe import``: diagnose per-token logs written by other evaluation scripts, without a model.

Layers: :mod:`~anomaly_probe.importer.columns` (which column is what), :mod:`~anomaly_probe.importer.logs`
(read one CSV/JSONL file), :mod:`~anomaly_probe.importer.pair` (baseline and method on the same tokens),
:mod:`~anomaly_probe.importer.context` (the trained context), the judges :mod:`position`, :mod:`memory`
and :mod:`power` (pure functions of the arrays), :mod:`verdicts` (all hypotheses and the headline) and
:mod:`write` (the run folder: results.json, tokens/*.npz, traces/*.npz). Nothing here imports torch.
"""
