"""The parallel engine against the stepwise reference: same per-token NLL, positions and key counts."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import torch

from anomaly_probe.engines import EngineFallback, pick_engine, score_batched, score_parallel, score_stepwise
from anomaly_probe.engines.parallel_attention import ATTN_NAME, AttentionPlan
from anomaly_probe.errors import UserError
from anomaly_probe.methods import FullCache, RecomputeOracle, StreamingLLM, WindowCache
from anomaly_probe.step_context import ATTENTION_RECORDER, CURRENT_STEP

TOL = 1e-4  # nats, float32

# tiny-neox has a trained context of 128: caches both below it and above it.
TINY_METHODS = [
    ("full", lambda mode: FullCache()),
    ("window40", lambda mode: WindowCache(recent_size=40, position_mode=mode)),
    ("sl4+28", lambda mode: StreamingLLM(sink_size=4, recent_size=28, position_mode=mode)),
    ("sl0+50", lambda mode: StreamingLLM(sink_size=0, recent_size=50, position_mode=mode)),
    ("sl100+100", lambda mode: StreamingLLM(sink_size=100, recent_size=100, position_mode=mode)),
]
MODES = ("in-cache", "absolute", "naive")
CASES = [("full", "absolute"), ("sl0+50", "in-cache")] + [
    (name, mode) for name in ("window40", "sl4+28", "sl100+100") for mode in MODES]
N_TINY = 500
_REFERENCE: dict = {}


def _method(name, mode):
    return dict(TINY_METHODS)[name](mode)


def _stepwise(model, ids, method):
    """Stepwise scores, computed once per method for the whole module."""
    key = (method, ids.numel())
    if key not in _REFERENCE:
        _REFERENCE[key] = score_stepwise(model, ids, method)
    return _REFERENCE[key]


def _assert_same(ref, got):
    assert got.tokens_scored == ref.tokens_scored
    assert np.max(np.abs(ref.nll - got.nll)) <= TOL
    assert np.array_equal(ref.query_pos, got.query_pos)
    assert np.array_equal(ref.n_keys, got.n_keys)
    assert np.mean(ref.correct == got.correct) > 0.99  # argmax ties may flip on rounding


@pytest.mark.parametrize("name,mode", CASES)
@pytest.mark.parametrize("chunk", [37, 256])
def test_parallel_equals_stepwise_tiny(tiny, tiny_ids, name, mode, chunk):
    """500 tokens: small windows slide many times; chunk sizes do not divide 499; sinks span chunks."""
    model, _ = tiny
    method = _method(name, mode)
    ids = tiny_ids[:N_TINY]
    ref = _stepwise(model, ids, method)
    got = score_parallel(model, ids, method, chunk_size=chunk, block_size=16)
    assert got.engine == "parallel"
    _assert_same(ref, got)


@pytest.mark.parametrize("name,mode", [("sl4+28", "in-cache"), ("sl100+100", "naive"), ("full", "absolute")])
def test_block_loop_equals_band(tiny, tiny_ids, name, mode):
    """The readable block loop and the banded fast path compute the same attention."""
    model, _ = tiny
    method = _method(name, mode)
    ids = tiny_ids[:N_TINY]
    fast = score_parallel(model, ids, method, chunk_size=150, block_size=32)
    loop = score_parallel(model, ids, method, chunk_size=150, block_size=32, banded=False)
    assert np.max(np.abs(fast.nll - loop.nll)) <= 1e-5


def test_band_is_used_where_narrow():
    q = torch.arange(1000, 1500)
    k = torch.cat([torch.arange(4), torch.arange(940, 1500)])
    assert AttentionPlan.build(StreamingLLM(4, 60).visible(q, k), 64, n_sink_cols=4).band is not None
    first = torch.arange(500)  # a causal triangle: a band would double the work
    assert AttentionPlan.build(FullCache().visible(first, first), 64).band is None


def test_chunk_larger_than_cache_and_sample(tiny, tiny_ids):
    """One forward for the whole sample: eviction happens only inside the mask."""
    model, _ = tiny
    method = StreamingLLM(sink_size=4, recent_size=28, position_mode="in-cache")
    ids = tiny_ids[:N_TINY]
    _assert_same(_stepwise(model, ids, method), score_parallel(model, ids, method, chunk_size=5000))


@pytest.mark.slow
def test_long_frames_stay_exact(tiny):
    """3000 tokens in-cache: the chunk frame keeps rotation angles small however long the sample."""
    from anomaly_probe.text import default_text, tokenize

    model, tok = tiny
    ids = tokenize(tok, default_text())[5000:8000]
    method = StreamingLLM(sink_size=4, recent_size=60, position_mode="in-cache")
    _assert_same(score_stepwise(model, ids, method), score_parallel(model, ids, method, chunk_size=300))


def test_sink_correction_matters(tiny, tiny_ids):
    """A test that could not fail is worthless: without the sink re-rotation in-cache scores differ."""
    model, _ = tiny
    method = StreamingLLM(sink_size=4, recent_size=28, position_mode="in-cache")
    ids = tiny_ids[:N_TINY]
    ref = _stepwise(model, ids, method)
    original = AttentionPlan.build.__func__

    def no_shift(cls, visible, block, n_sink_cols=0, sink_shift=None, rope=None, banded=True):
        return original(cls, visible, block, n_sink_cols, None, rope, banded)

    AttentionPlan.build = classmethod(no_shift)
    try:
        wrong = score_parallel(model, ids, method, chunk_size=64)
    finally:
        AttentionPlan.build = classmethod(original)
    assert np.max(np.abs(ref.nll - wrong.nll)) > 100 * TOL


def test_attention_implementation_restored(tiny, tiny_ids):
    model, _ = tiny
    before = model.config._attn_implementation
    score_parallel(model, tiny_ids[:50], StreamingLLM(4, 8), chunk_size=16)
    assert model.config._attn_implementation == before

    def boom(_n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        score_parallel(model, tiny_ids[:50], StreamingLLM(4, 8), chunk_size=16, progress=boom)
    assert model.config._attn_implementation == before != ATTN_NAME


def test_refuses_to_drop_a_custom_attention(tiny, tiny_ids):
    """An intervention's attention would be replaced silently: the engine refuses instead."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    model, _ = tiny
    AttentionInterface.register("test_custom", AttentionInterface._global_mapping["sdpa"])
    AttentionMaskInterface.register("test_custom", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    previous = model.config._attn_implementation
    model.set_attn_implementation("test_custom")
    try:
        with pytest.raises(UserError, match="would be dropped"):
            score_parallel(model, tiny_ids[:50], StreamingLLM(4, 8))
        assert model.config._attn_implementation == "test_custom"
    finally:
        model.set_attn_implementation(previous)


class _Observer:
    def __init__(self):
        self.calls = []

    def after_forward(self, info, cache, seconds):
        self.calls.append((info, cache.get_seq_length(), seconds))


@pytest.mark.parametrize("mode", MODES)
def test_step_info_and_observer(tiny, tiny_ids, mode):
    model, _ = tiny
    method = StreamingLLM(sink_size=4, recent_size=28, position_mode=mode)
    seen = []

    def recorder(module, logits, visible):
        seen.append((module.layer_idx, CURRENT_STEP.get(), logits.shape, visible.shape))

    obs = _Observer()
    token = ATTENTION_RECORDER.set(recorder)
    try:
        got = score_parallel(model, tiny_ids[:200], method, chunk_size=50, block_size=16, observer=obs)
    finally:
        ATTENTION_RECORDER.reset(token)
    ref = _stepwise(model, tiny_ids[:N_TINY], method)  # its first 199 entries are the 200-token run
    assert np.max(np.abs(ref.nll[:199] - got.nll)) <= TOL  # recording changes nothing
    assert np.array_equal(ref.query_pos[:199], got.query_pos) and np.array_equal(ref.n_keys[:199], got.n_keys)
    assert len(obs.calls) == 4
    for i, (info, kv_len, seconds) in enumerate(obs.calls):
        lo = 50 * i
        assert torch.equal(info.q_abs, torch.arange(lo, min(lo + 50, 199)))
        assert info.visible.shape == (info.q_abs.numel(), info.k_abs.numel())
        assert torch.equal(info.visible, method.visible(info.q_abs, info.k_abs))
        assert torch.equal(info.q_pos, method.query_position(info.q_abs))
        assert (info.k_pos is None) == (mode == "in-cache")
        assert kv_len == min(info.q_abs[-1].item() + 1, 32) and seconds > 0
    # Every layer, every query row exactly once per forward, full key width, GQA heads.
    heads = model.config.num_attention_heads
    for info, _, _ in obs.calls:
        rows = [s for s in seen if s[1] is info]
        assert sorted({s[0] for s in rows}) == [0, 1]
        assert sum(s[2][2] for s in rows) == 2 * info.q_abs.numel()
        assert all(s[2][1] == heads and s[2][3] == info.k_abs.numel() == s[3][-1] for s in rows)


def test_recorded_logits_are_the_stepwise_logits(tiny, tiny_ids):
    """The recorder sees, for every visible key, the scaled logit the stepwise engine computes,
    sink columns included (query at its in-cache position)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    model, _ = tiny
    ids = tiny_ids[:120]
    method = StreamingLLM(sink_size=4, recent_size=20, position_mode="in-cache")
    ref_rows = {}  # (layer, t) -> logits over the stepwise cache (H, n)

    def eager_recording(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kw):
        t = CURRENT_STEP.get().q_abs[0].item()
        ref_rows[(module.layer_idx, t)] = ((query @ key.transpose(-1, -2)) * scaling)[0, :, -1]
        out = torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=scaling)
        return out.transpose(1, 2).contiguous(), None

    AttentionInterface.register("test_eager_recording", eager_recording)
    AttentionMaskInterface.register("test_eager_recording", ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])
    previous = model.config._attn_implementation
    model.set_attn_implementation("test_eager_recording")
    try:
        score_stepwise(model, ids, method)
    finally:
        model.set_attn_implementation(previous)

    got_rows, rows_done = {}, {}

    def recorder(module, logits, visible):
        info = CURRENT_STEP.get()
        done = rows_done.get((id(info), module.layer_idx), 0)  # calls come in query-row order
        for r in range(logits.shape[2]):
            t = info.q_abs[done + r].item()
            got_rows[(module.layer_idx, t)] = logits[0, :, r][:, visible[0, 0, r]]
        rows_done[(id(info), module.layer_idx)] = done + logits.shape[2]

    token = ATTENTION_RECORDER.set(recorder)
    try:
        score_parallel(model, ids, method, chunk_size=30, block_size=8)
    finally:
        ATTENTION_RECORDER.reset(token)
    assert got_rows.keys() == ref_rows.keys()
    worst = max((got_rows[k] - ref_rows[k]).abs().max().item() for k in ref_rows)
    assert worst <= 1e-4


def test_plan_blocks_are_banded():
    """No block multiplies more than sinks + recent + block columns (no T x T map)."""
    method = StreamingLLM(sink_size=4, recent_size=60)
    q = torch.arange(1000, 1500)
    k = torch.cat([torch.arange(4), torch.arange(940, 1500)])
    plan = AttentionPlan.build(method.visible(q, k), block=64, n_sink_cols=4)
    assert plan.blocks[0][:2] == (0, 64) and plan.blocks[-1][1] == 500
    for lo, hi, c0, c1 in plan.blocks:
        assert c0 >= 4 and c1 - c0 <= 60 + (hi - lo)
        assert torch.equal(k[c0:c1], torch.arange(q[lo] - 60, q[hi - 1] + 1))


# ------------------------------------------------------------------------------------------ engine choice
class _Custom(StreamingLLM):
    def visible(self, q, k):
        return super().visible(q, k)


def test_pick_engine():
    sl = StreamingLLM(4, 28)
    assert pick_engine("auto", FullCache()) == "batched"
    for mode in MODES:
        assert pick_engine("auto", dataclasses.replace(sl, position_mode=mode)) == "parallel"
        assert pick_engine("auto", WindowCache(recent_size=32, position_mode=mode)) == "parallel"
    assert pick_engine("parallel", FullCache()) == "parallel"
    assert pick_engine("auto", RecomputeOracle(128)) == "recompute"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pick_engine("auto", _Custom(4, 28)) == "stepwise"
    assert any(issubclass(w.category, EngineFallback) and "overrides visible" in str(w.message) for w in caught)
    for engine, method in [("parallel", _Custom(4, 28)), ("batched", sl), ("recompute", sl),
                           ("parallel", RecomputeOracle(128)), ("stepwise", RecomputeOracle(128)), ("fast", sl)]:
        with pytest.raises(UserError):
            pick_engine(engine, method)
    with pytest.raises(UserError):
        score_parallel(None, torch.arange(4), _Custom(4, 28))


# ------------------------------------------------------------------------------------------ real model
@pytest.fixture(scope="module")
def smol_sample(smol_ids):
    return smol_ids[:480]


@pytest.mark.slow
@pytest.mark.parametrize("method", [
    StreamingLLM(sink_size=4, recent_size=44, position_mode="in-cache"),
    StreamingLLM(sink_size=4, recent_size=44, position_mode="absolute"),
    StreamingLLM(sink_size=4, recent_size=44, position_mode="naive"),
], ids=lambda m: m.label())
def test_parallel_equals_stepwise_smollm2(smollm2, smol_sample, method):
    """480 tokens, cache 48 (GQA 9/3 heads): the window slides ~9 times; chunk 100 does not divide 479."""
    ref = score_stepwise(smollm2.model, smol_sample, method)
    _assert_same(ref, score_parallel(smollm2.model, smol_sample, method, chunk_size=100, block_size=32))


@pytest.mark.slow
def test_window_smollm2_within_the_reference_noise(smollm2, smol_sample):
    """Without sinks SmolLM2 is ill-conditioned: the stepwise engine disagrees with *itself* by ~3e-4
    nats between in-cache and absolute positions, which are mathematically identical for a window (only
    distances matter). The parallel engine must stay within that floor (and 1e-4 where the floor is lower)."""
    model = smollm2.model
    in_cache = WindowCache(recent_size=40, position_mode="in-cache")
    ref = score_stepwise(model, smol_sample, in_cache)
    floor = np.max(np.abs(ref.nll - score_stepwise(model, smol_sample, dataclasses.replace(
        in_cache, position_mode="absolute")).nll))
    got = score_parallel(model, smol_sample, in_cache, chunk_size=100, block_size=32)
    assert np.max(np.abs(ref.nll - got.nll)) <= max(TOL, 2 * floor)
    assert np.array_equal(ref.query_pos, got.query_pos) and np.array_equal(ref.n_keys, got.n_keys)


@pytest.mark.slow
def test_parallel_full_equals_batched_smollm2(smollm2, smol_ids):
    ids = smol_ids[:1000]
    ref = score_batched(smollm2.model, ids, FullCache(), chunk_size=1000)
    got = score_parallel(smollm2.model, ids, FullCache(), chunk_size=300)
    assert np.max(np.abs(ref.nll - got.nll)) <= TOL
