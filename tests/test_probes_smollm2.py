"""Probes on the real model (slow tier): identical logits and finite statistics on SmolLM2-135M."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_probe.engines import score_batched, score_stepwise
from anomaly_probe.methods import FullCache, StreamingLLM
from anomaly_probe.probes import ATTN_METRICS, ProbeSession
from anomaly_probe.step_context import CURRENT_STEP, StepInfo

pytestmark = pytest.mark.slow

ALL = ("attention", "cache", "process")


def test_smollm2_logits_unchanged_with_probes(smollm2, smol_ids):
    """A 40-query forward: the probe runs the fused float32 attention in place of sdpa (same logits up to
    float rounding; the NLL within the check suite's 1e-4 nats)."""
    model = smollm2.model
    ids = smol_ids[:40]
    info = StepInfo(q_abs=torch.arange(40), k_abs=torch.arange(40), q_pos=torch.arange(40), k_pos=torch.arange(40),
                    sink_size=4)
    token = CURRENT_STEP.set(info)
    try:
        with torch.no_grad():
            want = model(input_ids=ids[None]).logits
            with ProbeSession(model, ALL) as probes:
                got = model(input_ids=ids[None]).logits
                probes.after_forward(info, None, 0.0)
    finally:
        CURRENT_STEP.reset(token)
    assert torch.allclose(want, got, atol=1e-3)
    nll = [torch.nn.functional.cross_entropy(x[0, :-1], ids[1:], reduction="none") for x in (want, got)]
    assert (nll[0] - nll[1]).abs().max() <= 1e-4
    assert model.config._attn_implementation == "sdpa"
    trace = probes.trace()
    assert trace["layers.29.attn.entropy"].shape == (40, model.config.num_attention_heads)


def test_smollm2_stepwise_nll_unchanged_and_stats_finite(smollm2, smol_ids):
    model = smollm2.model
    ids, method = smol_ids[:48], StreamingLLM(4, 20, "absolute")
    plain = score_stepwise(model, ids, method)
    with ProbeSession(model, ALL) as probes:
        probed = score_stepwise(model, ids, method, observer=probes)
    # the probe attends from its own scores: the same NLL within float32 rounding, the same argmax
    assert np.max(np.abs(plain.nll - probed.nll)) <= 1e-4 and np.array_equal(plain.correct, probed.correct)
    trace = probes.trace()
    for L in range(model.config.num_hidden_layers):
        for name in ATTN_METRICS:
            col = trace[f"layers.{L}.attn.{name}"][1:]  # step 0 has one key: entropy_norm is NaN there
            assert np.isfinite(col).all(), (L, name)
        assert (trace[f"layers.{L}.attn.sink_mass"][4:] > 0).all()
    assert (trace["cache.kv_len"][-1] == 24).all()


def test_smollm2_batched_nll_unchanged_with_probes(smollm2, smol_ids):
    model = smollm2.model
    ids = smol_ids[:96]
    plain = score_batched(model, ids, FullCache(), chunk_size=40)
    with ProbeSession(model, ALL) as probes:
        probed = score_batched(model, ids, FullCache(), chunk_size=40, observer=probes)
    assert np.max(np.abs(plain.nll - probed.nll)) <= 1e-4  # the fused float32 attention replaced sdpa
    assert probes.trace()["step"].tolist() == list(range(95))
