"""Seeded random test models, one per architecture family, built from configs in code.

Each is registered as ``--model tiny-<family>`` and shares tiny-neox's recipe: the byte tokenizer (256
ids), a trained context of :data:`TRAINED_CONTEXT` (128) so that tests cross it in milliseconds, two or
three layers, float32, and weights drawn with a larger std than the default so that attention is peaked
and positions matter. Their perplexities mean nothing; every engine and method must agree on them.

| name | family | what it exercises |
|---|---|---|
| ``tiny-neox`` | GPT-NeoX / Pythia | partial rotary (``rotary_pct`` 0.25), parallel residual |
| ``tiny-llama`` | Llama | GQA (4 query heads, 2 key/value heads), full rotary |
| ``tiny-mistral`` | Mistral v0.1 | every layer slides over :data:`SLIDING_WINDOW` tokens, GQA |
| ``tiny-gemma3`` | Gemma 3 | hybrid: two sliding layers then one full layer, two RoPE bases (10k local, 1M global) |
| ``tiny-bloom`` | BLOOM | ALiBi instead of RoPE |
"""

from __future__ import annotations

from typing import Callable

import torch

from anomaly_probe.models.tiny_neox import TRAINED_CONTEXT, ByteTokenizer

SLIDING_WINDOW = 32
"""Sliding window of the sliding layers (tokens a query sees, itself included): smaller than the trained context."""


def _config_llama():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=TRAINED_CONTEXT, tie_word_embeddings=False), "LlamaForCausalLM"


def _config_mistral():
    from transformers import MistralConfig

    return MistralConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                         max_position_embeddings=TRAINED_CONTEXT, sliding_window=SLIDING_WINDOW,
                         tie_word_embeddings=False), "MistralForCausalLM"


def _config_gemma3():
    from transformers import Gemma3TextConfig

    return Gemma3TextConfig(
        vocab_size=ByteTokenizer.vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, query_pre_attn_scalar=16,
        max_position_embeddings=TRAINED_CONTEXT, sliding_window=SLIDING_WINDOW,
        layer_types=["sliding_attention", "sliding_attention", "full_attention"],
        rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1_000_000.0},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0}},
        tie_word_embeddings=False), "Gemma3ForCausalLM"


def _config_bloom():
    from transformers import BloomConfig

    config = BloomConfig(vocab_size=ByteTokenizer.vocab_size, hidden_size=64, n_layer=2, n_head=4,
                         tie_word_embeddings=False)
    config.max_position_embeddings = TRAINED_CONTEXT  # BLOOM's config has no context length; we state one
    return config, "BloomForCausalLM"


FAMILIES: dict[str, Callable] = {
    "llama": _config_llama,
    "mistral": _config_mistral,
    "gemma3": _config_gemma3,
    "bloom": _config_bloom,
}
"""Family name -> config builder (returns the config and the causal-LM class name)."""

MODEL_NAMES = ("tiny-neox", *(f"tiny-{name}" for name in FAMILIES))
"""Every built-in tiny model name, as ``--model`` takes it."""


def build_tiny(name: str, seed: int = 0) -> tuple[torch.nn.Module, ByteTokenizer]:
    """Build ``tiny-<family>`` (float32, eval mode) and its byte tokenizer.

    Parameters
    ----------
    name : str
        One of :data:`MODEL_NAMES`.
    seed : int
        Seed for the random weights; the same seed gives the same model.
    """
    if name == "tiny-neox":
        from anomaly_probe.models import tiny_neox  # looked up now: tests replace build_tiny_neox

        return tiny_neox.build_tiny_neox(seed=seed)
    import transformers

    config, cls_name = FAMILIES[name.removeprefix("tiny-")]()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = getattr(transformers, cls_name)(config)
        for p in model.parameters():  # peaked attention, so positions matter (random weights)
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.08)
    model.eval()
    return model, ByteTokenizer()
