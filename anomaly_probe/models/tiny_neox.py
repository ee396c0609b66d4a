"""``tiny-neox``: a seeded random GPT-NeoX (Pythia architecture) built from a config in code.

It has a byte-level tokenizer (256 ids), partial rotary (``rotary_pct=0.25``, as Pythia) and a small
trained context (128) so that tests cross "past the trained context" in milliseconds. Its weights are
random: its perplexities mean nothing, but every engine and method must agree on them exactly.

Size variants (for sweeps over model size): ``tiny-neox:hidden=64,layers=2,heads=4,ffn=128,ctx=128``;
every key is optional and defaults to the plain ``tiny-neox``'s value (:class:`TinyNeoxSize`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from anomaly_probe.errors import UserError

TRAINED_CONTEXT = 128
PREFIX = "tiny-neox"


@dataclass(frozen=True)
class TinyNeoxSize:
    """The shape of a tiny GPT-NeoX; the defaults are the plain ``tiny-neox``.

    Attributes
    ----------
    hidden : int
        Hidden size (a multiple of ``heads``; each head needs >= 8 dimensions, of which a quarter rotate).
    layers, heads : int
        Decoder layers and attention heads.
    ffn : int
        MLP intermediate size.
    ctx : int
        Trained context (``max_position_embeddings``), tokens.
    """

    hidden: int = 64
    layers: int = 2
    heads: int = 4
    ffn: int = 128
    ctx: int = TRAINED_CONTEXT


LIMITS = {"hidden": 4096, "layers": 64, "heads": 64, "ffn": 16384, "ctx": 1 << 20}
"""Largest accepted value of each key (a typo like ``hidden=64000`` is refused, not allocated)."""


def is_tiny_neox(spec: str) -> bool:
    """Whether ``--model spec`` names the tiny GPT-NeoX (plain or a size variant)."""
    return spec == PREFIX or spec.startswith(PREFIX + ":")


def parse_size(spec: str) -> TinyNeoxSize:
    """``tiny-neox`` or ``tiny-neox:key=value,...`` -> its :class:`TinyNeoxSize`.

    Raises
    ------
    UserError
        An unknown key, a value that is not a positive integer (or above :data:`LIMITS`), a key given
        twice, or a hidden size that the heads do not divide into heads of >= 8 dimensions.
    """
    if spec == PREFIX:
        return TinyNeoxSize()
    body = spec[len(PREFIX) + 1:]
    known = [f.name for f in fields(TinyNeoxSize)]
    values: dict[str, int] = {}
    for part in body.split(","):
        key, eq, text = part.partition("=")
        key = key.strip()
        if not eq or key not in known:
            raise UserError(f"--model {spec!r}: {part.strip()!r} is not key=value with a key of "
                            f"{', '.join(known)} (e.g. tiny-neox:hidden=64,layers=2,ctx=128)")
        if key in values:
            raise UserError(f"--model {spec!r}: {key} given twice")
        try:
            value = int(text.strip())
        except ValueError:
            raise UserError(f"--model {spec!r}: {key}={text.strip()!r} is not a whole number") from None
        if not 1 <= value <= LIMITS[key]:
            raise UserError(f"--model {spec!r}: {key}={value} must be from 1 to {LIMITS[key]}")
        values[key] = value
    size = replace(TinyNeoxSize(), **values)
    if size.hidden % size.heads or size.hidden // size.heads < 8:
        raise UserError(f"--model {spec!r}: hidden={size.hidden} must be a multiple of heads={size.heads} "
                        "with at least 8 dimensions per head")
    return size


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


def build_tiny_neox(seed: int = 0, size: TinyNeoxSize = TinyNeoxSize()) -> tuple[torch.nn.Module, ByteTokenizer]:
    """Build the model (float32, eval mode) and its tokenizer.

    Parameters
    ----------
    seed : int
        Seed for the random weights; the same seed gives the same model.
    size : TinyNeoxSize
        Its shape (default: the plain ``tiny-neox``).
    """
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    config = GPTNeoXConfig(
        vocab_size=ByteTokenizer.vocab_size,
        hidden_size=size.hidden,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        intermediate_size=size.ffn,
        max_position_embeddings=size.ctx,
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
