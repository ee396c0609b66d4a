"""Checks of the reference engines against each other (no user code involved).

Every check is a function ``fn(ctx) -> CheckResult`` with a stable dotted name; :func:`engine_checks`
lists them in the order they run (``numerics.finite`` last: it looks at every scoring made before it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from anomaly_probe.check.context import CheckContext
from anomaly_probe.check.result import FAIL, PASS, SKIP, CheckResult, agreement, max_abs_diff
from anomaly_probe.errors import UserError
from anomaly_probe.methods import FullCache, StreamingLLM, WindowCache
from anomaly_probe.methods.base import POSITION_MODES


@dataclass(frozen=True)
class Check:
    """A named check: ``run(ctx)`` returns its :class:`CheckResult` (the name is filled in by the suite)."""

    name: str
    run: Callable[[CheckContext], CheckResult]


def _rope_missing(ctx: CheckContext) -> str | None:
    """Why the in-cache position mode cannot run on this model (no RoPE or ALiBi in some layer, dynamic
    RoPE), or None when it can."""
    from anomaly_probe.models.positions import layer_schemes, rope_for_mode

    try:
        rope_for_mode(layer_schemes(ctx.model), "in-cache", ctx.model.config.model_type)
    except UserError as exc:
        return str(exc)
    return None


def _needs_rope(mode: str) -> bool:
    return mode == "in-cache"


# --------------------------------------------------------------------------- the checks
def full_stepwise_vs_batched(ctx: CheckContext) -> CheckResult:
    """The token loop and the chunked forward give the same per-token NLL on the full cache."""
    a = ctx.score(FullCache(), "stepwise").nll
    b = ctx.score(FullCache(), "batched").nll
    return agreement("", a, b, ctx.tolerance, "full cache, stepwise vs batched")


def capacity_covers_length(mode: str) -> Callable[[CheckContext], CheckResult]:
    """A StreamingLLM cache that never fills (capacity >= sample length) is the full cache."""

    def run(ctx: CheckContext) -> CheckResult:
        if _needs_rope(mode) and (why := _rope_missing(ctx)):
            return CheckResult("", SKIP, f"{mode} positions need RoPE: {why}")
        T = ctx.options.max_tokens
        method = StreamingLLM(sink_size=ctx.options.sink_size, recent_size=T, position_mode=mode)
        a = ctx.score(method, "stepwise").nll
        b = ctx.score(FullCache(), "stepwise").nll
        return agreement("", a, b, ctx.tolerance, f"{method.label()} (capacity {method.capacity} >= {T} tokens) "
                                                  "vs full cache, stepwise")

    return run


def probes_leave_logits_unchanged(ctx: CheckContext) -> CheckResult:
    """Scoring with every probe attached gives the same NLL as scoring without them.

    Uses :class:`anomaly_probe.probes.ProbeSession` (attention, cache and process probes) around the
    stepwise engine on the compressed method. Where the probes cannot be attached, it falls back to
    switching the attention implementation through a pass-through
    (:func:`anomaly_probe.attention.switch.attention_implementation`) and says so.
    """
    method = ctx.method
    if _needs_rope(method.position_mode) and (why := _rope_missing(ctx)):
        return CheckResult("", SKIP, f"{method.label()} needs RoPE: {why}")
    plain = ctx.score(method, "stepwise").nll
    try:
        from anomaly_probe.probes import ProbeSession

        names, why_not = _attachable_probes(ctx, method)
        with ProbeSession(ctx.model, names) as probes:
            probed = ctx.score_ids(method, "stepwise", ctx.samples[0], observer=probes).nll
        how = f"{', '.join(names[:-1])} and {names[-1]} probes attached{why_not}"
    except (ImportError, AttributeError, TypeError) as exc:  # probes API not usable: pass-through attention
        probed = _passthrough_score(ctx, method)
        how = f"probes not attachable ({type(exc).__name__}); attention switched to a pass-through instead"
    result = agreement("", probed, plain, ctx.tolerance, f"{method.label()} stepwise, {how} vs none")
    if result.status == PASS and result.observed == 0.0:
        result.reason += " (bitwise identical)"
    return result


def _attachable_probes(ctx: CheckContext, method) -> tuple[tuple[str, ...], str]:
    """The probes this model can carry, and why the attention probe is left out (or "")."""
    from anomaly_probe.engines.layers import model_layout
    from anomaly_probe.probes.attention_hook import check_hookable

    try:
        check_hookable(ctx.model)
    except UserError:
        return ("cache", "process"), " (the attention probe cannot wrap this model's attention)"
    if len(model_layout(ctx.model, method).groups) > 1:
        return ("cache", "process"), " (the attention probe does not follow per-layer caches of sliding/hybrid layers)"
    return ("attention", "cache", "process"), ""


def _passthrough_score(ctx: CheckContext, method) -> np.ndarray:
    """Score with the model's own attention and mask functions re-registered under another name (a pass-through)."""
    from anomaly_probe.attention import attention_implementation
    from anomaly_probe.attention.hf import attention_function, current_implementation

    current = current_implementation(ctx.model)
    fn = attention_function(ctx.model, current)
    if fn is None:
        raise UserError(f"attention implementation {current!r} is not in transformers' registry; it cannot be "
                        "wrapped by a pass-through")
    with attention_implementation(ctx.model, "anomaly_probe_check_passthrough", fn, current,
                                  purpose="switch to a pass-through attention on"):
        return ctx.score_ids(method, "stepwise", ctx.samples[0]).nll


def same_seed_identical(ctx: CheckContext) -> CheckResult:
    """Two runs with the same seed (model built again where the seed decides its weights) are identical."""
    from anomaly_probe.engines import ENGINES, pick_engine
    from anomaly_probe.models import load_model

    o = ctx.options
    engine = pick_engine("auto", ctx.method)
    fn = ENGINES.get(engine)
    torch.manual_seed(o.seed)
    first = fn(ctx.model, ctx.samples[0], ctx.method).nll
    rebuilt = o.model.startswith("tiny-")  # the seeded tiny models are rebuilt from the seed
    model = load_model(o.model, device=ctx.device, dtype=ctx.dtype, seed=o.seed).model if rebuilt else ctx.model
    torch.manual_seed(o.seed)
    second = fn(model, ctx.samples[0], ctx.method).nll
    bound = 0.0 if ctx.device.type == "cpu" else ctx.tolerance  # GPU kernels need not be bitwise deterministic
    m = max_abs_diff(first, second)
    what = f"{ctx.method.label()} [{engine}] twice with seed {o.seed}" + (", model rebuilt" if rebuilt else "")
    status = PASS if m <= bound else FAIL
    verdict = "bitwise identical" if m == 0 else f"max |dNLL| {m:.1e} nats" + (" > 0" if status == FAIL else "")
    return CheckResult("", status, f"{what}: {verdict}", observed=m, threshold=bound, unit="nats")


def token_accounting(ctx: CheckContext) -> CheckResult:
    """T-1 scored tokens per T-token sample in every engine; entry i scores token i+1; token 0 never scored."""
    T = ctx.options.max_tokens
    fast = "parallel" if ctx.method.uses_base_rule else "chunked"
    runs = {"stepwise/full": ctx.score(FullCache(), "stepwise"), "batched/full": ctx.score(FullCache(), "batched"),
            f"{fast}/{ctx.method.label()}": ctx.score(ctx.method, fast),
            f"stepwise/{ctx.method.label()}": ctx.score(ctx.method, "stepwise")}
    counts = {k: int(s.nll.size) for k, s in runs.items()}
    bad = {k: n for k, n in counts.items() if n != T - 1}
    if bad:
        return CheckResult("", FAIL, f"expected T-1 = {T - 1} scored tokens per {T}-token sample, got "
                                     + ", ".join(f"{k}: {n}" for k, n in bad.items()),
                           observed=float(max(bad.values())), threshold=float(T - 1), unit="tokens",
                           details={"counts": counts})
    n = min(T, 512)  # a plain uncached forward of the first n tokens: entry i predicts ids[i + 1]
    ids = ctx.samples[0][:n].to(ctx.device)
    with torch.no_grad():
        logits = ctx.model(input_ids=ids[None], use_cache=False).logits[0, :-1].float()  # (n-1, V)
    plain = -torch.log_softmax(logits, dim=-1).gather(-1, ids[1:, None]).squeeze(-1).double().cpu().numpy()
    m = max_abs_diff(plain, runs["batched/full"].nll[: n - 1])
    if not m <= ctx.tolerance:
        return CheckResult("", FAIL, f"entry i of the batched engine is not -log p(token i+1 | tokens 0..i) from a "
                                     f"plain forward: max |dNLL| {m:.2e} > {ctx.tolerance:.0e} nats",
                           observed=m, threshold=ctx.tolerance, unit="nats", details={"counts": counts})
    return CheckResult("", PASS, f"{len(runs)} engine runs score T-1 = {T - 1} tokens each; entry i is token i+1 "
                                 f"(plain forward agrees to {m:.1e} nats); the first token is never scored",
                       observed=m, threshold=ctx.tolerance, unit="nats", details={"counts": counts})


def stepwise_vs_parallel(method_of: Callable[[CheckContext], object]) -> Callable[[CheckContext], CheckResult]:
    """The parallel engine equals the stepwise reference for one method and position mode."""

    def run(ctx: CheckContext) -> CheckResult:
        method = method_of(ctx)
        if _needs_rope(method.position_mode) and (why := _rope_missing(ctx)):
            return CheckResult("", SKIP, f"{method.label()} needs RoPE: {why}")
        a = ctx.score(method, "stepwise").nll
        b = ctx.score(method, "parallel").nll
        return agreement("", a, b, ctx.tolerance, f"{method.label()}, stepwise vs parallel")

    return run


def policy_stepwise_vs_chunked(ctx: CheckContext) -> CheckResult:
    """The chunked engine equals the stepwise reference for the method under test (any policy), with its
    ``--compress-every`` C, or C = 8 when it evicts after every token (the chunked engine would be stepwise).

    The rule of :func:`anomaly_probe.engines.chunked_equality.chunked_equality`: in the model's dtype the
    tokens before the first decision difference (a kept set or a rounding level) must agree; when the
    decisions differ and the NLLs part, the proof is made in float64. The reason names the dtype that
    proved it and, when the decisions differed, the token and layer where they first did."""
    import dataclasses

    from anomaly_probe.engines.chunked import chunk_queries

    from anomaly_probe.engines.layers import model_layout

    method = ctx.method
    if method.uses_base_rule and not model_layout(ctx.model, method).uniform:
        return CheckResult("", SKIP, f"{method.label()}: the chunked engine needs layers that all attend fully with "
                                     "RoPE; this model's sliding/ALiBi layers are checked by stepwise vs parallel")
    if chunk_queries(method) == 1:
        method = dataclasses.replace(method, compress_every=8)
    if method.capacity is not None and _needs_rope(method.position_mode) and (why := _rope_missing(ctx)):
        return CheckResult("", SKIP, f"{method.label()} needs RoPE: {why}")
    from anomaly_probe.engines.chunked_equality import chunked_equality
    from anomaly_probe.engines.layers import sliding_policy

    with sliding_policy(ctx.options.policy_on_sliding):
        eq = chunked_equality(ctx.model, ctx.samples[0], method, ctx.tolerance)
    d = eq.decision
    details = {"proved_in": eq.proved_in, "dtype": eq.dtype, "max_diff": eq.max_diff,
               "max_diff_before_decision": eq.max_diff_before, "decisions": eq.decisions,
               "max_diff_float64": eq.max_diff64, "float64_skipped": eq.skipped64, "queries_per_forward": eq.queries,
               "first_decision_difference": None if d is None else {"token": d.token, "layer": d.layer,
                                                                     "kind": d.kind, "what": d.what}}
    observed = eq.max_diff64 if eq.max_diff64 is not None else (eq.max_diff_before if d is not None else eq.max_diff)
    status = PASS if eq.equal else (SKIP if eq.skipped64 and eq.max_diff_before <= ctx.tolerance else FAIL)
    return CheckResult("", status, f"{method.label()}, stepwise vs chunked: {eq.message()}", observed=observed,
                       threshold=ctx.tolerance, unit="nats", details=details)


def all_finite(ctx: CheckContext) -> CheckResult:
    """No NaN or inf in any NLL scored by the checks before this one."""
    scored = ctx.memoised()
    bad = []
    total = 0
    for (label, engine, sample), s in scored.items():
        total += s.nll.size
        n_bad = int((~np.isfinite(s.nll)).sum())
        if n_bad:
            bad.append(f"{label} [{engine}] sample {sample}: {n_bad} non-finite")
    if not scored:
        return CheckResult("", SKIP, "no scoring ran before this check (select more checks with --only)")
    if bad:
        return CheckResult("", FAIL, "; ".join(bad[:3]) + (f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""),
                           observed=float(len(bad)), threshold=0.0, unit="runs")
    return CheckResult("", PASS, f"{total} NLL values from {len(scored)} scorings are all finite",
                       observed=0.0, threshold=0.0, unit="non-finite values")


# --------------------------------------------------------------------------- the list
def _streaming(mode: str):
    return lambda ctx: StreamingLLM(sink_size=ctx.options.sink_size, recent_size=ctx.options.recent_size,
                                    position_mode=mode)


def _window(ctx: CheckContext):
    o = ctx.options
    return WindowCache(recent_size=o.sink_size + o.recent_size, position_mode=o.position_mode)


def engine_checks() -> list[Check]:
    """The reference-engine checks, in the order they run."""
    checks = [Check("engines.full.stepwise-vs-batched", full_stepwise_vs_batched)]
    checks += [Check(f"cache.capacity-ge-length.{m}", capacity_covers_length(m)) for m in POSITION_MODES]
    checks += [Check(f"engines.streaming_llm.{m}.stepwise-vs-parallel", stepwise_vs_parallel(_streaming(m)))
               for m in POSITION_MODES]
    checks += [Check("engines.window.stepwise-vs-parallel", stepwise_vs_parallel(_window)),
               Check("engines.policy.stepwise-vs-chunked", policy_stepwise_vs_chunked),
               Check("accounting.scored-tokens", token_accounting),
               Check("probes.logits-unchanged", probes_leave_logits_unchanged),
               Check("reproducibility.same-seed", same_seed_identical),
               Check("numerics.finite", all_finite)]
    return checks


__all__ = ["Check", "engine_checks"]
