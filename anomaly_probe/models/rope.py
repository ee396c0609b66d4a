"""Rotary position embedding (RoPE) arithmetic on cached keys.

HF applies RoPE before a key enters the cache, so a cached key ``k`` at position ``p`` is ``R(p) k0``.
Because rotations compose, ``R(d) R(p) k0 = R(p + d) k0``: a key can be moved to another position
without its pre-RoPE value. Both GPT-NeoX (partial rotary, ``rotary_pct``) and Llama use the
"rotate_half" layout on the first ``rotary_ndims`` channels, which is all this module supports. Which
layer rotates with which frequencies is found by :mod:`anomaly_probe.models.positions`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from anomaly_probe.errors import UserError


@dataclass(frozen=True)
class RopeSpec:
    """The rotary frequencies of a model.

    Parameters
    ----------
    inv_freq : torch.Tensor
        Inverse frequencies, shape (rotary_ndims // 2,), float32.
    head_dim : int
        Channels per head; channels past ``rotary_ndims`` are not rotated.
    """

    inv_freq: torch.Tensor
    head_dim: int

    @property
    def rotary_ndims(self) -> int:
        return 2 * self.inv_freq.numel()

    def rotate(self, x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Rotate ``x`` by ``delta`` positions along its token axis.

        Parameters
        ----------
        x : torch.Tensor
            Keys or queries, shape (B, H, T, D).
        delta : torch.Tensor
            Position shift per token, shape (T,) or broadcastable to (B, H, T); integers.

        Returns
        -------
        torch.Tensor
            Same shape and dtype as ``x``. Angles are computed in float64, the product in float32 (float64
            for a float64 ``x``: the engines' float64 equality proof must not pass through float32).
        """
        r = self.rotary_ndims
        work = torch.promote_types(x.dtype, torch.float32)
        freqs = delta.to(torch.float64)[..., None] * self.inv_freq.to(device=x.device, dtype=torch.float64)
        emb = torch.cat([freqs, freqs], dim=-1)  # (..., T, r)
        cos, sin = emb.cos().to(work), emb.sin().to(work)
        xr = x[..., :r].to(work)
        half = r // 2
        rot_half = torch.cat([-xr[..., half:], xr[..., :half]], dim=-1)
        out = xr * cos + rot_half * sin
        return torch.cat([out.to(x.dtype), x[..., r:]], dim=-1)


def find_rope(model: torch.nn.Module) -> RopeSpec:
    """The rotary embedding every layer of a HF causal LM shares (one-rule scorers such as a user's).

    Models whose layers rotate differently (Gemma 3's local and global bases) have one per layer:
    :func:`anomaly_probe.models.positions.layer_schemes`, which the engines use.

    Raises
    ------
    UserError
        When some layer has no rotary embedding, a dynamic one, or the layers do not share one.
    """
    from anomaly_probe.models.positions import layer_schemes, rope_for_mode

    schemes = layer_schemes(model)
    rope_for_mode(schemes, "in-cache", model.config.model_type)
    ropes = [s.rope for s in schemes]
    if any(r is None for r in ropes):
        raise UserError(f"model type {model.config.model_type!r} has no rotary embedding; position modes other "
                        "than 'absolute' need RoPE (or ALiBi, which the engines handle)")
    if any(not torch.equal(r.inv_freq, ropes[0].inv_freq) for r in ropes):
        raise UserError(f"model type {model.config.model_type!r} rotates its layers differently (one RoPE per "
                        "layer type); use the engines, which re-rotate each layer with its own")
    return ropes[0]
