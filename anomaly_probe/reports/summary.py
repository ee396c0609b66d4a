"""The console summary of a report: headline, verdict table and where the files went (rich)."""

from __future__ import annotations

from pathlib import Path

from anomaly_probe.reports.render import Rendered
from anomaly_probe.reports.status import STATUS_STYLES, styled
from anomaly_probe.reports.tree import Report, Table, walk


CONSOLE_COLUMNS = {"rank": "#", "hypothesis": "hypothesis", "tokens per sample": "tokens", "status": "status",
                   "explained share": "share", "message": "message"}
"""The verdict columns a terminal shows, with shorter headers (the HTML has all of them). A column
``NAME [...]`` matches ``NAME`` and keeps its bracket (``explained share [95% CI]`` -> ``share [95% CI]``)."""


def rich_table(table: Table, columns: dict[str, str] | None = None):
    """A report :class:`Table` as a rich table: status cells in the one status style (``reports.status``),
    the table's ``ci`` as its caption.

    ``columns`` maps the columns to keep to their console headers; None keeps all.
    """
    from rich.table import Table as RichTable

    headers = [_header(name, columns) for name in table.columns]
    keep = [i for i, header in enumerate(headers) if header is not None]
    out = RichTable(title=table.title, title_justify="left", caption=_escape(table.ci) if table.ci else None,
                    caption_justify="left")
    for i in keep:
        name = table.columns[i]
        right = bool(table.rows) and all(row[i].tag == "num" for row in table.rows)
        out.add_column(headers[i], justify="right" if right else "left", overflow="fold", no_wrap=name != "message")
    for row in table.rows:
        cells = [row[i] for i in keep]
        out.add_row(*[styled(c.tag, c.text) if c.tag in STATUS_STYLES else _escape(c.text) for c in cells])
    return out


def _header(name: str, columns: dict[str, str] | None) -> str | None:
    """The console header of column ``name``, or None when ``columns`` leaves it out."""
    if columns is None:
        return name
    for long, short in columns.items():
        if name == long or name.startswith(long + " ["):
            return short + name[len(long):]
    return None


def _escape(text: str) -> str:
    from anomaly_probe.console import safe

    return safe(text)


def print_summary(report: Report, rendered: dict[str, Rendered], html_path: Path, console) -> None:
    """Print the headline, the verdict table (when there is one) and the output paths on ``console``."""
    if report.headline:
        console.print(f"[bold]{_escape(report.headline)}[/]")
    verdicts = next((b for b in walk(report.sections) if isinstance(b, Table) and b.title == "Verdicts"), None)
    if verdicts is not None:
        console.print(rich_table(verdicts, CONSOLE_COLUMNS))
    drawn = [r for r in rendered.values() if r.png]
    folders = sorted({str(r.path.parent) for r in drawn if r.path})
    failed = [fid for fid, r in rendered.items() if not r.png]
    problems = len(report.errors()) + len(failed)
    for warning in report.warnings:
        console.print(f"note: {warning}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"report: {_escape(str(html_path))}", highlight=False)
    console.print(f"figures: {len(drawn)} PNG" + (f" in {_escape(', '.join(folders))}" if folders else ""),
                  highlight=False)
    if problems:
        console.print(f"[yellow]{problems} figure(s) or table(s) could not be built; the report says which.[/]")
