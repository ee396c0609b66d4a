"""One colour per method label or role, shared by every figure of a report.

Roles have fixed colours (Okabe-Ito, readable by colour-blind readers); the method labels of a run
are aliased to their role (``full`` is the baseline's colour everywhere); any other key gets the
next free palette colour in the order it is first seen, so a key keeps its colour across figures.
"""

from __future__ import annotations

ROLE_COLORS = {
    "baseline": "#0072B2",  # blue
    "method": "#D55E00",  # vermillion
    "oracle": "#009E73",  # bluish green
    "gap": "#CC79A7",  # reddish purple
}
PALETTE = ("#000000", "#56B4E9", "#E69F00", "#8C564B", "#9467BD", "#7F7F7F", "#BCBD22", "#17BECF",
           "#E377C2", "#1F77B4", "#2CA02C", "#F0E442")
LINESTYLES = ("-", "--", ":", "-.")
"""Line style per sample length (index in ascending length order); colour stays the method's."""


class ColorMap:
    """Key -> hex colour, stable within one report.

    Parameters
    ----------
    aliases : dict
        Extra key -> role or key, e.g. ``{"full": "baseline", "streaming_llm(4+252, in-cache)": "method"}``.
    """

    def __init__(self, aliases: dict[str, str] | None = None) -> None:
        self._colors: dict[str, str] = dict(ROLE_COLORS)
        self._aliases = dict(aliases or {})
        self._next = 0

    def color(self, key: str) -> str:
        """The colour of ``key``, assigning the next palette colour to a new key."""
        key = self._aliases.get(key, key)
        if key not in self._colors:
            self._colors[key] = PALETTE[self._next % len(PALETTE)]
            self._next += 1
        return self._colors[key]

    def as_dict(self) -> dict[str, str]:
        """Every key seen so far, aliases included (plain data for the report tree)."""
        out = dict(self._colors)
        out.update({alias: self._colors[target] for alias, target in self._aliases.items()
                    if target in self._colors})
        return out


def linestyle(index: int) -> str:
    return LINESTYLES[index % len(LINESTYLES)]
