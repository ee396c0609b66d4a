"""The report's tables: verdicts, baseline vs method, runs, environment, config."""

from __future__ import annotations

import numpy as np

from anomaly_probe.hypotheses.catalog import acts_on
from anomaly_probe.reports import intervals
from anomaly_probe.reports.fmt import gib, mib, n_text, num, plain, share_ci
from anomaly_probe.reports.rundata import RunData
from anomaly_probe.reports.tree import Cell, Table
from anomaly_probe.stats.thresholds import Thresholds

STATUS_ORDER = {"supported": 0, "inconclusive": 1, "refuted": 2, "error": 3}


def _rank_key(v: dict):
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


def verdict_table(verdicts: list[dict], th: Thresholds | None = None) -> Table:
    """The verdict table of every command (HTML report, and on the console through ``summary.rich_table``).

    One row per verdict; hypotheses ranked by the share at their longest length, lengths longest first.
    ``th``: the thresholds the verdicts were judged with (they name the CI); default :class:`Thresholds`.
    """
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
    th = th or Thresholds()
    caption = ("Explained share = (gap before - gap after) / gap before for each hypothesis' intervention, with its "
               "CI in brackets. Causes (interventions on the baseline) are ranked by the share at their longest "
               "sample length, then the method-side checks (handling, sinks: interventions on the compressed "
               "cache); one row per sample length.")
    return Table("Verdicts", ["rank", "hypothesis", "tokens per sample", "status",
                              f"explained share [{th.ci_level:.0%} CI]", "effect", "p", "n", "message"], rows,
                 caption=caption, ci=f"explained share: {intervals.ci_text(th)}, gap and effect resampled together")


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
    """Baseline vs method per length; the gap's CI is the headline's (same tokens, same bootstrap).

    Where the run analysed a region (``analysis_regions``), the gap on that region is shown too: it is
    the gap the headline and the verdicts use.
    """
    if not data.comparisons:
        return None
    th = intervals.run_thresholds(data)
    level = f"{th.ci_level:.0%} CI"
    regions = {c.get("max_tokens"): intervals.region_start(data, c.get("max_tokens")) for c in data.comparisons}
    any_region = any(start for start, _ in regions.values())
    rows = []
    for c in data.comparisons:
        L = c.get("max_tokens")
        gaps = intervals.paired_gaps(data, L) if isinstance(L, int) else []
        row = [Cell(str(L), "num"), Cell(num(c.get("num_samples"), "d"), "num"),
               Cell(num(c.get("tokens_scored"), "d"), "num"), Cell(str(c.get("baseline", ""))),
               Cell(str(c.get("method", ""))), Cell(num(c.get("baseline_ppl"), ".3f"), "num"),
               Cell(num(c.get("method_ppl"), ".3f"), "num"), Cell(_gap(intervals.gap_with_ci(gaps, th)), "num")]
        if any_region:
            start, text = regions[L]
            row.append(Cell(f"{_gap(intervals.gap_with_ci(gaps, th, start))} on {text}" if start else "all tokens"))
        row += [Cell(_pct(c.get("baseline_acc")), "num"), Cell(_pct(c.get("method_acc")), "num"),
                Cell(num(_times(c.get("acc_diff"), 100), "+.2f", "pp"), "num")]
        rows.append(row)
    columns = ["tokens per sample", "samples", "tokens scored", "baseline", "method", "baseline PPL", "method PPL",
               f"NLL gap, nats/token [{level}]"]
    if any_region:
        columns.append(f"NLL gap in the analysis region [{level}]")
    columns += ["baseline Acc", "method Acc", "Acc diff"]
    caption = ("NLL gap = baseline minus method on the same tokens (> 0: the method looks better), over every "
               "scored token up to the first non-finite NLL of either run.")
    if any_region:
        caption += (" The analysis region is where the verdicts and the headline compute their statistics; its "
                    "gap and CI are the headline's.")
    return Table("Baseline vs method, same tokens", columns, rows, caption=caption + " Acc = top-1 next-token accuracy.",
                 ci=f"NLL gap: {intervals.ci_text(th)}")


def _gap(stats: dict | None) -> str:
    """``+0.1234 [+0.1000, +0.1500]`` (nats/token) from :func:`~anomaly_probe.hypotheses.share.gap_stats`."""
    if stats is None:
        return "n/a"
    text = num(stats["mean"], "+.4f")
    if num(stats["ci_low"]) != "n/a" and num(stats["ci_high"]) != "n/a" and stats["blocks"] >= 2:
        text += f" [{stats['ci_low']:+.4f}, {stats['ci_high']:+.4f}]"
    return text


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


def position_schemes_table(data: RunData) -> Table | None:
    """How each decoder layer encodes positions (results.json ``position_schemes``), with the trained
    context of the full-attention layers and the sliding window beside it."""
    schemes = data.listing("position_schemes")
    if not schemes:
        return None
    rows = []
    for s in schemes:
        layers = s.get("layers") if isinstance(s.get("layers"), list) else []
        if not all(type(n) is int for n in layers):  # a hand-edited or damaged file: say so, never crash
            layers = []
        span = (f"{layers[0]}" if len(layers) == 1 else f"{layers[0]}-{layers[-1]}" if layers == list(
            range(layers[0], layers[-1] + 1)) else ", ".join(map(str, layers))) if layers else "?"
        pos = str(s.get("position", "?"))
        if pos == "rope":
            base = s.get("base")
            pos = (f"RoPE ({s.get('rope_type')}{f', base {base:g}' if isinstance(base, (int, float)) else ''}), "
                   f"{s.get('rotary_dims')}/{s.get('head_dim')} rotary dims")
        elif pos == "alibi":
            pos = "ALiBi"
        window = s.get("window")
        attention = f"sliding, window {window} tokens" if window else "full"
        rows.append([Cell(span), Cell(plain(s.get("layer_type") or "")), Cell(pos), Cell(attention)])
    model = data.section("model")
    caption = (f"Trained context (full-attention layers): {plain(model.get('trained_context'))} tokens; "
               f"sliding window: {plain(model.get('sliding_window')) if model.get('sliding_window') else 'none'}.")
    return Table("Position scheme per layer", ["layers", "layer type", "positions", "attention"], rows,
                 caption=caption)
