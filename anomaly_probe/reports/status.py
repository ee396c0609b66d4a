"""One status style for every command: a verdict's or a check's status -> terminal style and HTML colour.

``run``, ``report`` and ``import`` print the verdict table, ``check`` prints its results, and the HTML
report colours status cells; all of them read :data:`STATUS_STYLES`, so a status looks the same
everywhere. A check's ``pass`` looks like ``supported``, ``skip`` like ``refuted`` (nothing to act on).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StatusStyle:
    """How one status is shown.

    Attributes
    ----------
    terminal : str
        A rich style (``"bold green"``).
    html : str
        Background colour of the status cell in the HTML report (hex).
    """

    terminal: str
    html: str


_GOOD = StatusStyle("bold green", "#d9f2e3")
_NEUTRAL = StatusStyle("dim", "#eeeeee")
STATUS_STYLES: dict[str, StatusStyle] = {
    "supported": _GOOD,
    "refuted": _NEUTRAL,  # ruled out: informative, not alarming
    "inconclusive": StatusStyle("yellow", "#fff3cd"),
    "error": StatusStyle("bold magenta", "#f3d6f0"),  # the experiment or check crashed
    "pass": _GOOD,
    "fail": StatusStyle("bold red", "#f8d7da"),
    "skip": _NEUTRAL,
}
"""Every status of a :class:`~anomaly_probe.verdict.Verdict` and of a check result."""


def styled(status: str, text: str | None = None) -> str:
    """``text`` (default: the status in capitals) as rich markup in the status' style; markup in it is escaped."""
    from anomaly_probe.console import safe

    shown = safe(status.upper() if text is None else text)
    style = STATUS_STYLES.get(status)
    return f"[{style.terminal}]{shown}[/]" if style else shown


def status_css() -> str:
    """CSS rules colouring table cells tagged with a status (``<td class="supported">``)."""
    return "\n".join(f"td.{name} {{ background: {s.html}; font-weight: 600; }}" for name, s in STATUS_STYLES.items())
