"""Number formatting for tables: every number with its unit, ``n/a`` where missing."""

from __future__ import annotations

import math
import shlex


def num(x, spec: str = ".3f", unit: str = "") -> str:
    """``format(x, spec)`` plus a unit; ``n/a`` for None, non-numbers and NaN; ``inf`` kept."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return "n/a"
    if isinstance(x, float) and math.isnan(x):
        return "n/a"
    text = format(x, spec)
    return f"{text} {unit}" if unit else text


def share_ci(share, low, high) -> str:
    """``0.97 [0.93, 1.00]``; the interval is omitted where missing."""
    text = num(share, ".2f")
    if num(low) != "n/a" and num(high) != "n/a":
        text += f" [{low:.2f}, {high:.2f}]"
    return text


def mib(n_bytes) -> str:
    return num(n_bytes / 2**20, ".1f", "MiB") if isinstance(n_bytes, (int, float)) else "n/a"


def gib(n_bytes) -> str:
    return num(n_bytes / 2**30, ".1f", "GiB") if isinstance(n_bytes, (int, float)) else "n/a"


def plain(value, limit: int = 200) -> str:
    """Any JSON value as short text (lists of numbers are summarised when long)."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return num(value, ".4g")
    if isinstance(value, (list, tuple)):
        if len(value) > 12:
            return f"{len(value)} values"
        return "[" + ", ".join(plain(v, 40) for v in value) + "]"
    if isinstance(value, dict):
        text = ", ".join(f"{k}: {plain(v, 40)}" for k, v in value.items())
    else:
        text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def command_line(argv) -> str | None:
    """The shell-quoted command that reproduces a run, from ``environment.argv``."""
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        return None
    prefix = ["python", "-m", "anomaly_probe"] if argv[0].endswith("__main__.py") else argv[:1]
    return shlex.join(prefix + argv[1:])


def n_text(n) -> str:
    """``5000 tokens, 40 blocks, 3 samples`` from a verdict's ``n``."""
    if not isinstance(n, dict) or not n:
        return "n/a"
    parts = [f"{n[k]} {k}" for k in ("tokens", "blocks", "samples") if k in n]
    return ", ".join(parts) or plain(n)
