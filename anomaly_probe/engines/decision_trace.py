"""The policy engines' decision trace: every discrete choice a policy took, per step and layer.

A policy's decisions are discontinuous functions of float numbers: a top-k over scores (which keys
each head keeps) and a rounding to integer levels (a quantised cache). The stepwise and the chunked
engine compute those numbers with different matmul shapes (one query per forward vs a chunk), so they
differ by float rounding noise (~1e-7 relative in float32). A number that sits within that noise of a
boundary (two nearly equal scores at the top-k cut, a value half-way between two levels) makes the
engines take different decisions; from there their caches hold different keys or values and their
NLLs part. The trace records the decisions so that a comparison can say where and why.

:class:`DecisionTrace` is filled by :class:`~anomaly_probe.engines.policy_cache.PolicyCache` (kept
sets after each eviction) and by the policy itself through
:func:`~anomaly_probe.methods.base.record_decision` (kv_quant: the integer levels of every rounded
group). :func:`first_difference` compares two traces.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from anomaly_probe.methods.base import DECISIONS


@dataclass(frozen=True)
class Decision:
    """One recorded choice.

    Attributes
    ----------
    token : int
        Absolute index of the last token the model had consumed when the choice was taken (the
        eviction or rounding happens after that token's forward).
    layer : int
        Decoder layer.
    kind : str
        ``kept`` (slots per KV head after an eviction), ``K levels`` / ``V levels`` (rounded groups), or
        a kind a user policy reports.
    choice : numpy.ndarray
        The choice as integers (kept: absolute token indices per KV head, shape (Hkv, n_kept)).
    """

    token: int
    layer: int
    kind: str
    choice: np.ndarray


@dataclass(frozen=True)
class DecisionDiff:
    """Where two traces first differ: after which token, in which layer, what kind of decision, and a
    one-line explanation (which tokens each KV head keeps, how many levels differ)."""

    token: int
    layer: int
    kind: str
    what: str


class DecisionTrace:
    """Decisions in the order the engine took them (one engine, one sample)."""

    def __init__(self) -> None:
        self.decisions: list[Decision] = []

    def add(self, token: int, layer: int, kind: str, choice: torch.Tensor) -> None:
        """Record ``choice`` (integers, any shape) taken after ``token`` in ``layer``."""
        self.decisions.append(Decision(token, layer, kind, choice.detach().cpu().numpy().copy()))

    @contextmanager
    def recording(self, token: int, layer: int) -> Iterator[None]:
        """While the block runs, :func:`~anomaly_probe.methods.base.record_decision` lands here."""
        handle = DECISIONS.set(lambda kind, choice: self.add(token, layer, kind, choice))
        try:
            yield
        finally:
            DECISIONS.reset(handle)

    def __len__(self) -> int:
        return len(self.decisions)


def _explain(kind: str, a: np.ndarray, b: np.ndarray) -> str:
    if a.shape != b.shape:
        return f"{kind}: shapes {a.shape} vs {b.shape}"
    if kind == "kept":
        parts = []
        for h in range(a.shape[0]):
            only_a, only_b = np.setdiff1d(a[h], b[h]), np.setdiff1d(b[h], a[h])
            if only_a.size:
                parts.append(f"KV head {h} keeps token {_few(only_a)} vs {_few(only_b)}")
        return "kept sets differ: " + "; ".join(parts[:2]) + (f" (+{len(parts) - 2} heads)" if len(parts) > 2 else "")
    n = int((a != b).sum())
    return f"{kind} differ in {n} of {a.size}"


def _few(x: np.ndarray) -> str:
    return ",".join(str(int(v)) for v in x[:3]) + ("..." if x.size > 3 else "")


def first_difference(a: DecisionTrace, b: DecisionTrace) -> DecisionDiff | None:
    """The first decision (in engine order: by token, then layer) where ``a`` and ``b`` differ; ``None``
    when they took the same decisions throughout.

    Both traces come from the same policy on the same sample; an engine that took a decision the other
    did not (a different number of them) counts as a difference at that decision."""
    for da, db in zip(a.decisions, b.decisions):
        if (da.token, da.layer, da.kind) != (db.token, db.layer, db.kind):
            first = min(da, db, key=lambda d: (d.token, d.layer))
            return DecisionDiff(first.token, first.layer, first.kind,
                                f"decision order differs ({da.kind} at token {da.token} vs {db.kind} at token {db.token})")
        if da.choice.shape != db.choice.shape or not np.array_equal(da.choice, db.choice):
            return DecisionDiff(da.token, da.layer, da.kind, _explain(da.kind, da.choice, db.choice))
    if len(a) != len(b):
        longer = a if len(a) > len(b) else b
        d = longer.decisions[min(len(a), len(b))]
        return DecisionDiff(d.token, d.layer, d.kind, "one engine took more decisions")
    return None
