"""``run`` on a flaky machine (tiny-neox): failed units retried, a full disk or read-only folder mid-run,
one writer per folder, and ``--resume`` from another working directory."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from anomaly_probe.cli import main
from tests.run_numbers import run_numbers
from anomaly_probe.rundir.lock import LOCK_NAME

SMALL = ["--model", "tiny-neox", "--max-tokens", "60", "--num-samples", "2", "--recent-size", "12"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _results(run_dir) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def _numbers(run_dir) -> dict:
    res, runs, arrays = run_numbers(run_dir)
    return {"runs": runs, "arrays": arrays, "comparisons": res["comparisons"], "verdicts": res["verdicts"],
            "headline": res["headline"], "status": res["status"], "failures": res["failures"]}


def _one_error(capsys, code: int, expected: int) -> str:
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("failed: ")]
    assert code == expected and len(lines) == 1 and lines[0].startswith("error: "), (code, err)
    assert "Traceback" not in out + err
    return lines[0]


def _leftovers(run_dir) -> list[str]:
    return sorted(p.name for p in run_dir.rglob("*") if ".tmp" in p.name or p.name == LOCK_NAME)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["run", *SMALL, "--hypothesis", "numerics", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return _numbers(out)


# ---------------------------------------------------------------------------------------------- failed units
def _fail_once(monkeypatch, when):
    """The batched engine raises out of memory on the call ``when(model)`` picks (once)."""
    from anomaly_probe.engines import ENGINES

    real = ENGINES.get("batched")

    def batched(model, ids, method, **kw):
        if when(model):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.")
        return real(model, ids, method, **kw)

    monkeypatch.setitem(ENGINES._items, "batched", batched)


def test_a_failed_unit_makes_the_run_partial_and_resume_retries_it(tmp_path, monkeypatch, capsys, reference):
    seen = []
    _fail_once(monkeypatch, lambda m: "fp16" in str(m.config._attn_implementation) and not seen.append(1)
               and len(seen) == 1)
    out = tmp_path / "run"
    code = main(["run", *SMALL, "--hypothesis", "numerics", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "1 unit(s) failed" in err and f"--retry-failed {out}" in err
    res = _results(out)
    assert res["status"] == "partial" and len(res["failures"]) == 1
    assert {v["hypothesis"]: v["status"] for v in res["verdicts"]}["numerics"] == "error"
    assert not _leftovers(out)
    assert "finished with 1 failed unit(s)" in (out / "report.html").read_text(encoding="utf-8")

    monkeypatch.undo()  # the passing reason is gone
    assert main(["run", "--resume", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "retrying 1 failed unit(s)" in printed and res["failures"][0]["key"] in printed
    assert _numbers(out) == reference  # as if it never failed


def test_retry_failed_says_so_and_takes_old_complete_folders_with_failures(tmp_path, monkeypatch, capsys, reference):
    seen = []
    _fail_once(monkeypatch, lambda m: "fp16" in str(m.config._attn_implementation) and not seen.append(1)
               and len(seen) == 2)
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--hypothesis", "numerics", "--out", str(out)]) == 1
    res = _results(out)
    (out / "results.json").write_text(json.dumps(res | {"status": "complete"}))  # as written before this fix
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["run", "--retry-failed", str(out)]) == 0
    assert "retrying 1 failed unit(s)" in capsys.readouterr().out
    assert _numbers(out) == reference
    assert main(["run", "--retry-failed", str(out)]) == 0  # nothing failed any more: said so
    assert "no failed units to retry" in capsys.readouterr().out
    assert "name different folders" in _one_error(
        capsys, main(["run", "--resume", str(out), "--retry-failed", str(tmp_path)]), 2)


# ---------------------------------------------------------------------------------------------- disk full
def test_disk_full_mid_run_fails_cleanly_and_resume_finishes(tmp_path, monkeypatch, capsys, reference):
    real = np.savez_compressed
    calls = []

    def savez(file, **arrays):
        calls.append(1)
        if len(calls) == 3:  # the third unit's token file
            file.write(b"PK partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(file, **arrays)

    monkeypatch.setattr(np, "savez_compressed", savez)
    out = tmp_path / "run"
    line = _one_error(capsys, main(["run", *SMALL, "--hypothesis", "numerics", "--probes", "none",
                                    "--out", str(out)]), 1)
    assert "No space left on device" in line and f"anomaly-probe run --resume {out}" in line
    assert "2 finished unit(s) are kept" in line
    res = _results(out)
    assert res["status"] == "failed" and len(res["runs"]) == 2
    assert not _leftovers(out)  # no temp file, no lock
    assert sorted(p.name for p in (out / "tokens").iterdir()) == sorted(
        r["tokens_file"].split("/")[-1] for r in res["runs"])

    monkeypatch.undo()
    assert main(["run", "--resume", str(out)]) == 0
    mine, ref = _numbers(out), reference
    assert mine["comparisons"] == ref["comparisons"] and mine["verdicts"] == ref["verdicts"]
    assert mine["arrays"] == ref["arrays"] and mine["status"] == "complete"


def test_results_json_unwritable_mid_run_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    """A folder that turns read-only: every write fails, the last results.json stays, resumable."""
    from anomaly_probe.rundir import files

    real = files.atomic_write
    state = {"n": 0, "broken": False}

    def atomic_write(path, write):
        if path.name == "results.json":
            state["n"] += 1
            state["broken"] |= state["n"] == 3
        if state["broken"]:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, write)

    monkeypatch.setattr(files, "atomic_write", atomic_write)
    out = tmp_path / "run"
    line = _one_error(capsys, main(["run", *SMALL, "--hypothesis", "none", "--out", str(out)]), 1)
    assert "Read-only file system" in line and "--resume" in line
    assert _results(out)["status"] == "running" and not _leftovers(out)
    monkeypatch.undo()
    assert main(["run", "--resume", str(out)]) == 0
    assert _results(out)["status"] == "complete"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a user that permissions stop")
def test_folder_made_read_only_mid_run(tmp_path, monkeypatch, capsys):
    from anomaly_probe.run import session as runner

    real = runner.Session.score
    out = tmp_path / "run"

    def score(self, unit, progress=None):
        record = real(self, unit, progress)
        for folder in (out, out / "tokens", out / "traces"):
            if folder.is_dir():
                folder.chmod(0o555)
        return record

    monkeypatch.setattr(runner.Session, "score", score)
    try:
        line = _one_error(capsys, main(["run", *SMALL, "--hypothesis", "none", "--out", str(out)]), 1)
        assert "--resume" in line and not _leftovers(out)
    finally:
        for folder in (out, out / "tokens", out / "traces"):
            if folder.is_dir():
                folder.chmod(0o755)
    monkeypatch.undo()
    assert main(["run", "--resume", str(out)]) == 0


def test_a_traces_folder_linked_out_of_the_run_stops_the_run_before_writing(tmp_path, capsys):
    out, outside = tmp_path / "run", tmp_path / "outside"
    outside.mkdir()
    out.mkdir()
    (out / "traces").symlink_to(outside, target_is_directory=True)
    line = _one_error(capsys, main(["run", *SMALL, "--hypothesis", "none", "--out", str(out)]), 1)
    assert "link out of the run folder" in line and "--resume" in line
    assert not list(outside.iterdir())


# ---------------------------------------------------------------------------------------------- one writer
@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def _hold(run_dir, pid: int) -> None:
    import socket

    import psutil

    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": pid, "started": psutil.Process(pid).create_time(),
                                                 "host": socket.gethostname()}))


def test_a_folder_held_by_a_live_run_is_refused_to_a_new_run_and_a_resume(tmp_path, live_pid, capsys):
    out = tmp_path / "run"
    _hold(out, live_pid)
    line = _one_error(capsys, main(["run", *SMALL, "--hypothesis", "none", "--out", str(out)]), 2)
    assert f"pid {live_pid}" in line and "in use" in line
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written, the folder left to its owner

    done = tmp_path / "done"
    assert main(["run", *SMALL, "--hypothesis", "none", "--out", str(done)]) == 0
    res = _results(done)
    (done / "results.json").write_text(json.dumps(res | {"status": "interrupted"}))
    _hold(done, live_pid)
    line = _one_error(capsys, main(["run", "--resume", str(done)]), 2)
    assert f"pid {live_pid}" in line
    assert _results(done)["status"] == "interrupted"


def test_two_runs_into_one_out_one_wins(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    argv = [sys.executable, "-m", "anomaly_probe", "run", *SMALL, "--hypothesis", "none", "--engine", "stepwise",
            "--out", str(out)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    done = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], done
    err = next(e for p, (_, e) in zip(procs, done) if p.returncode == 2)
    assert err.strip().startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "in use by another anomaly-probe process" in err or "already holds a run" in err
    res = _results(out)
    assert res["status"] == "complete" and all((out / r["tokens_file"]).is_file() for r in res["runs"])


# ---------------------------------------------------------------------------------------------- paths
def test_resume_works_from_another_working_directory(tmp_path, monkeypatch, capsys):
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    start.mkdir()
    elsewhere.mkdir()
    from anomaly_probe.text import default_text

    (start / "my.txt").write_text(default_text()[:4000], encoding="utf-8")
    monkeypatch.chdir(start)
    assert main(["run", *SMALL, "--hypothesis", "none", "--text", "my.txt", "--out", "run"]) == 0
    out = start / "run"
    res = _results(out)
    assert res["config"]["text"] == str(start / "my.txt") and res["config"]["out"] == str(out)
    before = _numbers(out)
    (out / "results.json").write_text(json.dumps(res | {"status": "interrupted"}))
    (out / res["runs"][0]["tokens_file"]).unlink()

    monkeypatch.chdir(elsewhere)
    capsys.readouterr()
    assert main(["run", "--resume", str(out), "--text", "../start/my.txt"]) == 0  # the same file, typed otherwise
    assert "1 unit(s)" not in capsys.readouterr().err
    assert _numbers(out) == before


def test_local_model_paths_are_saved_absolute(tmp_path, monkeypatch):
    from anomaly_probe.run.paths import local_path

    (tmp_path / "m").mkdir()
    (tmp_path / "w.gguf").write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert local_path("m", "model") == str(tmp_path / "m")
    assert local_path("w.gguf", "model") == str(tmp_path / "w.gguf")
    assert local_path("tiny-neox", "model") == "tiny-neox"
    assert local_path("EleutherAI/pythia-70m", "model") == "EleutherAI/pythia-70m"  # a hub ID, no such folder
    assert local_path("missing.txt", "text") == "missing.txt"  # its error names it as typed
    assert local_path("sub/run", "out") == str(tmp_path / "sub" / "run")
