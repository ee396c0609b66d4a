"""The attention recorder: buffers the logits of one forward and reduces them in one fused pass.

It is what :data:`~anomaly_probe.engines.step_context.ATTENTION_RECORDER` holds while the probe is
attached. A single-query forward (stepwise engine) calls it once per layer with a tiny (1, H, 1, Tk)
tensor; reducing each call alone would pay ~40 op launches per layer. Instead the calls of one forward
that share a shape are copied into one (layers, B, H, Tq, Tk) buffer and reduced together when the
forward ends (or the shape changes, or the buffer is full). Large calls (many queries) are reduced at
once. Results stay on the device as small (layers, Tq, H, M) tensors and move to the CPU in batches.
"""

from __future__ import annotations

import numpy as np
import torch

from anomaly_probe.engines.step_context import CURRENT_STEP, StepInfo
from anomaly_probe.probes.attention_stats import ATTN_METRICS, COUNT_METRICS, fused_stats, key_weights
from anomaly_probe.probes.rows import StepRows

GROUP_ELEMENTS = 1 << 22  # logits elements buffered before a reduction (16 MiB of float32)
OFFLOAD_EVERY = 256  # reductions kept on an accelerator before one batched copy to the CPU


class _Group:
    """Logits of several layers with the same step, rows, shape and visible mask."""

    def __init__(self, key: tuple, info: StepInfo, base: int, row_lo: int, buf: torch.Tensor,
                 visible: torch.Tensor | None) -> None:
        self.key, self.info, self.base, self.row_lo = key, info, base, row_lo
        self.buf = buf  # (capacity, B, H, Tq, Tk) float32
        self.visible = visible
        self.layers: list[int] = []


class AttentionProbe:
    """Recorder ``probe(module, logits, visible)`` plus the trace columns it produces.

    Parameters
    ----------
    rows : StepRows
        Shared row bookkeeping (one row per query).
    num_layers : int
        Layers of the model (``layers.{L}`` for L in range(num_layers)).

    Notes
    -----
    ``visible`` is kept by reference until the forward ends; callers pass masks they do not modify.
    Logits are copied, so callers may reuse their buffer. Calls made while no engine step is set
    (``CURRENT_STEP`` is ``None``) are not recorded; ``unrecorded_calls`` counts them. Only batch size
    1 is supported (the engines' contract).
    """

    def __init__(self, rows: StepRows, num_layers: int) -> None:
        self.rows = rows
        self.num_layers = num_layers
        self.calls = 0
        self.unrecorded_calls = 0
        self._info: StepInfo | None = None
        self._base = 0
        self._offsets: dict[int, int] = {}  # layer -> query rows of the current step already seen
        self._group: _Group | None = None
        self._pending: list[tuple[torch.Tensor, list[int], int]] = []  # (stats (n, Tq, H, M), layers, row0)
        self._done: list[tuple[np.ndarray, list[int], int]] = []
        self._weights_info: StepInfo | None = None
        self._weights_key: tuple | None = None
        self._weights: tuple[torch.Tensor, torch.Tensor] | None = None

    # ------------------------------------------------------------------ recording
    def __call__(self, module: torch.nn.Module, logits: torch.Tensor, visible: torch.Tensor | None) -> None:
        info = CURRENT_STEP.get()
        if info is None:
            self.unrecorded_calls += 1
            return
        if logits.dim() != 4 or logits.shape[0] != 1:
            raise ValueError(f"attention probe: expected logits of shape (1, H, Tq, Tk), got {tuple(logits.shape)}")
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            raise ValueError(f"attention probe: {type(module).__name__} has no layer_idx")
        self.calls += 1
        if info is not self._info:
            self.end_forward()
            self._info, self._base, self._offsets = info, self.rows.register(info), {}
        row_lo = self._offsets.get(layer, 0)
        self._offsets[layer] = row_lo + logits.shape[-2]

        if logits.numel() * min(self.num_layers, 2) > GROUP_ELEMENTS:  # large: no buffering
            self.end_forward()
            self._reduce(logits.float()[None], visible, [layer], info, self._base, row_lo)
            return
        key = (row_lo, tuple(logits.shape), None if visible is None else id(visible))
        group = self._group
        if group is not None and (group.key != key or len(group.layers) == group.buf.shape[0]):
            self.end_forward()
            group = None
        if group is None:
            capacity = max(1, min(self.num_layers, GROUP_ELEMENTS // logits.numel()))
            buf = torch.empty((capacity, *logits.shape), dtype=torch.float32, device=logits.device)
            group = self._group = _Group(key, info, self._base, row_lo, buf, visible)
        group.buf[len(group.layers)].copy_(logits)
        group.layers.append(layer)

    def end_forward(self) -> None:
        """Reduce the buffered logits (the engine's forward is over, or the shape changed)."""
        group, self._group = self._group, None
        if group is not None and group.layers:
            x = group.buf[:len(group.layers)]  # (n, B, H, Tq, Tk)
            self._reduce(x, group.visible, group.layers, group.info, group.base, group.row_lo)

    def _reduce(self, x: torch.Tensor, visible: torch.Tensor | None, layers: list[int], info: StepInfo,
                base: int, row_lo: int) -> None:
        tq, tk = x.shape[-2], x.shape[-1]
        wkey = (row_lo, tq, x.device)
        if info is not self._weights_info or wkey != self._weights_key:
            self._weights = key_weights(info, slice(row_lo, row_lo + tq), tk, x.device)
            self._weights_info, self._weights_key = info, wkey
        sink, distance = self._weights
        stats = fused_stats(x, visible, sink, distance)  # (n, 1, H, Tq, M)
        stats = stats[:, 0].transpose(1, 2)  # (n, Tq, H, M)
        if stats.device.type == "cpu":
            self._done.append((stats.numpy(), list(layers), base + row_lo))
            return
        self._pending.append((stats, list(layers), base + row_lo))
        if len(self._pending) >= OFFLOAD_EVERY:
            self._offload()

    def _offload(self) -> None:
        """Move pending results to the CPU with one copy."""
        if not self._pending:
            return
        flat = torch.cat([s.reshape(-1) for s, _, _ in self._pending]).cpu().numpy()
        at = 0
        for stats, layers, row0 in self._pending:
            n = stats.numel()
            self._done.append((flat[at:at + n].reshape(stats.shape), layers, row0))
            at += n
        self._pending.clear()

    # ------------------------------------------------------------------ output
    def columns(self, n_rows: int) -> dict[str, np.ndarray]:
        """Trace columns ``layers.{L}.attn.{metric}``, each (S, H).

        Rows a layer never recorded are NaN (floats) or -1 (counts).
        """
        self.end_forward()
        self._offload()
        if not self._done:
            return {}
        heads = self._done[0][0].shape[2]
        table = np.full((self.num_layers, n_rows, heads, len(ATTN_METRICS)), np.nan, dtype=np.float32)
        for stats, layers, row0 in self._done:
            tq = stats.shape[1]
            for i, layer in enumerate(layers):
                table[layer, row0:row0 + tq] = stats[i]
        out = {}
        for layer in range(self.num_layers):
            for m, name in enumerate(ATTN_METRICS):
                col = table[layer, :, :, m]
                if name in COUNT_METRICS:
                    col = np.where(np.isnan(col), -1, col).astype(np.int32)
                out[f"layers.{layer}.attn.{name}"] = np.ascontiguousarray(col)
        return out
