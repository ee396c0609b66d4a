"""Run the probes' small tensor work on one CPU thread.

Between two of the model's ops, a probe reduces a few kilobytes of scores. Handing that to the
intra-op thread pool costs more than the work (it wakes the pool; on a busy machine a sleeping
worker can take milliseconds to come back), so small probe work runs with one thread and the
model's thread count is restored before the model continues. Results are unaffected: the model's
own ops always run with the caller's thread settings. Where MKL was given its own thread count
(``MKL_NUM_THREADS`` differs from the intra-op count), restoring would change it, so nothing is
toggled; nor with ATen's native thread pool, which cannot be resized once used.
"""

from __future__ import annotations

import torch

from anomaly_probe.threads import can_toggle as _can_toggle


class single_thread:
    """``with single_thread(device):`` runs the block with one intra-op thread on the CPU.

    The caller's thread count is restored on exit; elsewhere (CUDA, MPS, one thread already, or MKL
    with its own thread count) it does nothing. A plain class: it is entered ~30 times per step.
    """

    __slots__ = ("n",)

    def __init__(self, device: torch.device) -> None:
        self.n = torch.get_num_threads() if device.type == "cpu" else 1

    def __enter__(self) -> None:
        if self.n > 1 and _can_toggle(self.n):
            torch.set_num_threads(1)
        else:
            self.n = 1

    def __exit__(self, *exc) -> None:
        if self.n > 1:
            torch.set_num_threads(self.n)
