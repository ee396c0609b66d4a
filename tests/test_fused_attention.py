"""The fused probed attention (attention/fused.py + probes/chunk_stats.py) and ``--probe-stride``.

The fused kernel replaces the model's attention while the attention probe is attached, so it is
checked, not assumed: same NLL as the unprobed engine (every engine, 1e-4 nats in float32), same
statistics as the readable per-row definitions and as the stepwise probe, and the interventions that
run on the same kernel give the numbers of a plain per-row implementation.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from anomaly_probe.attention.fused import Recipe, fused_attention
from anomaly_probe.engines import score_batched, score_parallel, score_recompute, score_spot, score_stepwise
from anomaly_probe.interventions import apply_intervention
from anomaly_probe.methods import FullCache, StreamingLLM
from anomaly_probe.methods.recompute import RecomputeOracle
from anomaly_probe.probes import ATTN_METRICS, ProbeSession
from anomaly_probe.probes.attention_probe import AttentionProbe
from anomaly_probe.probes.rows import StepRows
from anomaly_probe.step_context import CURRENT_STEP, StepInfo
from tests.test_probes import reference

NLL_TOL = 1e-4  # nats, float32 (the check suite's tolerance)


class _Layer(torch.nn.Module):
    layer_idx = 0


def _probe_one_forward(q, k, v, visible, info, recent, chunk_elements, stride=1, sink_size=None):
    """Run the fused kernel once with an AttentionProbe observing; (output, trace columns)."""
    rows = StepRows(stride)
    probe = AttentionProbe(rows, num_layers=1, recent=recent, sink_size=sink_size)
    token = CURRENT_STEP.set(info)
    try:
        out = fused_attention(_Layer(), q, k, v, visible[None, None], 1.0, observe=probe.observe_chunk,
                              chunk_elements=chunk_elements)
    finally:
        CURRENT_STEP.reset(token)
    return out, probe.columns(rows.n), rows.columns()


def _random_case(H=3, Tq=24, Tk=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    D = 8
    q = torch.randn(1, H, Tq, D, generator=g)
    q[:, 1] *= 6.0  # a head with wide logits: fp16 underflow
    q[:, 2] *= 40.0  # and one with a range past float32's exp: the exact path
    k = torch.randn(1, H, Tk, D, generator=g)
    v = torch.randn(1, H, Tk, D, generator=g)
    q_abs = torch.arange(Tk - Tq, Tk)
    info = StepInfo(q_abs=q_abs, k_abs=torch.arange(Tk), q_pos=q_abs, k_pos=torch.arange(Tk), sink_size=4)
    visible = (info.k_abs[None] <= q_abs[:, None]) & (torch.rand(Tq, Tk, generator=g) > 0.15)
    visible[:, 0] = True
    return q, k, v, visible, info


@pytest.fixture(params=["numba", "torch"])
def stats_path(request, monkeypatch):
    """Chunk statistics by the one-pass numba kernel (CPU) and by torch passes (other devices)."""
    from anomaly_probe.probes import row_kernel

    if request.param == "torch":
        monkeypatch.setattr(row_kernel, "available", lambda t: False)
    else:
        pytest.importorskip("numba")
    return request.param


@pytest.fixture(params=["1", "3"])
def chunk_workers(request, monkeypatch):
    """Chunks in the calling thread, or on three worker threads (each the probe observes concurrently)."""
    from anomaly_probe.attention import fused

    monkeypatch.setenv(fused.WORKERS_ENV, request.param)
    return int(request.param)


@pytest.mark.parametrize("chunk_elements", [1 << 20, 3 * 60 * 5])  # one chunk; chunks of 5 query rows
def test_chunk_statistics_equal_the_readable_definitions(chunk_elements, stats_path, chunk_workers):
    q, k, v, visible, info = _random_case()
    out, cols, _ = _probe_one_forward(q, k, v, visible, info, recent=7, chunk_elements=chunk_elements)
    logits = (q @ k.transpose(-1, -2))[0]  # (H, Tq, Tk), scaling 1
    want = reference(logits, visible, info, recent=7)
    for name in ATTN_METRICS:
        got = cols[f"layers.0.attn.{name}"].T.astype(np.float64)  # (H, Tq)
        np.testing.assert_allclose(got, want[name], rtol=2e-5, atol=2e-5, err_msg=name)
    assert want["fp16_underflow_count"].max() > 0 and want["sink_mass"].max() > 0
    # and the output is plain masked softmax attention
    w = torch.softmax(logits.masked_fill(~visible, -math.inf), dim=-1)
    assert torch.allclose(out[0].transpose(0, 1), w @ v[0], atol=1e-5)


def test_stride_records_every_nth_query_with_the_same_statistics(stats_path, chunk_workers):
    q, k, v, visible, info = _random_case()
    _, full, full_rows = _probe_one_forward(q, k, v, visible, info, recent=7, chunk_elements=3 * 60 * 5)
    _, some, some_rows = _probe_one_forward(q, k, v, visible, info, recent=7, chunk_elements=3 * 60 * 5, stride=4)
    keep = full_rows["step"] % 4 == 0
    assert np.array_equal(some_rows["step"], full_rows["step"][keep]) and keep.sum() == 6
    for name in ATTN_METRICS:
        a, b = some[f"layers.0.attn.{name}"], full[f"layers.0.attn.{name}"][keep]
        assert np.allclose(a, b, equal_nan=True), name


def test_chunk_workers_keep_the_callers_thread_count_and_surface_errors(monkeypatch):
    from anomaly_probe.attention import fused

    monkeypatch.setenv(fused.WORKERS_ENV, "2")
    q, k, v, visible, info = _random_case()
    before = torch.get_num_threads()
    seen = []
    fused_attention(_Layer(), q, k, v, visible[None, None], 1.0, chunk_elements=3 * 60 * 5,
                    observe=lambda chunk: seen.append(chunk.rows))
    assert torch.get_num_threads() == before and sorted(seen) == [(i, i + 5) for i in range(0, 24, 5)][:4] + [(20, 24)]

    def boom(chunk):
        raise RuntimeError("observer failed")

    with pytest.raises(RuntimeError, match="observer failed"):
        fused_attention(_Layer(), q, k, v, visible[None, None], 1.0, chunk_elements=3 * 60 * 5, observe=boom)


def test_fused_kernel_equals_plain_attention_with_gqa_and_no_mask():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 4, 9, 8, generator=g)
    k, v = torch.randn(1, 2, 9, 8, generator=g), torch.randn(1, 2, 9, 8, generator=g)
    out = fused_attention(None, q, k, v, None, 0.5, chunk_elements=4 * 9 * 2)  # None: causal
    kr, vr = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    causal = torch.ones(9, 9, dtype=torch.bool).tril()
    want = torch.softmax((q @ kr.transpose(-1, -2) * 0.5).masked_fill(~causal, -math.inf), -1) @ vr
    assert torch.allclose(out, want.transpose(1, 2), atol=1e-6)


def _emulated_reference(q, k, v, visible, scale, dtype):
    """Half-precision emulation by the definition, one query row at a time."""
    r = lambda x: x.to(dtype).float()  # noqa: E731
    out = torch.empty(q.shape[0], q.shape[2], q.shape[1], v.shape[-1])
    for h in range(q.shape[1]):
        for i in range(q.shape[2]):
            s = r(r(q[0, h, i]) * scale @ r(k[0, h]).T)
            p = r(torch.softmax(s.masked_fill(~visible[i], -math.inf), -1))
            out[0, i, h] = p @ r(v[0, h])
    return out


def test_emulated_half_attention_is_the_definition():
    q, k, v, visible, _ = _random_case(seed=4)
    q = q / 8
    for dtype in (torch.float16, torch.bfloat16):
        got = fused_attention(None, q, k, v, visible[None, None], 0.3, Recipe(round_to=dtype), chunk_elements=500)
        assert torch.allclose(got, _emulated_reference(q, k, v, visible, 0.3, dtype), atol=1e-6), dtype


# ---------------------------------------------------------------------------- every engine, tiny-neox
def _probed(model, ids, method, engine, stride=1, **kw):
    with ProbeSession(model, ("attention", "cache", "process"), stride=stride, sink_size=4, recent=28) as probes:
        scores = engine(model, ids, method, observer=probes, **kw)
    return scores, probes.trace()


ENGINE_CASES = [
    ("batched", score_batched, FullCache(), {"chunk_size": 70}),
    ("spot", score_spot, FullCache(), {"chunk_size": 70, "windows": ((100, 110),)}),
    ("recompute", score_recompute, RecomputeOracle(64), {"chunk_size": 40}),
    ("parallel-in-cache", score_parallel, StreamingLLM(4, 28, "in-cache"), {"chunk_size": 50}),
    ("parallel-absolute", score_parallel, StreamingLLM(4, 28, "absolute"), {"chunk_size": 50}),
    ("parallel-naive", score_parallel, StreamingLLM(4, 28, "naive"), {"chunk_size": 50}),
]


@pytest.mark.parametrize("name,engine,method,kw", ENGINE_CASES, ids=[c[0] for c in ENGINE_CASES])
def test_probed_engines_give_the_unprobed_nll(tiny, tiny_ids, name, engine, method, kw):
    model, _ = tiny
    ids = tiny_ids[:240]
    plain = engine(model, ids, method, **kw)
    probed, trace = _probed(model, ids, method, engine, **kw)
    assert np.max(np.abs(plain.nll - probed.nll)) <= NLL_TOL, name
    assert np.array_equal(plain.correct, probed.correct) or np.mean(plain.correct != probed.correct) < 0.01
    entropy = trace["layers.1.attn.entropy"]
    assert entropy.shape[0] == trace["step"].shape[0] and np.isfinite(entropy).all()
    assert np.isfinite(trace["layers.0.attn.recent_mass"]).all()


def test_fused_statistics_equal_the_stepwise_probe(tiny, tiny_ids):
    """The batched (fused) trace equals the stepwise (recording) trace row for row."""
    model, _ = tiny
    ids = tiny_ids[:200]
    _, a = _probed(model, ids, FullCache(), score_stepwise)
    _, b = _probed(model, ids, FullCache(), score_batched, chunk_size=64)
    assert np.array_equal(a["step"], b["step"])
    for layer in range(2):
        for m in ATTN_METRICS:
            x, y = a[f"layers.{layer}.attn.{m}"], b[f"layers.{layer}.attn.{m}"]
            tol = 1e-4 * np.maximum(1, np.abs(x)) if m == "mean_distance" else 1e-4
            assert np.array_equal(np.isnan(x), np.isnan(y)), m
            assert (np.abs(np.nan_to_num(x) - np.nan_to_num(y)) <= tol).all(), m
    assert a["layers.0.attn.sink_mass"].max() > 0  # the method's sinks, measured in the full cache


@pytest.mark.parametrize("engine,method,kw", [
    (score_stepwise, StreamingLLM(4, 28, "in-cache"), {}),
    (score_batched, FullCache(), {"chunk_size": 45}),
    (score_parallel, StreamingLLM(4, 28, "in-cache"), {"chunk_size": 45}),
], ids=["stepwise", "batched", "parallel"])
def test_probe_stride_keeps_every_nth_row_of_the_full_trace(tiny, tiny_ids, engine, method, kw):
    model, _ = tiny
    ids = tiny_ids[:150]
    _, full = _probed(model, ids, method, engine, **kw)
    _, some = _probed(model, ids, method, engine, stride=5, **kw)
    keep = full["step"] % 5 == 0
    assert keep.sum() == 30 and np.array_equal(some["step"], full["step"][keep])
    for col, values in some.items():
        if col.startswith("process."):  # readings of other forwards' times
            continue
        ref = full[col][keep]
        assert values.shape == ref.shape, col
        if col.startswith("layers."):
            assert np.allclose(values, ref, atol=1e-6, equal_nan=True), col
        else:
            assert np.array_equal(values, ref), col


@pytest.mark.parametrize("intervention", ["topk-8", "attn-fp16-emulated"])
def test_a_probed_intervention_keeps_its_numbers(tiny, tiny_ids, intervention):
    """The probe runs the intervention's own recipe through the same kernel: the NLL does not move."""
    model, _ = tiny
    ids = tiny_ids[:200]
    with apply_intervention(intervention, model):
        plain = score_batched(model, ids, FullCache(), chunk_size=64)
    with apply_intervention(intervention, model):
        probed, trace = _probed(model, ids, FullCache(), score_batched, chunk_size=64)
    assert np.max(np.abs(plain.nll - probed.nll)) <= 1e-5
    with apply_intervention("none", model):
        base = score_batched(model, ids, FullCache(), chunk_size=64)
    assert np.max(np.abs(base.nll - plain.nll)) > 1e-4  # the intervention did change something
    if intervention.startswith("topk"):  # at most 8 keys keep weight: entropy <= log 8
        assert np.nanmax(trace["layers.1.attn.entropy"]) <= math.log(8) + 1e-4


# ---------------------------------------------------------------------------- the run command
def test_run_with_probe_stride_and_unit_seconds(tmp_path, capsys):
    import json

    from anomaly_probe.cli import main
    from anomaly_probe.probes import load_trace

    out = tmp_path / "run"
    code = main(["run", "--hypothesis", "none", "--model", "tiny-neox", "--max-tokens", "150", "--recent-size", "28",
                 "--probes", "all", "--probe-stride", "4", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["probe_stride"] == 4
    for run in results["runs"]:
        assert run["unit_seconds"] >= run["seconds"] > 0 and 0 <= run["trace_seconds"] <= run["unit_seconds"]
        trace = load_trace(out / run["trace_file"])
        assert trace["step"].tolist() == list(range(0, 149, 4))
        assert np.isfinite(trace["layers.1.attn.recent_mass"]).all()
        sink = trace["layers.0.attn.sink_mass"]
        assert (sink[1:] > 0).all()  # the method's 4 sinks, measured in the full cache too
    assert "time (s)" in printed and "all units" in printed


def test_bad_probe_stride_is_one_error_line(tmp_path, capsys):
    from anomaly_probe.cli import main

    code = main(["run", "--hypothesis", "none", "--model", "tiny-neox", "--max-tokens", "50", "--probe-stride", "0",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: --probe-stride 0")


def test_attention_probe_records_only_the_units_the_report_draws(tmp_path):
    """--probes all: attention traces for baseline and method; an intervention unit keeps cache/process only."""
    import json

    from anomaly_probe.cli import main
    from anomaly_probe.probes import load_trace

    out = tmp_path / "run"
    assert main(["run", "--hypothesis", "numerics", "--model", "tiny-neox", "--max-tokens", "100",
                 "--recent-size", "28", "--probes", "all", "--out", str(out)]) == 0
    runs = json.loads((out / "results.json").read_text())["runs"]
    by_intervention = {}
    for run in runs:
        trace = load_trace(out / run["trace_file"])
        by_intervention.setdefault(run["intervention"], []).append(any(k.startswith("layers.") for k in trace))
        assert "cache.kv_len" in trace and "process.rss_bytes" in trace
    assert by_intervention["none"] == [True, True]
    assert by_intervention["attn-fp16-emulated"] == [False]
