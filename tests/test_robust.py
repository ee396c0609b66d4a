"""Out of memory in one unit, NaN from one layer, and determinism: no traceback, no silent answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anomaly_probe.cli import main

SMALL = ["--model", "tiny-neox", "--max-tokens", "150", "--num-samples", "2", "--recent-size", "28"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _fp16_emulated(model) -> bool:
    return "fp16" in str(model.config._attn_implementation)


# ---------------------------------------------------------------------------------------------- out of memory
def test_oom_in_one_unit_is_recorded_with_a_remedy_and_the_rest_finishes(tmp_path, monkeypatch, capsys):
    from anomaly_probe.engines import ENGINES

    real = ENGINES.get("batched")
    seen = []

    def batched(model, ids, method, **kw):
        if _fp16_emulated(model):
            seen.append(1)
            if len(seen) == 2:  # numerics' emulated-fp16 run of sample 1
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB. GPU 0 has ...")
        return real(model, ids, method, **kw)

    monkeypatch.setitem(ENGINES._items, "batched", batched)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--hypothesis", "numerics", "position", "--out", str(out)]) == 1  # not all scored
    _, err = capsys.readouterr()
    assert "Traceback" not in err and "1 unit(s) failed" in err and "--retry-failed" in err
    res = _results(out)
    assert res["status"] == "partial"
    (failure,) = res["failures"]
    assert "attn-fp16-emulated" in failure["key"]
    msg = failure["error"]
    assert msg.startswith("out of memory (OutOfMemoryError: CUDA out of memory.")
    for remedy in ("shorter --max-tokens", "smaller --chunk-size", "--dtype", "--device"):
        assert remedy in msg
    assert len(res["runs"]) == 2 * 2 + 1 + 2  # baseline+method x2, one emulated run, position's oracle x2
    verdicts = {v["hypothesis"]: v for v in res["verdicts"]}
    assert verdicts["numerics"]["status"] == "error" and "out of memory" in verdicts["numerics"]["message"]
    assert "shorter --max-tokens" in verdicts["numerics"]["message"]
    assert verdicts["position"]["status"] != "error"


def test_out_of_memory_is_recognised_in_every_form():
    from anomaly_probe.failures import failure_message, is_out_of_memory
    from anomaly_probe.methods import FullCache
    from anomaly_probe.run.units import Unit

    unit = Unit(4000, 0, FullCache(), "batched", "ballast-1024")
    for exc in (torch.OutOfMemoryError("x"), torch.cuda.OutOfMemoryError("x"), MemoryError(),
                RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
                RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                             "you tried to allocate 9 bytes. Error code 12 (Cannot allocate memory)")):
        assert is_out_of_memory(exc), exc
        msg = failure_message(exc, unit, 1024, "float32", chunked=True)
        assert "out of memory" in msg and "--max-tokens (this unit: 4000)" in msg and "--chunk-size (now 1024)" in msg
        assert "ballast" in msg
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert failure_message(ValueError("bad\nmore"), unit, 1, "float16", chunked=False) == "ValueError: bad"


# ---------------------------------------------------------------------------------------------- NaN / inf
def _nan_from(position: int, only_fp16: bool):
    """A tiny-neox builder whose layer 1 outputs NaN for every query at absolute index >= position."""
    from anomaly_probe.step_context import CURRENT_STEP
    from anomaly_probe.models import tiny_neox

    real = tiny_neox.build_tiny_neox

    def build(seed: int = 0):
        model, tok = real(seed)

        def hook(module, args, output):
            step = CURRENT_STEP.get()
            if step is None or (only_fp16 and not _fp16_emulated(model)):
                return None
            hidden = output[0] if isinstance(output, tuple) else output  # (1, Tq, D)
            bad = (step.q_abs >= position).to(hidden.device)
            hidden = hidden.masked_fill(bad[None, :, None], float("nan"))
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

        model.gpt_neox.layers[1].register_forward_hook(hook)
        return model, tok

    return build


def test_nan_from_one_layer_is_located_and_never_averaged(tmp_path, monkeypatch, capsys):
    from anomaly_probe.models import tiny_neox

    monkeypatch.setattr(tiny_neox, "build_tiny_neox", _nan_from(100, only_fp16=False))
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--hypothesis", "numerics", "sinks", "--out", str(out)]) == 0
    _, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err
    res = _results(out)
    assert res["status"] == "complete" and not res["failures"]
    for run in res["runs"]:
        finding = run["nonfinite"]
        assert finding["first_token"] == 100 and finding["count"] == 49 and finding["value"] == "nan"
        assert finding["first_layer"] == 1 and finding["first_module"] == "gpt_neox.layers.1", finding
        assert run["nll_mean"] is None  # never a silent average
    (comp,) = res["comparisons"]
    assert comp["nonfinite_excluded_tokens"] == 2 * 49 and comp["tokens_scored"] == 2 * 100
    assert all(np.isfinite([comp["baseline_ppl"], comp["method_ppl"], comp["nll_gap_mean"]]))
    for v in res["verdicts"]:
        assert "Non-finite NLL" in v["message"] and "first at token 100" in v["message"]
        assert len(v["evidence"]["nonfinite"]) == 2
    assert "Non-finite NLL in 8 run(s)" in res["headline"]
    assert (out / "report.html").exists()


def test_nan_only_under_emulated_fp16_is_numerics_evidence(tmp_path, monkeypatch, capsys):
    from anomaly_probe.models import tiny_neox

    monkeypatch.setattr(tiny_neox, "build_tiny_neox", _nan_from(140, only_fp16=True))
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--hypothesis", "numerics", "sinks", "--out", str(out)]) == 0
    res = _results(out)
    bad = [r for r in res["runs"] if r.get("nonfinite")]
    assert {r["intervention"] for r in bad} == {"attn-fp16-emulated"} and len(bad) == 2
    assert bad[0]["nonfinite"]["first_layer"] == 1
    verdicts = {v["hypothesis"]: v for v in res["verdicts"]}
    numerics = verdicts["numerics"]
    assert "precision_test" in numerics["evidence"]["nonfinite"][0]
    assert "gpt_neox.layers.1" in numerics["evidence"]["nonfinite"][0]
    assert "Non-finite" not in verdicts["sinks"]["message"]  # its runs are finite
    assert "nonfinite_excluded_tokens" not in res["comparisons"][0]


def test_nan_from_the_first_token_leaves_nothing_to_judge(tmp_path, monkeypatch, capsys):
    from anomaly_probe.models import tiny_neox

    monkeypatch.setattr(tiny_neox, "build_tiny_neox", _nan_from(0, only_fp16=False))
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--hypothesis", "numerics", "--out", str(out)]) == 0
    _, err = capsys.readouterr()
    assert "Traceback" not in err and "internal error" not in err
    res = _results(out)
    (v,) = res["verdicts"]
    assert v["status"] == "inconclusive" and "Non-finite NLL" in v["message"]
    assert res["comparisons"][0]["tokens_scored"] == 0


# ---------------------------------------------------------------------------------------------- determinism
def test_two_identical_runs_give_identical_numbers(tmp_path):
    """In this process and in a fresh one (another hash seed): the same numbers, timings aside."""
    import os
    import subprocess
    import sys

    timings = {"seconds", "tok_per_s", "peak_rss_bytes", "trace_bytes_per_step", "unit_seconds", "trace_seconds"}
    argv = ["run", *SMALL, "--hypothesis", "numerics", "eval-bias", "position", "--stepwise-tokens", "40",
            "--seed", "3"]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "7"}
    proc = subprocess.run([sys.executable, "-m", "anomaly_probe", *argv, "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    got = []
    for name in ("a", "b"):
        out = tmp_path / name
        res = _results(out)
        arrays = {}
        for r in res["runs"]:
            with np.load(out / r["tokens_file"]) as z:
                arrays[r["key"]] = {k: z[k].tolist() for k in z.files}
        got.append({"runs": [{k: v for k, v in r.items() if k not in timings} for r in res["runs"]],
                    "arrays": arrays, "comparisons": res["comparisons"], "verdicts": res["verdicts"],
                    "headline": res["headline"], "inputs": res["inputs"], "config": dict(res["config"], out=None)})
    assert got[0] == got[1]


def test_oom_while_loading_the_model_is_a_clean_error(tmp_path, monkeypatch, capsys):
    from anomaly_probe.models import tiny_neox

    def build(seed: int = 0):
        raise RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB, other allocations: 1.2 GB)")

    monkeypatch.setattr(tiny_neox, "build_tiny_neox", build)
    assert main(["run", *SMALL, "--hypothesis", "none", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: out of memory while loading 'tiny-neox' (MPS backend out of memory")
    assert "--dtype float16" in err and "\n" not in err
    assert not (tmp_path / "run").exists()


def test_locate_layer_names_the_attention_module_and_leaves_no_hook(tiny, tiny_ids):
    from anomaly_probe.engines import score_batched
    from anomaly_probe.methods import FullCache
    from anomaly_probe.nonfinite import locate_layer, nonfinite_summary

    model, _ = tiny
    attn = model.gpt_neox.layers[0].attention
    handle = attn.register_forward_hook(lambda m, a, out: (out[0] * float("inf"), *out[1:]))
    try:
        before = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
        scores = score_batched(model, tiny_ids[:20], FullCache())
        finding = nonfinite_summary(scores.nll)
        assert finding == {"count": 19, "first_token": 0, "value": "nan"}
        where = locate_layer(model, lambda: score_batched(model, tiny_ids[:2], FullCache()), 0)
        assert where["first_layer"] == 0 and where["first_module"] == "gpt_neox.layers.0.attention", where
        assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == before
    finally:
        handle.remove()
    assert nonfinite_summary(score_batched(model, tiny_ids[:20], FullCache()).nll) is None
