"""Hook attention through transformers' ``AttentionInterface`` without changing a single output.

:func:`recording_attention` sets :data:`~anomaly_probe.step_context.ATTENTION_RECORDER` and runs the
model with a recording attention function and the *wrapped* implementation's mask function
(:func:`~anomaly_probe.attention.switch.attention_implementation`: registered under our own name,
switch verified, restored and unregistered in ``finally``); the recorder is reset on exit too.
Two paths:

* **fused** (multi-query forwards in float32: the batched, recompute and spot engines' chunks): the
  wrapper *replaces* the attention with the shared fused kernel
  (:func:`~anomaly_probe.attention.fused.fused_attention`), which computes each query chunk's scores
  once and shows them to the recorder's ``observe_chunk`` before the weighted sum; for sdpa/eager the
  recipe is plain float32 attention (the same NLL within 1e-4 nats, tested), for an intervention
  (``fn.recipe``) its own recipe (the same numbers as the intervention alone). No second pass over
  the keys.
* **single query** (the stepwise engine's forwards in float32 with sdpa/eager): a recorder that offers
  ``record_qk`` (our :class:`~anomaly_probe.probes.attention_probe.AttentionProbe`) scores the layer's
  query into its batch and computes the attention from those scores (softmax, ``P @ V``; the same
  NLL within 1e-4 nats, tested): one score matmul per layer, not two.
* **recording** (half-precision models, other implementations, interventions' single queries): the
  function returns exactly what the previous implementation returns (it calls it first, with the same
  arguments). On the side, for a recorder that offers ``record_qk`` (our
  :class:`~anomaly_probe.probes.attention_probe.AttentionProbe`), it hands over the layer's query and
  key of a small forward; otherwise, or for a large forward, it recomputes the scaled scores in
  float32 in query chunks and calls the recorder with each chunk (the ``ATTENTION_RECORDER`` contract).
  A half-precision model keeps its own attention: replacing it by float32 attention would hide the
  very numerics the numerics hypothesis tests.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import torch

from anomaly_probe.attention import attention_implementation, check_switchable, hf, visible_from_mask
from anomaly_probe.attention.fused import Recipe, fused_attention
from anomaly_probe.errors import UserError
from anomaly_probe.probes.scores import scores_in_chunks
from anomaly_probe.step_context import ATTENTION_RECORDER, RECORDING_IMPLEMENTATION, AttentionRecorder

NAME = RECORDING_IMPLEMENTATION
PURPOSE, FALLBACK = "attach the attention probe to", "use --probes cache,process"


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


FUSABLE = ("sdpa", "eager")
"""Implementations the fused kernel may replace while probing (float32 queries only)."""
UNFUSABLE_KWARGS = ("sliding_window", "s_aux", "head_mask")
"""Attention arguments the fused kernel does not implement: such layers keep the recording path."""


def _fusable_args(args: tuple, kwargs: dict) -> bool:
    """Whether an attention call passes nothing the probe's own attention does not implement."""
    return not args and not any(kwargs.get(k) is not None for k in UNFUSABLE_KWARGS)


def _fused_recipe(delegate: Callable, implementation: str) -> tuple[Recipe | None, bool]:
    """The recipe the fused kernel runs in place of ``delegate`` (``None``: never fuse), and whether it
    applies to any query dtype (an intervention's recipe) or to float32 queries only (sdpa, eager)."""
    recipe = getattr(delegate, "recipe", None)  # an intervention built by make_attention
    if isinstance(recipe, Recipe):
        return recipe, True
    return (Recipe() if implementation in FUSABLE else None), False


def _make_recording_attention(delegate: Callable, recipe: Recipe | None = None,
                              any_dtype: bool = False) -> Callable:
    """The registered function: the fused kernel (with ``recipe``) where it applies, else ``delegate``'s
    output plus one recorder call per query chunk."""
    visible_cache = _VisibleCache()

    def plain_float32(query, args, kwargs) -> bool:
        """Whether the probe may compute a single query's attention itself (what sdpa/eager compute, in
        float32): the stepwise engine then scores each layer once, not twice."""
        return (recipe == Recipe() and not any_dtype and query.dtype == torch.float32
                and kwargs.get("dropout", 0.0) in (0, 0.0, None) and _fusable_args(args, kwargs))

    def recording_attention_forward(module, query, key, value, attention_mask, *args, **kwargs):
        recorder = ATTENTION_RECORDER.get()
        scaling = kwargs.get("scaling")
        if scaling is None:
            scaling = getattr(module, "scaling", None) or query.shape[-1] ** -0.5
        softcap = kwargs.get("softcap")
        observe = getattr(recorder, "observe_chunk", None)
        if (observe is not None and recipe is not None and query.shape[2] > 1
                and (any_dtype or query.dtype == torch.float32) and _fusable_args(args, kwargs)):
            with torch.no_grad():
                return fused_attention(module, query, key, value, attention_mask, float(scaling), recipe,
                                       observe, softcap), None
        Tq, Tk = query.shape[2], key.shape[2]

        def mask():
            return visible_cache.get(attention_mask, 0, Tq, Tq, Tk, query.device)

        record_qk = getattr(recorder, "record_qk", None)  # our probe scores small forwards itself, into its batch
        recorded = None  # True: recorded (or a query the stride skips); False: too large for record_qk
        if record_qk is not None and Tq == 1 and plain_float32(query, args, kwargs):
            recorded = record_qk(module, query, key, float(scaling), softcap, mask, value=value)
            if isinstance(recorded, torch.Tensor):  # the probe attended from its own scores
                return recorded, None
        out = delegate(module, query, key, value, attention_mask, *args, **kwargs)
        if recorder is None:
            return out
        if record_qk is not None and recorded is None:
            recorded = record_qk(module, query, key, float(scaling), softcap, mask)
        if recorded:
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
    fn = hf.attention_function(model, implementation)
    if fn is None:
        raise UserError(f"cannot attach the attention probe to {type(model).__name__}: its {implementation!r} "
                        "attention function was not found; load the model with attn_implementation='sdpa'")
    return fn


def check_hookable(model: torch.nn.Module) -> str:
    """Return the model's attention implementation, or raise if the probe cannot wrap it.

    Raises
    ------
    UserError
        Not a transformers model, an architecture whose attention does not dispatch through
        ``AttentionInterface``, or an implementation whose masks are not sdpa's or eager's (flash,
        flex: padding-only or block masks).
    """
    check_switchable(model, PURPOSE, FALLBACK)
    implementation = hf.current_implementation(model)
    if not hf.has_tensor_mask(implementation):
        raise UserError(f"the attention probe wraps attention implementations with sdpa or eager masks (None or "
                        f"a 4D tensor), but {type(model).__name__} uses {implementation!r}; load the model with "
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
        The registered implementation name (:data:`NAME`, or ``NAME_2``... when another model is
        being probed at the same time).
    """
    previous = check_hookable(model)
    delegate = _delegate_for(model, previous)
    wrapper = _make_recording_attention(delegate, *_fused_recipe(delegate, previous))
    token = ATTENTION_RECORDER.set(recorder)
    try:
        with attention_implementation(model, NAME, wrapper, previous, purpose=PURPOSE, fallback=FALLBACK) as name:
            yield name  # same masks as before: the wrapped implementation's mask function
    finally:
        ATTENTION_RECORDER.reset(token)
