"""Per-step trace series, reduced over layers and heads and binned over steps, one per role and length."""

from __future__ import annotations

from typing import Callable

import numpy as np

from anomaly_probe.reports import binning
from anomaly_probe.reports.colors import linestyle
from anomaly_probe.reports.figures.common import ROLE_NAMES, roles_with_traces, stack_layers
from anomaly_probe.reports.rundata import RunData

Extract = Callable[[dict], "np.ndarray | None"]
"""``extract(trace) -> (S,) array`` or None when the trace lacks the metric."""


def step_series(data: RunData, extract: Extract, reduce: str = "mean", scale: float = 1.0,
                suffix: str = "", x_column: str = "step") -> tuple[list[dict], int]:
    """One line per (role, sample length): ``extract`` binned over steps, samples pooled.

    ``x_column`` is the trace column on the x axis: ``step`` (the query's position), or ``n_keys``
    (the keys the query attended to: the cache length).

    Returns
    -------
    (series, x_max)
        Series specs (colour by role, line style by length) and the largest step, for the axis.
    """
    by_role = roles_with_traces(data)
    all_lengths = sorted({L for t in by_role.values() for L in t})
    series, x_max = [], 0
    for role, per_length in by_role.items():
        for L, traces in per_length.items():
            xs, ys = [], []
            for t in traces:
                y = extract(t)
                if y is not None and np.size(y) and x_column in t:
                    xs.append(np.asarray(t[x_column], dtype=np.float64))
                    ys.append(np.asarray(y, dtype=np.float64) * scale)
            if not ys:
                continue
            x = np.concatenate(xs)
            c = binning.binned(x, np.concatenate(ys), binning.edges_for(x.min(), x.max()), reduce)
            if not np.isfinite(c["y"]).any():
                continue
            name = ROLE_NAMES.get(role, role) + (f", {L} tokens" if len(all_lengths) > 1 else "") + suffix
            series.append({"name": name, "x": binning.finite_list(c["x"]), "y": binning.finite_list(c["y"]),
                           "color_key": role, "linestyle": linestyle(all_lengths.index(L))})
            x_max = max(x_max, int(x.max()))
    return series, x_max


def metric(name: str, over_layers: str, over_heads: str) -> Extract:
    """Extractor of ``layers.*.attn.<name>`` reduced over heads, then over layers.

    ``over_heads`` and ``over_layers`` name NaN-ignoring numpy reductions: ``sum``, ``mean``, ``max``, ``min``.
    """
    def extract(trace: dict) -> np.ndarray | None:
        arr = stack_layers(trace, name)  # (layers, S, H)
        if arr is None:
            return None
        with np.errstate(all="ignore"):
            per_layer = getattr(np, "nan" + over_heads)(arr, axis=2)  # (layers, S)
            return getattr(np, "nan" + over_layers)(per_layer, axis=0)  # (S,)

    return extract


def column(name: str, over_layers: str | None = None) -> Extract:
    """Extractor of a top-level trace column such as ``process.rss_bytes`` or ``cache.kv_bytes`` (S, layers)."""

    def extract(trace: dict) -> np.ndarray | None:
        if name not in trace:
            return None
        arr = np.asarray(trace[name], dtype=np.float64)
        if arr.ndim == 2:
            arr = getattr(np, over_layers or "sum")(arr, axis=1)
        return arr

    return extract
