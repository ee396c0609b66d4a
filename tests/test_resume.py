"""Interrupted runs keep their finished units and ``run --resume`` continues them to the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from anomaly_probe.cli import main
from tests.run_numbers import run_numbers

# The stepwise engine makes each unit take ~0.5 s on tiny-neox: long enough to interrupt after the first.
ARGS = ["--model", "tiny-neox", "--hypothesis", "numerics", "--max-tokens", "300", "--num-samples", "3",
        "--recent-size", "28", "--engine", "stepwise"]
UNITS = 9  # 3 samples x (baseline, method, numerics' emulated-fp16 run)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def numbers(run_dir) -> dict:
    """What must not change between an interrupted + resumed run and an uninterrupted one."""
    res, runs, arrays = run_numbers(run_dir)
    return {"runs": runs, "arrays": arrays, "comparisons": res["comparisons"], "verdicts": res["verdicts"],
            "headline": res["headline"], "failures": res["failures"]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (in-process)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("ref") / "run"
    try:
        assert main(["run", *ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return numbers(out)


def _saved_runs(path) -> int:
    try:
        return len(json.loads(path.read_text())["runs"])
    except (OSError, ValueError, KeyError):
        return 0  # not written yet (results.json is replaced atomically, so never half-written)


def test_sigterm_after_the_first_unit_then_resume_gives_the_same_numbers(tmp_path, reference, capsys):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "anomaly_probe", "run", *ARGS, "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while _saved_runs(out / "results.json") < 1:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no unit was saved within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"anomaly-probe run --resume {out}" in stderr
    saved = json.loads((out / "results.json").read_text())
    assert saved["status"] == "interrupted"
    assert 1 <= len(saved["runs"]) < UNITS
    done = {r["key"] for r in saved["runs"]}

    assert main(["run", "--resume", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert f"{len(done)} finished unit(s) kept" in stdout
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "complete" and len(res["runs"]) == UNITS
    kept = {r["key"]: r for r in res["runs"] if r["key"] in done}
    assert all(kept[k] == r for r in saved["runs"] for k in [r["key"]])  # finished units were not re-scored
    assert numbers(out) == reference


def test_ctrl_c_keeps_finished_units_and_resume_completes(tmp_path, reference, monkeypatch, capsys):
    from anomaly_probe.run import session as runner

    real = runner.Session.score
    calls = []

    def score(self, unit, progress=None):
        calls.append(unit.key)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(self, unit, progress)

    out = tmp_path / "run"
    monkeypatch.setattr(runner.Session, "score", score)
    assert main(["run", *ARGS, "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "3 finished unit(s) are saved" in err and f"--resume {out}" in err
    assert json.loads((out / "results.json").read_text())["status"] == "interrupted"

    monkeypatch.setattr(runner.Session, "score", real)
    assert main(["run", "--resume", str(out)]) == 0
    assert numbers(out) == reference


def test_resume_rescores_a_unit_whose_arrays_are_lost(tmp_path, capsys):
    out = tmp_path / "run"
    small = ["--model", "tiny-neox", "--hypothesis", "none", "--max-tokens", "60", "--num-samples", "2",
             "--recent-size", "12"]
    assert main(["run", *small, "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    before = numbers(out)
    res["status"] = "interrupted"
    (out / "results.json").write_text(json.dumps(res))
    (out / res["runs"][1]["tokens_file"]).write_bytes(b"not an npz")
    (out / res["runs"][2]["tokens_file"]).unlink()
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--max-tokens", "60", "--model", "tiny-neox"]) == 0
    out_, err = capsys.readouterr()
    assert "2 finished unit(s) kept" in out_ and err.count("scoring it again") == 2
    assert numbers(out) == before


def _error(capsys, argv) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in out + err
    return lines[0]


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["--model", "tiny-neox", "--hypothesis", "none", "--max-tokens", "40", "--recent-size", "12"]
    assert main(["run", *base, "--out", str(out)]) == 0
    capsys.readouterr()
    # a complete run: said so, exit 0
    assert main(["run", "--resume", str(out)]) == 0
    assert "nothing to resume" in capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    res["status"] = "interrupted"
    (out / "results.json").write_text(json.dumps(res))
    assert "--max-tokens 50 differs from the saved run (40)" in _error(capsys, ["run", "--resume", str(out),
                                                                                "--max-tokens", "50"])
    assert "--max-tokens 1024 differs" in _error(capsys, ["run", "--resume", str(out), "--max-tokens", "1024"])
    assert "--hypothesis" in _error(capsys, ["run", "--resume", str(out), "--hypothesis", "all"])
    assert "drop --out" in _error(capsys, ["run", "--resume", str(out), "--out", str(tmp_path / "x")])
    assert "no such folder" in _error(capsys, ["run", "--resume", str(tmp_path / "missing")])
    (tmp_path / "empty").mkdir()
    assert "no results.json" in _error(capsys, ["run", "--resume", str(tmp_path / "empty")])
    (out / "results.json").write_text("{ truncated")
    assert "not valid JSON" in _error(capsys, ["run", "--resume", str(out)])
    (out / "results.json").write_text(json.dumps(dict(res, schema_version=99)))
    assert "schema_version 99" in _error(capsys, ["run", "--resume", str(out)])
    (out / "results.json").write_text(json.dumps(dict(res, config=dict(res["config"], max_tokens="40"))))
    assert "max_tokens = '40' is not a valid value" in _error(capsys, ["run", "--resume", str(out)])
    (out / "results.json").write_text(json.dumps(dict(res, config=dict(res["config"], turbo=True))))
    assert "does not know (turbo)" in _error(capsys, ["run", "--resume", str(out)])
    (out / "results.json").write_text(json.dumps(dict(res, inputs={"samples_sha256": "0" * 64})))
    assert "samples changed" in _error(capsys, ["run", "--resume", str(out)])
    (out / "results.json").write_text(json.dumps(dict(res, environment=dict(res["environment"], dtype="float16"))))
    assert "dtype float16" in _error(capsys, ["run", "--resume", str(out)])
    assert "resume" in _error(capsys, ["run", *base, "--out", str(out)])  # a new run refuses the folder
