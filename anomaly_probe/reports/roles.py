"""Which saved run plays which part: baseline, method under test, recompute oracle, interventions.

The planner's role table (results.json ``roles``) says which unit is the baseline, the method and the
oracle; a folder written before it was saved falls back to the naming of docs/FORMATS.md
("Interventions"). Functions return run dicts grouped by ``(max_tokens, sample)`` so that figures
compare runs on the same tokens.
"""

from __future__ import annotations

import re
from collections import defaultdict

from anomaly_probe.reports.rundata import RunData

ROLES = ("baseline", "method", "oracle")
PRECISION_PREFIX = "attn-"


def plain(run: dict) -> bool:
    return run.get("intervention", "none") in ("none", None, "")


def method_label(data: RunData) -> str | None:
    """Label of the method under test (results ``method.label``, else the comparisons' method)."""
    label = data.section("method").get("label")
    if isinstance(label, str):
        return label
    return next((c.get("method") for c in data.comparisons if isinstance(c.get("method"), str)), None)


def role_runs(data: RunData, role: str) -> list[dict]:
    """Runs of one role (``baseline``, ``method`` or ``oracle``), in the order they were saved.

    From the saved role table when the folder has one. Otherwise guessed from the run records:
    ``baseline``: full cache, no intervention, preferring a non-stepwise engine (the baseline is
    scored batched; stepwise and spot-window full-cache runs are the eval-bias check). ``method``:
    the method under test, no intervention. ``oracle``: method ``recompute``.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {ROLES}")
    table = data.roles
    if table:
        keys = {k for entry in table if entry.role == role for k in entry.units}
        return [r for r in data.runs if r.get("key") in keys]
    runs = [r for r in data.runs if plain(r)]
    if role == "baseline":
        full = [r for r in runs if r.get("method") == "full"]
        fast = [r for r in full if r.get("engine") not in ("stepwise", "spot")]
        return fast or full
    if role == "method":
        label = method_label(data)
        return [r for r in runs if label is not None and r.get("label") == label and r.get("method") != "full"]
    return [r for r in data.runs if r.get("method") == "recompute"]  # oracle


def by_length_sample(runs: list[dict]) -> dict[int, dict[int, dict]]:
    """``{max_tokens: {sample: run}}``; where a pair repeats (e.g. a run scored on a prefix only), the
    run that scored the most tokens wins."""
    out: dict[int, dict[int, dict]] = defaultdict(dict)
    for r in runs:
        L, s = r.get("max_tokens"), r.get("sample", 0)
        if isinstance(L, int):
            old = out[L].get(s)
            if old is None or _scored(r) > _scored(old):
                out[L][s] = r
    return dict(sorted(out.items()))


def _scored(run: dict) -> int:
    n = run.get("tokens_scored")
    return n if isinstance(n, int) else 0


def lengths(data: RunData) -> list[int]:
    """Every sample length in the run, ascending."""
    return sorted({r["max_tokens"] for r in data.runs if isinstance(r.get("max_tokens"), int)})


def engine_runs(data: RunData, engine: str) -> list[dict]:
    """Plain full-cache runs scored by ``engine`` (the eval-bias pair)."""
    return [r for r in data.runs if plain(r) and r.get("method") == "full" and r.get("engine") == engine]


def precision_runs(data: RunData) -> dict[str, list[dict]]:
    """Runs of the numerics experiment, keyed by intervention (``attn-fp32``, ``attn-fp16-emulated`` ...)."""
    out: dict[str, list[dict]] = defaultdict(list)
    for r in data.runs:
        name = r.get("intervention") or ""
        if isinstance(name, str) and name.startswith(PRECISION_PREFIX):
            out[name].append(r)
    return dict(sorted(out.items()))


def run_label(run: dict) -> str:
    """A run's display name: its label, plus its intervention and prefix where it has them."""
    label = str(run.get("label") or run.get("method") or run.get("key", "?"))
    if not plain(run):
        name = str(run.get("intervention"))
        if name.startswith("ballast-") and name[8:].isdigit():  # ballast-8589934592 -> ballast 8.0 GiB
            name = f"ballast {int(name[8:]) / 2**30:.1f} GiB"
        elif rule := re.fullmatch(r"ballast-(\d+)pct-max(\d+)MiB", name):  # sized when it ran
            name = f"ballast {rule.group(1)}% of free memory, max {int(rule.group(2)) / 2**10:.1f} GiB"
        label += f" [{name}]"
    if isinstance(run.get("prefix"), int):
        engine = f"{run['engine']}, " if isinstance(run.get("engine"), str) else ""
        label += f" ({engine}first {run['prefix']} tokens)"
    if isinstance(run.get("windows"), list) and run["windows"]:
        label += f" (batched, {len(run['windows'])} stepwise windows)"
    return label
