"""Where each line's gap changes sign: one sentence per line for the headline (pure, per-cell CIs).

E.g. ``smollm2-135m: over all scored tokens the method is worse beyond noise at 2000-8000 tokens
(0.24-0.98x its trained context) and within noise at 12000 tokens (1.46x); on the positions past the
trained context it is better beyond noise at 12000 tokens (1.46x).``
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
    """What the method's gap does along one line, over all tokens and past the trained context."""
    overall, past = describe(stats, "gap"), describe(stats, "gap_past")
    text = f"{line}: over all scored tokens the method is {overall or 'n/a (no interval)'}"
    if past:
        text += f"; on the positions past the trained context it is {past}"
    return text + "."


def line_sentences(stats: list[CellStats]) -> list[str]:
    lines: dict[str, list[CellStats]] = {}
    for s in stats:
        lines.setdefault(s.cell.line, []).append(s)
    return [line_sentence(line, pts) for line, pts in lines.items()]
