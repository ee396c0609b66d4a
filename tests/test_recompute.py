"""The recompute oracle (strided sliding-window recomputation) and its engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_probe.engines import score_batched, score_recompute
from anomaly_probe.engines.recompute import windows
from anomaly_probe.errors import UserError
from anomaly_probe.methods import FullCache, RecomputeOracle, StreamingLLM, build_method

TOL = 1e-4


def _hand_loop(model, ids, method):
    """One forward per query over exactly the keys the oracle promises it, positions from 0."""
    nll = []
    with torch.no_grad():
        for t in range(ids.numel() - 1):
            start = int(method.window_start(torch.tensor(t)))
            logits = model(input_ids=ids[start:t + 1][None], use_cache=False).logits[0, -1]
            nll.append(-torch.log_softmax(logits.float(), -1)[ids[t + 1]].item())
    return np.array(nll)


def test_method_contract():
    m = RecomputeOracle(128)
    assert (m.window, m.stride, m.capacity, m.name) == (128, 64, 128, "recompute")
    assert RecomputeOracle(128, 10) == RecomputeOracle(window=128, stride=10)
    d = m.describe()
    assert d["method"] == "recompute" and d["window"] == 128 and d["stride"] == 64 and d["capacity"] == 128
    assert build_method("recompute", window=64, stride=16) == RecomputeOracle(64, 16)
    for bad in (lambda: RecomputeOracle(0), lambda: RecomputeOracle(8, 9), lambda: RecomputeOracle(8, 0),
                lambda: build_method("recompute")):
        with pytest.raises(UserError):
            bad()


def test_windows_cover_every_query_once():
    for n_q, w, s in [(10, 20, 10), (100, 32, 32), (100, 32, 1), (1000, 128, 48), (129, 128, 64)]:
        m = RecomputeOracle(w, s)
        scored = []
        for begin, end, first in windows(n_q, w, s):
            assert 0 <= begin <= first < end <= n_q and end - begin <= w
            t = torch.arange(first, end)
            assert torch.all(m.window_start(t) == begin)  # the method's rule is the engine's windows
            scored.extend(range(first, end))
        assert scored == list(range(n_q))


def test_visible_and_positions_agree():
    m = RecomputeOracle(32, 12)
    q, k = torch.arange(200), torch.arange(200)
    vis = m.visible(q, k)
    assert torch.equal(vis.sum(1), m.query_position(q) + 1)
    assert vis.sum(1).max() == 32 and vis.sum(1)[32:].min() == 32 - 12 + 1
    assert torch.all(m.key_position(q[:, None], k[None, :])[vis] >= 0)


def test_window_covering_the_sample_equals_full_cache(tiny, tiny_ids):
    model, _ = tiny
    ids = tiny_ids[:300]
    full = score_batched(model, ids, FullCache(), chunk_size=300)
    got = score_recompute(model, ids, RecomputeOracle(400))
    assert got.engine == "recompute"
    assert np.max(np.abs(full.nll - got.nll)) <= TOL
    assert np.array_equal(full.query_pos, got.query_pos) and np.array_equal(full.n_keys, got.n_keys)


@pytest.mark.parametrize("stride,chunk", [(1, 1024), (12, 1024), (12, 10)])
def test_equals_hand_written_loop(tiny, tiny_ids, stride, chunk):
    """Stride 1: every query sees the previous 32 tokens at positions 0..31. Stride 12: the HF recipe.
    Chunk 10: each window goes through the model in pieces (prefix chunks score nothing)."""
    model, _ = tiny
    ids = tiny_ids[:150]
    method = RecomputeOracle(32, stride)
    got = score_recompute(model, ids, method, chunk_size=chunk)
    assert np.max(np.abs(_hand_loop(model, ids, method) - got.nll)) <= TOL
    assert np.array_equal(got.query_pos, method.query_position(torch.arange(149)).numpy())
    assert got.query_pos.max() == 31


def test_refuses_other_methods(tiny, tiny_ids):
    with pytest.raises(UserError):
        score_recompute(tiny[0], tiny_ids[:20], StreamingLLM(4, 8))
    with pytest.raises(UserError):
        RecomputeOracle(16).keep(20)


@pytest.mark.slow
def test_recompute_smollm2(smollm2, smol_ids):
    """SmolLM2, window 256 / stride 128 over 700 tokens, against one plain forward per window."""
    ids = smol_ids[:700]
    method = RecomputeOracle(256, 128)
    got = score_recompute(smollm2.model, ids, method, chunk_size=100)
    ref = np.empty(699)
    with torch.no_grad():
        for begin, end, first in windows(699, 256, 128):
            logits = smollm2.model(input_ids=ids[begin:end][None]).logits[0, first - begin:]
            ref[first:end] = -torch.log_softmax(logits.float(), -1).gather(-1, ids[first + 1:end + 1, None])[:, 0]
    assert np.max(np.abs(ref - got.nll)) <= TOL
