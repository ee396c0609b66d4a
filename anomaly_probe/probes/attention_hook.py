"""Hook attention through transformers' ``AttentionInterface`` without changing a single output.

:func:`recording_attention` registers a recording attention function and the *wrapped*
implementation's mask function under our own name, switches the model to it, sets
:data:`~anomaly_probe.engines.step_context.ATTENTION_RECORDER`, and undoes all three in ``finally``.
The recording function returns exactly what the previous implementation returns (it calls it
first, with the same arguments). On the side, for a recorder that offers ``record_qk`` (our
:class:`~anomaly_probe.probes.attention_probe.AttentionProbe`), it hands over the layer's query and
key of a small forward; otherwise, or for a large forward, it recomputes the scaled scores in
float32 in query chunks and calls the recorder with each chunk (the ``ATTENTION_RECORDER`` contract).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from anomaly_probe.engines.step_context import ATTENTION_RECORDER, AttentionRecorder
from anomaly_probe.errors import UserError
from anomaly_probe.probes.scores import scores_in_chunks

NAME = "anomaly_probe_record"


class _VisibleCache:
    """Visible masks derived from the attention mask, shared by the layers of a forward.

    Every layer receives the same mask object, so caching by identity makes the recorder see one
    visible tensor per forward (it can then reduce all layers together).
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._mask: torch.Tensor | None = None
        self._value: tuple[torch.Tensor | None, torch.Tensor | None] = (None, None)

    def get(self, mask: torch.Tensor | None, lo: int, tq: int, n_queries: int, n_keys: int,
            device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(visible, bias)`` for query rows ``lo:lo+tq``; both broadcastable to (B, H, tq, Tk)."""
        key = (lo, tq, n_queries, n_keys, device)
        if mask is self._mask and key == self._key:
            return self._value
        self._key, self._mask = key, mask
        self._value = visible_from_mask(mask, lo, tq, n_queries, n_keys, device)
        return self._value


def visible_from_mask(mask: torch.Tensor | None, lo: int, tq: int, n_queries: int, n_keys: int,
                      device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Which keys rows ``lo:lo+tq`` attend to, from the mask the attention function received.

    Parameters
    ----------
    mask : torch.Tensor or None
        ``None``: all keys for one query, causal (aligned to the last key) for several. Boolean 4D:
        True = attend (sdpa). Float 4D: additive, the dtype's minimum or -inf = masked (eager).

    Returns
    -------
    tuple
        ``visible`` (bool, (1|B, 1|H, tq, Tk)) or ``None`` for all keys, and ``bias`` (float32 additive
        scores on visible keys, from a float mask) or ``None``.
    """
    if mask is None:
        if n_queries == 1:
            return None, None
        q = torch.arange(lo, lo + tq, device=device) + (n_keys - n_queries)
        return (torch.arange(n_keys, device=device)[None, :] <= q[:, None])[None, None], None  # (1, 1, tq, Tk)
    if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
        raise TypeError(f"attention probe: unsupported attention mask {type(mask).__name__} "
                        f"{tuple(getattr(mask, 'shape', ()))}; expected None or a 4D tensor")
    rows = mask[..., lo:lo + tq, :] if mask.shape[-2] > 1 else mask
    if rows.dtype == torch.bool:
        return rows, None
    visible = rows > torch.finfo(rows.dtype).min
    return visible, rows.float().masked_fill(~visible, 0.0)


def _make_recording_attention(delegate: Callable) -> Callable:
    """The registered function: ``delegate``'s output, plus one recorder call per query chunk."""
    visible_cache = _VisibleCache()

    def recording_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
        out = delegate(module, query, key, value, attention_mask, *args, **kwargs)
        recorder = ATTENTION_RECORDER.get()
        if recorder is None:
            return out
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = getattr(module, "scaling", None) or query.shape[-1] ** -0.5
        Tq, Tk = query.shape[2], key.shape[2]
        softcap = kwargs.get("softcap")
        record_qk = getattr(recorder, "record_qk", None)
        if record_qk is not None:  # our probe scores small forwards itself, into its batch
            def mask():
                return visible_cache.get(attention_mask, 0, Tq, Tq, Tk, query.device)

            if record_qk(module, query, key, float(scaling), softcap, mask):
                return out
        with torch.no_grad():
            for lo, scores in scores_in_chunks(query, key, float(scaling), softcap):
                visible, bias = visible_cache.get(attention_mask, lo, scores.shape[2], Tq, Tk, scores.device)
                if bias is not None:
                    scores = scores + bias  # additive biases the mask applies to visible keys (eager)
                recorder(module, scores, visible)
        return out

    return recording_attention_forward


def _delegate_for(model: torch.nn.Module, implementation: str) -> Callable:
    """The function the model would call for ``implementation``."""
    if implementation == "eager":  # each modeling file has its own eager function
        fn = getattr(sys.modules.get(type(model).__module__), "eager_attention_forward", None)
        if fn is None:
            raise UserError(f"cannot attach the attention probe to {type(model).__name__}: its eager attention "
                            "function was not found; load the model with attn_implementation='sdpa'")
        return fn
    from transformers import AttentionInterface

    return AttentionInterface._global_mapping[implementation]


def check_hookable(model: torch.nn.Module) -> str:
    """Return the model's attention implementation, or raise if the probe cannot wrap it.

    Raises
    ------
    UserError
        Not a transformers model, an architecture whose attention does not dispatch through
        ``AttentionInterface``, or an implementation whose masks are not sdpa's or eager's (flash,
        flex: padding-only or block masks).
    """
    cls = type(model)
    config = getattr(model, "config", None)
    if not hasattr(model, "set_attn_implementation") or config is None:
        raise UserError(f"cannot attach the attention probe to {cls.__name__}: it is not a transformers model "
                        "(no set_attn_implementation); use --probes cache,process")
    can_set = getattr(cls, "_can_set_attn_implementation", None)
    if can_set is not None and not can_set():
        raise UserError(f"cannot attach the attention probe to {cls.__name__} ({config.model_type}): its attention "
                        "does not dispatch through transformers' AttentionInterface; use --probes cache,process")
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask, sdpa_mask

    implementation = config._attn_implementation
    mask_fn = ALL_MASK_ATTENTION_FUNCTIONS._global_mapping.get(implementation)
    if implementation != "eager" and mask_fn not in (sdpa_mask, eager_mask):
        raise UserError(f"the attention probe wraps attention implementations with sdpa or eager masks (None or "
                        f"a 4D tensor), but {cls.__name__} uses {implementation!r}; load the model with "
                        "attn_implementation='sdpa'")
    return implementation


@contextmanager
def recording_attention(model: torch.nn.Module, recorder: AttentionRecorder) -> Iterator[str]:
    """Route ``model``'s attention through a recording wrapper while the block runs.

    Parameters
    ----------
    model : torch.nn.Module
        A transformers model using sdpa or eager attention.
    recorder : callable
        Set as :data:`ATTENTION_RECORDER` for the block.

    Yields
    ------
    str
        The registered implementation name.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    previous = check_hookable(model)
    name, n = NAME, 1
    while name in AttentionInterface._global_mapping or name in AttentionMaskInterface._global_mapping:
        n += 1
        name = f"{NAME}_{n}"  # another model is being probed at the same time
    AttentionInterface.register(name, _make_recording_attention(_delegate_for(model, previous)))
    AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[previous])  # same masks as before
    token = ATTENTION_RECORDER.set(recorder)
    try:
        model.set_attn_implementation(name)
        if model.config._attn_implementation != name:
            raise UserError(f"cannot attach the attention probe to {type(model).__name__}: it refused to switch "
                            "its attention implementation; use --probes cache,process")
        yield name
    finally:
        try:
            if model.config._attn_implementation != previous:
                model.set_attn_implementation(previous)
        finally:
            ATTENTION_RECORDER.reset(token)
            AttentionInterface._global_mapping.pop(name, None)
            AttentionMaskInterface._global_mapping.pop(name, None)
