"""Render the report tree to one self-contained HTML page (jinja2, autoescaped, images as data URIs)."""

from __future__ import annotations

from anomaly_probe.reports.render import Rendered
from anomaly_probe.reports.status import status_css
from anomaly_probe.reports.template import CSP, CSS, TEMPLATE
from anomaly_probe.reports.tree import Figure, Report


def figure_title(fig: Figure) -> str:
    return str(fig.spec.get("title") or fig.id)


def render_html(report: Report, rendered: dict[str, Rendered]) -> str:
    """The page as a string; every text of the tree is escaped by jinja2's autoescape."""
    import jinja2

    from anomaly_probe import __version__

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    template = env.from_string(TEMPLATE)
    css = CSS + status_css() + "\n"  # one status palette with the console tables
    return template.render(report=report, rendered=rendered, css=css, csp=CSP, version=__version__,
                           figure_title=figure_title, kind=lambda block: type(block).__name__)
