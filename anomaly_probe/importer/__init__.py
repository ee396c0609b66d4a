"""``anomaly-probe import``: diagnose per-token logs written by other evaluation scripts, without a model.

Layers: :mod:`~anomaly_probe.importer.formats` (which layout a file has; one reader per layout:
:mod:`attention_sinks`, :mod:`streaming_llm`, :mod:`ours` and the generic tables of
:mod:`~anomaly_probe.importer.logs` with :mod:`~anomaly_probe.importer.columns`; every reader streams its
file through :mod:`~anomaly_probe.importer.rows` and checks each value's plausibility in ``logs.assemble``),
:mod:`~anomaly_probe.importer.pair` (baseline and method aligned on the tokens both score),
:mod:`~anomaly_probe.importer.context` (the trained context), the judges :mod:`position`, :mod:`memory`
and :mod:`power` (pure functions of the arrays), :mod:`verdicts` (all hypotheses and the headline) and
:mod:`write` (the run folder: results.json, tokens/*.npz, traces/*.npz). Nothing here imports torch.
"""
