"""Per-layer, per-KV-head bookkeeping of a policy-managed ``DynamicCache`` (the policy engines' cache ops).

After every forward :meth:`PolicyCache.after_forward` appends the new tokens' bookkeeping, lets the
policy round the stored K/V (:meth:`~anomaly_probe.methods.base.CacheMethod.quantize`), and at an
eviction step (every ``compress_every`` tokens) asks it which slots each KV head keeps
(:meth:`~anomaly_probe.methods.base.CacheMethod.keep_heads`) and gathers them. Every head keeps the
same number of slots, so each layer stays one (B, Hkv, n, D) tensor that transformers can attend over.

Positions: ``absolute`` and ``naive`` keys stay as rotated at insertion. ``in-cache`` keys are
re-rotated to their slot 0..n-1 *in their own head* from a stored copy (one rotation from the stored
key, never accumulated), so with head-wise kept sets each head has its own positions.

The probe per policy: at each eviction, per layer, the attention mass thrown away (sum of the last
query's weights on the evicted keys, averaged over query heads; Cold Compress's "attention loss") and
the kept set's age profile (median and maximum of ``newest token - kept token``, averaged over heads).
With a :class:`~anomaly_probe.engines.decision_trace.DecisionTrace` it also records every decision.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from anomaly_probe.engines.decision_trace import DecisionTrace
from anomaly_probe.engines.policy_attention import Captured
from anomaly_probe.errors import UserError
from anomaly_probe.methods.base import CacheMethod, LayerView
from anomaly_probe.models.rope import RopeSpec


def gather_slots(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Per-head slot gather: x (B, Hkv, n, D), idx (Hkv, m) -> (B, Hkv, m, D)."""
    B, _, _, D = x.shape
    return x.gather(-2, idx.to(x.device)[None, :, :, None].expand(B, -1, -1, D))


class PolicyCache:
    """What the engine knows about each slot of each layer and head.

    Parameters
    ----------
    method : CacheMethod
        The policy.
    mode : str
        Position mode (``absolute`` for a full cache).
    rope : RopeSpec or None
        The model's rotary embedding (``in-cache`` only).
    num_layers : int
        Decoder layers.
    trace : DecisionTrace, optional
        Where to record every decision (kept sets, the policy's rounding levels).
    """

    def __init__(self, method: CacheMethod, mode: str, rope: RopeSpec | None, num_layers: int,
                 trace: DecisionTrace | None = None) -> None:
        self.method = method
        self.trace = trace
        self.mode = mode
        self.rope = rope
        self.positions: list[torch.Tensor | None] = [None] * num_layers  # (Hkv, n) absolute token index
        self.inserted_at: list[torch.Tensor | None] = [None] * num_layers  # (Hkv, n) RoPE position at insertion
        self.stored: list[torch.Tensor | None] = [None] * num_layers  # (B, Hkv, n, D) keys as rotated at insertion
        self.accumulated: list[torch.Tensor | None] = [None] * num_layers  # (Hkv, n) summed attention
        self.captured: dict[int, Captured] = {}
        self.seen = 0
        self.evict_steps: list[int] = []
        self.loss_rows: list[np.ndarray] = []  # (L,) per eviction
        self.age_median_rows: list[np.ndarray] = []
        self.age_max_rows: list[np.ndarray] = []

    def capture(self, layer: int, captured: Captured) -> None:
        """The :data:`~anomaly_probe.engines.policy_attention.CAPTURE` sink."""
        self.captured[layer] = captured

    def head_positions(self) -> torch.Tensor:
        """Absolute token index of layer 0's slots of KV head 0, shape (n,) (CPU; for step records)."""
        p = self.positions[0]
        return torch.zeros(0, dtype=torch.long) if p is None else p[0].cpu()

    def after_forward(self, cache, q_abs: torch.Tensor, q_pos: torch.Tensor) -> None:
        """Book the forward's ``Tq`` new tokens (absolute ``q_abs``, rotated at ``q_pos``, both (Tq,)),
        round, and evict when an eviction step is due."""
        seen_before, self.seen = self.seen, int(q_abs[-1]) + 1
        due = self.method.capacity is not None and self.seen % self.method.compress_every == 0
        losses, med, mx = [], [], []
        for i, layer in enumerate(cache.layers):
            keys, dev = layer.keys, layer.keys.device
            hkv, tq = keys.shape[1], q_abs.numel()
            new_pos = q_abs.to(dev)[None].expand(hkv, -1)  # (Hkv, Tq)
            self.positions[i] = new_pos.clone() if self.positions[i] is None else torch.cat([self.positions[i], new_pos], 1)
            if self.mode == "in-cache":
                ins = q_pos.to(dev)[None].expand(hkv, -1)
                self.inserted_at[i] = ins.clone() if self.inserted_at[i] is None else torch.cat([self.inserted_at[i], ins], 1)
                new = keys[..., -tq:, :]
                self.stored[i] = new if self.stored[i] is None else torch.cat([self.stored[i], new], dim=-2)
            cap = self.captured.get(i)
            if self.method.needs_attention:
                if cap is None:
                    raise RuntimeError("the policy needs attention weights but the attention sent none")
                acc = self.accumulated[i]
                pad = cap.summed.new_zeros(hkv, keys.shape[2] - (0 if acc is None else acc.shape[1]))
                self.accumulated[i] = (pad if acc is None else torch.cat([acc, pad], 1)) + cap.summed
            with self.trace.recording(self.seen - 1, i) if self.trace is not None else contextlib.nullcontext():
                changed = self._quantize(layer, i, seen_before)
            kept = None
            if due:
                view = LayerView(i, self._stored_keys(layer, i)[0], layer.values[0], self.positions[i],
                                 None if cap is None else cap.last, self.accumulated[i],
                                 None if cap is None else cap.module)
                kept = self.method.keep_heads(view)
            if kept is not None:
                losses.append(self._loss(cap, kept, keys.shape[2]))
                self._evict(layer, i, kept)
                if self.trace is not None:
                    self.trace.add(self.seen - 1, i, "kept", self.positions[i])  # (Hkv, m) absolute tokens
                age = (self.seen - 1 - self.positions[i]).float()  # (Hkv, m)
                med.append(float(age.median(dim=1).values.mean()))
                mx.append(float(age.amax(dim=1).mean()))
            if self.mode == "in-cache" and (kept is not None or changed):
                slot = torch.arange(self.stored[i].shape[2], device=dev)[None]  # (1, n)
                layer.keys = self.rope.rotate(self.stored[i], slot - self.inserted_at[i])  # (B, Hkv, n, D)
        self.captured.clear()
        sizes = {int(layer.keys.shape[2]) for layer in cache.layers}
        if len(sizes) > 1:
            raise UserError(f"{self.method.label()}: layers kept different numbers of slots {sorted(sizes)}; "
                            "keep_heads must keep the same number in every layer and head")
        if mx:
            self.evict_steps.append(self.seen - 1)
            self.loss_rows.append(np.asarray(losses, dtype=np.float64))
            self.age_median_rows.append(np.asarray(med))
            self.age_max_rows.append(np.asarray(mx))

    def _stored_keys(self, layer, i: int) -> torch.Tensor:
        return self.stored[i] if self.mode == "in-cache" else layer.keys

    def _quantize(self, layer, i: int, seen_before: int) -> bool:
        """Let the policy round stored K/V; True when it changed them."""
        out = self.method.quantize(self._stored_keys(layer, i)[0], layer.values[0], self.positions[i],
                                   seen_before, self.seen)
        if out is None:
            return False
        k, v = out
        if self.mode == "in-cache":
            self.stored[i] = k[None]
        else:
            layer.keys = k[None]
        layer.values = v[None]
        return True

    def _evict(self, layer, i: int, kept: torch.Tensor) -> None:
        hkv, n = layer.keys.shape[1], layer.keys.shape[2]
        if kept.dim() != 2 or kept.shape[0] != hkv:
            raise UserError(f"{self.method.label()}: keep_heads returned shape {tuple(kept.shape)}, expected "
                            f"({hkv}, n_kept): slot indices per KV head")
        kept = kept.to(layer.keys.device).long()
        if bool(((kept < 0) | (kept >= n)).any()):
            raise UserError(f"{self.method.label()}: keep_heads returned slots outside 0..{n - 1}")
        kept = kept.sort(dim=-1).values  # slots stay in token order
        layer.keys = gather_slots(layer.keys, kept)
        layer.values = gather_slots(layer.values, kept)
        self.positions[i] = self.positions[i].gather(1, kept)
        if self.accumulated[i] is not None:
            self.accumulated[i] = self.accumulated[i].gather(1, kept)
        if self.mode == "in-cache":
            self.stored[i] = gather_slots(self.stored[i], kept)
            self.inserted_at[i] = self.inserted_at[i].gather(1, kept)

    @staticmethod
    def _loss(cap: Captured | None, kept: torch.Tensor, n: int) -> float:
        """Last query's weight on the evicted slots, summed per query head, averaged over heads (NaN without weights)."""
        if cap is None:
            return float("nan")
        H, hkv = cap.last.shape[0], kept.shape[0]
        keep_mask = torch.zeros(hkv, n, dtype=torch.bool, device=cap.last.device)
        keep_mask.scatter_(1, kept.to(cap.last.device), True)
        per_head = keep_mask.repeat_interleave(H // hkv, dim=0)  # (H, n): query head h reads KV head h // G
        return float(cap.last.masked_fill(per_head, 0.0).sum(dim=-1).mean())

    def probe_arrays(self) -> dict[str, np.ndarray]:
        """``evict_step`` (E,), ``attention_loss``, ``kept_age_median``, ``kept_age_max`` (E, L); empty without evictions."""
        if not self.evict_steps:
            return {}
        return {"evict_step": np.asarray(self.evict_steps, dtype=np.int64),
                "attention_loss": np.stack(self.loss_rows), "kept_age_median": np.stack(self.age_median_rows),
                "kept_age_max": np.stack(self.age_max_rows)}


def probe_summary(arrays: dict[str, np.ndarray]) -> dict:
    """Plain-data summary of :meth:`PolicyCache.probe_arrays` for results.json (``{}`` without evictions).

    ``attention_loss_mean``: mean over evictions and layers of the last query's weight on the evicted
    keys (a fraction of one query's attention); ``attention_loss_per_layer``: the same per layer;
    ``kept_age_median`` / ``kept_age_max``: mean over evictions and layers, in tokens.
    """
    if not arrays:
        return {}
    loss = arrays["attention_loss"]  # (E, L)
    return {"evictions": int(loss.shape[0]),
            "attention_loss_mean": float(np.nanmean(loss)) if np.isfinite(loss).any() else None,
            "attention_loss_per_layer": [float(x) for x in np.nanmean(loss, axis=0)] if np.isfinite(loss).any() else None,
            "kept_age_median": float(arrays["kept_age_median"].mean()),
            "kept_age_max": float(arrays["kept_age_max"].mean())}
