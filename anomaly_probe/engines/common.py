"""Small helpers shared by the engines: target scoring and RSS sampling."""

from __future__ import annotations

from typing import Callable

import psutil
import torch

Progress = Callable[[int], None]
"""Called with the number of tokens just scored."""


def no_progress(_n: int) -> None:
    return None


def score_logits(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NLL (nats) and top-1 correctness, computed in float32.

    Parameters
    ----------
    logits : torch.Tensor
        Shape (T, V), any float dtype.
    targets : torch.Tensor
        Shape (T,), int64.

    Returns
    -------
    tuple of torch.Tensor
        ``nll`` (T,) float64 and ``correct`` (T,) bool, on the CPU.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (T, V)
    nll = -logp.gather(-1, targets[:, None]).squeeze(-1)
    correct = logits.argmax(dim=-1) == targets
    return nll.double().cpu(), correct.cpu()


class RssMeter:
    """Sample the process RSS; ``peak`` is the largest value seen since construction."""

    def __init__(self) -> None:
        self._proc = psutil.Process()
        self.peak = 0
        self.sample()

    def sample(self) -> int:
        rss = self._proc.memory_info().rss
        self.peak = max(self.peak, rss)
        return rss
