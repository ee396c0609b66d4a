"""Interventions: named changes applied around one scoring run.

Names (the ``intervention`` field of a run): ``none``; ``attn-fp32`` / ``attn-fp64`` (attention
upcast: the precision reference); ``attn-fp16-emulated`` / ``attn-bf16-emulated`` (a half-precision
attention emulated on any device: q, k, v, logits rounded, softmax weights cast, so fp16 underflow
happens as on a half-precision backend); ``topk-<k>`` (each query keeps its k largest logits, at the
full cache's own positions); ``ballast-<P>pct-max<M>MiB`` (memory pressure held during the run: P% of the
memory available when it runs, cgroup limits included, at most M MiB) or ``ballast-<bytes>``.
"""

from __future__ import annotations

import re
from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from anomaly_probe.errors import UserError
from anomaly_probe.interventions.ballast import RULE, ballast, ballast_size, memory_facts
from anomaly_probe.interventions.manual_attention import AttentionRecipe, make_attention, use_attention

_PRECISION = {
    "attn-fp32": AttentionRecipe(compute_dtype=torch.float32),
    "attn-fp64": AttentionRecipe(compute_dtype=torch.float64),
    "attn-fp16-emulated": AttentionRecipe(compute_dtype=torch.float32, round_to=torch.float16),
    "attn-bf16-emulated": AttentionRecipe(compute_dtype=torch.float32, round_to=torch.bfloat16),
}


def validate_intervention(name: str) -> None:
    if name == "none" or name in _PRECISION or re.fullmatch(r"topk-\d+", name) or re.fullmatch(r"ballast-\d+", name):
        return
    if RULE.fullmatch(name):  # a ballast sized when it runs
        return
    raise UserError(f"Unknown intervention {name!r}")


@contextmanager
def apply_intervention(name: str, model: torch.nn.Module, record: dict | None = None) -> Iterator[None]:
    """Apply intervention ``name`` to ``model`` for the duration of the block.

    Parameters
    ----------
    record : dict, optional
        Receives facts about the intervention (e.g. ballast bytes actually held).
    """
    validate_intervention(name)
    record = record if record is not None else {}
    if name == "none":
        with nullcontext():
            yield
        return
    if name in _PRECISION:
        with use_attention(model, f"anomaly_probe_{name}", make_attention(_PRECISION[name])):
            yield
        return
    kind, value = name.split("-", 1)
    if kind == "topk":
        with use_attention(model, f"anomaly_probe_topk_{value}", make_attention(AttentionRecipe(topk=int(value)))):
            yield
        return
    device = next(model.parameters()).device
    facts = memory_facts()  # what the size came from (the cgroup limit, when there is one)
    with ballast(ballast_size(name), device) as info:
        record.update(info | facts)
        yield
