"""Attention plumbing, in one place: switching a model's attention, masks, GQA scores.

* :mod:`~anomaly_probe.attention.switch`: :func:`attention_implementation`, the scoped context manager
  that registers an attention function and its mask function, switches the model, verifies the switch
  and restores and unregisters on exit (the only way the package changes a model's attention).
* :mod:`~anomaly_probe.attention.masks`: :func:`visible_from_mask`, the one mask -> visible converter.
* :mod:`~anomaly_probe.attention.gqa`: :func:`gqa_scores` / :func:`gqa_weighted`, the one GQA/MQA path.
* :mod:`~anomaly_probe.attention.hf`: the only module that names transformers' private attention and
  cache API (``tests/test_attention.py`` enforces it).

Users: interventions (manual attention), engines (parallel attention, cache edits), probes (the
recording wrapper), checks (the pass-through attention). Nothing here runs at import time; transformers
is imported inside the functions that need it.
"""

from anomaly_probe.attention.gqa import gqa_scores, gqa_weighted
from anomaly_probe.attention.masks import causal_visible, visible_from_mask
from anomaly_probe.attention.switch import attention_implementation, check_switchable

__all__ = ["attention_implementation", "causal_visible", "check_switchable", "gqa_scores", "gqa_weighted",
           "visible_from_mask"]
