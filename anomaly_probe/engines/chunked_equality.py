"""The chunked engine's equality contract with the stepwise reference, as one rule (tests and ``check``).

The chunked engine runs the same loop as the stepwise reference with the same ``compress_every``; only
the matmul shapes differ (a chunk of queries per forward instead of one), so their numbers differ by
float rounding noise. Every continuous computation turns that noise into NLL differences far below
1e-4 nats. A policy's decisions are not continuous (a top-k cut, rounding to integer levels): a number
within the noise of a boundary flips the decision, and from there the two caches hold different keys
or values. In float32 that happens on real models (SmolLM2, kv_quant int4: first at token 31, a key
one level apart; the NLLs part by 0.33 nats), so float32 equality cannot hold in principle for such
policies. The rule:

1. Score both engines in the model's dtype with a :class:`~anomaly_probe.engines.decision_trace.DecisionTrace`.
   Every token scored before the first decision difference must agree within the tolerance (the
   float32 check: it fails on any difference in the continuous computation). When both engines took
   the same decisions throughout, all tokens must agree, and that is the proof.
2. When the decisions differ and the NLLs part beyond the tolerance afterwards, the proof is made in
   float64: the same model cast to float64 (in place, cast back afterwards: exact), where the noise is
   ~1e-16 and no decision flips; every token must agree within the tolerance.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from anomaly_probe.engines.chunked import chunk_queries, score_policy
from anomaly_probe.engines.decision_trace import DecisionDiff, DecisionTrace, first_difference
from anomaly_probe.methods.base import CacheMethod

FLOAT64_MEMORY_SHARE = 0.5  # the float64 copy may take at most this share of the available memory


@dataclass(frozen=True)
class Equality:
    """What the comparison found.

    Attributes
    ----------
    equal : bool
        The contract holds (see the module docstring).
    proved_in : str or None
        ``float32`` (or the model's dtype) or ``float64``: the dtype whose comparison proved it; ``None``
        when it failed or the float64 proof could not run.
    dtype : str
        The model's dtype (the first comparison).
    max_diff : float
        Max |dNLL| over all tokens in the model's dtype, nats.
    max_diff_before : float
        Max |dNLL| over the tokens scored before the first decision difference (all when none), nats.
    decision : DecisionDiff or None
        The first decision difference in the model's dtype.
    decisions : int
        Decisions the stepwise engine took.
    max_diff64 : float or None
        Max |dNLL| in float64, when that proof ran.
    decision64 : DecisionDiff or None
        The first decision difference in float64 (expected none).
    skipped64 : str or None
        Why the float64 proof did not run, when it was needed.
    queries : int
        Queries per forward of the chunked engine.
    tolerance : float
        Max |dNLL| allowed, nats.
    """

    equal: bool
    proved_in: str | None
    dtype: str
    max_diff: float
    max_diff_before: float
    decision: DecisionDiff | None
    decisions: int
    max_diff64: float | None = None
    decision64: DecisionDiff | None = None
    skipped64: str | None = None
    queries: int = 1
    tolerance: float = 1e-4

    def message(self) -> str:
        """One sentence: which dtype proved it and, when the decisions differed, where."""
        flip = ""
        if self.decision is not None:
            d = self.decision
            flip = (f"; in {self.dtype} the decisions first differ after token {d.token} (layer {d.layer}, {d.what}): "
                    f"max |dNLL| {self.max_diff_before:.2g} before it, {self.max_diff:.2g} overall")
        if self.proved_in == "float64" or (self.max_diff64 is not None):
            head = (f"{'equal' if self.equal else 'NOT equal'} in float64 (max |dNLL| {self.max_diff64:.2g}"
                    f"{'' if self.decision64 is None else f', decisions differ after token {self.decision64.token}'})")
            return head + flip
        if self.decision is None:
            return (f"{'equal' if self.equal else 'NOT equal'} in {self.dtype} (max |dNLL| {self.max_diff:.2g}), "
                    f"same {self.decisions} decisions")
        if self.equal:
            return f"equal in {self.dtype} (max |dNLL| {self.max_diff:.2g}) although the decisions differ" + flip
        if self.skipped64:
            return f"float64 proof not run ({self.skipped64})" + flip
        if self.max_diff_before <= self.tolerance:
            return f"NOT equal in {self.dtype} after the decisions differ, and no float64 proof" + flip
        return f"NOT equal in {self.dtype} before the first decision difference" + flip


def _first_token_after(decision: DecisionDiff | None, T: int) -> int:
    """Index into the NLL array (entry i scores token i + 1, computed by query i) of the first entry
    whose query could see the differing decision: queries after ``decision.token``."""
    return T - 1 if decision is None else decision.token + 1


def _float64_blocker(model: torch.nn.Module) -> str | None:
    import psutil

    device = next(model.parameters()).device
    if device.type not in ("cpu", "cuda"):
        return f"no float64 on {device.type}"
    need = 8 * sum(p.numel() for p in model.parameters())
    free = psutil.virtual_memory().available if device.type == "cpu" else torch.cuda.mem_get_info(device)[0]
    if need > FLOAT64_MEMORY_SHARE * free:
        return f"the float64 model would take {need / 2**30:.1f} GiB of {free / 2**30:.1f} GiB available"
    return None


@contextmanager
def in_float64(model: torch.nn.Module) -> Iterator[None]:
    """Cast every floating parameter and buffer of ``model`` to float64 in place for the block, then each
    back to its own dtype (exact: float64 holds every float32/16/bf16 value).

    Llama-style RMSNorms compute in float32 whatever the input (``hidden.to(float32)``): a float64 model
    would pass every layer through float32, and a rare float64 difference that lands on a float32 rounding
    boundary becomes float32 noise again (SmolLM2, kv_quant int4: a key one level apart after token 287).
    While the block runs, a scoped forward hook recomputes such a norm in float64 (``weight * x /
    rms(x)``), used only where it agrees with the module's own output to float32 precision.
    """
    tensors = [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    dtypes = [t.dtype for t in tensors]
    handles = []
    try:
        for t in tensors:
            t.data = t.data.to(torch.float64)
        handles = [m.register_forward_hook(_rms_norm_in_float64) for m in model.modules()
                   if isinstance(getattr(m, "variance_epsilon", None), float)
                   and isinstance(getattr(m, "weight", None), torch.Tensor)]
        yield
    finally:
        for h in handles:
            h.remove()
        for t, dt in zip(tensors, dtypes):
            t.data = t.data.to(dt)


def _rms_norm_in_float64(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
    """Forward hook: the RMSNorm of a float64 input in float64; None (keep the module's) for any other
    input or where the module computes something else (its output is not ours to float32 precision)."""
    if not args or not isinstance(output, torch.Tensor) or args[0].dtype != torch.float64:
        return None
    x = args[0]  # (..., hidden)
    ours = module.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + module.variance_epsilon))
    return ours if torch.allclose(ours, output, rtol=1e-5, atol=1e-6) else None


def _compare(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod, queries: int
             ) -> tuple[np.ndarray, np.ndarray, DecisionTrace, DecisionTrace]:
    ta, tb = DecisionTrace(), DecisionTrace()
    a = score_policy(model, ids, method, 1, engine="stepwise", trace=ta).nll
    b = score_policy(model, ids, method, queries, engine="chunked", trace=tb).nll
    return a, b, ta, tb


def chunked_equality(model: torch.nn.Module, ids: torch.Tensor, method: CacheMethod, tolerance: float,
                     float64: bool = True) -> Equality:
    """Check that the chunked engine equals the stepwise reference on ``ids`` under ``method``.

    Parameters
    ----------
    model : torch.nn.Module
        HF causal LM (eval mode); cast to float64 and back in place for the float64 proof.
    ids : torch.Tensor
        One sample, shape (T,).
    method : CacheMethod
        Any policy (its ``compress_every`` and quantisation group set the chunk).
    tolerance : float
        Max |dNLL| in nats (1e-4 in float32).
    float64 : bool
        Make the float64 proof when the model's dtype cannot (False: report only).

    Returns
    -------
    Equality
    """
    queries = chunk_queries(method)
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    a, b, ta, tb = _compare(model, ids, method, queries)
    diff = np.nan_to_num(np.abs(a - b), nan=np.inf)  # a NaN in either engine never counts as equal
    decision = first_difference(ta, tb)
    before = diff[:_first_token_after(decision, ids.numel())]
    max_before = float(before.max()) if before.size else 0.0
    result = dict(dtype=dtype, max_diff=float(diff.max()), max_diff_before=max_before, decision=decision,
                  decisions=len(ta), queries=queries, tolerance=tolerance)
    if not max_before <= tolerance:
        return Equality(False, None, **result)
    if float(diff.max()) <= tolerance:
        return Equality(True, dtype, **result)
    if not float64 or dtype == "float64":
        return Equality(False, None, **result, skipped64=None if float64 else "not asked")
    blocker = _float64_blocker(model)
    if blocker is not None:
        return Equality(False, None, **result, skipped64=blocker)
    with in_float64(model):
        a64, b64, ta64, tb64 = _compare(model, ids, method, queries)
    d64 = float(np.nan_to_num(np.abs(a64 - b64), nan=np.inf).max())
    return Equality(d64 <= tolerance, "float64" if d64 <= tolerance else None, **result, max_diff64=d64,
                    decision64=first_difference(ta64, tb64))
