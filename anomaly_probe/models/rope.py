"""Rotary position embedding (RoPE) arithmetic on cached keys.

HF applies RoPE before a key enters the cache, so a cached key ``k`` at position ``p`` is ``R(p) k0``.
Because rotations compose, ``R(d) R(p) k0 = R(p + d) k0``: a key can be moved to another position
without its pre-RoPE value. Both GPT-NeoX (partial rotary, ``rotary_pct``) and Llama use the
"rotate_half" layout on the first ``rotary_ndims`` channels, which is all this module supports.
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
            Same shape and dtype as ``x``. Angles are computed in float64, the product in float32.
        """
        r = self.rotary_ndims
        freqs = delta.to(torch.float64)[..., None] * self.inv_freq.to(device=x.device, dtype=torch.float64)
        emb = torch.cat([freqs, freqs], dim=-1)  # (..., T, r)
        cos, sin = emb.cos().to(torch.float32), emb.sin().to(torch.float32)
        xr = x[..., :r].to(torch.float32)
        half = r // 2
        rot_half = torch.cat([-xr[..., half:], xr[..., :half]], dim=-1)
        out = xr * cos + rot_half * sin
        return torch.cat([out.to(x.dtype), x[..., r:]], dim=-1)


def find_rope(model: torch.nn.Module) -> RopeSpec:
    """Find the rotary embedding of a HF causal LM.

    Raises
    ------
    UserError
        When the model has no (or an unsupported) rotary embedding.
    """
    config = model.config
    for _name, module in model.named_modules():
        inv_freq = getattr(module, "inv_freq", None)
        if isinstance(inv_freq, torch.Tensor):
            rope_type = getattr(module, "rope_type", "default")
            if rope_type == "dynamic":
                raise UserError("dynamic RoPE scaling changes frequencies with length; position modes need a fixed RoPE")
            head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
            return RopeSpec(inv_freq=inv_freq.detach().float().cpu(), head_dim=head_dim)
    raise UserError(
        f"model type {config.model_type!r} has no rotary embedding; position modes other than 'absolute' need RoPE"
    )
