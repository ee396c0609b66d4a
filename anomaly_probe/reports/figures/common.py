"""Helpers shared by the figure builders: per-role token arrays and trace reductions.

A builder is ``fn(data, verdicts) -> list of blocks``; it returns ``[]`` when its data is missing.
"""

from __future__ import annotations

import re

import numpy as np

from anomaly_probe.reports import binning, roles
from anomaly_probe.reports.rundata import RunData

ROLE_NAMES = {"baseline": "baseline", "method": "method", "oracle": "recompute oracle"}
POSITION_XLABEL = "token position in the sample (tokens)"


def role_tokens(data: RunData, role: str) -> dict[int, list[np.ndarray]]:
    """``{max_tokens: [nll of each sample]}`` for one role (nats per token, entry i = query i)."""
    out: dict[int, list[np.ndarray]] = {}
    for L, per_sample in roles.by_length_sample(roles.role_runs(data, role)).items():
        arrays = [data.tokens(r) for _, r in sorted(per_sample.items())]
        nll = [np.asarray(a["nll"], dtype=np.float64) for a in arrays if a is not None and "nll" in a]
        if nll:
            out[L] = nll
    return out


def role_label(data: RunData, role: str) -> str:
    """``baseline: full`` -- the role and the run label it stands for."""
    runs = roles.role_runs(data, role)
    label = runs[0].get("label") if runs else None
    name = ROLE_NAMES.get(role, role)
    return f"{name}: {label}" if label and label != name else name


def paired(a: list[np.ndarray], b: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Pair sample arrays by index, trimmed to the common length (same tokens)."""
    out = []
    for x, y in zip(a, b):
        n = min(x.size, y.size)
        out.append((x[:n], y[:n]))
    return out


def curve(samples: list[np.ndarray], edges: np.ndarray) -> dict[str, np.ndarray]:
    """Binned mean over positions of per-token values of several samples (position = entry index)."""
    x = np.concatenate([np.arange(s.size) for s in samples])
    y = np.concatenate(samples)
    return binning.binned(x, y, edges)


def band(c: dict[str, np.ndarray]) -> tuple[list, list]:
    """±1.96 standard errors of the tokens in each bin."""
    return binning.finite_list(c["y"] - 1.96 * c["se"]), binning.finite_list(c["y"] + 1.96 * c["se"])


def trained_context_vline(data: RunData, x_max: float) -> list[dict]:
    tc = data.trained_context
    if tc is None or tc > x_max:
        return []
    return [{"x": tc, "label": f"trained context ({tc} tokens)"}]


# ---------------------------------------------------------------------- traces
def role_traces(data: RunData, role: str) -> dict[int, list[dict[str, np.ndarray]]]:
    """``{max_tokens: [trace of each sample]}`` for one role; lengths without traces are left out."""
    out: dict[int, list[dict]] = {}
    for L, per_sample in roles.by_length_sample(roles.role_runs(data, role)).items():
        traces = [t for t in (data.trace(r) for _, r in sorted(per_sample.items())) if t and "step" in t]
        if traces:
            out[L] = traces
    return out


def trace_layers(trace: dict[str, np.ndarray], metric: str) -> list[int]:
    """Layer indices that have ``layers.{L}.attn.<metric>``, ascending."""
    pat = re.compile(rf"layers\.(\d+)\.attn\.{re.escape(metric)}$")
    return sorted(int(m.group(1)) for k in trace if (m := pat.match(k)))


def stack_layers(trace: dict[str, np.ndarray], metric: str) -> np.ndarray | None:
    """``layers.*.attn.<metric>`` stacked: shape (layers, S, H) float64, or None when absent."""
    layers = trace_layers(trace, metric)
    if not layers:
        return None
    return np.stack([np.asarray(trace[f"layers.{L}.attn.{metric}"], dtype=np.float64).reshape(
        len(trace["step"]), -1) for L in layers])


def roles_with_traces(data: RunData) -> dict[str, dict[int, list[dict]]]:
    return {role: t for role in roles.ROLES if (t := role_traces(data, role))}
