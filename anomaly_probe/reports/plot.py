"""Draw a figure spec as PNG bytes.

Kinds, beyond docs/FORMATS.md's generic ``line`` / ``bar`` / ``scatter``:

* ``heatmap``: ``x_edges`` (or ``x`` centres), ``y`` (row labels, e.g. layer indices), ``z`` (rows x
  columns, None for empty cells), ``zlabel``, optional ``vmin`` / ``vmax``;
* ``panels``: ``panels`` (a list of specs drawn in a grid of ``ncols`` columns), whose ``xlabel``,
  ``ylabel``, ``zlabel`` and ``log_y`` the panels inherit unless they set their own.

Optional series keys: ``linestyle`` (matplotlib style), ``marker`` (scatter), ``x`` (a series' own x),
``errorbars`` (line: draw ``ci_low`` / ``ci_high`` as capped bars at the points instead of a band),
``color_keys`` (bar: one colour key per category instead of one per series).
Optional spec key: ``diagonal`` (scatter: draw y = x). Colours come from the report's colour map,
keyed by ``color_key`` (else the series name). Uses ``matplotlib.figure.Figure`` directly: no pyplot,
no GUI backend, nothing global beyond a temporary rc context.
"""

from __future__ import annotations

import io
import math

import numpy as np

DPI = 100
WIDTH_IN = 8.0  # one column: 800 px at 100% zoom
WIDE_IN = 11.0  # two columns
PANEL_IN = 3.0  # height per row of panels
STYLE = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10, "ytick.labelsize": 10,
    "legend.fontsize": 10, "figure.titlesize": 14, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "lines.linewidth": 1.8,
    "axes.formatter.limits": (-3, 4),  # scientific notation outside 1e-3..1e4, the same in every panel
}
VLINE_STYLES = (("#333333", "--"), ("#C00000", ":"), ("#777777", "-."), ("#000000", (0, (5, 2, 1, 2))))
FALLBACK = "#555555"
LEGEND_ROW_IN = 0.25  # extra height per legend row beyond two
CHAR_PX = 7.6  # width of one legend character at 10 pt and 100 dpi (a little generous)
INHERITED = ("xlabel", "ylabel", "zlabel", "log_y")


def render_png(spec: dict, colors: dict[str, str]) -> bytes:
    """Draw ``spec`` with the report's colour map; returns PNG bytes (raises on a malformed spec).

    Text in the spec (titles, labels, names from results.json) is drawn with its control characters
    shown as escapes (``console.visible``): they have no glyph, and matplotlib's missing-glyph warning
    would print them raw to the terminal.
    """
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    spec = _visible_text(spec)

    panels = list(spec["panels"]) if spec.get("kind") == "panels" else [spec]
    if not panels:
        raise ValueError("a panels figure without panels")
    ncols = max(1, min(int(spec.get("ncols", 1)), len(panels)))
    nrows = math.ceil(len(panels) / ncols)
    width = WIDTH_IN if ncols == 1 else WIDE_IN
    height = 4.4 if len(panels) == 1 else 1.3 + PANEL_IN * nrows
    height += LEGEND_ROW_IN * max(0, _legend_rows(panels, width) - 2)
    with rc_context(STYLE):
        fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for i, panel in enumerate(panels):
            merged = {k: spec[k] for k in INHERITED if k in spec} | panel | {"_ncols": ncols}
            bottom = i + ncols >= len(panels)
            _draw(fig, axes.flat[i], merged, colors, show_xlabel=bottom or "xlabel" in panel)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        if len(panels) > 1:
            fig.suptitle(str(spec.get("title", "")))
        _legend(fig, axes.flat[: len(panels)])
        buf = io.BytesIO()
        fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def _visible_text(value):
    """``value`` with every string in it (nested in dicts and lists) passed through ``console.visible``."""
    from anomaly_probe.console import visible

    if isinstance(value, str):
        return visible(value)
    if isinstance(value, dict):
        return {k: _visible_text(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_visible_text(v) for v in value]
    return value


def _legend_columns(labels, width_in: float) -> int:
    longest = max((len(label) for label in labels), default=1)
    fits = int(width_in * DPI // (longest * CHAR_PX + 70))  # columns that fit (text + handle + gap)
    return max(1, min(3, len(labels), fits))


def _legend_rows(panels: list[dict], width_in: float) -> int:
    """Rows the figure legend will need (to grow the figure instead of squeezing the plots)."""
    labels = set()
    for p in panels:
        labels |= {str(s.get("name", "")) for s in p.get("series") or [] if isinstance(s, dict)}
        labels |= {str(v.get("label")) for v in (p.get("vlines") or []) + (p.get("hlines") or []) + (p.get("spans") or [])
                   if v.get("label")}
    labels.discard("")
    return math.ceil(len(labels) / _legend_columns(labels, width_in)) if labels else 0


def _legend(fig, axes) -> None:
    seen: dict[str, object] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            if label and not label.startswith("_") and label not in seen:
                seen[label] = handle
    if seen:
        fig.legend(list(seen.values()), list(seen.keys()), loc="outside lower center",
                   ncols=_legend_columns(list(seen), fig.get_figwidth()), frameon=False)


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def _color(series: dict, colors: dict[str, str]) -> str:
    return colors.get(str(series.get("color_key") or series.get("name")), FALLBACK)


def _draw(fig, ax, spec: dict, colors: dict[str, str], show_xlabel: bool) -> None:
    kind = spec.get("kind")
    draw = {"line": _line, "scatter": _scatter, "bar": _bar, "heatmap": _heatmap}.get(kind)
    if draw is None:
        raise ValueError(f"unknown figure kind {kind!r}")
    draw(fig, ax, spec, colors)
    for k, v in enumerate(spec.get("vlines") or []):
        color, ls = VLINE_STYLES[k % len(VLINE_STYLES)]
        effects = None
        if kind == "heatmap":  # white with a dark outline: visible on the colour map and in the legend
            from matplotlib import patheffects

            color, effects = "white", [patheffects.withStroke(linewidth=3.2, foreground="#222222")]
        ax.axvline(float(v["x"]), color=color, linestyle=ls, linewidth=1.6, label=v.get("label"),
                   path_effects=effects)
    for v in spec.get("hlines") or []:
        ax.axhline(float(v["y"]), color="#888888", linestyle=":", linewidth=1.3, label=v.get("label"))
    for v in spec.get("spans") or []:  # shaded x ranges, e.g. the analysis region
        ax.axvspan(float(v["x0"]), float(v["x1"]), color="#999999", alpha=0.13, linewidth=0, label=v.get("label"))
    if kind in ("line", "scatter") and ax.get_xscale() == "linear":
        ax.ticklabel_format(axis="x", style="plain", useOffset=False)  # 12000, not 1.2 x 1e4
    if spec.get("log_y") and kind != "heatmap":
        ax.set_yscale("log", nonpositive="mask")
        _plain_log_ticks(ax)
    ax.set_title(_wrap(str(spec.get("title", "")), fig.get_figwidth() / max(1, spec.get("_ncols", 1))))
    if show_xlabel:
        ax.set_xlabel(str(spec.get("xlabel", "")))
    ax.set_ylabel(str(spec.get("ylabel", "")))


def _wrap(title: str, width_in: float) -> str:
    """Break a title that would not fit the axes' width (12 pt is ~8.6 px per character)."""
    import textwrap

    fits = max(20, int(width_in * DPI * 0.9 / 8.6))
    return title if len(title) <= fits else textwrap.fill(title, fits)


def _plain_log_ticks(ax) -> None:
    """Under two decades, label log ticks as plain numbers (``3``, not ``3 x 10^0``)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = ax.get_ylim()
    if lo > 0 and hi / lo < 100:
        if hi / lo >= 10:  # 1-2-5 labels, so a range like 2..50 shows more than one number
            ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}") if hi / lo < 10 else NullFormatter())


def _line(fig, ax, spec: dict, colors: dict[str, str]) -> None:
    for s in spec["series"]:
        x, y = _floats(s.get("x", spec.get("x"))), _floats(s["y"])
        color = _color(s, colors)
        marker = "o" if x.size <= 25 else None
        ax.plot(x, y, color=color, linestyle=s.get("linestyle", "-"), marker=marker, markersize=4,
                label=str(s.get("name", "")))
        if s.get("ci_low") is not None and s.get("ci_high") is not None:
            lo, hi = _floats(s["ci_low"]), _floats(s["ci_high"])
            if s.get("errorbars"):  # (2, n) distances below / above each point; NaN where no interval
                ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), fmt="none", ecolor=color, capsize=4, linewidth=1.3)
            else:
                ax.fill_between(x, lo, hi, color=color, alpha=0.15, linewidth=0)


def _scatter(fig, ax, spec: dict, colors: dict[str, str]) -> None:
    lo, hi = math.inf, -math.inf
    for s in spec["series"]:
        x, y = _floats(s.get("x", spec.get("x"))), _floats(s["y"])
        ax.scatter(x, y, s=12, alpha=0.5, marker=s.get("marker", "o"), color=_color(s, colors),
                   edgecolors="none", label=str(s.get("name", "")))
        both = np.concatenate([x, y])
        if np.isfinite(both).any():
            lo, hi = min(lo, np.nanmin(both)), max(hi, np.nanmax(both))
    if spec.get("diagonal") and lo < hi:
        ax.plot([lo, hi], [lo, hi], color="#333333", linestyle="--", linewidth=1.2, label="y = x")


def _bar(fig, ax, spec: dict, colors: dict[str, str]) -> None:
    """Grouped bars (``style: "dots"``: points with error bars, for values far from zero)."""
    cats = [str(c) for c in spec["categories"]]
    n = len(spec["series"])
    width = 0.8 / max(n, 1)
    base = np.arange(len(cats), dtype=np.float64)
    dots = spec.get("style") == "dots"
    for j, s in enumerate(spec["series"]):
        pos = base + (j - (n - 1) / 2) * width
        h = _floats(s["y"])
        color, label = _color(s, colors), str(s.get("name", ""))
        err = None
        if s.get("ci_low") is not None and s.get("ci_high") is not None:
            lo, hi = _floats(s["ci_low"]), _floats(s["ci_high"])
            err = np.nan_to_num(np.vstack([np.abs(h - lo), np.abs(hi - h)]), nan=0.0)
        if s.get("color_keys"):  # one colour per category (e.g. baseline vs method bars in one series)
            cols = [colors.get(str(k), FALLBACK) for k in s["color_keys"]]
            for i in range(len(cats)):
                e = None if err is None else err[:, i:i + 1]
                if dots:
                    ax.errorbar(pos[i:i + 1], h[i:i + 1], yerr=e, fmt="o", color=cols[i], markersize=7, capsize=4,
                                linewidth=1.5, label=label if i == 0 else None)
                else:
                    ax.bar(pos[i:i + 1], h[i:i + 1], width * 0.92, color=cols[i], label=label if i == 0 else None)
                    if e is not None:
                        ax.errorbar(pos[i:i + 1], h[i:i + 1], yerr=e, fmt="none", ecolor="#222222", capsize=3,
                                    linewidth=1.2)
            continue
        if dots:
            ax.errorbar(pos, h, yerr=err, fmt="o", color=color, markersize=7, capsize=4, linewidth=1.5, label=label)
            continue
        ax.bar(pos, h, width * 0.92, color=color, label=label)
        if err is not None:
            ax.errorbar(pos, h, yerr=err, fmt="none", ecolor="#222222", capsize=3, linewidth=1.2)
    needed = sum(len(c) for c in cats) * CHAR_PX + 24 * len(cats)
    rotate = needed > 0.8 * fig.get_figwidth() * DPI / max(1, spec.get("_ncols", 1))
    ax.set_xticks(base, cats, rotation=25 if rotate else 0, ha="right" if rotate else "center")
    if dots:
        ax.set_xlim(-0.6, len(cats) - 0.4)
        for edge in base[:-1] + 0.5:
            ax.axvline(edge, color="#dddddd", linewidth=1)
    ax.grid(axis="x", visible=False)


def _heatmap(fig, ax, spec: dict, colors: dict[str, str]) -> None:
    z = np.array([_floats(row) for row in spec["z"]], dtype=np.float64)  # (rows, columns)
    if "x_edges" in spec:
        xe = _floats(spec["x_edges"])
    else:
        xc = _floats(spec["x"])
        step = np.diff(xc).mean() if xc.size > 1 else 1.0
        xe = np.concatenate([xc - step / 2, xc[-1:] + step / 2])
    rows = list(spec.get("y") or range(z.shape[0]))
    ye = np.arange(len(rows) + 1) - 0.5
    mesh = ax.pcolormesh(xe, ye, z, cmap="viridis", vmin=spec.get("vmin"), vmax=spec.get("vmax"), shading="flat")
    fig.colorbar(mesh, ax=ax, label=str(spec.get("zlabel", "")))
    if len(rows) <= 16:
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.grid(False)
