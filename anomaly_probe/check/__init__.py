"""``anomaly-probe check``: sanity checks of the scoring engines and of a user's own scorer.

Each check passes or fails on its own with a one-line reason (:class:`~anomaly_probe.check.result.CheckResult`);
a crash inside one check becomes an ERROR result and the others still run. Layers:

* :mod:`~anomaly_probe.check.context` loads the model and samples and memoises reference scorings;
* :mod:`~anomaly_probe.check.engine_checks` checks the reference engines against each other;
* :mod:`~anomaly_probe.check.scorer_load` / :mod:`~anomaly_probe.check.scorer_checks` run a user scorer
  (``--scorer module:function``) against the reference, and :mod:`~anomaly_probe.check.diagnose`
  names the likely bug (a pure function of per-token arrays);
* :mod:`~anomaly_probe.check.suite` runs the selected checks; :mod:`~anomaly_probe.check.output` and
  :mod:`~anomaly_probe.check.junit` print the table and write JSON / JUnit XML.

Nothing is imported or registered at import time beyond these modules' names.
"""
