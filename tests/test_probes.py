"""Probes (fast tier): statistics with a known truth, hooks that leave nothing behind, exact logits.

The statistics are checked three ways: hand-made logits with a known answer, a readable per-row
reference implementation on random logits (NaN, inf, masks, wide spreads), and attention weights
returned by a real eager attention. The hooks are checked for identical logits and a clean exit.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

from anomaly_probe.engines import score_batched, score_parallel, score_stepwise
from anomaly_probe.errors import UserError
from anomaly_probe.methods import FullCache, StreamingLLM
from anomaly_probe.probes import ATTN_METRICS, ProbeSession, attention_stats, load_trace, parse_probes
from anomaly_probe.probes.attention_hook import NAME
from anomaly_probe.step_context import ATTENTION_RECORDER, CURRENT_STEP, StepInfo

ALL = ("attention", "cache", "process")


# ---------------------------------------------------------------------------- helpers
def step(T: int, sink: int = 0, n_queries: int = 1) -> StepInfo:
    """The last ``n_queries`` of ``T`` tokens attending to all ``T`` (absolute positions)."""
    q = torch.arange(T - n_queries, T)
    return StepInfo(q_abs=q, k_abs=torch.arange(T), q_pos=q, k_pos=torch.arange(T), sink_size=sink)


def stats_of(logits, visible=None, info=None, sink=0):
    """attention_stats of (H, Tq, Tk) logits as float64 numpy, shape (H, Tq) per metric."""
    H, Tq, Tk = logits.shape
    info = info or step(Tk, sink, Tq)
    out = attention_stats(logits[None], visible, info)
    return {k: v[0].double().numpy() for k, v in out.items()}


def reference(logits: torch.Tensor, visible: torch.Tensor, info: StepInfo,
              recent: int | None = None) -> dict[str, np.ndarray]:
    """Readable per-row definitions (the manual path), for (H, Tq, Tk) logits and a (Tq, Tk) mask."""
    H, Tq, _ = logits.shape
    out = {m: np.zeros((H, Tq)) for m in ATTN_METRICS}
    for h in range(H):
        for i in range(Tq):
            v = visible[i]
            x = logits[h, i][v]  # visible logits, float32
            k = info.k_abs[v]
            finite = torch.isfinite(x)
            out["nonfinite_count"][h, i] = int((~finite).sum())
            out["fp16_overflow_count"][h, i] = int((x.abs() > 65504).sum())
            out["logit_max"][h, i] = x[finite].max() if finite.any() else -math.inf
            out["logit_min"][h, i] = x[finite].min() if finite.any() else math.inf
            e = torch.exp(x - x[finite].max()) if finite.any() else x * math.nan
            p = e / e.sum()  # float32 weights
            pd = p.double()
            ent = float(-(pd[pd > 0] * pd[pd > 0].log()).sum()) if not torch.isnan(p).any() else math.nan
            out["entropy"][h, i] = ent
            out["entropy_norm"][h, i] = ent / math.log(len(x)) if len(x) > 1 else math.nan
            for kind, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
                lost = (p > 0) & (p.to(dtype) == 0)
                out[f"{kind}_underflow_count"][h, i] = int(lost.sum())
                out[f"{kind}_underflow_mass"][h, i] = float(pd[lost].sum())
            poisoned = math.nan if torch.isnan(p).any() else 0.0  # NaN weights: NaN weight statistics
            out["sink_mass"][h, i] = float(pd[k < info.sink_size].sum()) + poisoned
            out["mean_distance"][h, i] = float((pd * (info.q_abs[i] - k).double()).sum()) + poisoned
            near = (info.q_abs[i] - k) < recent if recent is not None else None
            out["recent_mass"][h, i] = math.nan if near is None else float(pd[near].sum()) + poisoned
    return out


def run_probed(model, ids, method, engine=score_stepwise, names=ALL, **kw):
    with ProbeSession(model, names) as probes:
        scores = engine(model, ids, method, observer=probes, **kw)
    return scores, probes.trace()


def registered_names() -> set[str]:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    return {n for n in (*AttentionInterface._global_mapping, *AttentionMaskInterface._global_mapping)
            if n.startswith(NAME)}


def tiny_llama(attn: str = "sdpa"):
    """A seeded random Llama with GQA (4 query heads share 2 KV heads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    config._attn_implementation = attn
    torch.manual_seed(1)
    model = LlamaForCausalLM(config).eval().requires_grad_(False)
    for p in model.parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, std=0.08)
    return model


# ---------------------------------------------------------------------------- --probes
def test_parse_probes():
    assert parse_probes("all") == ALL
    assert parse_probes("none") == () == parse_probes("")
    assert parse_probes("auto") == ("cache", "process")
    assert parse_probes("process,attention") == ("attention", "process")
    for bad, words in (("atention", "Did you mean 'attention'"), ("all,cache", "cannot be combined"),
                       ("memory", "Available: auto, all, none, attention, cache, process")):
        with pytest.raises(UserError, match=words) as exc:
            parse_probes(bad)
        assert "\n" not in str(exc.value)


def test_bad_probes_flag_is_one_line_exit_2(capsys, tmp_path):
    from anomaly_probe.cli import main

    code = main(["run", "--hypothesis", "none", "--model", "tiny-neox", "--probes", "attn", "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and "Unknown probe 'attn'" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------- known truths
def test_uniform_attention_has_entropy_log_n():
    s = stats_of(torch.zeros(3, 1, 10))
    assert np.allclose(s["entropy"], math.log(10), atol=1e-6)
    assert np.allclose(s["entropy_norm"], 1.0, atol=1e-6)
    vis = torch.zeros(1, 10, dtype=torch.bool)
    vis[0, [1, 4, 7, 9]] = True  # four visible keys
    s = stats_of(torch.randn(3, 1, 10) * 0 + 2.5, vis)
    assert np.allclose(s["entropy"], math.log(4), atol=1e-6)
    assert np.allclose(s["mean_distance"], np.mean([9 - 1, 9 - 4, 9 - 7, 0]), atol=1e-5)


def test_single_key_entropy_zero_and_norm_nan():
    s = stats_of(torch.tensor([[[3.0]]]))
    assert s["entropy"][0, 0] == 0 and math.isnan(s["entropy_norm"][0, 0])


def test_fp16_underflow_count_and_mass():
    # weights e^-20 / Z ~ 2e-9 vanish in float16 (smallest subnormal 6e-8) but not in float32;
    # e^-16 / Z ~ 1.1e-7 survives as a float16 subnormal.
    x = torch.tensor([0.0, -20.0, -20.0, -16.0, -21.0])[None, None]
    p = torch.softmax(x.double(), -1)[0, 0]
    s = stats_of(x)
    assert s["fp16_underflow_count"][0, 0] == 3
    assert s["fp16_underflow_mass"][0, 0] == pytest.approx(float(p[[1, 2, 4]].sum()), rel=1e-5)
    assert s["bf16_underflow_count"][0, 0] == 0 and s["bf16_underflow_mass"][0, 0] == 0
    assert s["fp16_overflow_count"][0, 0] == 0 and s["nonfinite_count"][0, 0] == 0
    assert s["logit_max"][0, 0] == 0 and s["logit_min"][0, 0] == -21


def test_bf16_underflow_needs_fp32_subnormals():
    # e^-95 ~ 5.5e-42: a float32 subnormal, below bfloat16's smallest subnormal (9.2e-41) / 2.
    x = torch.tensor([0.0, -95.0, -80.0])[None, None]
    s = stats_of(x)
    assert s["bf16_underflow_count"][0, 0] == 1
    assert s["bf16_underflow_mass"][0, 0] == pytest.approx(math.exp(-95), rel=1e-2)
    assert s["fp16_underflow_count"][0, 0] == 2


def test_overflow_nonfinite_and_masking():
    x = torch.tensor([0.0, 70000.0, math.nan, -math.inf, -70000.0, 1.0])[None, None]
    s = stats_of(x)
    assert s["nonfinite_count"][0, 0] == 2
    assert s["fp16_overflow_count"][0, 0] == 3  # 70000, -inf, -70000 (NaN compares false)
    assert s["logit_max"][0, 0] == 70000 and s["logit_min"][0, 0] == -70000
    assert math.isnan(s["entropy"][0, 0])  # a visible NaN poisons the weights, as in the model
    vis = torch.tensor([[True, True, False, True, False, True]])  # hide the NaN and -70000
    s = stats_of(x, vis)
    assert s["nonfinite_count"][0, 0] == 1 and s["fp16_overflow_count"][0, 0] == 2
    assert s["entropy"][0, 0] == 0  # all mass on the 70000 logit
    assert s["mean_distance"][0, 0] == pytest.approx(4.0)  # query 5, key 1


def test_sink_mass_and_mean_distance():
    x = torch.zeros(2, 1, 8)
    x[0, 0, :2] = 50.0  # head 0 attends (almost) only to tokens 0 and 1
    s = stats_of(x, sink=2)
    assert s["sink_mass"][0, 0] == pytest.approx(1.0, abs=1e-6)
    assert s["sink_mass"][1, 0] == pytest.approx(2 / 8, abs=1e-6)
    assert s["mean_distance"][0, 0] == pytest.approx(6.5, abs=1e-4)  # query 7: distances 7 and 6
    assert s["mean_distance"][1, 0] == pytest.approx(3.5, abs=1e-5)


def test_fused_stats_match_the_readable_reference():
    g = torch.Generator().manual_seed(0)
    H, Tq, Tk = 3, 5, 40
    logits = torch.randn(H, Tq, Tk, generator=g) * torch.tensor([1.0, 8.0, 30.0])[:, None, None]
    logits[0, 1, 3], logits[1, 2, 5], logits[2, 3, 7] = math.nan, math.inf, -math.inf
    logits[0, 4, 9], logits[2, 0, 0] = 1e5, -1e5
    logits[1, 0] -= 100 * torch.arange(Tk) / Tk  # a ramp down to e^-100: bf16 underflow territory
    info = StepInfo(q_abs=torch.arange(60, 65), k_abs=torch.cat([torch.arange(4), torch.arange(29, 65)]),
                    q_pos=torch.arange(60, 65), k_pos=None, sink_size=4)
    visible = (info.k_abs[None] <= info.q_abs[:, None]) & (torch.rand(Tq, Tk, generator=g) > 0.2)
    for recent in (None, 10):
        got = {k: v[0].double().numpy() for k, v in attention_stats(logits[None], visible, info,
                                                                    recent=recent).items()}
        want = reference(logits, visible, info, recent)
        for name in ATTN_METRICS:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6, err_msg=name)
    assert want["bf16_underflow_count"].max() > 0 and want["fp16_underflow_count"].max() > 0
    assert 0 < np.nanmax(want["recent_mass"]) <= 1 + 1e-6


# ---------------------------------------------------------------------------- hooks
def test_probes_do_not_change_logits(tiny, tiny_ids):
    model, _ = tiny
    ids = tiny_ids[:60]
    plain = score_stepwise(model, ids, StreamingLLM(4, 28, "in-cache"))
    probed, trace = run_probed(model, ids, StreamingLLM(4, 28, "in-cache"))
    # single-query forwards: the probe attends from its own scores (one score matmul per layer)
    assert np.max(np.abs(plain.nll - probed.nll)) <= 1e-4 and np.array_equal(plain.correct, probed.correct)
    plain = score_batched(model, ids, FullCache(), chunk_size=50)
    probed, _ = run_probed(model, ids, FullCache(), score_batched, chunk_size=50)
    assert np.max(np.abs(plain.nll - probed.nll)) <= 1e-4  # multi-query forwards: the fused kernel's attention
    # and the raw logits of one forward
    info = step(ids.numel(), n_queries=ids.numel())
    token = CURRENT_STEP.set(info)
    try:
        want = model(input_ids=ids[None]).logits
        with ProbeSession(model, ALL) as probes:
            got = model(input_ids=ids[None]).logits
            probes.after_forward(info, None, 0.0)
    finally:
        CURRENT_STEP.reset(token)
    assert torch.allclose(want, got, atol=1e-5)
    assert np.isfinite(probes.trace()["layers.1.attn.entropy"][1:]).all()


def test_stepwise_probe_scores_each_layer_once(tiny, tiny_ids, monkeypatch):
    """With the attention probe, a float32 single-query forward never calls sdpa: the probe's scores
    serve the statistics and the attention output."""
    model, _ = tiny
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention
    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(1) or sdpa(*a, **k))
    ids = tiny_ids[:20]
    plain = score_stepwise(model, ids, FullCache())
    assert calls  # the plain run does use sdpa
    calls.clear()
    probed, trace = run_probed(model, ids, FullCache())
    assert not calls and np.max(np.abs(plain.nll - probed.nll)) <= 1e-4
    assert np.isfinite(trace["layers.1.attn.entropy"]).all()


def test_nothing_left_after_exit_even_on_error(tiny, tiny_ids):
    model, _ = tiny
    before = model.config._attn_implementation
    with ProbeSession(model, ALL):
        assert model.config._attn_implementation == NAME and registered_names() == {NAME}
        assert ATTENTION_RECORDER.get() is not None
    assert model.config._attn_implementation == before and registered_names() == set()
    assert ATTENTION_RECORDER.get() is None
    with pytest.raises(RuntimeError, match="boom"):
        with ProbeSession(model, ALL) as probes:
            score_stepwise(model, tiny_ids[:20], FullCache(), observer=probes)
            raise RuntimeError("boom")
    assert model.config._attn_implementation == before and registered_names() == set()
    assert ATTENTION_RECORDER.get() is None


def test_nothing_registered_at_import():
    code = ("import anomaly_probe.probes, anomaly_probe.run.session; from transformers import AttentionInterface;"
            "from transformers.masking_utils import AttentionMaskInterface as M;"
            "print(sorted(n for n in [*AttentionInterface._global_mapping, *M._global_mapping] if 'anomaly' in n))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


def test_stepwise_and_batched_agree_per_query(tiny, tiny_ids):
    model, _ = tiny
    ids = tiny_ids[:120]
    _, a = run_probed(model, ids, FullCache(), names=("attention",))
    _, b = run_probed(model, ids, FullCache(), score_batched, names=("attention",), chunk_size=37)
    assert np.array_equal(a["step"], b["step"]) and np.array_equal(a["n_keys"], b["n_keys"])
    assert np.array_equal(a["max_distance"], b["max_distance"])
    for L in range(2):
        for name in ATTN_METRICS:
            x, y = a[f"layers.{L}.attn.{name}"], b[f"layers.{L}.attn.{name}"]
            assert np.array_equal(np.isnan(x), np.isnan(y)), name
            tol = 1e-4 * np.maximum(1, np.abs(x)) if name == "mean_distance" else 1e-4  # tokens: relative
            assert (np.abs(np.nan_to_num(x) - np.nan_to_num(y)) <= tol).all(), name


def test_parallel_engine_records_the_same_statistics(tiny, tiny_ids):
    model, _ = tiny
    for mode in ("absolute", "in-cache"):  # in-cache: the parallel engine publishes no k_pos
        ids, method = tiny_ids[:80], StreamingLLM(4, 28, mode)
        _, a = run_probed(model, ids, method, names=("attention",))
        _, b = run_probed(model, ids, method, score_parallel, names=("attention",), chunk_size=30)
        for name in ("step", "n_keys", "query_pos", "max_distance", "sink_size"):
            assert np.array_equal(a[name], b[name]), (mode, name)
        for name in ATTN_METRICS:
            x, y = a[f"layers.1.attn.{name}"], b[f"layers.1.attn.{name}"]
            assert np.allclose(x, y, rtol=1e-4, atol=1e-4, equal_nan=True), (mode, name)


def test_eager_and_sdpa_give_the_same_statistics(tiny, tiny_ids):
    model, _ = tiny
    ids = tiny_ids[:60]
    _, sdpa = run_probed(model, ids, FullCache(), score_batched, names=("attention",), chunk_size=25)
    model.set_attn_implementation("eager")
    try:
        _, eager = run_probed(model, ids, FullCache(), score_batched, names=("attention",), chunk_size=25)
        assert model.config._attn_implementation == "eager"
    finally:
        model.set_attn_implementation("sdpa")
    for name in ATTN_METRICS:
        x, y = sdpa[f"layers.0.attn.{name}"], eager[f"layers.0.attn.{name}"]
        assert np.allclose(x, y, atol=1e-5, equal_nan=True), name


def test_llama_gqa_matches_eager_attention_weights():
    """Entropy, sink mass and distance from the probe equal those of the weights eager attention returns."""
    model = tiny_llama("eager")
    ids = torch.randint(0, 256, (1, 30), generator=torch.Generator().manual_seed(2))
    info = StepInfo(q_abs=torch.arange(30), k_abs=torch.arange(30), q_pos=torch.arange(30), k_pos=torch.arange(30),
                    sink_size=3)
    token = CURRENT_STEP.set(info)
    try:
        plain = model(input_ids=ids, output_attentions=True)
        with ProbeSession(model, ("attention",)) as probes:
            probed = model(input_ids=ids, output_attentions=True)
            probes.after_forward(info, None, 0.0)
    finally:
        CURRENT_STEP.reset(token)
    assert torch.allclose(plain.logits, probed.logits, atol=1e-5)  # the fused float32 attention replaced eager
    trace = probes.trace()
    dist = (torch.arange(30)[:, None] - torch.arange(30)[None, :]).double()  # (Tq, Tk)
    for L, w in enumerate(plain.attentions):
        w = w[0].double()  # (H, Tq, Tk): weights as eager attention computed them
        ent = -(torch.xlogy(w, w)).sum(-1).T.numpy()  # (Tq, H)
        assert np.allclose(trace[f"layers.{L}.attn.entropy"], ent, atol=1e-5)
        assert np.allclose(trace[f"layers.{L}.attn.sink_mass"], w[..., :3].sum(-1).T.numpy(), atol=1e-6)
        assert np.allclose(trace[f"layers.{L}.attn.mean_distance"], (w * dist).sum(-1).T.numpy(), atol=1e-4)


def test_llama_gqa_sdpa_runs_with_engines():
    model = tiny_llama("sdpa")
    ids = torch.randint(0, 256, (50,), generator=torch.Generator().manual_seed(3))
    plain = score_stepwise(model, ids, StreamingLLM(2, 20, "absolute"))
    probed, trace = run_probed(model, ids, StreamingLLM(2, 20, "absolute"))
    assert np.max(np.abs(plain.nll - probed.nll)) <= 1e-4  # GQA: the probe's own single-query attention
    assert trace["layers.0.attn.entropy"].shape == (49, 4)
    assert np.isfinite(trace["layers.1.attn.sink_mass"]).all()
    assert trace["cache.kv_len"][-1].tolist() == [22, 22]


def test_unhookable_models_fail_clearly():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    neo = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2,
                                         attention_types=[[["global"], 2]], max_position_embeddings=64)).eval()
    with pytest.raises(UserError, match="does not dispatch through transformers' AttentionInterface") as exc:
        with ProbeSession(neo, ALL):
            pass
    assert "\n" not in str(exc.value) and "--probes cache,process" in str(exc.value)
    assert registered_names() == set() and neo.config._attn_implementation != NAME

    class Plain(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)
            self.config = type("C", (), {"num_hidden_layers": 1})()

    with pytest.raises(UserError, match="not a transformers model"):
        with ProbeSession(Plain(), ("attention",)):
            pass
    with ProbeSession(neo, ("cache", "process")):  # the other probes still work
        pass


# ---------------------------------------------------------------------------- trace
def test_trace_columns_shapes_and_units(tiny, tiny_ids, tmp_path):
    model, _ = tiny
    ids = tiny_ids[:50]
    scores, trace = run_probed(model, ids, FullCache())
    S, H = 49, model.config.num_attention_heads
    assert trace["step"].tolist() == list(range(S)) and trace["n_keys"].tolist() == list(range(1, S + 1))
    assert np.array_equal(trace["query_pos"], scores.query_pos)
    for L in range(2):
        for name in ATTN_METRICS:
            col = trace[f"layers.{L}.attn.{name}"]
            assert col.shape == (S, H)
            assert col.dtype == (np.int32 if name.endswith("_count") else np.float32)
            if name != "entropy_norm":
                assert np.isfinite(col).all(), name
        assert np.isnan(trace[f"layers.{L}.attn.entropy_norm"][0]).all()  # one key
        assert np.isfinite(trace[f"layers.{L}.attn.entropy_norm"][1:]).all()
    kv_len, kv_bytes = trace["cache.kv_len"], trace["cache.kv_bytes"]
    assert kv_len.shape == (S, 2) and (kv_len[:, 0] == np.arange(1, S + 1)).all()
    head_dim = model.config.hidden_size // H
    assert (kv_bytes == 2 * kv_len * H * head_dim * 4).all()  # K and V, float32
    assert (trace["process.rss_bytes"] > 0).all() and (trace["process.peak_rss_bytes"] >= trace["process.rss_bytes"]).all()
    assert (trace["process.available_bytes"] > 0).all() and trace["process.sampled"][0]
    assert (trace["process.device_allocated_bytes"] == -1).all()  # CPU
    assert (trace["process.step_seconds"] > 0).all()


def test_run_command_writes_the_trace(tmp_path, capsys):
    from anomaly_probe.cli import main

    out = tmp_path / "run"
    code = main(["run", "--hypothesis", "none", "--model", "tiny-neox", "--max-tokens", "150", "--recent-size", "28",
                 "--probes", "all", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 2
    for run in runs:
        path = out / run["trace_file"]
        assert run["trace_file"] == f"traces/{run['key']}.npz" and path.exists()
        assert run["trace_bytes_per_step"] == pytest.approx(path.stat().st_size / 149)
        trace = load_trace(path)
        assert trace["step"].tolist() == list(range(149))
        assert {"cache.kv_len", "process.rss_bytes", "layers.1.attn.sink_mass"} <= set(trace)
    sinks = load_trace(out / runs[1]["trace_file"])["sink_size"]
    assert (sinks == 4).all()  # the method under test: StreamingLLM 4 + 28


def test_stat_batches_are_reused_and_keep_each_forwards_numbers(monkeypatch):
    """Emptied batches serve later forwards (also shorter ones: stale keys past a row's length must stay
    hidden); every step's statistics equal the readable definitions."""
    from anomaly_probe.probes import stat_batch
    from anomaly_probe.probes.attention_probe import AttentionProbe
    from anomaly_probe.probes.rows import StepRows

    monkeypatch.setattr(stat_batch, "BATCH_ELEMENTS", 2 * 2 * 3 * 80)  # two forwards per batch
    rows = StepRows(1)
    probe = AttentionProbe(rows, num_layers=2, recent=5)
    g = torch.Generator().manual_seed(4)
    layers = [torch.nn.Module() for _ in range(2)]
    for i, m in enumerate(layers):
        m.layer_idx = i
    batches, want = set(), []
    for T in (40, 41, 30, 42, 44, 36, 45, 20):  # caches grow and shrink (a compressed method)
        info = step(T, sink=2)
        token = CURRENT_STEP.set(info)
        try:
            for m in layers:
                q, k, v = (torch.randn(1, 3, 1, 8, generator=g), torch.randn(1, 3, T, 8, generator=g),
                           torch.randn(1, 3, T, 8, generator=g))
                out = probe.record_qk(m, q, k, 0.5, None, lambda: (None, None), value=v)
                logits = (q * 0.5) @ k.transpose(-1, -2)  # (1, 3, 1, T)
                assert torch.allclose(out[0, 0], (torch.softmax(logits, -1) @ v)[0, :, 0], atol=1e-6)
                want.append(reference(logits[0], torch.ones(1, T, dtype=torch.bool), info, recent=5))
                batches.add(id(probe._batch))
        finally:
            CURRENT_STEP.reset(token)
        probe.end_forward()
    cols = probe.columns(rows.n)
    assert len(batches) < 5  # 8 forwards, two per batch: reused
    for s in range(8):
        for L in range(2):
            for name in ATTN_METRICS:
                got = cols[f"layers.{L}.attn.{name}"][s].astype(np.float64)
                np.testing.assert_allclose(got, want[2 * s + L][name][:, 0], rtol=2e-5, atol=2e-6,
                                           err_msg=f"step {s} layer {L} {name}")
