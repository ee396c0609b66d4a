"""Memory, KV-cache size and step latency over steps, and a table of swap activity."""

from __future__ import annotations

import numpy as np

from anomaly_probe.reports.figures.common import ROLE_NAMES, roles_with_traces, trained_context_vline
from anomaly_probe.reports.figures.traces import column, step_series
from anomaly_probe.reports.fmt import mib, num
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Cell, Figure, Table

MIB = 1 / 2**20
PANELS = (
    ("process.rss_bytes", None, MIB, "process memory (RSS)", "MiB"),
    ("process.device_allocated_bytes", None, MIB, "device memory allocated", "MiB"),
    ("cache.kv_bytes", "sum", MIB, "KV cache size (K and V, all layers)", "MiB"),
    ("process.step_seconds", None, 1000.0, "latency of the forward behind each step", "ms"),
)


def memory_over_steps(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Process memory, KV-cache bytes, device memory and step latency over steps."""
    panels, x_max = [], 0
    for name, over_layers, scale, title, unit in PANELS:
        series, top = step_series(data, column(name, over_layers), scale=scale)
        if not series or not any(v is not None and v > 0 for s in series for v in s["y"]):
            continue  # absent, all zero, or the -1 "unavailable" reading (device memory on a CPU)
        x_max = max(x_max, top)
        panels.append({"kind": "line", "title": title, "ylabel": unit, "series": series})
    if not panels:
        return []
    for p in panels:
        p["vlines"] = trained_context_vline(data, x_max)
    spec = {"kind": "panels", "title": "Memory, cache size and latency over steps", "xlabel": "query step t (tokens)",
            "panels": panels, "ncols": 2 if len(panels) > 2 else 1}
    caption = ("Mean over the steps in each bin, pooled over samples. The batched engine scores many queries per "
               "forward, so its latency is per forward, repeated for every step of that forward.")
    return [Figure("memory", spec, caption)]


def _delta(trace: dict, name: str) -> float | None:
    if name not in trace or not np.size(trace[name]):
        return None
    a = np.asarray(trace[name], dtype=np.float64)
    return float(a[-1] - a[0])


def _peak(trace: dict, name: str) -> float | None:
    return float(np.max(trace[name])) if name in trace and np.size(trace[name]) else None


def memory_table(data: RunData, verdicts: list[dict] | None = None) -> list:
    """Peak RSS, lowest available memory, swap and major faults of each traced run."""
    rows = []
    for role, per_length in roles_with_traces(data).items():
        for L, traces in per_length.items():
            for i, t in enumerate(traces):
                if not any(k.startswith("process.") for k in t):
                    continue
                peak, avail = _peak(t, "process.peak_rss_bytes"), t.get("process.available_bytes")
                rows.append([Cell(ROLE_NAMES.get(role, role)), Cell(str(L)), Cell(str(i)),
                             Cell(mib(peak), "num"),
                             Cell(mib(float(np.min(avail))) if avail is not None and np.size(avail) else "n/a", "num"),
                             Cell(mib(_peak(t, "process.swap_used_bytes")), "num"),
                             Cell(mib(_delta(t, "process.swap_in_bytes")), "num"),
                             Cell(mib(_delta(t, "process.swap_out_bytes")), "num"),
                             Cell(num(_delta(t, "process.major_faults"), ".0f"), "num")])
    if not rows:
        return []
    return [Table("Memory pressure per traced run", ["run", "tokens", "sample", "peak RSS", "lowest available",
                                                     "peak swap used", "swapped in", "swapped out",
                                                     "major page faults"], rows,
                  caption="Swap and page-fault columns are increases over the run (last step minus first).")]
