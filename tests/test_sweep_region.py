"""The sweep trend report reads each cell's headline region (results.json ``analysis_regions``): a cell
whose gap is negative over all tokens but positive beyond noise in its region shows the region's gap in
the table, the figures, the regressions and the headline; a cell without a region falls back to all tokens.

The sweep folder is synthetic (known per-token NLLs) but written through the project's own writers:
``rundir`` records and npz files, ``AnalysisRegion.to_dict()`` and the sweep index.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from anomaly_probe.hypotheses.region import AnalysisRegion
from anomaly_probe.rundir import Results, RoleEntry, UnitRecord, compare, save_tokens, write_results
from anomaly_probe.stats.thresholds import Thresholds
from anomaly_probe.sweep.index import CellEntry, SweepIndex

CTX = 1000  # the synthetic model's trained context
BREAK = 2600  # entry where the method turns better in the longest cell
TH = Thresholds()


def _nll(L: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(baseline, method) NLL per entry (L - 1,): the method is 0.4 nats worse, except from entry
    :data:`BREAK` on in samples that reach it, where it is 1.0 nats better."""
    base = 3.0 + rng.normal(0.0, 0.3, L - 1)
    shift = np.full(L - 1, 0.4)
    shift[BREAK:] = -1.0
    return base, base + shift + rng.normal(0.0, 0.1, L - 1)


def _region(L: int, start: int, basis: str) -> dict:
    return AnalysisRegion(start, basis, L, CTX, changepoint=start if basis == "changepoint" else None,
                          changepoint_p=0.001 if basis == "changepoint" else None).to_dict()


def _write_cell(sweep_dir, L: int, region: dict | None, rng) -> CellEntry:
    name = f"m-L{L}"
    run_dir = sweep_dir / "cells" / name
    run_dir.mkdir(parents=True)
    base, meth = _nll(L, rng)
    runs, arrays = [], {}
    for role, label, nll in (("baseline", "full", base), ("method", "streaming_llm", meth)):
        correct = rng.random(L - 1) < 0.3
        key = f"L{L}-s0-{role}"
        arrays[label] = {"nll": nll, "correct": correct}
        runs.append(UnitRecord(key=key, method=label, label=label, engine="batched", max_tokens=L, sample=0,
                               tokens_scored=L - 1, nll_mean=float(nll.mean()), tokens_file=save_tokens(
                                   run_dir, key, {"nll": nll, "correct": correct, "query_pos": np.arange(1, L)})))
    write_results(run_dir, Results(
        status="complete", model={"spec": "m", "trained_context": CTX, "num_parameters": 10 ** 6},
        method={"method": "streaming_llm", "label": "streaming_llm"}, runs=runs,
        comparisons=[compare("full", "streaming_llm", L, {0: arrays})], thresholds=TH.to_dict(),
        analysis_regions=None if region is None else [region],
        roles=[RoleEntry("none", L, "baseline", [runs[0].key]), RoleEntry("none", L, "method", [runs[1].key])]))
    return CellEntry(key=name, name=name, folder=f"cells/{name}", settings={"model": "m", "max_tokens": L},
                     status="complete")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Four cells: 500 tokens without a recorded region (fallback), 1000 (the run chose all tokens), 2000
    (past the trained context) and 3000 (from the changepoint at entry 2600: all tokens negative, region
    positive)."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("sweep-region")
    cells = [_write_cell(out, 500, None, rng), _write_cell(out, 1000, _region(1000, 0, "all"), rng),
             _write_cell(out, 2000, _region(2000, CTX, "trained-context"), rng),
             _write_cell(out, 3000, _region(3000, BREAK, "changepoint"), rng)]
    SweepIndex(grid={"rows": []}, cells=cells, status="complete").write(out)
    return out


@pytest.fixture(scope="module")
def stats(sweep):
    from anomaly_probe.reports.sweep.cells import cell_stats
    from anomaly_probe.reports.sweep.data import load_sweep

    return {s.max_tokens: s for c in load_sweep(sweep).with_runs for s in cell_stats(c)}


def test_cell_stats_use_the_recorded_region_and_fall_back_without_one(stats):
    from anomaly_probe.reports import intervals

    long = stats[3000]
    assert long.gap[0] < 0 and long.gap[2] < 0  # all tokens: baseline better beyond noise
    assert long.region.basis == "changepoint" and long.region.start == BREAK
    assert long.gap_headline[1] > 0 and long.gap_headline[0] == pytest.approx(1.0, abs=0.05)
    # the same number the cell's own headline and report compute (same tokens, same bootstrap)
    run = long.cell.run
    own = intervals.gap_with_ci(intervals.paired_gaps(run, 3000), intervals.run_thresholds(run), BREAK)
    assert (own["mean"], own["ci_low"], own["ci_high"]) == long.gap_headline
    assert stats[2000].region.basis == "trained-context" and stats[2000].gap_headline[2] < 0
    assert stats[2000].gap_headline != stats[2000].gap
    assert stats[1000].region.basis == "all" and stats[1000].gap_headline == stats[1000].gap
    assert not stats[500].region.recorded and stats[500].gap_headline == stats[500].gap


def test_seed_table_has_the_region_columns(stats):
    from anomaly_probe.reports.sweep.build import seed_table

    table = seed_table(list(stats.values()), "ci")
    rows = {int(r[1].text): {c: cell.text for c, cell in zip(table.columns, r)} for r in table.rows}
    long = rows[3000]
    assert long["all tokens: PPL, which is better"] == "baseline better beyond noise"
    assert long["headline region (the cell's run)"] == "positions 2601-2999 (from the gap's changepoint, p=0.001)"
    assert long["headline region: which is better"] == "method better beyond noise"
    assert long["headline region: NLL gap, nats/token [CI]"].startswith("+")
    assert rows[2000]["headline region (the cell's run)"] == "positions 1001-1999 (past the trained context)"
    assert rows[1000]["headline region (the cell's run)"] == "all scored tokens (the run's choice)"
    assert "fallback" in rows[500]["headline region (the cell's run)"]
    assert rows[500]["headline region: NLL gap, nats/token [CI]"] == rows[500]["all tokens: NLL gap, nats/token [CI]"]


def test_figures_plot_the_region_gap_with_ci_bars(stats):
    from anomaly_probe.reports.sweep.figures import gap_figures

    figures = {f.id: f.spec for f in gap_figures(list(stats.values()), "ci")}
    for fid, xs in (("gap-vs-tokens", [500, 1000, 2000, 3000]), ("gap-vs-context", [0.5, 1.0, 2.0, 3.0])):
        panels = {p["title"]: p["series"][0] for p in figures[fid]["panels"]}
        overall = panels["gap over all scored tokens"]
        region = panels["gap in each cell's headline region (its run's analysis region)"]
        assert region["x"] == xs and region["errorbars"] is True and "errorbars" not in overall
        assert region["y"] == [stats[L].gap_headline[0] for L in (500, 1000, 2000, 3000)]
        assert region["ci_low"][-1] > 0 > overall["y"][-1]


def test_headline_and_regression_use_the_region(sweep):
    from anomaly_probe.reports.sweep.build import build_sweep_report
    from anomaly_probe.reports.sweep.data import load_sweep

    report = build_sweep_report(load_sweep(sweep))
    assert report.headline.startswith(
        "m: the gap crosses 0 between 2000 tokens (2.00x its trained context 1000; method worse beyond noise) and "
        "3000 tokens (3.00x its trained context 1000): there the method is better beyond noise on positions "
        "2601-2999"), report.headline
    assert "i.e. from 2.60x the trained context" in report.headline
    assert "over all scored tokens that cell's gap is -" in report.headline
    assert "Regression of the gap in each cell's headline region" in report.headline
    section = next(s for s in report.sections if s.id == "regression")
    table = section.blocks[0]
    models = [r[0].text for r in table.rows]
    assert models[0].startswith("the gap in each cell's headline region ~ length / trained context")
    assert any(m.startswith("the gap over all scored tokens ~") for m in models)
    slopes = {r[0].text: float(r[2].text) for r in table.rows if r[1].text == "length / trained context"}
    region_slope = slopes["the gap in each cell's headline region ~ length / trained context + model size"]
    overall_slope = slopes["the gap over all scored tokens ~ length / trained context + model size"]
    assert region_slope > 0 and region_slope != overall_slope
    assert any("The headline uses the gap in each cell's headline region" in getattr(b, "text", "")
               for b in section.blocks)


def test_report_command_renders_the_region(sweep, tmp_path):
    from anomaly_probe.cli import main

    out = tmp_path / "r.html"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    html = out.read_text()
    for text in ("headline region: which is better", "positions 2601-2999 (from the gap&#39;s changepoint, p=0.001)",
                 "the gap crosses 0 between 2000 tokens", "fallback: no analysis region recorded"):
        assert text in html, text


def test_crossing_sentence_without_a_crossing_or_from_the_shortest_length():
    from anomaly_probe.reports.sweep.cells import CellStats
    from anomaly_probe.reports.sweep.crossing import crossing_sentence
    from anomaly_probe.reports.sweep.region import NOT_RECORDED, HeadlineRegion

    def cell(L, gap):
        return CellStats(cell=SimpleNamespace(line="m"), max_tokens=L, num_samples=1, tokens=L - 1,
                         trained_context=1000, parameters=None, method="x", gap=gap, gap_past=None,
                         base_ppl=(1, 1, 1), meth_ppl=(1, 1, 1), base_acc=None, meth_acc=None, acc_diff=None,
                         region=HeadlineRegion(0, NOT_RECORDED, "all scored tokens"), gap_region=gap)

    never = crossing_sentence("m", [cell(500, (-0.2, -0.3, -0.1)), cell(2000, (0.1, -0.1, 0.3))])
    assert never == ("m: the gap does not cross 0 in this grid: in each cell's headline region the method is worse "
                     "beyond noise at 500 tokens (0.50x its trained context) and within noise at 2000 tokens (2.00x "
                     "its trained context).")
    early = crossing_sentence("m", [cell(2000, (0.5, 0.2, 0.8)), cell(500, (0.3, 0.1, 0.5))])
    assert early.startswith("m: the method is better beyond noise already at the shortest length, 500 tokens (0.50x")
    assert "over all scored tokens (no analysis region recorded) (+0.300 nats/token, CI +0.100..+0.500)" in early
    assert crossing_sentence("m", [cell(500, (0.3, None, None))]) is None


def test_line_series_with_errorbars_draws_bars_not_a_band():
    from matplotlib.collections import LineCollection, PolyCollection
    from matplotlib.figure import Figure

    from anomaly_probe.reports.plot import _line, render_png

    series = {"name": "a", "x": [1, 2, 3], "y": [0.1, 0.2, None], "ci_low": [0.0, None, None],
              "ci_high": [0.2, None, None]}
    kinds = {}
    for bars in (False, True):
        ax = Figure().add_subplot()
        _line(None, ax, {"series": [{**series, "errorbars": bars}]}, {})
        kinds[bars] = ax.collections
    assert any(isinstance(c, PolyCollection) for c in kinds[False])  # the band
    assert not any(isinstance(c, LineCollection) for c in kinds[False])
    assert any(isinstance(c, LineCollection) for c in kinds[True])  # the bars
    assert not any(isinstance(c, PolyCollection) for c in kinds[True])
    assert render_png({"kind": "line", "series": [{**series, "errorbars": True}]}, {})[:4] == b"\x89PNG"


def test_a_real_tiny_neox_cell_reads_the_region_its_run_recorded(tmp_path, one_torch_thread):
    """A run with a hypothesis records its region; the sweep's region gap is the number in that cell's headline."""
    import json

    from anomaly_probe.cli import main
    from anomaly_probe.reports.sweep.cells import cell_stats
    from anomaly_probe.reports.sweep.data import load_sweep

    out = tmp_path / "sweep"
    assert main(["sweep", "--model", "tiny-neox:ctx=64", "--max-tokens", "288", "--recent-size", "28",
                 "--hypothesis", "position", "--out", str(out)]) == 0
    (cell,) = load_sweep(out).with_runs
    (s,) = cell_stats(cell)
    recorded = json.loads((out / cell.entry.folder / "results.json").read_text())
    (region,) = recorded["analysis_regions"]
    assert s.region.recorded and s.region.start == region["start_entry"] > 0 and s.region.basis == region["basis"]
    mean, low, high = s.gap_headline
    assert f"{mean:.3f} nats/token, 95% CI {low:.3f}..{high:.3f}" in recorded["headline"], recorded["headline"]
    assert s.gap_headline != s.gap
