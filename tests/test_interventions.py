"""The attention interventions: exact where they should change nothing, and doing what they say."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_probe.engines import score_batched
from anomaly_probe.errors import UserError
from anomaly_probe.interventions import apply_intervention, validate_intervention
from anomaly_probe.attention.fused import first_partial_column as _first_partial_column
from anomaly_probe.attention.fused import key_span as _key_span
from anomaly_probe.methods import FullCache
from tests.test_probes import tiny_llama


def _nll(model, ids, intervention="none", chunk_size=96):
    with apply_intervention(intervention, model):
        return score_batched(model, ids, FullCache(), chunk_size=chunk_size).nll


@pytest.fixture(params=["neox", "llama"])
def model_ids(request, tiny, tiny_ids):
    model = tiny[0] if request.param == "neox" else tiny_llama()
    return model, tiny_ids[:300]


def test_fp32_and_fp64_attention_equal_the_model_own(model_ids):
    model, ids = model_ids
    ref = _nll(model, ids)
    for name in ("attn-fp32", "attn-fp64"):
        assert np.max(np.abs(_nll(model, ids, name) - ref)) <= 1e-5, name
    assert model.config._attn_implementation == "sdpa"  # restored


def test_topk_with_every_key_is_the_plain_attention(model_ids):
    model, ids = model_ids
    assert np.max(np.abs(_nll(model, ids, "topk-100000") - _nll(model, ids))) <= 1e-5


def test_topk_and_emulated_half_change_results_a_little(model_ids):
    model, ids = model_ids
    ref = _nll(model, ids)
    top = np.abs(_nll(model, ids, "topk-4") - ref)
    assert top[:3].max() <= 1e-5  # the first queries see <= 4 keys: nothing is dropped
    assert top[10:].max() > 1e-4  # later ones lose keys
    half = np.abs(_nll(model, ids, "attn-fp16-emulated") - ref)
    assert 0 < half.max() < 0.05


def test_chunking_does_not_change_the_intervention(model_ids):
    model, ids = model_ids
    for name in ("attn-fp16-emulated", "topk-8"):
        a, b = _nll(model, ids, name, chunk_size=300), _nll(model, ids, name, chunk_size=37)
        assert np.max(np.abs(a - b)) <= 1e-5, name


def test_key_span_keeps_every_visible_column():
    vis = torch.zeros(1, 1, 3, 10, dtype=torch.bool)
    vis[..., 0, 2] = vis[..., 2, 6] = True
    assert _key_span(vis) == (2, 7)
    assert _key_span(torch.zeros(1, 1, 2, 5, dtype=torch.bool)) == (0, 5)


def test_unknown_intervention_is_a_user_error():
    with pytest.raises(UserError):
        validate_intervention("topk-")


def test_first_partial_column():
    vis = torch.ones(1, 1, 3, 8, dtype=torch.bool)
    assert _first_partial_column(vis) == 8
    vis[..., 1, 5] = False
    assert _first_partial_column(vis) == 5
    causal = torch.ones(4, 10, dtype=torch.bool).tril(6)[None, None]  # the last 4 queries of 10 keys
    assert _first_partial_column(causal) == 7
