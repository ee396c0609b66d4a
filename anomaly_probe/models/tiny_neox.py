"""``tiny-neox``: a seeded random GPT-NeoX (Pythia architecture) built from a config in code.

It has a byte-level tokenizer (256 ids), partial rotary (``rotary_pct=0.25``, as Pythia) and a small
trained context (128) so that tests cross "past the trained context" in milliseconds. Its weights are
random: its perplexities mean nothing, but every engine and method must agree on them exactly.
"""

from __future__ import annotations

import torch

TRAINED_CONTEXT = 128


class ByteTokenizer:
    """UTF-8 bytes as token ids. Enough for tests and for arbitrary text files."""

    vocab_size = 256
    bos_token_id = None
    name_or_path = "bytes"

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def __call__(self, text: str) -> dict:
        return {"input_ids": self.encode(text)}

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


def build_tiny_neox(seed: int = 0) -> tuple[torch.nn.Module, ByteTokenizer]:
    """Build the model (float32, eval mode) and its tokenizer.

    Parameters
    ----------
    seed : int
        Seed for the random weights; the same seed gives the same model.
    """
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=ByteTokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=TRAINED_CONTEXT,
        rotary_pct=0.25,
        rotary_emb_base=10000,
        use_parallel_residual=True,
        tie_word_embeddings=False,
    )
    gen = torch.random.fork_rng(devices=[])
    with gen:
        torch.manual_seed(seed)
        model = GPTNeoXForCausalLM(config)
        # Larger than default init so attention is peaked and positions matter (random weights).
        for p in model.parameters():
            if p.dim() == 2:
                torch.nn.init.normal_(p, std=0.08)
    model.eval()
    return model, ByteTokenizer()
