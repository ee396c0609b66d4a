"""The report as plain data: sections of texts, tables and figure specs.

Builders produce this tree from a run folder; renderers (PNG, HTML, console) consume it. Nothing here
knows about HTML or matplotlib, so the tree can be tested, diffed and rendered in several ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

@dataclass
class Text:
    """A paragraph.

    Attributes
    ----------
    text : str
        Plain text (renderers escape it).
    kind : str
        ``p`` (prose), ``note`` (a short aside, e.g. a skipped figure), ``error`` (something failed
        while building the report) or ``code`` (a command line, shown verbatim).
    """

    text: str
    kind: str = "p"


@dataclass
class Cell:
    """One table cell: its text and an optional semantic tag (``supported``, ``diff``, ``num`` ...)."""

    text: str
    tag: str = ""


@dataclass
class Table:
    """A titled table; every row has one cell per column.

    Attributes
    ----------
    row_tags : list of str
        Optional tag per row (``diff`` marks an environment difference), same length as ``rows``.
    ci : str
        Which confidence interval the table's brackets show (every renderer prints it); empty when the
        table shows none.
    """

    title: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    row_tags: list[str] = field(default_factory=list)
    ci: str = ""


@dataclass
class Figure:
    """A figure as a drawable spec (the generic evidence-figure format of docs/FORMATS.md).

    Attributes
    ----------
    id : str
        Unique within the report; also the PNG file stem under ``figures/``.
    spec : dict
        ``kind`` line / bar / scatter, plus the report's own ``heatmap`` and ``panels``
        (see :mod:`anomaly_probe.reports.plot`).
    caption : str
        What is drawn, from how many samples, and how the uncertainty was computed.
    """

    id: str
    spec: dict
    caption: str = ""


Block = Union[Text, Table, Figure, "Section"]


@dataclass
class Section:
    """A titled list of blocks; sections nest."""

    title: str
    blocks: list[Block] = field(default_factory=list)
    id: str = ""

    def add(self, block: Block | None) -> None:
        if block is not None:
            self.blocks.append(block)


@dataclass
class Report:
    """The whole report.

    Attributes
    ----------
    headline : str or None
        The run's one-sentence conclusion, when there is one.
    colors : dict
        Colour key (method label or role) -> hex colour; the one colour map every figure uses.
    warnings : list of str
        What the console summary must say besides the verdicts (a sample left out for a missing token
        file, figures not saved); each is also in the report where it applies.
    """

    title: str
    subtitle: str = ""
    headline: str | None = None
    sections: list[Section] = field(default_factory=list)
    colors: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def figures(self) -> list[Figure]:
        """Every figure, in reading order."""
        return [b for b in walk(self.sections) if isinstance(b, Figure)]

    def errors(self) -> list[Text]:
        return [b for b in walk(self.sections) if isinstance(b, Text) and b.kind == "error"]


def walk(blocks):
    """Yield every block depth-first (sections themselves included)."""
    for block in blocks:
        yield block
        if isinstance(block, Section):
            yield from walk(block.blocks)
