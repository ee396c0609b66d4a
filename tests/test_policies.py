"""Any KV-cache policy: the contract, the built-ins, the policy engines, user policies, the ablation check."""

from __future__ import annotations

import dataclasses
import textwrap
import warnings

import numpy as np
import pytest
import torch

from anomaly_probe.engines import EngineFallback, pick_engine, score_chunked, score_stepwise
from anomaly_probe.engines.chunked import chunk_queries, score_policy
from anomaly_probe.errors import UserError
from anomaly_probe.methods import (H2O, TOVA, FullCache, KNorm, KVQuant, LayerView, ScoredEviction, StreamingLLM,
                                   WindowCache, build_method)
from anomaly_probe.methods.kv_quant import quantize_per_channel, quantize_per_token
from anomaly_probe.methods.options import typed_options

MODES = ("in-cache", "absolute", "naive")
TOL = 1e-4  # nats, float32


@pytest.fixture(scope="module")
def model(tiny):
    return tiny[0]


@pytest.fixture(scope="module")
def ids(tiny_ids):
    return tiny_ids[:260]


def _view(n=10, hkv=2, d=4, seed=0, **kw):
    g = torch.Generator().manual_seed(seed)
    keys = torch.randn(hkv, n, d, generator=g)
    return LayerView(0, keys, torch.randn(hkv, n, d, generator=g), torch.arange(n)[None].expand(hkv, -1), **kw)


# ------------------------------------------------------------------------------------------ contract
def test_labels_name_policy_and_options():
    assert H2O().label() == "h2o(heavy 128 + recent 128, in-cache)"
    assert H2O(sink_size=4, compress_every=64).label() == "h2o(sink 4 + heavy 128 + recent 128, in-cache, every 64)"
    assert KNorm(position_mode="absolute").label() == "knorm(heavy 256, absolute)"
    assert KVQuant(base=TOVA(), bits=8).label() == "kv_quant(int8 K/channel V/token g32, tova(heavy 256, in-cache))"
    assert StreamingLLM(compress_every=8).label() == "streaming_llm(4+252, in-cache, every 8)"
    assert StreamingLLM().label() == "streaming_llm(4+252, in-cache)"  # unchanged at C = 1


def test_scored_keeps_sinks_recent_and_top_scores_per_head():
    class Planted(ScoredEviction):
        def score(self, view):
            s = torch.zeros(view.keys.shape[0], view.n)
            s[0, 5] = s[1, 3] = 1.0  # head 0 wants slot 5, head 1 slot 3
            return s

    kept = Planted(sink_size=2, heavy_size=1, recent_size=2).keep_heads(_view(n=10))
    assert kept.tolist() == [[0, 1, 5, 8, 9], [0, 1, 3, 8, 9]]  # head-wise, sorted, sinks and recent always kept
    assert Planted(sink_size=2, heavy_size=1, recent_size=2).keep_heads(_view(n=5)) is None  # fits: nothing evicted


def test_ties_go_to_the_newer_token_whatever_the_rounding_noise():
    class Tied(ScoredEviction):
        def score(self, view):
            return torch.tensor([[1.0, 1.0 + 1e-7, 1.0 - 1e-7, 0.5]]).expand(view.keys.shape[0], -1)

    kept = Tied(heavy_size=2, recent_size=0).keep_heads(_view(n=4))
    assert kept[0].tolist() == [1, 2]  # the three ties are equal at 10 bits: the two newest win


def test_policy_validation_is_a_user_error():
    for bad in (dict(heavy_size=-1), dict(heavy_size=0, recent_size=0), dict(compress_every=0)):
        with pytest.raises(UserError):
            H2O(**bad)
    with pytest.raises(UserError):
        KVQuant(bits=3)
    with pytest.raises(UserError):
        KVQuant(key_group="row")


# ------------------------------------------------------------------------------------------ kv_quant rounding
def test_quantisation_error_shrinks_with_bits_and_groups_are_independent():
    x = torch.randn(2, 64, 32, generator=torch.Generator().manual_seed(1))
    e4 = (quantize_per_token(x, 16, 4) - x).abs().max()
    e8 = (quantize_per_token(x, 16, 8) - x).abs().max()
    assert 0 < e8 < e4 / 8
    members = torch.zeros(2, 64, dtype=torch.bool)
    members[:, :32] = True
    q = quantize_per_channel(x, members, 4)
    assert torch.equal(q[:, 32:], x[:, 32:])  # slots outside the group untouched
    assert not torch.equal(q[:, :32], x[:, :32])


def test_kv_quant_quantises_only_completed_groups_once():
    m = KVQuant(group_size=4)
    x = torch.randn(1, 6, 8, generator=torch.Generator().manual_seed(2))
    pos = torch.arange(6)[None]
    assert m.quantize(x, x, pos, 4, 6) is None  # tokens 4, 5: their group is not complete (KIVI's residual)
    k, v = m.quantize(x, x, pos, 4, 8)  # group 1 (tokens 4..7) completes
    assert torch.equal(k[:, :4], x[:, :4]) and not torch.equal(k[:, 4:], x[:, 4:])
    assert torch.equal(v[:, :4], x[:, :4]) and not torch.equal(v[:, 4:], x[:, 4:])


# ------------------------------------------------------------------------------------------ engines
def test_pick_engine_for_policies():
    assert pick_engine("auto", H2O(compress_every=8)) == "chunked"
    assert pick_engine("auto", KVQuant()) == "chunked"  # the full cache in groups of 32 queries
    assert pick_engine("auto", StreamingLLM(compress_every=8)) == "chunked"
    assert pick_engine("auto", StreamingLLM()) == "parallel"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pick_engine("auto", H2O()) == "stepwise"
    assert any(issubclass(w.category, EngineFallback) for w in caught)
    for engine, method in [("batched", KVQuant()), ("parallel", H2O()), ("parallel", StreamingLLM(compress_every=4))]:
        with pytest.raises(UserError):
            pick_engine(engine, method)
    assert chunk_queries(KVQuant(base=H2O(compress_every=64), group_size=32)) == 32
    assert chunk_queries(H2O(compress_every=48)) == 48


@pytest.mark.parametrize("mode", MODES)
def test_policy_loop_equals_the_reference_loop_for_streaming(model, ids, mode):
    """Head-wise bookkeeping, per-head in-cache rotation: the sinks + recent rule gives the seed loop's NLL."""
    m = StreamingLLM(sink_size=4, recent_size=40, position_mode=mode)
    a = score_stepwise(model, ids, m).nll
    b = score_policy(model, ids, m, 1).nll
    assert np.abs(a - b).max() <= TOL


@pytest.mark.parametrize("method", [
    H2O(heavy_size=24, recent_size=24, compress_every=8),
    H2O(sink_size=4, heavy_size=20, recent_size=24, compress_every=8, position_mode="absolute"),
    TOVA(heavy_size=40, compress_every=8, position_mode="naive"),
    KNorm(heavy_size=40, compress_every=8),
    KNorm(sink_size=4, heavy_size=36, compress_every=16, position_mode="absolute"),
    KVQuant(bits=4),
    KVQuant(base=H2O(heavy_size=24, recent_size=24, compress_every=16), bits=4, group_size=8),
    StreamingLLM(sink_size=4, recent_size=40, compress_every=8, position_mode="in-cache"),
], ids=lambda m: m.label())
def test_chunked_equals_stepwise_with_the_same_interval(model, ids, method):
    a = score_stepwise(model, ids, method)
    b = score_chunked(model, ids, method)
    assert b.engine == "chunked" and chunk_queries(method) > 1
    assert a.nll.shape == b.nll.shape == (ids.numel() - 1,)
    assert np.abs(a.nll - b.nll).max() <= TOL
    assert np.array_equal(a.query_pos, b.query_pos) and np.array_equal(a.n_keys, b.n_keys)


@pytest.mark.parametrize("mode", MODES)
def test_policy_with_room_for_every_token_equals_the_full_cache(model, ids, mode):
    full = score_stepwise(model, ids, FullCache()).nll
    for m in (H2O(heavy_size=200, recent_size=100, position_mode=mode), KNorm(heavy_size=300, position_mode=mode)):
        assert np.abs(score_stepwise(model, ids, m).nll - full).max() <= TOL


def test_eviction_and_quantisation_change_the_nll(model, ids):
    full = score_stepwise(model, ids, FullCache()).nll
    evicting = score_chunked(model, ids, H2O(heavy_size=16, recent_size=16, compress_every=8)).nll
    assert np.abs(evicting - full).max() > 1e-2
    int8 = np.abs(score_chunked(model, ids, KVQuant(bits=8)).nll - full).mean()
    int4 = np.abs(score_chunked(model, ids, KVQuant(bits=4)).nll - full).mean()
    assert 0 < int8 < int4


def test_head_wise_kept_sets_differ_between_heads(model, ids):
    seen = []

    class Spy(KNorm):
        def keep_heads(self, view):
            kept = super().keep_heads(view)
            if kept is not None:
                seen.append(kept)
            return kept

    score_chunked(model, ids, Spy(heavy_size=40, compress_every=8))
    assert seen and any(not torch.equal(k[0], k[h]) for k in seen for h in range(1, k.shape[0]))


def test_attention_loss_and_age_probe(model, ids):
    s = score_chunked(model, ids, TOVA(heavy_size=32, compress_every=8))
    arr = s.extra["arrays"]
    E = sum(1 for t in range(1, ids.numel()) if t % 8 == 0 and t > 32)  # eviction steps: after token t-1
    assert arr["attention_loss"].shape == (E, model.config.num_hidden_layers) and arr["evict_step"].size == E
    assert np.all((arr["attention_loss"] >= 0) & (arr["attention_loss"] <= 1 + 1e-6))
    assert np.all(arr["kept_age_max"] >= arr["kept_age_median"])
    assert arr["kept_age_max"].max() > 32  # TOVA keeps keys older than its capacity
    window = score_chunked(model, ids, WindowCache(recent_size=32, compress_every=8)).extra["arrays"]
    assert window["kept_age_max"].max() <= 32 + 8


# ------------------------------------------------------------------------------------------ options and user policies
def test_method_args_are_typed_by_the_fields():
    assert typed_options(H2O, ["heavy_size=64", "position_mode=absolute"]) == {"heavy_size": 64,
                                                                             "position_mode": "absolute"}
    with pytest.raises(UserError, match="Did you mean 'heavy_size'"):
        typed_options(H2O, ["heavy_sze=3"])
    with pytest.raises(UserError, match="expected int"):
        typed_options(H2O, ["heavy_size=lots"])
    with pytest.raises(UserError, match="key=value"):
        typed_options(H2O, ["heavy_size"])
    m = build_method("kv_quant", method_args=["base=h2o", "heavy_size=32", "bits=8"], compress_every=16)
    assert isinstance(m.base, H2O) and m.base.heavy_size == 32 and m.bits == 8 and m.base.compress_every == 16
    with pytest.raises(UserError):
        build_method("full", method_args=["a=1"])


PRESS_FILE = '''
import torch
from dataclasses import dataclass


@dataclass
class LowKeyNormPress:
    """Duck-typed kvpress ScorerPress: score(module, hidden_states, keys, values, attentions, kwargs)."""

    power: float = 1.0

    def score(self, module, hidden_states, keys, values, attentions, kwargs):
        assert hidden_states is None and keys.dim() == 4 and attentions.shape[2] == 1
        assert module is not None and hasattr(module, "layer_idx")
        return -keys.norm(dim=-1) ** self.power
'''


def test_press_adapter_equals_the_built_in_knorm(model, ids, tmp_path):
    path = tmp_path / "press.py"
    path.write_text(textwrap.dedent(PRESS_FILE))
    m = build_method(f"{path}:LowKeyNormPress", method_args=["heavy_size=40", "recent_size=0", "power=1.0"],
                     compress_every=8)
    assert m.label().startswith("LowKeyNormPress[power=1.0](heavy 40")
    a = score_chunked(model, ids, m).nll
    b = score_chunked(model, ids, KNorm(heavy_size=40, compress_every=8)).nll
    assert np.abs(a - b).max() <= TOL


def test_user_policy_file_and_module(model, ids, monkeypatch):
    import anomaly_probe

    root = __import__("pathlib").Path(anomaly_probe.__file__).parents[1]
    m = build_method(f"{root}/examples/my_policy.py:ValueNorm", method_args=["heavy_size=48", "recent_size=16"])
    assert m.label() == "value_norm(heavy 48 + recent 16, in-cache)" and m.capacity == 64
    assert [a.role for a in m.ablations()] == ["window"] and m.ablations()[0].method.capacity == 64
    monkeypatch.chdir(root)
    press = build_method("examples.my_policy:KeyNormPress", method_args=["heavy_size=40", "compression_ratio=0.5"])
    assert press.press.compression_ratio == 0.5
    assert np.isfinite(score_stepwise(model, ids[:120], m).nll).all()


@pytest.mark.parametrize("spec, args, message", [
    ("nope.py:X", [], "no such file"),
    ("examples/my_policy.py:Nothing", [], "has no 'Nothing'"),
    ("examples/my_policy.py:dataclass", [], "neither a CacheMethod"),
    ("examples/my_policy.py:ValueNorm", ["heavy=3"], "has no option"),
    ("examples/my_policy.py:KeyNormPress", ["ratio=3"], "has no option"),
])
def test_user_policy_errors_are_one_line(spec, args, message, monkeypatch, capsys, tmp_path):
    import anomaly_probe
    from anomaly_probe.cli import main

    monkeypatch.chdir(__import__("pathlib").Path(anomaly_probe.__file__).parents[1])
    argv = ["run", "--model", "tiny-neox", "--hypothesis", "none", "--method", spec, "--out", str(tmp_path / "run")]
    for a in args:
        argv += ["--method-arg", a]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --method") and message in err and "\n" not in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------ ablation hypothesis
def test_policies_declare_their_ablations():
    from anomaly_probe.hypotheses import ALL, PlanContext
    from anomaly_probe.hypotheses.base import ExperimentSettings

    def roles(method):
        ctx = PlanContext(method=method, trained_context=128, dtype="float32", max_tokens=300, engine="auto",
                          settings=ExperimentSettings())
        return ALL["ablation"].roles(ctx)

    assert roles(StreamingLLM()) is None and roles(FullCache()) is None  # the sinks check covers StreamingLLM
    r = roles(H2O(compress_every=64))
    assert list(r) == ["window"] and r["window"].method == WindowCache(recent_size=256, compress_every=64)
    r = roles(KVQuant(base=KNorm(), bits=4))
    assert list(r) == ["unquantised"] and r["unquantised"].method == KNorm()
    assert list(ALL["handling"].roles(PlanContext(H2O(), 128, "float32", 300, "auto", ExperimentSettings()))) == [
        "mode:absolute", "mode:naive"]


def test_ablation_judge_on_planted_data():
    from anomaly_probe.hypotheses import ALL, JudgeInput
    from anomaly_probe.stats.thresholds import Thresholds

    rng = np.random.default_rng(0)
    method = H2O(heavy_size=64, recent_size=64)
    nll = {"baseline": [], "method": [], "window": []}
    for _ in range(2):
        meth = 3 + rng.normal(0, 0.3, 3000)
        nll["baseline"].append(meth + 0.5)
        nll["method"].append(meth)
        nll["window"].append(meth + 0.5 + rng.normal(0, 1e-3, 3000))  # the window loses all of the advantage
    data = JudgeInput("ablation", 3001, 1500, "float32", method, nll, thresholds=Thresholds(n_boot=300))
    v = ALL["ablation"].judge(data)
    assert v.status == "supported" and "recent-only window" in v.message
    fig = v.evidence["figures"][0]
    assert fig["categories"] == ["full cache", method.label(), "window(128, in-cache)"]
    nll["window"] = [m + rng.normal(0, 1e-3, 3000) for m in nll["method"]]  # no difference
    assert ALL["ablation"].judge(dataclasses.replace(data, nll=nll)).status == "refuted"


# ------------------------------------------------------------------------------------------ end to end
def test_readme_user_policy_runs_end_to_end_and_check_passes(tmp_path, monkeypatch, capsys):
    import json

    import anomaly_probe
    from anomaly_probe.cli import main

    monkeypatch.chdir(__import__("pathlib").Path(anomaly_probe.__file__).parents[1])
    spec = ["--method", "examples/my_policy.py:ValueNorm", "--method-arg", "heavy_size=48", "--method-arg",
            "recent_size=16"]
    out = tmp_path / "run"
    assert main(["run", "--model", "tiny-neox", "--hypothesis", "ablation", "--max-tokens", "300", *spec,
                 "--compress-every", "8", "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["method_args"] == ["heavy_size=48", "recent_size=16"]
    runs = {r["label"]: r for r in results["runs"]}
    meth = runs["value_norm(heavy 48 + recent 16, in-cache, every 8)"]
    assert meth["engine"] == "chunked" and meth["policy_probe"]["evictions"] > 0
    assert (out / meth["policy_probe"]["file"]).is_file()
    assert "window(64, in-cache, every 8)" in runs  # the declared ablation was scored
    assert [v["hypothesis"] for v in results["verdicts"]] == ["ablation"]
    assert main(["check", *spec]) == 0
    shown = capsys.readouterr().out
    assert "engines.policy.stepwise-vs-chunked" in shown and "value_norm" in shown


def test_streaming_at_any_interval_keeps_its_sinks_check_only():
    from anomaly_probe.hypotheses import ALL, PlanContext
    from anomaly_probe.hypotheses.base import ExperimentSettings

    m = StreamingLLM(compress_every=8)
    ctx = PlanContext(m, 128, "float32", 300, "auto", ExperimentSettings())
    assert m.ablations() == () and ALL["ablation"].roles(ctx) is None
    assert ALL["sinks"].roles(ctx)["window"].method == WindowCache(recent_size=256, compress_every=8)


def test_in_cache_positions_are_per_head():
    """After a head-wise eviction each head's keys sit rotated at their own slots 0..n-1."""
    from types import SimpleNamespace

    from anomaly_probe.engines.policy_cache import PolicyCache
    from anomaly_probe.models.rope import RopeSpec

    class Alternate(ScoredEviction):
        def keep_heads(self, view):
            return torch.tensor([[0, 2, 4], [1, 3, 5]]) if view.n > 3 else None

    rope = RopeSpec(inv_freq=1.0 / (100.0 ** (torch.arange(0, 8, 2).float() / 8)), head_dim=8)
    raw = torch.randn(1, 2, 6, 8, generator=torch.Generator().manual_seed(3))  # (B, Hkv, n, D) before RoPE
    stored = rope.rotate(raw, torch.arange(6))  # rotated at insertion positions 0..5, as the model stores them
    layer = SimpleNamespace(keys=stored.clone(), values=raw.clone())
    state = PolicyCache(Alternate(heavy_size=3, recent_size=0, compress_every=6), "in-cache", rope, 1)
    state.after_forward(SimpleNamespace(layers=[layer]), torch.arange(6), torch.arange(6))
    kept = torch.tensor([[0, 2, 4], [1, 3, 5]])
    for h in range(2):
        want = rope.rotate(raw[:, h:h + 1, kept[h]], torch.arange(3))  # at slots 0, 1, 2 in head h
        assert torch.allclose(layer.keys[:, h:h + 1], want, atol=1e-5)
        assert torch.equal(layer.values[0, h], raw[0, h, kept[h]])
    assert state.positions[0].tolist() == kept.tolist()


@pytest.mark.parametrize("argv, message", [
    (["--compress-every", "0"], "--compress-every 0"),
    (["--method", "full", "--compress-every", "-3"], "--compress-every -3"),
    (["--method", "h2o", "--method-arg", "heavy_size=-1"], "heavy_size must be >= 0"),
    (["--method", "kv_quant", "--method-arg", "bits=3"], "bits must be 8 or 4"),
    (["--method", "kv_quant", "--method-arg", "base=recompute"], "not an eviction policy"),
    (["--method", "streaming_llm", "--method-arg", "heavy_size=3"], "has no option"),
])
def test_bad_policy_flags_are_one_error_line(argv, message, capsys, tmp_path):
    from anomaly_probe.cli import main

    assert main(["run", "--model", "tiny-neox", "--hypothesis", "none", "--out", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


@pytest.mark.parametrize("kv_heads", [6, 2, 1])  # MHA, GQA, MQA
def test_capture_attention_is_sdpa_and_hands_over_the_weights_per_kv_head(kv_heads):
    from types import SimpleNamespace

    from anomaly_probe.engines.policy_attention import CAPTURE, capture_attention

    g = torch.Generator().manual_seed(kv_heads)
    H, Tq, Tk, D, G = 6, 3, 7, 8, 6 // kv_heads
    q = torch.randn(1, H, Tq, D, generator=g)
    k, v = torch.randn(1, kv_heads, Tk, D, generator=g), torch.randn(1, kv_heads, Tk, D, generator=g)
    got = {}
    token = CAPTURE.set(lambda layer, c: got.update({layer: c}))
    try:
        out, _ = capture_attention(SimpleNamespace(layer_idx=3), q, k, v, None, scaling=D ** -0.5)  # causal, aligned
    finally:
        CAPTURE.reset(token)
    kr, vr = k.repeat_interleave(G, 1), v.repeat_interleave(G, 1)
    mask = torch.ones(Tq, Tk, dtype=torch.bool).tril(Tk - Tq)  # the queries are the last Tq keys
    ref = torch.nn.functional.scaled_dot_product_attention(q, kr, vr, attn_mask=mask)  # (1, H, Tq, D)
    assert torch.allclose(out.transpose(1, 2), ref, atol=1e-5)
    w = torch.softmax((q @ kr.transpose(-1, -2) * D ** -0.5).masked_fill(~mask, float("-inf")), -1)[0]  # (H, Tq, Tk)
    assert torch.allclose(got[3].last, w[:, -1], atol=1e-6)
    summed = torch.stack([w[h * G:(h + 1) * G].mean(0).sum(0) for h in range(kv_heads)])  # (Hkv, Tk)
    assert torch.allclose(got[3].summed, summed, atol=1e-5)


@pytest.mark.parametrize("family", ["tiny-gemma3", "tiny-bloom"])
def test_a_policy_on_a_model_with_sliding_or_alibi_layers_is_one_clear_error(family):
    from anomaly_probe.errors import UserError
    from anomaly_probe.models.tiny_families import build_tiny

    model, _ = build_tiny(family, seed=0)
    ids = torch.arange(40)
    with pytest.raises(UserError, match="sliding-window or ALiBi layers"):
        score_stepwise(model, ids, H2O(heavy_size=8, recent_size=8))
    with pytest.raises(UserError, match="sliding-window or ALiBi layers"):
        score_chunked(model, ids, H2O(heavy_size=8, recent_size=8, compress_every=8))


def test_a_requested_hypothesis_that_does_not_apply_is_named_not_dropped(tmp_path, capsys):
    from anomaly_probe.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", "tiny-neox", "--max-tokens", "160", "--num-samples", "1", "--method", "h2o",
                 "--method-arg", "heavy_size=16", "--method-arg", "recent_size=16", "--hypothesis", "sinks",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "note: sinks not run: does not apply to h2o(" in err
