"""Process probe: memory, swap, page faults, device memory and step latency after every forward.

Cheap readings are taken every forward: RSS (``/proc/self/statm`` via psutil), peak RSS and major
page faults (one ``getrusage`` call), device memory (allocator counters, no synchronisation) and the
step time the engine measured. System-wide readings (available memory, swap used, swap in/out) read
``/proc/meminfo`` and ``/proc/vmstat`` (~0.5 ms): they are sampled at most once every
``system_every_s`` (1 s) and forward-filled; ``process.sampled`` marks the rows where they were fresh.

Unavailable values are -1: device memory on the CPU, major faults and swap counters on platforms
that do not expose them (Windows has no swap in/out counters; psutil reports 0 there).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import psutil
import torch

INT_COLUMNS = ("rss_bytes", "peak_rss_bytes", "available_bytes", "swap_used_bytes", "swap_in_bytes",
               "swap_out_bytes", "major_faults", "device_allocated_bytes", "device_reserved_bytes")

try:  # Unix only
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None


def _rusage() -> tuple[int, int]:
    """Peak RSS (bytes) and major page faults of this process, or (-1, -1)."""
    if resource is None:  # pragma: no cover - Windows
        return -1, -1
    ru = resource.getrusage(resource.RUSAGE_SELF)
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return ru.ru_maxrss * scale, ru.ru_majflt


def device_memory(device: torch.device) -> tuple[int, int]:
    """Allocated and reserved bytes of the device allocator, or (-1, -1) on the CPU.

    CUDA: ``memory_allocated`` / ``memory_reserved``. MPS: ``current_allocated_memory`` /
    ``driver_allocated_memory``.
    """
    try:
        if device.type == "cuda":
            return torch.cuda.memory_allocated(device), torch.cuda.memory_reserved(device)
        if device.type == "mps":
            return torch.mps.current_allocated_memory(), torch.mps.driver_allocated_memory()
    except (RuntimeError, AttributeError):  # pragma: no cover - backend without these counters
        pass
    return -1, -1


class ProcessProbe:
    """Per-forward process readings, repeated for each query row of the forward.

    Parameters
    ----------
    device : torch.device
        The model's device (for the allocator counters).
    system_every_s : float
        Least time between two system-wide samples (available memory, swap).
    """

    def __init__(self, device: torch.device, system_every_s: float = 1.0) -> None:
        self.device = device
        self.system_every_s = system_every_s
        self._proc = psutil.Process()
        self._last_system = -float("inf")
        self._system = (-1, -1, -1, -1)  # available, swap used, swap in, swap out
        self._records: list[tuple] = []  # (row0, n_rows, ints..., seconds, sampled)

    def _sample_system(self) -> tuple[int, int, int, int]:
        vm = psutil.virtual_memory()
        try:
            sw = psutil.swap_memory()
            swap = (sw.used, sw.sin, sw.sout)
        except (RuntimeError, OSError):  # pragma: no cover - no swap information
            swap = (-1, -1, -1)
        return (vm.available, *swap)

    def after_forward(self, row0: int, n_rows: int, seconds: float) -> None:
        rss = self._proc.memory_info().rss
        peak, major = _rusage()
        allocated, reserved = device_memory(self.device)
        now = time.perf_counter()
        sampled = now - self._last_system >= self.system_every_s
        if sampled:
            self._system, self._last_system = self._sample_system(), now
        self._records.append((row0, n_rows, rss, max(peak, rss), *self._system, major, allocated, reserved,
                              seconds, sampled))

    def columns(self, n_rows: int) -> dict[str, np.ndarray]:
        """``process.*`` columns, (S,) each: int64 bytes/counts, ``step_seconds`` float64, ``sampled`` bool."""
        ints = np.full((n_rows, len(INT_COLUMNS)), -1, dtype=np.int64)
        seconds = np.full(n_rows, np.nan)
        sampled = np.zeros(n_rows, dtype=bool)
        for row0, n, *values in self._records:
            ints[row0:row0 + n] = values[:len(INT_COLUMNS)]
            seconds[row0:row0 + n] = values[-2]
            sampled[row0] = values[-1]
        out = {f"process.{name}": np.ascontiguousarray(ints[:, i]) for i, name in enumerate(INT_COLUMNS)}
        out["process.step_seconds"] = seconds
        out["process.sampled"] = sampled
        return out
