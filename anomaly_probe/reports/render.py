"""Draw every figure of a report tree to PNG; a figure that fails becomes an error, never a crash."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from pathlib import Path

from anomaly_probe.reports.tree import Report
from anomaly_probe.rundir.files import atomic_write


@dataclass
class Rendered:
    """One drawn figure: its PNG (None when drawing failed), where it was saved, or why it failed."""

    png: bytes | None = None
    path: Path | None = None
    error: str = ""

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii") if self.png else ""

    @property
    def width(self) -> int:
        return struct.unpack(">I", self.png[16:20])[0] if self.png else 0

    @property
    def height(self) -> int:
        return struct.unpack(">I", self.png[20:24])[0] if self.png else 0


def render_figures(report: Report, out_dir: Path | None, prefix: str = "") -> dict[str, Rendered]:
    """Draw each figure; save ``out_dir/<prefix><id>.png`` when ``out_dir`` is given.

    A figure that cannot be drawn gets an ``error`` string; one that cannot be saved keeps its PNG
    (the HTML embeds it) and notes the failed save in ``error``.
    """
    from anomaly_probe.reports.plot import render_png

    out: dict[str, Rendered] = {}
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            out_dir = None
    for fig in report.figures():
        try:
            png = render_png(fig.spec, report.colors)
        except Exception as exc:  # noqa: BLE001 - one bad figure must not stop the report
            out[fig.id] = Rendered(error=f"{type(exc).__name__}: {str(exc)[:200]}")
            continue
        result = Rendered(png=png)
        if out_dir is not None:
            path = out_dir / f"{prefix}{fig.id}.png"
            try:
                atomic_write(path, lambda f, png=png: f.write(png))  # a link at ``path`` is replaced, not followed
                result.path = path
            except OSError as exc:
                result.error = f"not saved: {exc.strerror or exc}"
        out[fig.id] = result
    return out
