"""Run folder safety without a model: the lock, writes that leave no temp file and follow no link, paths
read from results.json that are never followed out of the folder."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from anomaly_probe.errors import UserError
from anomaly_probe.rundir import Results, load_npz, read, save_tokens, write_results
from anomaly_probe.rundir.files import WriteError, atomic_write
from anomaly_probe.rundir.lock import LOCK_NAME, RunLock
from anomaly_probe.rundir.prepare import claim

ARRAYS = {"nll": np.ones(3), "correct": np.ones(3, bool), "query_pos": np.arange(3), "n_keys": np.arange(3)}


# ---------------------------------------------------------------------------------------------- lock
def _sleeper():
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])


def _lock_of(pid: int, run_dir) -> None:
    """A lock file as process ``pid`` writes it."""
    import socket

    import psutil

    (run_dir / LOCK_NAME).write_text(json.dumps({"pid": pid, "started": psutil.Process(pid).create_time(),
                                                 "host": socket.gethostname()}))


def test_a_lock_held_by_a_live_process_refuses_a_second_writer(tmp_path):
    proc = _sleeper()
    try:
        _lock_of(proc.pid, tmp_path)
        with pytest.raises(UserError, match=rf"in use by another anomaly-probe process \(pid {proc.pid}"):
            RunLock(tmp_path, "--out 'x'").acquire()
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid  # not taken over
    finally:
        proc.kill()
        proc.wait()
    with RunLock(tmp_path, "--out 'x'"):  # its owner is gone: the stale lock is taken over
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_reused_pid_does_not_keep_a_lock_alive(tmp_path):
    _lock_of(os.getpid(), tmp_path)
    lock = json.loads((tmp_path / LOCK_NAME).read_text())
    (tmp_path / LOCK_NAME).write_text(json.dumps(lock | {"started": lock["started"] - 3600}))  # an older process
    with RunLock(tmp_path, "x"):
        pass
    (tmp_path / LOCK_NAME).write_text("not json")  # garbage left long ago
    os.utime(tmp_path / LOCK_NAME, (0, 0))
    with RunLock(tmp_path, "x"):
        pass


def test_two_processes_claim_one_folder_exactly_one_wins(tmp_path):
    """Many processes race for one --out at once: exactly one claims it, every other gets a one-line error."""
    code = ("import sys, time\n"
            "from anomaly_probe.errors import UserError\n"
            "from anomaly_probe.rundir.prepare import claim\n"
            "try:\n"
            "    with claim(sys.argv[1], 'x'):\n"
            "        print('won', flush=True); time.sleep(3)\n"
            "except UserError as exc:\n"
            "    print('lost', exc)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True,
                              env=env) for _ in range(4)]
    outs = [p.communicate(timeout=60)[0].strip() for p in procs]
    assert sum(o == "won" for o in outs) == 1, outs
    assert all(o == "won" or "in use by another anomaly-probe process" in o for o in outs), outs


def test_claim_checks_for_a_run_under_the_lock_and_removes_an_empty_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with claim(str(out), "x"):
            assert (out / LOCK_NAME).is_file()
            raise RuntimeError("the model did not load")
    assert not out.exists()
    with claim(str(out), "x") as run_dir:
        write_results(run_dir, Results())
    assert sorted(p.name for p in out.iterdir()) == ["results.json"]
    with pytest.raises(UserError, match="already holds a run"):
        with claim(str(out), "x"):
            pass


# ---------------------------------------------------------------------------------------------- writes
def test_a_failed_write_leaves_no_temp_file_and_the_old_file(tmp_path, monkeypatch):
    write_results(tmp_path, Results(status="running"))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError, match="No space left on device"):
        write_results(tmp_path, Results(status="complete"))
    monkeypatch.undo()
    monkeypatch.setattr(np, "savez_compressed", full)
    with pytest.raises(WriteError, match="No space left on device"):
        save_tokens(tmp_path, "k", ARRAYS)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["results.json"]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "running"


def test_writes_never_go_through_a_link(tmp_path):
    run, outside = tmp_path / "run", tmp_path / "outside"
    run.mkdir()
    outside.mkdir()
    victim = outside / "victim.txt"
    victim.write_text("keep")
    (run / "results.json").symlink_to(victim)
    (run / f".results.json.{os.getpid()}.tmp").symlink_to(outside / "tmp-target")  # a planted temp link
    write_results(run, Results())
    assert victim.read_text() == "keep" and not (outside / "tmp-target").exists()
    assert not (run / "results.json").is_symlink() and read(run).status == "running"
    (run / "tokens").symlink_to(outside)
    with pytest.raises(WriteError, match="link out of the run folder"):
        save_tokens(run, "k", ARRAYS)
    assert sorted(p.name for p in outside.iterdir()) == ["victim.txt"]
    with pytest.raises(ZeroDivisionError):  # an interrupted writer leaves no temp file either
        atomic_write(run / "x.bin", lambda f: 1 / 0)
    assert not list(run.glob("*.tmp"))


# ---------------------------------------------------------------------------------------------- paths
@pytest.mark.parametrize("rel", ["/etc/passwd", "../outside/tokens.npz", "tokens/../../x.npz", "..\\x.npz"])
def test_results_json_paths_absolute_or_with_dotdot_are_refused(tmp_path, rel):
    run = tmp_path / "run"
    run.mkdir()
    save_tokens(tmp_path, "outside", ARRAYS)
    data = Results().to_dict() | {"runs": [{"key": "a", "tokens_file": rel}]}
    (run / "results.json").write_text(json.dumps(data))
    with pytest.raises(UserError, match=r"runs\[0\]\.tokens_file .* is absolute or leads out of the run folder"):
        read(run)
    with pytest.raises(UserError, match="--resume .*refusing to follow it"):
        read(run, resume=True)
    assert load_npz(run, rel) is None and load_npz(run, "../tokens/outside.npz") is None


def test_report_and_export_refuse_such_a_folder_with_one_line(tmp_path, capsys):
    from anomaly_probe.cli import main

    run = tmp_path / "run"
    run.mkdir()
    data = Results().to_dict() | {"runs": [{"key": "a", "tokens_file": "tokens/a.npz", "trace_file": "/etc/passwd"}]}
    (run / "results.json").write_text(json.dumps(data))
    for argv in (["report", str(run)], ["export", str(run)]):
        code = main(argv)
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and "runs[0].trace_file '/etc/passwd'" in lines[0], (argv, out, err)
        assert lines[0].startswith("error: ") and "Traceback" not in out + err


def test_a_token_file_linked_out_of_the_folder_is_not_read(tmp_path):
    run = tmp_path / "run"
    save_tokens(tmp_path, "outside", ARRAYS)
    (run / "tokens").mkdir(parents=True)
    (run / "tokens" / "a.npz").symlink_to(tmp_path / "tokens" / "outside.npz")
    assert load_npz(run, "tokens/a.npz") is None
    save_tokens(run, "b", ARRAYS)
    assert load_npz(run, "tokens/b.npz") is not None
