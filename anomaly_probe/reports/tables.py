"""The report's tables: verdicts, baseline vs method, runs, environment, config."""

from __future__ import annotations

import numpy as np

from anomaly_probe.reports import binning, roles
from anomaly_probe.reports.fmt import gib, mib, n_text, num, plain, share_ci
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Cell, Table

STATUS_ORDER = {"supported": 0, "inconclusive": 1, "refuted": 2, "error": 3}


def _rank_key(v: dict):
    from anomaly_probe.hypotheses_names import acts_on

    side = v.get("acts_on") or acts_on(str(v.get("hypothesis")))
    share = v.get("explained_share")
    has = isinstance(share, (int, float)) and np.isfinite(share) and v.get("status") != "error"
    return (1 if side == "method" else 0, 0 if has else 1, -share if has else 0, STATUS_ORDER.get(v.get("status"), 4))


def _length(v: dict) -> int:
    return v["max_tokens"] if isinstance(v.get("max_tokens"), int) else 0


def by_hypothesis(verdicts: list[dict]) -> dict[str, list[dict]]:
    """Verdicts grouped by hypothesis (one per sample length), longest length first within a group;
    groups ranked by the verdict at their longest length (share largest first; no share and errors last)."""
    groups: dict[str, list[dict]] = {}
    for v in verdicts:
        groups.setdefault(str(v.get("hypothesis", "?")), []).append(v)
    for group in groups.values():
        group.sort(key=_length, reverse=True)
    return dict(sorted(groups.items(), key=lambda kv: _rank_key(kv[1][0])))


def verdict_table(verdicts: list[dict]) -> Table:
    """One row per verdict; hypotheses ranked by the share at their longest length, lengths longest first."""
    rows = []
    for rank, (hypothesis, group) in enumerate(by_hypothesis(verdicts).items(), 1):
        for v in group:
            status = str(v.get("status", "?"))
            effect = num(v.get("effect_size"), ".3g")
            if effect != "n/a" and v.get("effect_label"):
                effect += f" ({v['effect_label']})"
            rows.append([Cell(str(rank), "num"), Cell(hypothesis), Cell(num(v.get("max_tokens"), "d"), "num"),
                         Cell(status.upper(), status),
                         Cell(share_ci(v.get("explained_share"), v.get("ci_low"), v.get("ci_high")), "num"),
                         Cell(effect), Cell(num(v.get("p_value"), ".3g"), "num"), Cell(n_text(v.get("n"))),
                         Cell(str(v.get("message", "")))])
    caption = ("Explained share = (gap before - gap after) / gap before for each hypothesis' intervention, with its "
               "95% block-bootstrap CI in brackets. Causes (interventions on the baseline) are ranked by the share at "
               "their longest sample length, then the method-side checks (handling, sinks: interventions on the "
               "compressed cache); one row per sample length.")
    return Table("Verdicts", ["rank", "hypothesis", "tokens per sample", "status", "explained share [95% CI]",
                              "effect", "p", "n", "message"], rows, caption=caption)


def key_value_table(title: str, values, caption: str = "") -> Table | None:
    """A dict from results.json (thresholds, settings) as a two-column table."""
    if not isinstance(values, dict) or not values:
        return None
    return Table(title, ["name", "value"], [[Cell(str(k)), Cell(plain(v))] for k, v in values.items()],
                 caption=caption)


def failures_table(failures) -> Table | None:
    """Experiments the run could not finish (results.json ``failures``)."""
    if not isinstance(failures, list) or not failures:
        return None
    return Table("Experiments that failed", ["failure"], [[Cell(plain(f, 500), "error")] for f in failures])


def comparisons_table(data: RunData) -> Table | None:
    if not data.comparisons:
        return None
    base = roles.by_length_sample(roles.role_runs(data, "baseline"))
    meth = roles.by_length_sample(roles.role_runs(data, "method"))
    rows = []
    for c in data.comparisons:
        L = c.get("max_tokens")
        gaps = []
        for s, run in meth.get(L, {}).items():
            a, b = data.tokens(base.get(L, {}).get(s, {})), data.tokens(run)
            if a is not None and b is not None:
                n = min(a["nll"].size, b["nll"].size)
                gaps.append(a["nll"][:n] - b["nll"][:n])
        lo, hi, _ = binning.block_bootstrap_ci(gaps, block=data.block_tokens) if gaps else (None, None, 0)
        gap = num(c.get("nll_gap_mean"), "+.4f")
        if num(lo) != "n/a":
            gap += f" [{lo:+.4f}, {hi:+.4f}]"
        rows.append([Cell(str(L), "num"), Cell(num(c.get("num_samples"), "d"), "num"),
                     Cell(num(c.get("tokens_scored"), "d"), "num"), Cell(str(c.get("baseline", ""))),
                     Cell(str(c.get("method", ""))), Cell(num(c.get("baseline_ppl"), ".3f"), "num"),
                     Cell(num(c.get("method_ppl"), ".3f"), "num"), Cell(gap, "num"),
                     Cell(_pct(c.get("baseline_acc")), "num"), Cell(_pct(c.get("method_acc")), "num"),
                     Cell(num(_times(c.get("acc_diff"), 100), "+.2f", "pp"), "num")])
    return Table("Baseline vs method, same tokens", [
        "tokens per sample", "samples", "tokens scored", "baseline", "method", "baseline PPL", "method PPL",
        "NLL gap, nats/token [95% CI]", "baseline Acc", "method Acc", "Acc diff"], rows,
        caption="NLL gap = baseline minus method (> 0: the method looks better). CI: block bootstrap over "
                f"{data.block_tokens}-token blocks. Acc = top-1 next-token accuracy.")


def _times(x, k):
    return x * k if isinstance(x, (int, float)) else None


def _pct(x) -> str:
    return num(_times(x, 100), ".2f", "%")


def runs_table(data: RunData) -> Table | None:
    if not data.runs:
        return None
    rows = []
    for r in data.runs:
        rows.append([Cell(num(r.get("max_tokens"), "d"), "num"), Cell(num(r.get("sample"), "d"), "num"),
                     Cell(str(r.get("label", ""))), Cell(str(r.get("engine", ""))),
                     Cell(str(r.get("intervention", ""))), Cell(str(r.get("dtype", ""))),
                     Cell(num(r.get("tokens_scored"), "d"), "num"), Cell(num(r.get("ppl"), ".3f"), "num"),
                     Cell(num(r.get("nll_mean"), ".4f"), "num"), Cell(_pct(r.get("acc")), "num"),
                     Cell(num(r.get("tok_per_s"), ".1f"), "num"), Cell(num(r.get("seconds"), ".2f", "s"), "num"),
                     Cell(mib(r.get("peak_rss_bytes")), "num")])
    return Table("Runs", ["tokens", "sample", "method", "engine", "intervention", "dtype", "scored", "PPL",
                          "NLL (nats/token)", "Acc", "tok/s", "time", "peak RSS"], rows)


ENV_UNITS = {"total_memory_bytes": gib}


def environment_rows(data: RunData) -> list[tuple[str, str]]:
    """``(field, value)`` of the environment and the model, argv excluded (shown as a command)."""
    rows = [(k, ENV_UNITS[k](v) if k in ENV_UNITS else plain(v))
            for k, v in data.section("environment").items() if k != "argv"]
    rows += [(f"model.{k}", plain(v)) for k, v in data.section("model").items()]
    return rows


def environment_table(data: RunData) -> Table | None:
    rows = environment_rows(data)
    if not rows:
        return None
    return Table("Environment and hardware", ["field", "value"], [[Cell(k), Cell(v)] for k, v in rows])


def config_table(data: RunData) -> Table | None:
    config = data.section("config")
    if not config:
        return None
    return Table("Resolved configuration", ["option", "value"], [[Cell(k), Cell(plain(v))] for k, v in config.items()])
