"""The run command end to end on tiny-neox, and one clear line + exit 2 for every bad input."""

from __future__ import annotations

import json

import pytest
import torch

from anomaly_probe.cli import main

TINY = ["run", "--hypothesis", "none", "--model", "tiny-neox"]


def run_cli(capsys, args):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_run_writes_results_with_the_promised_keys(tmp_path, capsys):
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, TINY + ["--max-tokens", "150", "200", "--num-samples", "2", "--recent-size", "28",
                                              "--out", str(out_dir)])
    assert code == 0, err
    res = json.loads((out_dir / "results.json").read_text())
    assert res["schema_version"] == 1 and res["status"] == "complete"
    for key in ("python", "torch", "transformers", "device", "device_name", "dtype", "attn_implementation",
                "cpu_count", "total_memory_bytes", "platform"):
        assert key in res["environment"]
    assert len(res["runs"]) == 2 * 2 * 2
    for run in res["runs"]:
        for key in ("method", "position_mode", "engine", "dtype", "max_tokens", "sample", "tokens_scored", "nll_mean",
                    "ppl", "acc", "tok_per_s", "peak_rss_bytes"):
            assert key in run
        assert run["tokens_scored"] == run["max_tokens"] - 1
        assert (out_dir / run["tokens_file"]).exists()
    assert {c["max_tokens"] for c in res["comparisons"]} == {150, 200}
    for c in res["comparisons"]:
        assert set(c) >= {"max_tokens", "baseline_ppl", "method_ppl", "nll_gap_mean", "acc_diff"}
    assert res["verdicts"] == []
    assert "Baseline vs method" in out


def test_full_stepwise_and_batched_give_the_same_ppl(tmp_path, capsys):
    ppl = {}
    for engine in ("stepwise", "batched"):
        code, _, err = run_cli(capsys, TINY + ["--method", "full", "--engine", engine, "--max-tokens", "180",
                                               "--out", str(tmp_path / engine)])
        assert code == 0, err
        runs = json.loads((tmp_path / engine / "results.json").read_text())["runs"]
        ppl[engine] = runs[0]["nll_mean"]
    assert abs(ppl["stepwise"] - ppl["batched"]) <= 1e-4


def test_python_dash_m_entry_point():
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "anomaly_probe", "run", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--position-mode" in res.stdout


BAD = [
    (["--model", "nosuchmodel"], "Unknown model"),
    (["--model", "tiny-neo"], "Did you mean 'tiny-neox'"),
    (["--model", "EleutherAI/pythia-70m"], "pythia-70m"),
    (["--model", "/nonexistent/model.gguf"], "not found"),
    (["--method", "streaming"], "Unknown method"),
    (["--position-mode", "relative"], "Unknown position mode"),
    (["--sink-size", "-1"], ">= 0"),
    (["--sink-size", "0", "--recent-size", "0"], "zero tokens"),
    (["--max-tokens", "1"], "at least 2 tokens"),
    (["--max-tokens", "abc"], "expected an integer"),
    (["--num-samples", "0"], "at least 1 sample"),
    (["--engine", "warp"], "Unknown engine"),
    (["--engine", "batched"], "full cache only"),
    (["--device", "tpu"], "Unknown device"),
    (["--device", "cuda"], "no CUDA device"),
    (["--dtype", "float8"], "Unknown dtype"),
    (["--hypothesis", "numerix"], "Did you mean 'numerics'"),
    (["--max-tokens", "100000", "--num-samples", "5"], "tokens, fewer than"),
    (["--out", "/proc/version/run"], "not writable"),
    (["--trained-context", "0"], "trained-context"),
    (["--stepwise-tokens", "-3"], "stepwise-tokens"),
    (["--frobnicate"], "unrecognized arguments"),
]


@pytest.mark.parametrize("extra,expected", BAD, ids=[" ".join(b[0]) for b in BAD])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, extra, expected):
    if "--device" in extra and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    args = TINY + ["--max-tokens", "64", "--out", str(tmp_path / "r")] + extra
    code, out, err = run_cli(capsys, args)
    assert code == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert expected in lines[0]
    assert "Traceback" not in err + out
    assert not (tmp_path / "r" / "results.json").exists()


def test_text_files(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("hello world")
    code, _, err = run_cli(capsys, TINY + ["--text", str(short), "--max-tokens", "64", "--out", str(tmp_path / "a")])
    assert code == 2 and "has 11 tokens" in err
    jl = tmp_path / "t.jsonl"
    jl.write_text("\n".join(json.dumps({"text": "abc " * 40}) for _ in range(3)))
    code, _, err = run_cli(capsys, TINY + ["--text", str(jl), "--max-tokens", "100", "--out", str(tmp_path / "b")])
    assert code == 0, err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"nope": 1}\n')
    code, _, err = run_cli(capsys, TINY + ["--text", str(bad), "--out", str(tmp_path / "c")])
    assert code == 2 and "line 2" in err
    code, _, err = run_cli(capsys, TINY + ["--text", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "d")])
    assert code == 2 and "no such file" in err


def test_dtype_the_device_cannot_run(monkeypatch, tmp_path, capsys):
    import anomaly_probe.device as device

    real = device.torch.softmax

    def fake_softmax(x, dim):
        if x.dtype == torch.bfloat16:
            raise RuntimeError('"softmax_lastdim_kernel_impl" not implemented for \'BFloat16\'')
        return real(x, dim=dim)

    monkeypatch.setattr(device.torch, "softmax", fake_softmax)
    code, _, err = run_cli(capsys, TINY + ["--dtype", "bfloat16", "--out", str(tmp_path / "r")])
    assert code == 2 and "cannot run on cpu" in err


def test_existing_run_folder_is_not_overwritten(tmp_path, capsys):
    out_dir = tmp_path / "r"
    assert run_cli(capsys, TINY + ["--max-tokens", "40", "--out", str(out_dir)])[0] == 0
    code, _, err = run_cli(capsys, TINY + ["--max-tokens", "40", "--out", str(out_dir)])
    assert code == 2 and "already holds a run" in err
