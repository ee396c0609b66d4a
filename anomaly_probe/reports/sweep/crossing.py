"""Where each line's gap changes sign: sentences per line for the headline (pure, per-cell CIs).

:func:`crossing_sentence` names the first length whose gap in the cell's headline region (the tokens its
own run's headline used, :mod:`.region`) is positive beyond noise, as a multiple of the trained context;
:func:`line_sentence` describes the gap at every length, e.g. ``smollm2-135m: over all scored tokens the
method is worse beyond noise at 2000-8000 tokens (0.24-0.98x its trained context) and within noise at
12000 tokens (1.46x); on the positions past the trained context it is better beyond noise at 12000
tokens (1.46x).``
"""

from __future__ import annotations

from anomaly_probe.reports.sweep.cells import CellStats

WORDS = {1: "better beyond noise", 0: "within noise", -1: "worse beyond noise"}


def _sign(iv) -> int | None:
    """+1 method better beyond noise, -1 worse beyond noise, 0 within noise, None without an interval."""
    if iv is None or iv[0] is None or iv[1] is None or iv[2] is None:
        return None
    return 1 if iv[1] > 0 else -1 if iv[2] < 0 else 0


def _span(run: list[CellStats]) -> str:
    a, b = run[0], run[-1]
    tokens = f"{a.max_tokens}" if a is b else f"{a.max_tokens}-{b.max_tokens}"
    if a.ratio is None:
        return f"{tokens} tokens"
    ratio = f"{a.ratio:.2f}" if a is b else f"{a.ratio:.2f}-{b.ratio:.2f}"
    return f"{tokens} tokens ({ratio}x its trained context)"


def describe(stats: list[CellStats], which: str) -> str | None:
    """``worse beyond noise at 2000-8000 tokens (...) and within noise at 12000 tokens (...)``, lengths in
    order, neighbours of one sign merged; None when no cell has that gap with an interval."""
    runs: list[tuple[int, list[CellStats]]] = []
    for s in sorted(stats, key=lambda s: s.max_tokens):
        sign = _sign(getattr(s, which))
        if sign is None:
            continue
        if runs and runs[-1][0] == sign:
            runs[-1][1].append(s)
        else:
            runs.append((sign, [s]))
    if not runs:
        return None
    parts = [f"{WORDS[sign]} at {_span(run)}" for sign, run in runs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def line_sentence(line: str, stats: list[CellStats]) -> str:
    """What the method's gap does along one line: over all tokens, in each cell's headline region (when a
    cell's region is not all its tokens) and past the trained context."""
    overall, past = describe(stats, "gap"), describe(stats, "gap_past")
    text = f"{line}: over all scored tokens the method is {overall or 'n/a (no interval)'}"
    if any(s.region is not None and s.region.start > 0 for s in stats):
        text += f"; in each cell's headline region it is {describe(stats, 'gap_headline') or 'n/a (no interval)'}"
    if past:
        text += f"; on the positions past the trained context it is {past}"
    return text + "."


def line_sentences(stats: list[CellStats]) -> list[str]:
    return [line_sentence(line, pts) for line, pts in _by_line(stats).items()]


def _ci(iv) -> str:
    text = f"{iv[0]:+.3f} nats/token"
    return text if iv[1] is None or iv[2] is None else text + f", CI {iv[1]:+.3f}..{iv[2]:+.3f}"


def _at(s: CellStats, note: str = "") -> str:
    """``12000 tokens (1.46x its trained context 8192; note)``."""
    inside = [f"{s.ratio:.2f}x its trained context {s.trained_context}"] if s.ratio is not None else []
    inside += [note] if note else []
    return f"{s.max_tokens} tokens" + (f" ({'; '.join(inside)})" if inside else "")


def crossing_sentence(line: str, stats: list[CellStats]) -> str | None:
    """Where the line's headline-region gap first turns positive beyond noise (None: no cell has an interval).

    E.g. ``smollm2-135m: the gap crosses 0 between 8000 tokens (0.98x its trained context 8192; method
    worse beyond noise) and 12000 tokens (1.46x its trained context 8192): there the method is better
    beyond noise on positions 10753-11999 (from the gap's changepoint, p=0.001), i.e. from 1.31x the
    trained context (+0.957 nats/token, CI +0.768..+1.177), while over all scored tokens that cell's gap
    is -0.119 nats/token (...)``. Lengths, contexts and regions all come from the cells' data.
    """
    pts = [s for s in sorted(stats, key=lambda s: s.max_tokens) if _sign(s.gap_headline) is not None]
    if not pts:
        return None
    first = next((i for i, s in enumerate(pts) if _sign(s.gap_headline) == 1), None)
    if first is None:
        return (f"{line}: the gap does not cross 0 in this grid: in each cell's headline region the method is "
                f"{describe(pts, 'gap_headline')}.")
    s = pts[first]
    if first == 0:
        text = (f"{line}: the method is better beyond noise already at the shortest length, {_at(s)}, so this "
                "grid does not show where the gap crosses 0")
    else:
        prev = pts[first - 1]
        before = _at(prev, "method " + WORDS[_sign(prev.gap_headline)])
        text = f"{line}: the gap crosses 0 between {before} and {_at(s)}"
    region = s.region
    if region is None or region.start == 0:
        why = "" if region is None or region.recorded else " (no analysis region recorded)"
        return text + f": the method is better beyond noise over all scored tokens{why} ({_ci(s.gap_headline)})."
    text += f": there the method is better beyond noise on {region.label()}"
    if s.trained_context:
        text += f", i.e. from {region.first_position / s.trained_context:.2f}x the trained context"
    text += f" ({_ci(s.gap_headline)}), while over all scored tokens that cell's gap is "
    text += "n/a" if s.gap[0] is None else f"{_ci(s.gap)} (method {WORDS.get(_sign(s.gap), 'n/a: no interval')})"
    if region.basis == "changepoint":
        text += "; the data placed that region, so its CI leans optimistic"
    return text + "."


def crossing_sentences(stats: list[CellStats]) -> list[str]:
    return [t for t in (crossing_sentence(line, pts) for line, pts in _by_line(stats).items()) if t]


def _by_line(stats: list[CellStats]) -> dict[str, list[CellStats]]:
    lines: dict[str, list[CellStats]] = {}
    for s in stats:
        lines.setdefault(s.cell.line, []).append(s)
    return lines
