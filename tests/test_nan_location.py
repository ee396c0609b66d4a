"""A non-finite value at token p is located at p, in the same module, by every engine.

Recipe (issue 17): a tiny-neox copy whose input embedding row of one token is scaled by 1e38, so the
first layer's attention goes non-finite at that token. The stepwise engine, which never holds a key its
query cannot see, places it right; the chunked engines used to leak it backwards through masked keys
(``0 * NaN``): batched to its chunk's first query, parallel to a chunk edge, and later windows of
streaming caches to queries that had already evicted it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anomaly_probe.cli import main

P = 188  # the poisoned token's index in the sample
MODULE = "gpt_neox.layers.0.attention"
RARE = 0x07  # a byte the default text never holds (the bell character)


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _poison(model: torch.nn.Module, token: int) -> torch.nn.Module:
    with torch.no_grad():
        model.gpt_neox.embed_in.weight[token] *= 1e38
    return model


@pytest.fixture(scope="module")
def recipe():
    """(model, ids): the poisoned tiny-neox and 300 tokens of the default text with the token at P."""
    from anomaly_probe.models.tiny_neox import build_tiny_neox
    from anomaly_probe.text import default_text, tokenize

    model, tok = build_tiny_neox(seed=0)
    ids = tokenize(tok, default_text())[:300].clone()
    assert not bool((ids == RARE).any())
    ids[P] = RARE
    return _poison(model, RARE), ids


def _engines():
    from anomaly_probe.methods import FullCache, StreamingLLM
    from anomaly_probe.methods.h2o import H2O
    from anomaly_probe.methods.recompute import RecomputeOracle

    cases = [("stepwise", FullCache(), {}), ("batched", FullCache(), {"chunk_size": 64}),
             ("spot", FullCache(), {"chunk_size": 64, "windows": ((150, 170),)}),
             ("recompute", RecomputeOracle(128, 64), {"chunk_size": 48})]
    for mode in ("in-cache", "absolute", "naive"):
        method = StreamingLLM(sink_size=4, recent_size=28, position_mode=mode)
        cases += [("stepwise", method, {}), ("parallel", method, {"chunk_size": 64}),
                  ("parallel", method, {"chunk_size": 40, "banded": False})]
        policy = H2O(heavy_size=16, recent_size=16, position_mode=mode, compress_every=16)  # chunked: 16 per forward
        cases += [("stepwise", policy, {}), ("chunked", policy, {})]
    return cases


@pytest.mark.parametrize("engine,method,kwargs", _engines(),
                         ids=lambda x: x if isinstance(x, str) else getattr(x, "label", lambda: str(x))())
def test_every_engine_finds_the_first_nonfinite_token_and_module(recipe, engine, method, kwargs):
    from anomaly_probe.engines import ENGINES
    from anomaly_probe.nonfinite import locate_layer, nonfinite_summary

    model, ids = recipe
    fn = ENGINES.get(engine)
    nll = fn(model, ids, method, **kwargs).nll
    finding = nonfinite_summary(nll)
    assert finding is not None and finding["first_token"] == P and finding["value"] == "nan", finding
    assert np.isfinite(nll[:P]).all()
    where = locate_layer(model, lambda: fn(model, ids[:P + 2], method, **kwargs), P)
    assert where["first_layer"] == 0 and where["first_module"] == MODULE, where
    if engine != "recompute":  # every NaN where the reference has one, nowhere else (a streaming cache recovers)
        reference = ENGINES.get("stepwise")(model, ids, method).nll
        np.testing.assert_array_equal(np.isnan(nll), np.isnan(reference))
        ok = np.isfinite(reference)
        assert np.abs(nll[ok] - reference[ok]).max() < 1e-4


@pytest.mark.parametrize("scale", [1.0, 3e38])  # 3e38: finite entries whose float32 sum overflows
def test_the_guard_changes_nothing_when_every_key_is_finite(scale):
    """Finite keys and values reach the attention untouched and its output comes back as it is."""
    from anomaly_probe.attention.finite_guard import guard_nonfinite

    calls = []

    def attention(module, query, key, value, mask, **kw):
        calls.append((key, value))
        return query.transpose(1, 2), None

    q, k, v = torch.randn(1, 4, 5, 8), torch.rand(1, 2, 5, 8) * scale, torch.randn(1, 2, 5, 8)
    out, _ = guard_nonfinite(attention)(None, q, k, v, None, scaling=1.0)
    assert calls[0][0] is k and calls[0][1] is v and torch.equal(out, q.transpose(1, 2))


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_the_guard_marks_exactly_the_queries_that_see_a_bad_key(mask_kind):
    """GQA (4 query heads on 2 kv heads): a NaN value at key 3 of kv head 1 reaches query heads 2 and 3 of
    queries 3..5 only; every other output equals sdpa on the finite keys."""
    import torch.nn.functional as F

    from anomaly_probe.attention.finite_guard import guard_nonfinite

    def sdpa(module, query, key, value, mask, scaling=None, **kw):  # (B, H, Tq, D) -> (B, Tq, H, D)
        key, value = key.repeat_interleave(2, dim=1), value.repeat_interleave(2, dim=1)
        if mask is None:
            out = F.scaled_dot_product_attention(query, key, value, is_causal=True, scale=scaling)
        else:
            out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=scaling)
        return out.transpose(1, 2), None

    g = torch.Generator().manual_seed(0)
    T = 6
    q, k, v = (torch.randn(1, h, T, 8, generator=g) for h in (4, 2, 2))
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None, None]
    mask = {"none": None, "bool": causal,
            "additive": torch.zeros(1, 1, T, T).masked_fill(~causal, torch.finfo(torch.float32).min)}[mask_kind]
    clean, _ = sdpa(None, q, k, v, mask, scaling=0.3)
    bad_v = v.clone()
    bad_v[0, 1, 3, 0] = float("nan")
    leaky, _ = sdpa(None, q, k, bad_v, mask, scaling=0.3)
    assert torch.isnan(leaky[0, :3, 2:]).any()  # the leak this guards against: 0 * NaN at masked keys
    out, _ = guard_nonfinite(sdpa)(None, q, k, bad_v, mask, scaling=0.3)
    expect_nan = torch.zeros(1, T, 4, dtype=torch.bool)
    expect_nan[0, 3:, 2:] = True
    assert torch.equal(torch.isnan(out).all(dim=-1), expect_nan)
    assert not torch.isnan(out[~expect_nan]).any()
    torch.testing.assert_close(out[~expect_nan], clean[~expect_nan])


def test_the_run_locates_the_recipe_nan_at_the_token_and_module_in_every_engine(tmp_path, monkeypatch, capsys):
    """``run`` with numerics (batched + emulated fp16), sinks (parallel) and position (recompute): every
    run's finding is token P in layer 0's attention, and comparisons are cut there."""
    from anomaly_probe.models import tiny_neox
    from anomaly_probe.text import default_text

    real = tiny_neox.build_tiny_neox
    monkeypatch.setattr(tiny_neox, "build_tiny_neox", lambda seed=0: (_poison(real(seed)[0], RARE), real(seed)[1]))
    base = default_text().encode("ascii", errors="ignore")[:2 * 150]
    text = bytearray(base)
    for s in range(2):
        text[s * 150 + 120] = RARE  # token 120 of each sample
    path = tmp_path / "poisoned.txt"
    path.write_bytes(bytes(text))
    out = tmp_path / "run"
    argv = ["run", "--model", "tiny-neox", "--max-tokens", "150", "--num-samples", "2", "--recent-size", "28",
            "--text", str(path), "--hypothesis", "numerics", "sinks", "position", "--out", str(out)]
    assert main(argv) == 0
    assert "Traceback" not in capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    engines = set()
    for run in res["runs"]:
        finding = run["nonfinite"]
        assert finding["first_token"] == 120 and finding["first_module"] == MODULE, (run["key"], finding)
        assert "not reproduced" not in finding["note"]
        engines.add(run["engine"])
    assert {"batched", "parallel", "recompute"} <= engines
    (comp,) = res["comparisons"]
    assert comp["tokens_scored"] == 2 * 120
    for v in res["verdicts"]:
        assert "first at token 120" in v["message"], v["message"]
