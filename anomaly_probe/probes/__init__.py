"""Probes: per-step attention statistics, cache size, process memory and latency.

Nothing here runs at import time: the attention hook is registered only while a
:class:`ProbeSession` is entered. See docs/FORMATS.md ("Trace") for the recorded columns.
"""

from anomaly_probe.probes.attention_stats import ATTN_METRICS, attention_stats, fused_stats
from anomaly_probe.probes.names import PROBE_NAMES, parse_probes
from anomaly_probe.probes.session import ProbeSession
from anomaly_probe.probes.trace import load_trace, raw_bytes_per_step, save_trace, trace_steps

__all__ = ["ATTN_METRICS", "PROBE_NAMES", "ProbeSession", "attention_stats", "fused_stats", "load_trace",
           "parse_probes", "raw_bytes_per_step", "save_trace", "trace_steps"]
