"""Each cell's headline region: the tokens its own run's headline and verdicts were computed on.

``run`` picks one analysis region per length (:func:`anomaly_probe.hypotheses.region.find_region`): the
positions from the gap's changepoint when a significant rise of the gap starts there, else the positions
past the trained context, else every scored token; it records the choice in ``results.json``
``analysis_regions`` (``AnalysisRegion.to_dict()``; ``import`` writes the same keys). The sweep's trend
report reads that record back, so each cell is compared on what its own run claimed, not on a fixed window
that averages a late break away. A cell whose results.json records no region for its length (older runs,
``--hypothesis none``, an import that analysed every token) falls back to all scored tokens, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass

from anomaly_probe.reports.rundata import RunData

NOT_RECORDED = "not recorded"


@dataclass(frozen=True)
class HeadlineRegion:
    """Where one cell's run computed its headline gap.

    Attributes
    ----------
    start : int
        First per-token entry of the region (entry i scores position i + 1); 0 for every scored token.
    basis : str
        ``"changepoint"``, ``"trained-context"`` or ``"all"`` as the run recorded it, or
        :data:`NOT_RECORDED` (no usable ``analysis_regions`` entry for this length: all tokens are used).
    text : str
        The run's own description, e.g. ``positions 10753-11999 (from the gap's changepoint, ...)``.
    """

    start: int
    basis: str
    text: str
    last: int | None = None  # last position (the length - 1)
    p: float | None = None  # the changepoint's permutation p-value (basis "changepoint")

    @property
    def recorded(self) -> bool:
        return self.basis != NOT_RECORDED

    @property
    def first_position(self) -> int:
        return self.start + 1

    def label(self) -> str:
        """Short table text, e.g. ``positions 10753-11999 (changepoint, p=0.001)``, or why all tokens."""
        if not self.recorded:
            return "all scored tokens (fallback: no analysis region recorded)"
        if self.start == 0:
            return "all scored tokens (the run's choice)"
        where = f"positions {self.first_position}-{self.last}" if self.last else f"from position {self.first_position}"
        why = {"changepoint": "from the gap's changepoint" + (f", p={self.p:.3f}" if self.p is not None else ""),
               "trained-context": "past the trained context"}.get(self.basis, self.basis)
        return f"{where} ({why})"


def headline_region(data: RunData, max_tokens: int) -> HeadlineRegion:
    """The region the run recorded for ``max_tokens`` (first matching ``analysis_regions`` entry).

    An entry without a whole-number ``start_entry`` >= 0 counts as not recorded (all tokens, said so).
    """
    for r in data.listing("analysis_regions"):
        if r.get("max_tokens") != max_tokens:
            continue
        start = r.get("start_entry")
        if not isinstance(start, int) or isinstance(start, bool) or start < 0:
            break
        if start == 0:
            return HeadlineRegion(0, "all", "all scored tokens")
        basis = r.get("basis") if isinstance(r.get("basis"), str) and r.get("basis") else "region"
        text = r.get("text") if isinstance(r.get("text"), str) and r.get("text") else \
            f"positions {start + 1}-{max_tokens - 1}"
        p = r.get("changepoint_p")
        return HeadlineRegion(start, basis, text, max_tokens - 1,
                              float(p) if isinstance(p, (int, float)) and not isinstance(p, bool) else None)
    return HeadlineRegion(0, NOT_RECORDED, "all scored tokens")
