"""Every figure builder on synthetic traces, and the generic renderer on every kind of spec."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from synthetic_run import write_synthetic_run

from anomaly_probe.reports import binning
from anomaly_probe.reports.build import build_report
from anomaly_probe.reports.figures import BUILDERS
from anomaly_probe.reports.figures.position import changepoints
from anomaly_probe.reports.plot import render_png
from anomaly_probe.reports.render import render_figures
from anomaly_probe.reports.rundata import load_run
from anomaly_probe.reports.tree import Figure, Report, Section

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return load_run(write_synthetic_run(tmp_path_factory.mktemp("run") / "run", lengths=(200, 400), samples=2))


def _size(png: bytes) -> tuple[int, int]:
    return struct.unpack(">II", png[16:24])


@pytest.mark.parametrize("fn", [fn for fns in BUILDERS.values() for fn in fns], ids=lambda fn: fn.__name__)
def test_each_builder_makes_a_drawable_figure(data, fn):
    verdicts = [v for v in data.verdicts if v["hypothesis"] == "position"]
    blocks = fn(data, verdicts)
    assert blocks, f"{fn.__name__} found no data in the synthetic run"
    figures = [b for b in blocks if isinstance(b, Figure)]
    for fig in figures:
        assert fig.spec["title"] and fig.caption
        png = render_png(fig.spec, {})
        assert png.startswith(PNG)
        width, height = _size(png)
        assert width in (800, 1100) and 300 <= height <= 1400  # readable at 100% zoom


def test_all_figures_of_a_report_render_and_save(data, tmp_path):
    report = build_report(data)
    rendered = render_figures(report, tmp_path / "figures")
    assert rendered and all(r.png and not r.error for r in rendered.values())
    assert sorted(p.stem for p in (tmp_path / "figures").glob("*.png")) == sorted(rendered)


def test_a_figure_that_fails_to_draw_is_an_error_not_a_crash(tmp_path):
    good = Figure("good", {"kind": "line", "title": "t", "x": [0, 1], "series": [{"name": "a", "y": [1, 2]}]})
    bad = Figure("bad", {"kind": "line", "title": "t", "x": [0, 1, 2], "series": [{"name": "a", "y": [1]}]})
    rendered = render_figures(Report("r", sections=[Section("s", [good, bad])]), tmp_path)
    assert rendered["good"].png and not rendered["good"].error
    assert rendered["bad"].png is None and "ValueError" in rendered["bad"].error


def test_generic_kinds_render():
    specs = [
        {"kind": "bar", "title": "bars", "xlabel": "mode", "ylabel": "PPL", "categories": ["a", "b"],
         "series": [{"name": "s", "y": [1.0, None], "ci_low": [0.5, None], "ci_high": [1.5, None]}], "log_y": True},
        {"kind": "scatter", "title": "pts", "x": [1, 2, 3], "series": [{"name": "s", "y": [1, 2, 4]}], "diagonal": True,
         "hlines": [{"y": 2, "label": "h"}], "vlines": [{"x": 2, "label": "v"}]},
        {"kind": "panels", "title": "heat", "panels": [
            {"kind": "heatmap", "title": "h", "x": [0, 1, 2], "y": [0, 1], "z": [[1, 2, None], [3, 4, 5]],
             "zlabel": "nats"}]},
    ]
    for spec in specs:
        assert render_png(spec, {"s": "#123456"}).startswith(PNG)


def test_changepoint_forms():
    assert changepoints(None) == [] and changepoints([{"evidence": {}}]) == []
    assert changepoints([{"evidence": {"changepoint": 3000}}])[0]["x"] == 3000
    cp = changepoints([{"evidence": {"changepoint": {"position": 2500, "ci_low": 2400, "ci_high": 2600}}}])
    assert cp[0]["x"] == 2500 and "2400-2600" in cp[0]["label"]
    assert [v["x"] for v in changepoints([{"evidence": {"changepoint": {"1000": 900, "5000": 2500}}}])] == [900, 2500]
    per_length = changepoints([{"max_tokens": 5000, "evidence": {"changepoint_position": 2500}},
                               {"max_tokens": 1000, "evidence": {"changepoint_position": None}}])
    assert per_length == [{"x": 2500.0, "label": "changepoint (2500 tokens, 5000-token samples)"}]


def test_binned_mean_and_extremes():
    x = np.arange(10)
    y = np.arange(10, dtype=float)
    y[3] = np.nan
    edges = binning.edges_for(0, 9, n_bins=2)
    mean = binning.binned(x, y, edges)
    assert mean["n"].tolist() == [4, 5] and mean["y"][0] == pytest.approx((0 + 1 + 2 + 4) / 4)
    assert binning.binned(x, y, edges, "max")["y"].tolist() == [4, 9]
    assert binning.binned(x, y, edges, "min")["y"].tolist() == [0, 5]


def test_report_intervals_are_the_judges_bootstrap():
    """The report has one block bootstrap: ``stats.bootstrap`` with the run's thresholds."""
    from anomaly_probe.reports import intervals
    from anomaly_probe.stats import make_blocks, mean_ci
    from anomaly_probe.stats.thresholds import Thresholds

    rng = np.random.default_rng(1)
    samples = [rng.normal(3.0, 1.0, 1000) for _ in range(3)]
    th = Thresholds(block_tokens=64, n_boot=500)
    mean, lo, hi = intervals.mean_with_ci(samples, th)
    assert (mean, lo, hi) == mean_ci(make_blocks([s[:, None] for s in samples], 64), 0, 500, th.ci_level)
    assert lo < np.concatenate(samples).mean() < hi
    cut = samples[0].copy()
    cut[100] = np.nan  # a sample counts up to its first non-finite entry
    assert intervals.mean_with_ci([cut], th)[0] == pytest.approx(cut[:100].mean())
    assert intervals.mean_with_ci([np.ones(10)], th)[1:] == (None, None)  # one block: no interval
    assert intervals.mean_with_ci([np.array([np.inf])], th) == (None, None, None)
    assert not hasattr(binning, "block_bootstrap_ci")
    text = intervals.ci_text(th)
    assert "95% block-bootstrap CI" in text and "64-token blocks" in text and "500 resamples" in text


def test_long_titles_wrap_to_the_axes_width():
    from anomaly_probe.reports.plot import _wrap, render_png

    long = "PPL with and without sinks (12000 tokens; positions 10753-11999 (from the gap's changepoint, p=0.001))"
    assert "\n" in _wrap(long, 8.0) and _wrap("PPL by mode", 8.0) == "PPL by mode"
    png = render_png({"kind": "line", "title": long, "x": [0, 1], "series": [{"name": "a", "y": [1, 2]}]}, {})
    assert png.startswith(b"\x89PNG")
