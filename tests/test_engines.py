"""Stepwise (the reference) against batched and against plain reference implementations."""

import numpy as np
import pytest
import torch

from anomaly_probe.engines import score_batched, score_stepwise
from anomaly_probe.methods import FullCache, StreamingLLM, WindowCache


def test_full_stepwise_equals_batched_tiny(tiny, tiny_ids):
    model, _ = tiny
    a = score_stepwise(model, tiny_ids[:400], FullCache())
    b = score_batched(model, tiny_ids[:400], FullCache(), chunk_size=97)
    assert a.tokens_scored == b.tokens_scored == 399
    assert np.max(np.abs(a.nll - b.nll)) <= 1e-4
    assert np.array_equal(a.query_pos, b.query_pos)


@pytest.mark.parametrize("mode", ["in-cache", "absolute", "naive"])
def test_streaming_with_room_for_everything_equals_full(tiny, tiny_ids, mode):
    model, _ = tiny
    ids = tiny_ids[:200]
    full = score_stepwise(model, ids, FullCache())
    big = score_stepwise(model, ids, StreamingLLM(sink_size=4, recent_size=196, position_mode=mode))
    assert np.max(np.abs(full.nll - big.nll)) <= 1e-6


def test_compression_changes_scores(tiny, tiny_ids):
    """A test that could not fail is worthless: the tiny model does react to eviction and positions."""
    model, _ = tiny
    ids = tiny_ids[:300]
    full = score_stepwise(model, ids, FullCache())
    runs = {m: score_stepwise(model, ids, StreamingLLM(4, 28, m)).nll for m in ("in-cache", "absolute", "naive")}
    assert np.max(np.abs(full.nll - runs["absolute"])) > 1e-3
    assert np.max(np.abs(runs["in-cache"] - runs["absolute"])) > 1e-4
    assert np.max(np.abs(runs["in-cache"] - runs["naive"])) > 1e-4


def _reference_in_cache(model, ids, sink, recent):
    """StreamingLLM's own recipe, written plainly: the cache stores *un-rotated* keys, and every step
    rotates the query and all keys with HF's rotary module at in-cache positions 0..n-1."""
    from transformers import AttentionInterface, DynamicCache
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.models.gpt_neox import modeling_gpt_neox as neox

    original_apply = neox.apply_rotary_pos_emb
    rotary = model.gpt_neox.rotary_emb

    def attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        n = key.shape[-2]
        cos_k, sin_k = rotary(key, torch.arange(n)[None])
        _, k_rot = original_apply(key, key, cos_k, sin_k)
        cos_q, sin_q = rotary(query, torch.tensor([[n - 1]]))
        q_rot, _ = original_apply(query, query, cos_q, sin_q)
        out = torch.nn.functional.scaled_dot_product_attention(q_rot, k_rot, value, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("reference_in_cache", attention)
    AttentionMaskInterface.register("reference_in_cache", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    previous = model.config._attn_implementation
    neox.apply_rotary_pos_emb = lambda q, k, cos, sin, unsqueeze_dim=1: (q, k)
    model.set_attn_implementation("reference_in_cache")
    nll = []
    try:
        cache = DynamicCache(config=model.config)
        with torch.no_grad():
            for t in range(ids.numel() - 1):
                out = model(input_ids=ids[t:t + 1][None], cache=cache, use_cache=True)
                logp = torch.log_softmax(out.logits[0, -1].float(), -1)
                nll.append(-logp[ids[t + 1]].item())
                n = cache.get_seq_length()
                if n > sink + recent:
                    keep = torch.cat([torch.arange(sink), torch.arange(n - recent, n)])
                    for layer in cache.layers:
                        layer.keys, layer.values = layer.keys[..., keep, :], layer.values[..., keep, :]
    finally:
        neox.apply_rotary_pos_emb = original_apply
        model.set_attn_implementation(previous)
    return np.array(nll)


def test_in_cache_matches_plain_reference(tiny, tiny_ids):
    model, _ = tiny
    ids = tiny_ids[:400]
    ours = score_stepwise(model, ids, StreamingLLM(sink_size=4, recent_size=40, position_mode="in-cache"))
    ref = _reference_in_cache(model, ids, 4, 40)
    assert np.max(np.abs(ours.nll - ref)) <= 1e-5
    assert ours.query_pos.max() == 44


def test_naive_reproduces_transformers_position_derivation(tiny, tiny_ids):
    """Naive mode passes no positions; HF derives them from the cache length. The same run with our
    predicted positions passed explicitly (and no re-rotation) must be identical."""
    from transformers import DynamicCache

    model, _ = tiny
    ids = tiny_ids[:250]
    method = StreamingLLM(sink_size=2, recent_size=30, position_mode="naive")
    naive = score_stepwise(model, ids, method)
    cache, nll = DynamicCache(config=model.config), []
    with torch.no_grad():
        for t in range(ids.numel() - 1):
            pos = method.query_position(torch.tensor(t)).item()
            out = model(input_ids=ids[t:t + 1][None], cache=cache, position_ids=torch.tensor([[pos]]), use_cache=True)
            nll.append(-torch.log_softmax(out.logits[0, -1], -1)[ids[t + 1]].item())
            keep = method.keep(cache.get_seq_length())
            if keep is not None:
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[..., keep, :], layer.values[..., keep, :]
    assert np.max(np.abs(naive.nll - np.array(nll))) <= 1e-6
    assert naive.query_pos.tolist()[-1] == 32


def test_window_evicts_everything_old(tiny, tiny_ids):
    model, _ = tiny
    s = score_stepwise(model, tiny_ids[:120], WindowCache(recent_size=16))
    assert s.n_keys.max() == 17  # 16 cached + the query itself


@pytest.mark.slow
def test_full_stepwise_equals_batched_smollm2(smollm2, smol_ids):
    ids = smol_ids[:300]
    a = score_stepwise(smollm2.model, ids, FullCache())
    b = score_batched(smollm2.model, ids, FullCache(), chunk_size=128)
    assert np.max(np.abs(a.nll - b.nll)) <= 1e-4
    assert 1.0 < np.exp(b.nll.mean()) < 200  # a real LM on English text
