"""Attention plumbing (``anomaly_probe.attention``): the scoped switch, the mask converter, the GQA scorer,
and the rule that only ``attention/hf.py`` names transformers' private attention and cache API."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest
import torch

from anomaly_probe.attention import (attention_implementation, causal_visible, gqa_scores, gqa_weighted,
                                     visible_from_mask)
from anomaly_probe.attention import hf
from anomaly_probe.errors import UserError

PACKAGE = Path(__file__).resolve().parents[1] / "anomaly_probe"
HOME = "attention/hf.py"  # the one module allowed to name transformers' private API
PREFIX = "test_attn_switch"


def _ours() -> set[str]:
    return {n for n in hf.registered_names() if n.startswith(PREFIX)}


def _counting(model, counter: dict, key: str):
    """A pass-through attention (the model's sdpa) that counts its calls."""
    sdpa = hf.attention_function(model, "sdpa")

    def fn(*args, **kwargs):
        counter[key] = counter.get(key, 0) + 1
        return sdpa(*args, **kwargs)

    return fn


# ---------------------------------------------------------------------------- the switch
def test_switch_runs_the_function_then_restores_and_unregisters(tiny):
    model, _ = tiny
    before = hf.current_implementation(model)
    ids = torch.arange(20)[None]
    plain = model(input_ids=ids).logits
    calls: dict = {}
    with attention_implementation(model, PREFIX, _counting(model, calls, "a"), "sdpa") as name:
        assert name == PREFIX and hf.current_implementation(model) == PREFIX and _ours() == {PREFIX}
        switched = model(input_ids=ids).logits
    assert calls["a"] == model.config.num_hidden_layers  # one call per layer: the switch took effect
    assert torch.equal(plain, switched)
    assert hf.current_implementation(model) == before and _ours() == set()


def test_switch_restores_and_unregisters_when_the_body_raises(tiny):
    model, _ = tiny
    before = hf.current_implementation(model)
    with pytest.raises(RuntimeError, match="boom"):
        with attention_implementation(model, PREFIX, _counting(model, {}, "a"), "sdpa"):
            model(input_ids=torch.arange(5)[None])
            raise RuntimeError("boom")
    assert hf.current_implementation(model) == before and _ours() == set()


def test_switch_that_does_not_take_effect_raises_and_leaves_nothing(tiny, monkeypatch):
    model, _ = tiny
    before = hf.current_implementation(model)
    monkeypatch.setattr(model, "set_attn_implementation", lambda name: None)  # a model that ignores the switch
    ran = False
    with pytest.raises(UserError, match="refused to switch its attention implementation") as exc:
        with attention_implementation(model, PREFIX, _counting(model, {}, "a"), "sdpa", fallback="do X"):
            ran = True
    assert not ran and "\n" not in str(exc.value) and str(exc.value).endswith("; do X")
    assert hf.current_implementation(model) == before and _ours() == set()


def test_models_that_cannot_switch_are_refused_before_registering():
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    neo = GPTNeoForCausalLM(GPTNeoConfig(vocab_size=64, hidden_size=32, num_layers=2, num_heads=2,
                                         attention_types=[[["global"], 2]], max_position_embeddings=64)).eval()
    before = hf.current_implementation(neo)
    with pytest.raises(UserError, match="does not dispatch through transformers' AttentionInterface"):
        with attention_implementation(neo, PREFIX, lambda *a, **k: None, "sdpa"):
            pass
    assert hf.current_implementation(neo) == before and _ours() == set()
    with pytest.raises(UserError, match="not a transformers model"):
        with attention_implementation(torch.nn.Linear(2, 2), PREFIX, lambda *a, **k: None, "sdpa"):
            pass


def test_unknown_mask_function_is_refused(tiny):
    model, _ = tiny
    before = hf.current_implementation(model)
    with pytest.raises(UserError, match="no mask function"):
        with attention_implementation(model, PREFIX, _counting(model, {}, "a"), "no_such_implementation"):
            pass
    assert hf.current_implementation(model) == before and _ours() == set()


def test_nested_switches_stack(tiny):
    model, _ = tiny
    before = hf.current_implementation(model)
    ids = torch.arange(10)[None]
    calls: dict = {}
    with attention_implementation(model, PREFIX, _counting(model, calls, "outer"), "sdpa") as outer:
        with attention_implementation(model, PREFIX, _counting(model, calls, "inner"), "sdpa") as inner:
            assert (outer, inner) == (PREFIX, f"{PREFIX}_2")  # the taken name is not overwritten
            assert hf.current_implementation(model) == inner and _ours() == {outer, inner}
            model(input_ids=ids)
            assert calls == {"inner": 2}
        assert hf.current_implementation(model) == outer and _ours() == {outer}
        model(input_ids=ids)
        assert calls == {"inner": 2, "outer": 2}
    assert hf.current_implementation(model) == before and _ours() == set()


# ---------------------------------------------------------------------------- the mask converter
def test_additive_mask_threshold_and_bias():
    lo32 = torch.finfo(torch.float32).min
    mask = torch.tensor([[0.0, lo32, lo32, lo32],
                         [0.0, -2.5, lo32, float("-inf")],
                         [0.0, 0.0, lo32 / 2, lo32 / 4]])[None, None]  # (1, 1, 3, 4) additive
    visible, bias = visible_from_mask(mask, 0, 3, 3, 4, torch.device("cpu"))
    assert visible.tolist() == [[[[True, False, False, False], [True, True, False, False],
                                  [True, True, False, True]]]]  # min / 2 is masked, min / 4 a (huge) bias
    assert bias.dtype == torch.float32
    assert bias[0, 0].tolist() == [[0.0, 0.0, 0.0, 0.0], [0.0, -2.5, 0.0, 0.0], [0.0, 0.0, 0.0, lo32 / 4]]
    rows, rbias = visible_from_mask(mask, 1, 2, 3, 4, torch.device("cpu"))  # query rows 1..2
    assert torch.equal(rows, visible[..., 1:3, :]) and torch.equal(rbias, bias[..., 1:3, :])


def test_additive_mask_just_above_the_minimum_is_masked():
    """A combined fp16 mask (minimum plus a bias) is still masked: its softmax weight is exactly 0."""
    lo16 = torch.finfo(torch.float16).min
    mask = torch.tensor([0.0, lo16 + 100, lo16, -1.0], dtype=torch.float16).view(1, 1, 1, 4)
    assert mask[0, 0, 0, 1] > lo16  # representable: a `> min` threshold would call it visible
    visible, bias = visible_from_mask(mask, 0, 1, 1, 4, torch.device("cpu"))
    assert visible.flatten().tolist() == [True, False, False, True]
    weights = torch.softmax(mask.float(), dim=-1)
    assert weights.flatten()[1].item() == 0.0
    assert bias.flatten().tolist() == [0.0, 0.0, 0.0, -1.0]


def test_boolean_and_missing_masks():
    cpu = torch.device("cpu")
    mask = torch.rand(2, 1, 4, 6, generator=torch.Generator().manual_seed(0)) > 0.5  # (B, 1, Tq, Tk)
    visible, bias = visible_from_mask(mask, 0, 4, 4, 6, cpu)
    assert torch.equal(visible, mask) and bias is None
    visible, _ = visible_from_mask(mask, 1, 2, 4, 6, cpu)
    assert torch.equal(visible, mask[..., 1:3, :])
    one_row = mask[:, :, :1]  # (B, 1, 1, Tk): broadcast over queries
    assert visible_from_mask(one_row, 2, 2, 4, 6, cpu)[0] is one_row
    assert visible_from_mask(None, 0, 1, 1, 6, cpu) == (None, None)  # one query sees every key
    visible, bias = visible_from_mask(None, 1, 2, 3, 5, cpu)  # queries are keys 2..4; rows 1..2 = keys 3, 4
    assert bias is None and visible.tolist() == [[[[True, True, True, True, False], [True] * 5]]]
    assert torch.equal(causal_visible(3, 5, cpu), torch.ones(5, 5, dtype=torch.bool).tril()[2:][None, None])
    with pytest.raises(TypeError, match="unsupported attention mask"):
        visible_from_mask(torch.zeros(4, 6), 0, 4, 4, 6, cpu)


def test_manual_attention_applies_an_additive_mask_like_sdpa():
    """The intervention attention reads masks through the converter: causal, padding and bias as sdpa does."""
    from anomaly_probe.interventions.manual_attention import AttentionRecipe, make_attention

    g = torch.Generator().manual_seed(1)
    B, H, Hkv, T, D = 1, 4, 2, 9, 8
    q, k, v = (torch.randn(B, h, T, D, generator=g) for h in (H, Hkv, Hkv))
    bias = torch.randn(B, 1, T, T, generator=g)
    additive = torch.where(torch.ones(T, T, dtype=torch.bool).tril(), bias, torch.finfo(torch.float32).min)
    additive[..., 3] = torch.finfo(torch.float32).min  # a padded key
    ref = torch.nn.functional.scaled_dot_product_attention(q, k.repeat_interleave(2, 1), v.repeat_interleave(2, 1),
                                                           attn_mask=additive)  # (B, H, T, D)
    out, _ = make_attention(AttentionRecipe())(None, q, k, v, additive, scaling=D ** -0.5)  # (B, T, H, D)
    assert torch.allclose(out.transpose(1, 2), ref, atol=1e-6)


# ---------------------------------------------------------------------------- the GQA scorer
@pytest.mark.parametrize("kv_heads", [6, 2, 1])  # MHA, GQA, MQA
def test_gqa_scores_equal_a_naive_per_head_computation(kv_heads):
    g = torch.Generator().manual_seed(kv_heads)
    B, H, n, m, D = 2, 6, 5, 7, 8
    q = torch.randn(B, H, n, D, generator=g, dtype=torch.float64)
    k = torch.randn(B, kv_heads, m, D, generator=g, dtype=torch.float64)
    v = torch.randn(B, kv_heads, m, 3, generator=g, dtype=torch.float64)
    G = H // kv_heads
    naive = torch.stack([torch.stack([q[b, h] @ k[b, h // G].T for h in range(H)])
                         for b in range(B)])  # (B, H, n, m), one matrix product per batch and head
    got = gqa_scores(q, k)
    assert got.dtype == torch.float32 and got.shape == (B, H, n, m)
    assert torch.allclose(got.double(), naive, atol=1e-5)
    assert torch.allclose(gqa_scores(q, k, dtype=torch.float64), naive, rtol=1e-12, atol=1e-12)
    buffer = torch.full((1, H, n, m + 3), float("nan"))  # a padded row, as the probe's batch buffer
    gqa_scores(q[:1], k[:1], out=buffer[..., :m])
    assert torch.allclose(buffer[..., :m].double(), naive[:1], atol=1e-5) and buffer[..., m:].isnan().all()
    p = torch.softmax(naive, dim=-1)
    naive_out = torch.stack([torch.stack([p[b, h] @ v[b, h // G] for h in range(H)]) for b in range(B)])  # (B, H, n, 3)
    assert torch.allclose(gqa_weighted(p, v), naive_out, rtol=1e-12, atol=1e-12)


def test_gqa_refuses_heads_that_do_not_group():
    with pytest.raises(ValueError, match="cannot share"):
        gqa_scores(torch.zeros(1, 6, 2, 4), torch.zeros(1, 4, 3, 4))


# ---------------------------------------------------------------------------- one home for the private API
PRIVATE = frozenset({
    "masking_utils", "modeling_utils", "cache_utils", "ALL_ATTENTION_FUNCTIONS", "ALL_MASK_ATTENTION_FUNCTIONS",
    "AttentionInterface", "AttentionMaskInterface", "eager_mask", "sdpa_mask", "_global_mapping",
    "_attn_implementation", "_attn_implementation_internal", "set_attn_implementation",
    "_can_set_attn_implementation", "get_interface", "eager_attention_forward", "DynamicLayer",
})
"""transformers' attention and cache internals: names, attributes, module paths."""

PENDING: set = set()
"""Uses in modules another helper owns while issue #13 is split (runner.py records the implementation
in results.json). The lead replaces each with ``anomaly_probe.attention.hf.current_implementation(model)``
and removes the entry; a stale entry fails the test below."""


def private_uses(source: str) -> list[tuple[int, str]]:
    """``(line, name)`` for every private name used as a name, attribute, import or dotted string."""
    hits = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.alias):
            names = [*node.name.split("."), node.asname or ""]
        elif isinstance(node, ast.ImportFrom):
            names = (node.module or "").split(".")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.replace(".", "").isidentifier():
            names = node.value.split(".")  # getattr(x, "_attn_implementation"), import_module("transformers.cache_utils")
        hits += [(getattr(node, "lineno", 0), name) for name in names if name in PRIVATE]
    return hits


def test_the_scanner_sees_code_and_ignores_prose():
    code = ('"""Uses AttentionInterface in prose only."""\n'
            "from transformers.masking_utils import x\n"
            "import transformers.cache_utils as c\n"
            "impl = model.config._attn_implementation\n"
            "f = getattr(model, 'set_attn_implementation')\n"
            "msg = f'{model.config._attn_implementation}'\n"
            "ok = 'bypasses AttentionInterface; use --probes cache'\n")
    assert sorted(private_uses(code)) == [(2, "masking_utils"), (3, "cache_utils"), (4, "_attn_implementation"),
                                          (5, "set_attn_implementation"), (6, "_attn_implementation")]


def test_only_attention_hf_names_transformers_private_api():
    offenders, pending_seen = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel == HOME:
            continue
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines()
        for line, name in private_uses(source):
            pending = next((p for p in PENDING if p[0] == name and p[1] in lines[line - 1]), None)
            if pending is not None:
                pending_seen.add(pending)
            else:
                offenders.append(f"anomaly_probe/{rel}:{line}: {name}")
    assert not offenders, ("transformers' private attention/cache API outside anomaly_probe/attention/hf.py "
                           "(add a wrapper there): " + "; ".join(offenders))
    assert pending_seen == PENDING, f"stale PENDING entries, remove them: {sorted(PENDING - pending_seen)}"
    assert private_uses((PACKAGE / HOME).read_text(encoding="utf-8"))  # the home is where they are


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_imports_flow_one_way():
    """Probes never import engines (the step contract is neutral); attention imports none of its users."""
    for path in (PACKAGE / "probes").rglob("*.py"):
        assert not {m for m in _imports(path) if m.startswith("anomaly_probe.engines")}, path.name
    users = ("anomaly_probe.engines", "anomaly_probe.probes", "anomaly_probe.interventions", "anomaly_probe.check")
    for path in [*(PACKAGE / "attention").rglob("*.py"), PACKAGE / "step_context.py"]:
        assert not {m for m in _imports(path) if m.startswith(users)}, path.name


def test_default_chunk_is_defined_once():
    from anomaly_probe.config import DEFAULT_CHUNK, RunConfig
    from anomaly_probe.engines import score_batched, score_parallel, score_recompute

    assert RunConfig().chunk_size == DEFAULT_CHUNK
    for fn in (score_batched, score_parallel, score_recompute):
        assert inspect.signature(fn).parameters["chunk_size"].default == DEFAULT_CHUNK, fn.__name__
    for path in (PACKAGE / "engines").rglob("*.py"):
        assert "DEFAULT_CHUNK =" not in path.read_text(encoding="utf-8"), path.name
