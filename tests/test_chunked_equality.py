"""The chunked engine's equality contract with the stepwise reference (issue #12): decision traces, the
float32 check up to the first decision difference, the float64 proof after it, and ``check``'s use of it."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from anomaly_probe.engines import chunked_equality as ce
from anomaly_probe.engines.chunked import score_policy
from anomaly_probe.engines.chunked_equality import chunked_equality, in_float64
from anomaly_probe.engines.decision_trace import DecisionTrace, first_difference
from anomaly_probe.methods import H2O, TOVA, KVQuant, ScoredEviction

TOL = 1e-4  # nats
pytestmark = pytest.mark.usefixtures("one_torch_thread")

POLICIES = [
    KVQuant(base=TOVA(heavy_size=48, compress_every=16), bits=4, group_size=16),
    KVQuant(base=H2O(heavy_size=32, recent_size=16, compress_every=8), bits=8, group_size=16),
    KVQuant(bits=4, group_size=16),  # the full cache, rounded: no eviction
    TOVA(heavy_size=48, compress_every=16),
    H2O(heavy_size=32, recent_size=16, compress_every=16, position_mode="absolute"),
]


@pytest.fixture(scope="module")
def model(tiny):
    return tiny[0]


@pytest.fixture(scope="module")
def model64(tiny):
    return copy.deepcopy(tiny[0]).to(torch.float64)


@pytest.fixture(scope="module")
def ids(tiny_ids):
    return tiny_ids[:260]


@dataclasses.dataclass(frozen=True)
class Chaotic(ScoredEviction):
    """Planted noise amplifier: ranks keys by the 24th bit onwards of the last query's weight, so float32
    rounding noise (one query vs a chunk) reorders them while float64 noise (~1e-16) does not."""

    needs_attention = True

    def score(self, view):
        hkv = view.keys.shape[0]
        w = view.last_attention.view(hkv, -1, view.n).mean(dim=1).double()  # (Hkv, n)
        return torch.frac(w * 2.0 ** 24)


# ------------------------------------------------------------------------------------------ the trace
def test_trace_records_kept_sets_and_rounding_levels_at_each_decision(model, ids):
    method = POLICIES[0]
    trace = DecisionTrace()
    score_policy(model, ids, method, 16, trace=trace)
    kinds = {d.kind for d in trace.decisions}
    assert kinds == {"kept", "K levels", "V levels"}
    assert all((d.token + 1) % 16 == 0 for d in trace.decisions)  # after each completed group / eviction
    kept = [d for d in trace.decisions if d.kind == "kept"]
    hkv = model.config.num_attention_heads  # tiny-neox: MHA
    assert kept and all(d.choice.shape == (hkv, method.capacity) for d in kept)
    assert all(d.choice.max() <= d.token for d in kept)  # absolute token indices, none from the future
    levels = [d for d in trace.decisions if d.kind == "K levels"]
    assert all(d.choice.dtype == np.uint8 and d.choice.max() <= 15 for d in levels)  # int4 levels
    assert len(levels) == (ids.numel() - 1) // 16 * model.config.num_hidden_layers


def test_first_difference_names_a_rounding_flip_and_a_kept_set():
    a, b = DecisionTrace(), DecisionTrace()
    levels = torch.arange(12, dtype=torch.uint8).reshape(3, 4)
    for t in (a, b):
        t.add(15, 0, "K levels", levels)
        t.add(15, 1, "kept", torch.tensor([[0, 1, 5], [0, 2, 5]]))
    assert first_difference(a, b) is None
    flipped = levels.clone()
    flipped[1, 2] += 1
    b.add(31, 0, "K levels", flipped)
    a.add(31, 0, "K levels", levels)
    d = first_difference(a, b)
    assert (d.token, d.layer, d.kind) == (31, 0, "K levels") and "differ in 1 of 12" in d.what
    c = DecisionTrace()
    c.add(15, 0, "K levels", levels)
    c.add(15, 1, "kept", torch.tensor([[0, 1, 5], [0, 3, 5]]))
    d = first_difference(a, c)
    assert (d.token, d.layer, d.kind) == (15, 1, "kept") and "KV head 1 keeps token 2 vs 3" in d.what


# ------------------------------------------------------------------------------------------ the rule
@pytest.mark.parametrize("method", POLICIES, ids=lambda m: m.label())
def test_chunked_equals_stepwise_in_float32_with_the_same_decisions(model, ids, method):
    eq = chunked_equality(model, ids, method, TOL)
    assert eq.decisions > 0 and eq.decision is None
    assert eq.equal and eq.proved_in == "float32" and eq.max_diff <= TOL
    assert "equal in float32" in eq.message()


@pytest.mark.parametrize("method", POLICIES, ids=lambda m: m.label())
def test_chunked_equals_stepwise_in_float64(model64, ids, method):
    eq = chunked_equality(model64, ids, method, TOL)
    assert eq.decision is None and eq.equal and eq.proved_in == "float64"
    assert eq.max_diff <= 1e-9  # float64 noise, not float32's


def test_a_float32_decision_flip_is_located_and_proved_in_float64(model, ids):
    method = Chaotic(heavy_size=40, recent_size=8, compress_every=16)
    eq = chunked_equality(model, ids, method, TOL)
    assert eq.decision is not None and eq.decision.kind == "kept"  # float32 noise reorders the planted scores
    assert eq.max_diff > TOL and eq.max_diff_before <= TOL  # the NLLs part only after the flip
    assert eq.equal and eq.proved_in == "float64" and eq.max_diff64 <= TOL and eq.decision64 is None
    assert next(model.parameters()).dtype == torch.float32  # cast back
    msg = eq.message()
    assert msg.startswith("equal in float64") and f"first differ after token {eq.decision.token}" in msg
    assert not chunked_equality(model, ids, method, TOL, float64=False).equal  # no proof without float64


def test_a_wrong_chunk_fails_in_float64_too(model, ids, monkeypatch):
    method = TOVA(heavy_size=48, compress_every=16)
    monkeypatch.setattr(ce, "chunk_queries", lambda m: 5)  # 5 does not divide 16: evictions land late
    eq = chunked_equality(model, ids, method, TOL)
    assert not eq.equal and eq.proved_in is None and eq.max_diff64 > TOL
    assert eq.message().startswith("NOT equal in float64")


def test_the_message_says_what_was_proved_where():
    from anomaly_probe.engines.chunked_equality import Equality
    from anomaly_probe.engines.decision_trace import DecisionDiff

    d = DecisionDiff(63, 11, "K levels", "K levels differ in 1 of 6144")
    base = dict(dtype="float32", max_diff=0.31, max_diff_before=1.6e-5, decision=d, decisions=720)
    assert Equality(True, "float64", **base, max_diff64=0.0).message() == (
        "equal in float64 (max |dNLL| 0); in float32 the decisions first differ after token 63 (layer 11, "
        "K levels differ in 1 of 6144): max |dNLL| 1.6e-05 before it, 0.31 overall")
    assert Equality(False, None, **base, skipped64="no float64 on mps").message().startswith(
        "float64 proof not run (no float64 on mps); in float32")
    assert Equality(False, None, **{**base, "max_diff_before": 0.2}).message().startswith(
        "NOT equal in float32 before the first decision difference")
    assert Equality(False, None, **{**base, "dtype": "float64"}).message().startswith(
        "NOT equal in float64 after the decisions differ")
    same = dict(base, decision=None, max_diff=2e-6, max_diff_before=2e-6)
    assert Equality(True, "float32", **same).message() == "equal in float32 (max |dNLL| 2e-06), same 720 decisions"


def test_in_float64_casts_back_each_tensor_to_its_own_dtype():
    lin = torch.nn.Linear(3, 2).to(torch.float16)
    lin.register_buffer("freq", torch.tensor([0.1, 0.2], dtype=torch.float32))
    w = lin.weight.detach().clone()
    with in_float64(lin):
        assert lin.weight.dtype == lin.freq.dtype == torch.float64
    assert lin.weight.dtype == torch.float16 and lin.freq.dtype == torch.float32 and torch.equal(lin.weight, w)


def test_in_float64_runs_llama_rms_norms_in_float64_and_removes_its_hooks():
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    g = torch.Generator().manual_seed(1)
    norm = LlamaRMSNorm(8, eps=1e-5)
    norm.weight.data = torch.randn(8, generator=g)
    x = torch.randn(3, 8, generator=g, dtype=torch.float64)
    with in_float64(norm):
        out = norm(x)
        want = norm.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert out.dtype == torch.float64 and (out - want).abs().max() < 1e-14
    assert not norm._forward_hooks and norm.weight.dtype == torch.float32
    assert (norm(x) - want).abs().max() > 1e-12  # the module alone passes through float32


def test_chunked_equals_stepwise_in_float64_on_a_llama_model(tiny_ids):
    from anomaly_probe.models.tiny_families import build_tiny

    llama, _ = build_tiny("tiny-llama", seed=0)
    with in_float64(llama):
        eq = chunked_equality(llama, tiny_ids[:200], POLICIES[0], TOL)
    assert eq.dtype == "float64" and eq.decision is None and eq.equal and eq.max_diff <= 1e-9


def test_policy_arithmetic_stays_float64_for_a_float64_model():
    from anomaly_probe.methods.kv_quant import quantize_per_channel, quantize_per_token
    from anomaly_probe.models.rope import RopeSpec

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 32, 16, generator=g, dtype=torch.float64)
    tiny = x + 1e-12  # float32 cannot tell these apart; float64 rounding keeps them apart where it must
    for fn in (lambda v: quantize_per_token(v, 16, 8), lambda v: quantize_per_channel(v, torch.ones(2, 32, dtype=torch.bool), 8)):
        q = fn(x)
        assert q.dtype == torch.float64 and (q - fn(tiny)).abs().max() < 1e-9
        assert not torch.equal(q, q.float().double())  # not float32 values
    rope = RopeSpec(inv_freq=1.0 / (100.0 ** (torch.arange(0, 8, 2).float() / 8)), head_dim=8)
    k = torch.randn(1, 2, 5, 8, generator=g, dtype=torch.float64)
    back = rope.rotate(rope.rotate(k, torch.arange(5)), -torch.arange(5))
    assert back.dtype == torch.float64 and (back - k).abs().max() < 1e-12


# ------------------------------------------------------------------------------------------ check
def test_check_names_the_dtype_that_proved_it(capsys):
    import json

    from anomaly_probe.cli import main

    assert main(["check", "--method", "kv_quant", "--method-arg", "base=tova", "--method-arg", "heavy_size=48",
                 "--method-arg", "group_size=16", "--compress-every", "16", "--only", "engines.policy",
                 "--num-samples", "1"]) == 0
    out = capsys.readouterr().out
    assert "equal in float32" in out and "same" in out and "decisions" in out


# ------------------------------------------------------------------------------------------ SmolLM2
@pytest.mark.slow
@pytest.mark.parametrize("method", [
    H2O(heavy_size=64, recent_size=64, compress_every=32),
    KVQuant(base=TOVA(heavy_size=96, compress_every=32), bits=4),
    KVQuant(bits=4),
], ids=lambda m: m.label())
def test_chunked_equals_stepwise_smollm2(smollm2, smol_ids, method):
    """float32 up to the first decision difference, float64 after it (int4 on SmolLM2: a key or value on a
    rounding boundary flips by one level between the engines, and the caches part; README)."""
    eq = chunked_equality(smollm2.model, smol_ids[:400], method, TOL)
    assert eq.equal, eq.message()
    assert eq.proved_in == "float32" or (eq.decision is not None and eq.decision64 is None)
    assert next(smollm2.model.parameters()).dtype == torch.float32
