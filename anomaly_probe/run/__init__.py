"""``anomaly-probe run``: its command, session, pipeline, judging, resume and units.

- :mod:`~anomaly_probe.run.command`: what the CLI calls (new run or ``--resume``, then the tables);
- :mod:`~anomaly_probe.run.session`: the loaded model, samples and run folder; scores units;
- :mod:`~anomaly_probe.run.pipeline`: plan, score, judge, rank, save;
- :mod:`~anomaly_probe.run.judging`: the planner, the judges' inputs and the headline, on a typed view;
- :mod:`~anomaly_probe.run.resume`: continue a saved run folder;
- :mod:`~anomaly_probe.run.units`: a unit (one scored job) and its key.

Nothing is imported here, so ``import anomaly_probe.run.command`` stays cheap until a run starts.
"""
