"""The eval-bias spot windows: placement, the spot engine against batched and stepwise, planning."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_probe.engines import ENGINE_CHOICES, pick_engine, score_batched, score_spot, score_stepwise
from anomaly_probe.engines.spot import segments
from anomaly_probe.errors import UserError
from anomaly_probe.hypotheses import ALL, ExperimentSettings, PlanContext
from anomaly_probe.hypotheses.spots import spot_windows
from anomaly_probe.methods import FullCache, StreamingLLM


@pytest.mark.parametrize("T, C, prefix, expected", [
    # the demo: past 1024, past 4096, past the trained context, the last 32 entries
    (12000, 8192, 1024, [(1024, 1056), (4096, 4128), (8192, 8224), (11967, 11999)]),
    # a 2k-context model: the trained context comes before 4096
    (5000, 2048, 1024, [(1024, 1056), (2048, 2080), (4096, 4128), (4967, 4999)]),
    # 4096 cut at the end of the sample and merged with the last window
    (4100, 4096, 1024, [(1024, 1056), (4067, 4099)]),
    # the trained context (128) lies inside the prefix: dropped; 1024 overlaps the last window: merged
    (1040, 128, 1024, [(1007, 1039)]),
    (700, 128, 200, [(667, 699)]),  # 1024 and 4096 lie past the sample
    (300, 128, 1024, []),  # the prefix covers the whole sample
    (12000, 8192, None, []),  # --stepwise-tokens 0: the whole sample is stepwise already
    (8300, 8192, 1024, [(1024, 1056), (4096, 4128), (8192, 8224), (8267, 8299)]),
    (8220, 8192, 1024, [(1024, 1056), (4096, 4128), (8187, 8219)]),  # C and the end overlap: merged
])
def test_windows_are_placed_from_length_and_trained_context(T, C, prefix, expected):
    assert spot_windows(T, C, 32, prefix) == expected


def test_window_size_zero_disables_and_windows_stay_inside_the_sample():
    assert spot_windows(12000, 8192, 0, 1024) == []
    for T in (1025, 1030, 4097, 9000, 20000):
        for C in (128, 2048, 8192, 32768):
            w = spot_windows(T, C, 64, 1024)
            assert all(0 <= a < b <= T - 1 for a, b in w)
            assert all(b1 < a2 for (_, b1), (a2, _) in zip(w, w[1:]))  # sorted, disjoint, not touching
            assert w[-1][1] == T - 1  # the last window ends the sample


def test_segments_cover_the_entries_with_single_queries_inside_windows():
    segs = segments(20, [(3, 6), (10, 12)], 8)
    assert segs == [(0, 3), (3, 4), (4, 5), (5, 6), (6, 8), (8, 10), (10, 11), (11, 12), (12, 16), (16, 20)]
    assert segments(10, [], 4) == [(0, 4), (4, 8), (8, 10)]  # the batched engine's grid
    assert segments(10, [(8, 40)], 100) == [(0, 8), (8, 9), (9, 10)]  # clipped to the sample


def test_spot_engine_equals_batched_outside_and_stepwise_inside_its_windows(tiny, tiny_ids):
    model, _ = tiny
    ids = tiny_ids[:400]
    windows = [(128, 160), (367, 399)]
    spot = score_spot(model, ids, FullCache(), chunk_size=97, windows=windows)
    batched = score_batched(model, ids, FullCache(), chunk_size=97)
    step = score_stepwise(model, ids, FullCache())
    inside = np.zeros(399, dtype=bool)
    for a, b in windows:
        inside[a:b] = True
    assert spot.tokens_scored == 399 and spot.engine == "spot"
    assert np.array_equal(spot.nll[:128], batched.nll[:128])  # before the first window: the same forwards
    assert np.max(np.abs(spot.nll[~inside] - batched.nll[~inside])) <= 1e-5
    assert np.max(np.abs(spot.nll[inside] - step.nll[inside])) <= 1e-4
    assert np.array_equal(spot.query_pos, batched.query_pos) and np.array_equal(spot.n_keys, batched.n_keys)
    # the windows really ran one query per forward: their entries differ in rounding from the batched run
    assert np.array_equal(score_spot(model, ids, FullCache(), chunk_size=97).nll, batched.nll)


def test_spot_engine_is_internal():
    assert "spot" not in ENGINE_CHOICES
    with pytest.raises(UserError, match="not a choice"):
        pick_engine("spot", FullCache())
    assert pick_engine("spot", FullCache(), internal=True) == "spot"
    with pytest.raises(UserError, match="full cache only"):
        pick_engine("spot", StreamingLLM(4, 28), internal=True)


def _ctx(L, C, settings=ExperimentSettings()):
    return PlanContext(method=StreamingLLM(4, 252), trained_context=C, dtype="float32", max_tokens=L,
                       engine="auto", settings=settings)


def test_eval_bias_plans_a_spot_run_only_past_the_prefix():
    roles = ALL["eval-bias"].roles(_ctx(12000, 8192))
    assert roles["spot"].engine == "spot"
    assert roles["spot"].windows == ((1024, 1040), (4096, 4112), (8192, 8208), (11983, 11999))
    assert "spot" not in ALL["eval-bias"].roles(_ctx(1000, 8192))  # the prefix covers it
    assert "spot" not in ALL["eval-bias"].roles(_ctx(12000, 8192, ExperimentSettings(spot_tokens=0)))
    wide = ALL["eval-bias"].roles(_ctx(12000, 8192, ExperimentSettings(spot_tokens=64)))
    assert wide["spot"].windows[-1] == (11935, 11999)


def test_eval_bias_figure_shows_each_window_at_its_positions(tmp_path):
    """A synthetic run plus a spot run whose last window diverges: a marker per window, a table row per
    window with the verdict's region, and the drawing renders."""
    import json

    from synthetic_run import write_synthetic_run

    from anomaly_probe.reports.figures.evalbias import stepwise_vs_batched
    from anomaly_probe.reports.plot import render_png
    from anomaly_probe.reports.rundata import load_run
    from anomaly_probe.reports.tree import Figure, Table

    run_dir = write_synthetic_run(tmp_path / "run", lengths=(400,), samples=1, traces=False)
    results = json.loads((run_dir / "results.json").read_text())
    batched = next(r for r in results["runs"] if r["engine"] == "batched" and r["method"] == "full")
    with np.load(run_dir / batched["tokens_file"]) as z:
        arrays = {k: z[k] for k in z.files}
    windows = [[128, 160], [367, 399]]
    nll = arrays["nll"] + 1e-6
    nll[367:399] += 0.05  # the last window diverges
    spot = batched | {"key": "L400-s0-full-spot-none-w128x32.367x32", "engine": "spot", "windows": windows,
                      "tokens_file": "tokens/L400-s0-full-spot-none-w128x32.367x32.npz"}
    np.savez_compressed(run_dir / spot["tokens_file"], **(arrays | {"nll": nll}))
    results["runs"].append(spot)
    verdict = {"hypothesis": "eval-bias", "status": "inconclusive", "max_tokens": 400,
               "evidence": {"tolerance_nats": 1e-4, "spot_window_entries": windows,
                            "spot_window_region": ["outside", "inside"]}}
    (run_dir / "results.json").write_text(json.dumps(results))
    data = load_run(run_dir)
    blocks = stepwise_vs_batched(data, [verdict])
    fig = next(b for b in blocks if isinstance(b, Figure))
    right = fig.spec["panels"][-1]
    markers = next(s for s in right["series"] if "spot windows" in s["name"])
    assert markers["x"] == [143.5, 382.5]  # window centres (entries)
    assert markers["y"][0] < 1e-5 < 0.04 < markers["y"][1]
    assert right["hlines"][0]["y"] == 1e-4
    table = next(b for b in blocks if isinstance(b, Table) and b.title.startswith("Spot windows"))
    assert [[c.text for c in row[:3]] for row in table.rows] == [["400", "129-160", "outside"],
                                                                 ["400", "368-399", "inside"]]
    assert render_png(fig.spec, {}).startswith(b"\x89PNG")
    # the spot run is never taken for the baseline
    from anomaly_probe.reports import roles

    assert all(r.get("engine") != "spot" for r in roles.role_runs(data, "baseline"))
