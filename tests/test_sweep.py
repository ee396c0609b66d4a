"""``anomaly-probe sweep``: a tiny-neox grid on the local executor (interrupted, then resumed), the same
grid on a local Ray cluster with the same numbers, a failed cell that does not stop the others, and the
trend report."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from anomaly_probe.cli import main
from tests.run_numbers import run_numbers

# 4 cells: two tiny-neox sizes with different trained contexts x two lengths (each past the context).
GRID = ["--model", "tiny-neox:ctx=64", "tiny-neox:hidden=32,layers=1", "--max-tokens", "160", "288",
        "--recent-size", "28", "--hypothesis", "none"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def cell_numbers(sweep_dir) -> dict:
    """Cell name -> what must be equal between executors and after a resume (timings and paths aside)."""
    index = json.loads((sweep_dir / "sweep.json").read_text())
    out = {}
    for cell in index["cells"]:
        folder = sweep_dir / cell["folder"]
        res, runs, arrays = run_numbers(folder)
        config = {k: v for k, v in res["config"].items() if k != "out"}
        out[cell["name"]] = {"runs": runs, "arrays": arrays, "comparisons": res["comparisons"],
                             "verdicts": res["verdicts"], "model": res["model"], "config": config}
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted local sweep, with the number of model loads it made."""
    import anomaly_probe.models as models

    calls = []
    real = models.load_model

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    models.load_model = counting
    out = tmp_path_factory.mktemp("sweep") / "ref"
    try:
        assert main(["sweep", *GRID, "--out", str(out)]) == 0
    finally:
        models.load_model = real
        torch.set_num_threads(before)
    return out, calls


def test_local_sweep_runs_every_cell_with_one_model_load_per_model(reference):
    out, loads = reference
    index = json.loads((out / "sweep.json").read_text())
    assert index["status"] == "complete" and len(index["cells"]) == 4
    assert {c["status"] for c in index["cells"]} == {"complete"}
    assert sorted(loads) == ["tiny-neox:ctx=64", "tiny-neox:hidden=32,layers=1"]  # 4 cells, 2 loads
    numbers = cell_numbers(out)
    contexts = {n: v["model"]["trained_context"] for n, v in numbers.items()}
    assert sorted(set(contexts.values())) == [64, 128]
    sizes = {v["model"]["spec"]: v["model"]["num_parameters"] for v in numbers.values()}
    assert sizes["tiny-neox:ctx=64"] > sizes["tiny-neox:hidden=32,layers=1"] > 0
    for v in numbers.values():  # every cell is an ordinary run folder with its comparison
        assert len(v["comparisons"]) == 1 and v["config"]["max_tokens"] in ([160], [288])


def test_interrupted_sweep_resumes_to_the_same_numbers(tmp_path, reference, monkeypatch, capsys):
    import anomaly_probe.run.pipeline as pipeline

    real = pipeline.run_pipeline
    calls = []

    def interrupt_third(session, *args, **kwargs):
        calls.append(session.run_dir.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(session, *args, **kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", interrupt_third)
    out = tmp_path / "sweep"
    assert main(["sweep", *GRID, "--out", str(out)]) == 130
    assert "sweep --resume" in capsys.readouterr().err
    index = json.loads((out / "sweep.json").read_text())
    assert index["status"] == "interrupted"
    assert sorted(c["status"] for c in index["cells"]) == ["complete", "complete", "interrupted", "pending"]
    stopped = next(c for c in index["cells"] if c["status"] == "interrupted")
    assert json.loads((out / stopped["folder"] / "results.json").read_text())["status"] == "interrupted"

    monkeypatch.setattr(pipeline, "run_pipeline", real)
    ran = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda s, *a, **k: (ran.append(s.run_dir.name), real(s, *a, **k)))
    assert main(["sweep", "--resume", str(out)]) == 0
    assert sorted(ran) == sorted(c["name"] for c in index["cells"] if c["status"] != "complete")  # 2 of 4
    assert cell_numbers(out) == cell_numbers(reference[0])
    # the same command again: every cell complete, nothing runs
    ran.clear()
    assert main(["sweep", *GRID, "--out", str(out)]) == 0
    assert ran == []


def test_ray_executor_gives_the_same_numbers(tmp_path, reference):
    try:
        import ray  # noqa: F401
    except ImportError:
        pytest.skip("ray cannot be imported here (pip install 'anomaly-probe[ray]'); the Ray executor is untested")
    out = tmp_path / "ray"
    assert main(["sweep", *GRID, "--out", str(out), "--executor", "ray", "--address", "local", "--ray-cpus", "2"]) == 0
    index = json.loads((out / "sweep.json").read_text())
    assert index["executor"] == "ray" and {c["status"] for c in index["cells"]} == {"complete"}
    assert cell_numbers(out) == cell_numbers(reference[0])
    assert (out / "report.html").is_file()


def test_a_failed_cell_does_not_stop_the_others(tmp_path, capsys):
    grid = tmp_path / "grid.toml"
    grid.write_text("""
max_tokens = 160
hypotheses = ["none"]
recent_size = 28

[[row]]
model = "tiny-neox"

[[row]]
model = "tiny-neox"
recent_size = -5          # a run refuses it: fails before anything loads

[[row]]
model = "tiny-neox:bogus=3"   # fails when the model is loaded
""")
    out = tmp_path / "sweep"
    assert main(["sweep", "--grid", str(grid), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "did not succeed" in err
    cells = json.loads((out / "sweep.json").read_text())["cells"]
    status = {c["settings"]["model"] + f"/{c['settings']['recent_size']}": c for c in cells}
    assert status["tiny-neox/28"]["status"] == "complete"
    assert status["tiny-neox/-5"]["status"] == "failed" and "--recent-size" in status["tiny-neox/-5"]["reason"]
    bogus = status["tiny-neox:bogus=3/28"]
    assert bogus["status"] == "failed" and "bogus" in bogus["reason"] and "\n" not in bogus["reason"]
    html = (out / "report.html").read_text()
    assert "failed" in html and "The seed" in html


def test_trend_report_renders_and_report_command_imports_no_torch(reference, tmp_path):
    out, _ = reference
    html = (out / "report.html").read_text()
    for text in ("The seed&#39;s table, filled in", "Gap against length", "A test of the claim", "Verdicts per cell",
                 "within noise", "length / trained context"):
        assert text in html, text
    assert (out / "figures" / "gap-vs-context.png").is_file() and (out / "figures" / "gap-vs-tokens.png").is_file()
    code = ("import sys; from anomaly_probe.cli import main; rc = main(['report', sys.argv[1], '--out', sys.argv[2]]);"
            "assert rc == 0, rc; bad = {'torch', 'transformers'} & set(sys.modules); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code, str(out), str(tmp_path / "again.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "The seed" in (tmp_path / "again.html").read_text()


@pytest.mark.parametrize("args, words", [
    (["--max-tokens", "abc"], "expected an integer"),
    (["--executor", "ray"], "--address"),
    (["--address", "local"], "--executor ray"),
    (["--retries", "-1"], "--retries"),
    (["--ray-cpus", "2"], "--address local"),
    (["--cpus", "x"], "expected a number"),
    (["--cpus", "nan"], "give one number >= 0"),
    (["--trained-context", "big"], "trained_context = 'big'"),
    (["--hypothesis", "posiiton"], "Did you mean 'position'"),
    (["--max-tokens", "1", "--model", "tiny-neox"], "no cell of the grid can run"),
])
def test_bad_sweep_flags_are_one_error_line(args, words, tmp_path, capsys):
    assert main(["sweep", *args, "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and words in err, err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("toml, words", [
    ("model = [", "not valid TOML"),
    ("modle = 'tiny-neox'", "Did you mean 'model'"),
    ("max_tokens = ['256']", "expected whole numbers"),
    ("max_tokens = []", "at least one value"),
    ("row = 3", "[[row]]"),
    ("cpus = -1", "cpus"),
])
def test_bad_grid_files_are_one_error_line(toml, words, tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text(toml)
    assert main(["sweep", "--grid", str(grid), "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and words in err, err


def test_grid_file_and_flags_and_resume_conflicts(tmp_path, capsys):
    grid = tmp_path / "g.toml"
    grid.write_text("model = 'tiny-neox'\n")
    assert main(["sweep", "--grid", str(grid), "--max-tokens", "300"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["sweep", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no sweep.json" in capsys.readouterr().err


def test_grid_rows_cross_their_axes_and_name_cells_by_what_varies():
    from anomaly_probe.sweep.grid import Grid

    grid = Grid([{"model": ["a", "b"], "max_tokens": [100, 200], "seed": 1, "hypotheses": ["none"]},
                 {"model": "a", "max_tokens": 100, "seed": 1, "method": "window", "trained_context": ["auto", 50]},
                 {"model": "a", "max_tokens": 100, "seed": 1}])  # the same cell as the first: dropped
    cells = grid.cells()
    assert len(cells) == 6 and len({c.key for c in cells}) == 6 and len({c.name for c in cells}) == 6
    assert cells[0].settings["trained_context"] is None and cells[5].settings["trained_context"] == 50
    assert cells[0].name.startswith("a-ctxauto-L100-streaming_llm")
    assert cells[4].config("x").max_tokens == [100] and cells[4].config("x").method == "window"


def test_tiny_neox_size_variants(capsys):
    from anomaly_probe.errors import UserError
    from anomaly_probe.models import load_model
    from anomaly_probe.models.tiny_neox import TinyNeoxSize, parse_size

    assert parse_size("tiny-neox") == TinyNeoxSize()
    assert parse_size("tiny-neox:hidden=32,layers=3,ctx=64") == TinyNeoxSize(hidden=32, layers=3, ctx=64)
    for bad, words in (("tiny-neox:hidden=30", "multiple of heads"), ("tiny-neox:depth=2", "not key=value"),
                       ("tiny-neox:layers=0", "from 1 to"), ("tiny-neox:layers=2,layers=3", "twice"),
                       ("tiny-neox:ctx=lots", "whole number")):
        with pytest.raises(UserError, match=words):
            parse_size(bad)
    cpu = torch.device("cpu")
    small = load_model("tiny-neox:hidden=32,layers=1,ctx=64", device=cpu, dtype=torch.float32)
    plain = load_model("tiny-neox", device=cpu, dtype=torch.float32)
    assert (small.trained_context, small.num_layers, small.model.config.hidden_size) == (64, 1, 32)
    assert small.num_parameters < plain.num_parameters and plain.trained_context == 128
    ids = torch.arange(20)[None]
    with torch.no_grad():  # the plain spec is the same model as before the variants existed
        default = load_model("tiny-neox:hidden=64", device=cpu, dtype=torch.float32)
        assert torch.equal(default.model(ids).logits, plain.model(ids).logits)
    assert main(["run", "--model", "tiny-neox:hidden=7", "--hypothesis", "none", "--max-tokens", "64"]) == 2
    assert "multiple of heads" in capsys.readouterr().err


def test_collapse_and_regression_on_known_truth():
    from anomaly_probe.reports.sweep.trend import Point, collapse, regress

    def gap(ratio):  # a gap that depends only on length / trained context
        return 0.3 * max(0.0, ratio - 1.0)

    pts = [Point(f"m{ctx}", L, ctx, p, gap(L / ctx), gap(L / ctx) - 0.01, gap(L / ctx) + 0.01)
           for ctx, p in ((1000, 10**6), (2000, 10**7), (4000, 10**8)) for L in (1000, 2000, 4000, 8000)]
    c = collapse(pts)
    assert c.verdict == "collapse" and c.normalised < 0.01 < c.raw, c
    linear = [Point(p.line, p.tokens, p.context, p.parameters, 0.2 * p.ratio, 0.2 * p.ratio - 0.02,
                    0.2 * p.ratio + 0.02) for p in pts]  # gap = 0.2 x length / context, whatever the size
    reg = regress(linear, {"ratio": [p.ratio for p in linear], "size": [np.log10(p.parameters) for p in linear]})
    by = {x.name: x for x in reg.coefficients}
    assert by["ratio"].low < 0.2 < by["ratio"].high and by["ratio"].excludes_zero
    assert by["size"].low < 0 < by["size"].high
    assert reg.sentence.startswith("Ratio carries the effect; size adds nothing"), reg.sentence
    # the gap depends on tokens only: the lines already coincide against tokens
    raw = [Point(p.line, p.tokens, p.context, p.parameters, 1e-4 * p.tokens, 1e-4 * p.tokens - 0.01,
                 1e-4 * p.tokens + 0.01) for p in pts]
    assert collapse(raw).verdict == "coincide"
    # the gap grows with tokens and with size: dividing by the context does not bring the lines together
    sized = [Point(p.line, p.tokens, p.context, p.parameters, 1e-4 * p.tokens * (np.log10(p.parameters) - 5),
                   None, None) for p in pts]
    assert collapse(sized).verdict == "no-collapse"
    # one context for every line: untestable; size moving with the ratio: cannot separate
    same = [Point(f"m{p}", L, 1000, p, gap(L / 1000)) for p in (10**6, 10**7) for L in (1000, 2000)]
    assert collapse(same).verdict == "untestable"
    tied = [Point("m", L, 1000, L * 1000, gap(L / 1000)) for L in (1000, 2000, 4000)]
    tied_reg = regress(tied, {"ratio": [p.ratio for p in tied], "size": [np.log10(p.parameters) for p in tied]})
    assert "cannot separate" in tied_reg.sentence


def test_ray_worker_failure_is_a_failed_cell_after_its_retries(tmp_path, monkeypatch):
    """Ray's own error for a task whose worker died (after Ray's retries) fails that cell only."""
    import types

    from anomaly_probe.sweep import ray_executor
    from anomaly_probe.sweep.cellrun import CellOutcome
    from anomaly_probe.sweep.grid import Grid
    from anomaly_probe.sweep.index import CellEntry

    class RayError(Exception):
        pass

    class WorkerCrashedError(RayError):
        pass

    submitted = []

    class Task:
        def options(self, **kw):
            submitted.append(kw)
            return self

        def remote(self, settings, out, files, cpus):
            return ("ref", settings["max_tokens"])

    def get(ref):
        if ref[1] == 200:
            raise WorkerCrashedError("The worker died unexpectedly while executing this task.\nmore lines")
        return {"outcome": {"status": "complete", "reason": "", "seconds": 1.0, "unit_failures": 0,
                            "skipped": False}, "files": {"results.json": b"{}", "tokens/a.npz": b"x"}}

    fake = types.SimpleNamespace(is_initialized=lambda: True, remote=lambda fn: Task(), get=get,
                                 wait=lambda refs, num_returns: (refs[:1], refs[1:]), cancel=lambda *a, **k: None,
                                 shutdown=lambda: None, exceptions=types.SimpleNamespace(RayError=RayError))
    monkeypatch.setattr(ray_executor, "import_ray", lambda: fake)
    cells = Grid([{"model": "tiny-neox", "max_tokens": [100, 200], "cpus": 2, "gpus": 0.5}]).cells()
    entries = [CellEntry(c.key, c.name, f"cells/{c.name}", c.settings) for c in cells]
    finished: dict[str, CellOutcome] = {}
    events = types.SimpleNamespace(started=lambda e: None, finished=lambda e, o: finished.__setitem__(e.name, o))
    ray_executor.run_ray(list(zip(cells, entries)), tmp_path, events, "local", retries=3)
    assert all(kw == {"num_cpus": 2.0, "num_gpus": 0.5, "max_retries": 3, "retry_exceptions": False}
               for kw in submitted)
    ok, bad = finished[cells[0].name], finished[cells[1].name]
    assert ok.status == "complete" and (tmp_path / entries[0].folder / "tokens" / "a.npz").read_bytes() == b"x"
    assert bad.status == "failed" and "4 attempt(s)" in bad.reason and "WorkerCrashedError" in bad.reason
    assert "\n" not in bad.reason


def test_line_sentence_says_where_the_gap_turns():
    from types import SimpleNamespace

    from anomaly_probe.reports.sweep.cells import CellStats
    from anomaly_probe.reports.sweep.crossing import line_sentence

    def stats(L, gap, past):
        return CellStats(cell=SimpleNamespace(line="m"), max_tokens=L, num_samples=1, tokens=L - 1, trained_context=8192,
                         parameters=10**8, method="streaming_llm", gap=gap, gap_past=past, base_ppl=(1, 1, 1),
                         meth_ppl=(1, 1, 1), base_acc=None, meth_acc=None, acc_diff=None)

    text = line_sentence("m", [stats(12000, (-0.01, -0.05, 0.03), (0.9, 0.7, 1.1)),
                               stats(2000, (-0.2, -0.3, -0.1), None), stats(4000, (-0.2, -0.3, -0.1), None)])
    assert text == ("m: over all scored tokens the method is worse beyond noise at 2000-4000 tokens (0.24-0.49x its "
                    "trained context) and within noise at 12000 tokens (1.46x its trained context); on the positions "
                    "past the trained context it is better beyond noise at 12000 tokens (1.46x its trained context).")
