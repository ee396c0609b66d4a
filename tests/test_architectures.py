"""Every mainstream architecture: tiny models per family, per-layer position schemes, sliding/hybrid
layers and ALiBi in every engine and position mode, equal to the stepwise reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anomaly_probe.engines import score_batched, score_parallel, score_recompute, score_stepwise
from anomaly_probe.engines.layers import layout, sliding_policy
from anomaly_probe.errors import UserError
from anomaly_probe.methods import FullCache, RecomputeOracle, StreamingLLM, WindowCache
from anomaly_probe.models.positions import describe_schemes, layer_schemes
from anomaly_probe.models.tiny_families import MODEL_NAMES, SLIDING_WINDOW, build_tiny

TOL = 1e-4  # nats, float32
MODES = ("in-cache", "absolute", "naive")
N = 100  # tokens: past the window (32) and the caches below, so every cache evicts
_MODELS: dict = {}
_REF: dict = {}


def _model(name):
    if name not in _MODELS:
        _MODELS[name] = build_tiny(name)[0]
    return _MODELS[name]


def _ids(n=N):
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(1))


def _stepwise(name, method, policy):
    key = (name, method, policy)
    if key not in _REF:
        with sliding_policy(policy):
            _REF[key] = score_stepwise(_model(name), _ids(), method)
    return _REF[key]


def _same(ref, got):
    assert got.tokens_scored == ref.tokens_scored == N - 1
    assert np.max(np.abs(ref.nll - got.nll)) <= TOL
    assert np.array_equal(ref.query_pos, got.query_pos)


# ------------------------------------------------------------------------------------------ schemes
def test_every_family_is_registered_and_seeded():
    from anomaly_probe.models import BUILTIN_MODELS

    assert set(MODEL_NAMES) <= set(BUILTIN_MODELS)
    a, b = build_tiny("tiny-gemma3", seed=3)[0], build_tiny("tiny-gemma3", seed=3)[0]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not torch.equal(next(build_tiny("tiny-gemma3", seed=4)[0].parameters()), next(a.parameters()))


def test_layer_schemes_are_read_from_the_model():
    neox = layer_schemes(_model("tiny-neox"))
    assert [s.kind for s in neox] == ["rope", "rope"] and neox[0].rope.rotary_ndims == 4  # partial: 0.25 of 16
    assert neox[0].window is None and neox[0].base == 10000
    llama = _model("tiny-llama")
    assert llama.config.num_key_value_heads < llama.config.num_attention_heads  # GQA
    assert layer_schemes(llama)[0].rope.rotary_ndims == 16
    assert [s.window for s in layer_schemes(_model("tiny-mistral"))] == [SLIDING_WINDOW] * 2
    gemma = layer_schemes(_model("tiny-gemma3"))
    assert [s.window for s in gemma] == [SLIDING_WINDOW, SLIDING_WINDOW, None]
    assert [s.base for s in gemma] == [10_000, 10_000, 1_000_000]  # two RoPE bases, one per layer type
    assert not torch.equal(gemma[0].rope.inv_freq, gemma[2].rope.inv_freq)
    assert [s.kind for s in layer_schemes(_model("tiny-bloom"))] == ["alibi", "alibi"]
    described = describe_schemes(gemma)
    assert [d["layers"] for d in described] == [[0, 1], [2]]
    assert described[1] | {"layers": None} == {
        "layers": None, "position": "rope", "attention": "full", "window": None, "layer_type": "full_attention",
        "rope_type": "default", "base": 1e6, "rotary_dims": 16, "head_dim": 16}


def test_scaled_rope_types_are_recorded_and_dynamic_is_refused_for_in_cache():
    from transformers import LlamaConfig, LlamaForCausalLM

    for rope_type, extra in (("linear", {"factor": 2.0}), ("dynamic", {"factor": 2.0})):
        cfg = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                          num_attention_heads=2, max_position_embeddings=128,
                          rope_parameters={"rope_type": rope_type, "rope_theta": 10000.0, **extra})
        model = LlamaForCausalLM(cfg).eval()
        (s,) = layer_schemes(model)
        assert s.rope_type == rope_type
        if rope_type == "dynamic":
            with pytest.raises(UserError, match="dynamic"):
                layout(model, StreamingLLM(4, 20, "in-cache"))
            layout(model, StreamingLLM(4, 20, "absolute"))  # fine: keys never move


def test_learned_positions_get_one_line_naming_the_closest_family():
    from transformers import GPT2Config, GPT2LMHeadModel

    model = GPT2LMHeadModel(GPT2Config(vocab_size=256, n_embd=32, n_layer=1, n_head=2, n_positions=128)).eval()
    with pytest.raises(UserError, match="closest supported famil") as err:
        score_stepwise(model, _ids(40), StreamingLLM(4, 10, "in-cache"))
    assert "\n" not in str(err.value) and "absolute" in str(err.value)
    score_stepwise(model, _ids(40), StreamingLLM(4, 10, "absolute"))  # absolute/naive need no key moves


def test_alibi_other_than_bloom_is_refused_where_the_bias_must_be_set():
    from transformers import MptConfig, MptForCausalLM

    model = MptForCausalLM(MptConfig(vocab_size=256, d_model=32, n_heads=2, n_layers=1, max_seq_len=128)).eval()
    with pytest.raises(UserError, match="BLOOM"):
        score_stepwise(model, _ids(40), StreamingLLM(4, 10, "absolute"))


# ------------------------------------------------------------------------------------------ engines
METHODS = [
    lambda mode: StreamingLLM(sink_size=4, recent_size=20, position_mode=mode),  # inside the window
    lambda mode: StreamingLLM(sink_size=4, recent_size=50, position_mode=mode),  # wider than the window
    lambda mode: WindowCache(recent_size=40, position_mode=mode),
]
SLIDING = ("tiny-gemma3", "tiny-mistral")
CASES = [(name, mode, k, policy) for name in MODEL_NAMES for mode in MODES
         for k in (range(len(METHODS)) if name in SLIDING else (0, 2))
         for policy in ((False, True) if name == "tiny-gemma3" else (False,))]  # mistral: no full layers


@pytest.mark.parametrize("name,mode,k,policy", CASES)
def test_parallel_equals_stepwise_on_every_family(name, mode, k, policy):
    method = METHODS[k](mode)
    ref = _stepwise(name, method, policy)
    with sliding_policy(policy):
        got = score_parallel(_model(name), _ids(), method, chunk_size=37, block_size=16)
    _same(ref, got)
    assert np.array_equal(ref.n_keys, got.n_keys)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_full_cache_batched_and_big_caches_equal_stepwise(name):
    """Our stepwise loop (per-group caches, explicit masks) against transformers' own sliding caches and
    masks (batched), and a cache that never evicts against the full cache, in every mode."""
    ref = _stepwise(name, FullCache(), False)
    _same(ref, score_batched(_model(name), _ids(), FullCache(), chunk_size=50))
    for mode in MODES:
        big = StreamingLLM(sink_size=4, recent_size=N, position_mode=mode)
        for policy in (False, True):
            assert np.max(np.abs(_stepwise(name, big, policy).nll - ref.nll)) <= TOL


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_recompute_oracle_equals_a_plain_forward_per_query(name):
    model, ids = _model(name), _ids(90)
    method = RecomputeOracle(48, 16)
    got = score_recompute(model, ids, method, chunk_size=20)
    want = []
    with torch.no_grad():
        for t in range(ids.numel() - 1):
            start = int(method.window_start(torch.tensor(t)))
            logits = model(input_ids=ids[start:t + 1][None], use_cache=False).logits[0, -1]
            want.append(-torch.log_softmax(logits.float(), -1)[ids[t + 1]].item())
    assert np.max(np.abs(np.array(want) - got.nll)) <= TOL


class _KeyCounts:
    """Observer: cached keys per layer after each step."""

    def __init__(self):
        self.rows = []

    def after_forward(self, info, cache, seconds):
        self.rows.append([layer.keys.shape[-2] for layer in cache.layers])


@pytest.mark.parametrize("engine", [score_stepwise, score_parallel])
def test_sliding_layers_keep_their_window_and_the_policy_acts_on_full_layers(engine):
    model = _model("tiny-gemma3")  # layers 0, 1 slide over 32 tokens; layer 2 is full
    method = StreamingLLM(sink_size=4, recent_size=20, position_mode="in-cache")
    for policy, sliding_kept in ((False, SLIDING_WINDOW - 1), (True, 20)):
        counts = _KeyCounts()
        with sliding_policy(policy):
            engine(model, _ids(), method, observer=counts)
        assert counts.rows[-1] == [sliding_kept, sliding_kept, 24]
    assert layout(model, method).groups[0].policy is False and layout(model, method, True).groups[0].policy


def test_policy_applies_to_a_model_without_full_layers():
    model = _model("tiny-mistral")
    groups = layout(model, StreamingLLM(4, 20, "in-cache")).groups
    assert len(groups) == 1 and groups[0].policy and groups[0].window == SLIDING_WINDOW
    small = _stepwise("tiny-mistral", StreamingLLM(4, 20, "in-cache"), False)
    assert np.max(np.abs(small.nll - _stepwise("tiny-mistral", FullCache(), False).nll)) > 1e-3


def test_policy_on_sliding_changes_the_hybrid_result():
    method = StreamingLLM(sink_size=4, recent_size=20, position_mode="in-cache")
    off, on = _stepwise("tiny-gemma3", method, False), _stepwise("tiny-gemma3", method, True)
    assert np.max(np.abs(off.nll - on.nll)) > 1e-3


def test_alibi_absolute_keeps_true_distances_and_in_cache_compresses_them():
    """With sinks, the two modes put the sinks at different distances (they differ); the engine-set bias
    in absolute mode is checked against the model's own slot-based bias through the parallel engine."""
    a = _stepwise("tiny-bloom", StreamingLLM(4, 20, "absolute"), False)
    c = _stepwise("tiny-bloom", StreamingLLM(4, 20, "in-cache"), False)
    n = _stepwise("tiny-bloom", StreamingLLM(4, 20, "naive"), False)
    assert np.max(np.abs(a.nll - c.nll)) > 1e-3
    assert np.array_equal(c.nll, n.nll)  # ALiBi: the bias comes from cache slots, naive == in-cache
    w_abs = _stepwise("tiny-bloom", WindowCache(recent_size=40, position_mode="absolute"), False)
    w_in = _stepwise("tiny-bloom", WindowCache(recent_size=40, position_mode="in-cache"), False)
    assert np.max(np.abs(w_abs.nll - w_in.nll)) <= TOL  # no sinks: every distance is the true one in both


def test_check_passes_on_a_hybrid_model():
    from anomaly_probe.check.context import CheckContext, CheckOptions
    from anomaly_probe.check.suite import all_checks, run_suite

    ctx = CheckContext(CheckOptions(model="tiny-gemma3", max_tokens=100, num_samples=1, recent_size=40))
    results = run_suite(ctx, all_checks(ctx.method))
    assert results and all(r.status in ("pass", "skip") for r in results), [(r.name, r.reason) for r in results]
    assert any(r.name.endswith("stepwise-vs-parallel") and r.status == "pass" for r in results)


# ------------------------------------------------------------------------------------------ records
def test_position_schemes_round_trip_and_report_table(tmp_path):
    from anomaly_probe.reports.rundata import RunData
    from anomaly_probe.reports.tables import position_schemes_table
    from anomaly_probe.rundir.schema import Results

    schemes = describe_schemes(layer_schemes(_model("tiny-gemma3")))
    data = Results(model={"trained_context": 128, "sliding_window": 32}, position_schemes=schemes).to_dict()
    assert data["position_schemes"] == schemes
    assert Results.from_dict(data).position_schemes == schemes
    assert "position_schemes" not in Results().to_dict()  # an import has none
    table = position_schemes_table(RunData(tmp_path, data))
    text = str([[c.text for c in row] for row in table.rows])
    assert "0-1" in text and "base 10000" in text and "base 1e+06" in text and "window 32" in text
    assert "Trained context (full-attention layers): 128" in table.caption and "sliding window: 32" in table.caption
    assert position_schemes_table(RunData(tmp_path, {})) is None


def test_loaded_model_reports_its_window_and_schemes():
    from anomaly_probe.models import load_model

    lm = load_model("tiny-gemma3", device=torch.device("cpu"), dtype=torch.float32)
    assert (lm.trained_context, lm.sliding_window) == (128, SLIDING_WINDOW)
    assert [s["attention"] for s in lm.position_schemes] == ["sliding", "full"]
    assert load_model("tiny-llama", device=torch.device("cpu"), dtype=torch.float32).sliding_window is None


def test_cli_policy_on_sliding_reaches_the_config():
    from anomaly_probe.cli import build_parser
    from anomaly_probe.run.command import config_from_args

    args = build_parser().parse_args(["run", "--model", "tiny-gemma3", "--policy-on-sliding"])
    assert config_from_args(args).policy_on_sliding is True
    args = build_parser().parse_args(["run", "--model", "tiny-gemma3"])
    assert config_from_args(args).policy_on_sliding is False
    chk = build_parser().parse_args(["check", "--model", "tiny-gemma3", "--policy-on-sliding"])
    from anomaly_probe.check.command import options_from_args

    assert options_from_args(chk).policy_on_sliding is True


def test_resume_flags_hold_only_a_typed_policy_on_sliding():
    from anomaly_probe.cli import build_parser

    given, _ = build_parser(defaults=False).parse_known_args(["run", "--resume", "x"])
    assert "policy_on_sliding" not in vars(given)
    given, _ = build_parser(defaults=False).parse_known_args(["run", "--resume", "x", "--policy-on-sliding"])
    assert vars(given)["policy_on_sliding"] is True


def test_an_intervention_the_model_cannot_take_fails_its_verdict_not_the_run(tmp_path):
    """BLOOM's attention cannot be switched, so the numerics intervention cannot run on it: that unit is
    a recorded failure and the numerics verdict is ERROR quoting it; the other units and verdicts run."""
    import json

    from anomaly_probe.cli import main

    out = tmp_path / "run"
    assert main(["run", "--model", "tiny-bloom", "--hypothesis", "numerics", "--max-tokens", "100",
                 "--recent-size", "20", "--out", str(out)]) == 1  # units failed: exit 1
    results = json.loads((out / "results.json").read_text())
    assert [f["key"] for f in results["failures"]] and "cannot run on this model" in results["failures"][0]["error"]
    (verdict,) = [v for v in results["verdicts"] if v["hypothesis"] == "numerics"]
    assert verdict["status"] == "error" and results["status"] == "partial"
    assert results["position_schemes"][0]["position"] == "alibi"
