"""Every bad flag or input file of every subcommand: one ``error:`` line saying what to do, exit code 2.

The table doubles as the list of bad inputs tried (``ANOMALY_PROBE_LIST_INPUTS=1 pytest -s -k listing``
prints each with its message).
"""

from __future__ import annotations

import json
import os

import pytest

from anomaly_probe.cli import main

RUN = ["run", "--model", "tiny-neox", "--hypothesis", "none", "--max-tokens", "24", "--recent-size", "8"]
CHECK = ["check", "--only", "accounting", "--max-tokens", "80", "--recent-size", "20"]


def _import(*extra):
    return ["import", "--baseline", "@good.csv", "--method", "@good2.csv", *extra]


# (argv with @name for a file of the workspace, expected part of the message)
BAD = [
    # run
    (RUN + ["--seed", "99999999999999999999999"], "--seed 99999999999999999999999: use a whole number from 0 to"),
    (RUN + ["--seed", "-5"], "--seed -5: use a whole number"),
    (RUN + ["--model", ""], "--model '': give a model"),
    (RUN + ["--model", "@folder"], "the folder has no config.json"),
    (RUN + ["--model", "@good.csv"], "is a file; give a folder with config.json"),
    (RUN + ["--text", "@folder"], "is a folder; give a .txt or .jsonl file"),
    (RUN + ["--text", "@binary.txt"], "cannot read it as UTF-8 text"),
    (RUN + ["--text", "@empty.txt"], "is empty"),
    (RUN + ["--text", "@bad.jsonl"], "line 1 has no string 'text' field"),
    (RUN + ["--out", ""], "--out '': give a folder name"),
    (RUN + ["--out", "@good.csv"], "is a file; give a folder for the run"),
    (RUN + ["--out", "@complete-run"], "already holds a run; choose another folder, or continue it with"),
    (RUN + ["--chunk-size", "0"], "--chunk-size 0: must be >= 1"),
    (RUN + ["--probes", "bogus"], "Unknown probe 'bogus'"),
    (RUN + ["--probes", "all,cache"], "cannot be combined with probe names"),
    (RUN + ["--method", "recompute"], "the recompute method needs a window"),
    (RUN + ["--engine", "recompute"], "--engine recompute scores the recompute method only"),
    (RUN + ["--hypothesis", "none", "numerics"], "--hypothesis none cannot be combined"),
    (RUN + ["--max-tokens", "1_0x"], "expected an integer, got '1_0x'"),
    (RUN + ["--resume", "@missing"], "--resume"),
    # run --resume
    (["run", "--resume", "@missing"], "no such folder"),
    (["run", "--resume", "@folder"], "no results.json in the folder"),
    (["run", "--resume", "@good.csv"], "is a file; give the run folder"),
    (["run", "--resume", "@corrupt-run"], "results.json is not valid JSON"),
    (["run", "--resume", "@wrong-run"], "the saved config's max_tokens = 'x' is not a valid value"),
    (["run", "--resume", "@import-run"], "written by `anomaly-probe import`; there is nothing to resume"),
    (["run", "--resume", "@interrupted-run", "--max-tokens", "30"], "--max-tokens 30 differs from the saved run (24)"),
    (["run", "--resume", "@interrupted-run", "--seed", "1"], "--seed 1 differs from the saved run (0)"),
    (["run", "--resume", "@interrupted-run", "--out", "@elsewhere"], "drop --out"),
    # report
    (["report"], "the following arguments are required: RUN_DIR"),
    (["report", "@missing"], "is not a folder"),
    (["report", "@folder"], "has no results.json"),
    (["report", "@corrupt-run"], "is not valid JSON"),
    (["report", "@complete-run", "--out", "@folder"], "is a folder; give a file name"),
    (["report", "@complete-run", "--out", "/proc/version/r.html"], "cannot write"),
    # check
    (CHECK + ["--tolerance", "inf"], "--tolerance inf: must be a finite number > 0"),
    (CHECK + ["--tolerance", "nan"], "--tolerance nan: must be a finite number > 0"),
    (CHECK + ["--tolerance", "abc"], "invalid float value: 'abc'"),
    (CHECK + ["--seed", "-1"], "--seed -1: use a whole number"),
    (CHECK + ["--max-tokens", "10"], "must be >= sink + recent + 2"),
    (CHECK + ["--method", "full"], "check needs a compressed cache"),
    (CHECK + ["--only", "nothing"], "matches no check"),
    (CHECK + ["--json", "@folder"], "is a folder; give a file name"),
    (CHECK + ["--junit", "@nodir/x.xml"], "does not exist"),
    (CHECK + ["--scorer", "::"], "expected module:function"),
    (CHECK + ["--scorer", "@missing.py:score", "--num-samples", "2"], "no such file"),
    # import
    (_import("--memory-unit", "XB"), "--memory-unit 'XB': use one of"),
    (_import("--trained-context", "0"), "--trained-context 0: must be >= 1"),
    (_import("--model-config", "@notjson.json"), "cannot read"),
    (_import("--model-config", "@folder"), "the folder has no config.json"),
    (_import("--nll-col", "missing"), "--nll-col 'missing' is not a column"),
    (_import("--method-label", "full"), "--method-label full"),
    (_import("--out", "@good.csv"), "is a file; give a folder for the run"),
    (_import("--out", ""), "--out '': give a folder name"),
    (["import", "--baseline", "@folder", "--method", "@good2.csv"], "is a folder; give a per-token log file"),
    (["import", "--baseline", "@good.csv", "--method", "@good2.csv", "--format", "streaming-llm"],
     "is not a streaming-llm log.txt"),
    (["import", "--baseline", "@good.csv", "--method", "@good2.csv", "--format", "parquet"], "--format 'parquet'"),
    (["import", "--baseline", "@missing.csv", "--method", "@good2.csv"], "no such file"),
    (["import", "--baseline", "@empty.csv", "--method", "@good2.csv"], "is empty"),
    (["import", "--baseline", "@nonfinite.csv", "--method", "@good2.csv"], "is not finite"),
    (["import", "--baseline", "@negative.csv", "--method", "@good2.csv"], "NLL -2.0 < 0"),
    (["import", "--baseline", "@newline-header.jsonl", "--method", "@good2.csv", "--nll-col", "x"],
     "(columns: a\\nb)"),
    (["import", "--baseline", "@good.csv", "--method", "@disjoint.csv"], "the logs share no (sample, position) pair"),
    (["import", "--baseline", "@good.csv"], "the following arguments are required: --method"),
    # export
    (["export"], "the following arguments are required: RUN_DIR"),
    (["export", "@missing"], "is not a folder"),
    (["export", "@folder"], "has no results.json"),
    (["export", "@corrupt-run"], "is not valid JSON"),
    (["export", "@complete-run", "--out", "@good.csv"], "is a file; give a folder for the CSV files"),
    (["export", "@complete-run", "--out", ""], "--out '': give a folder name"),
    # top level
    ([], ""),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
]


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    import contextlib
    import io

    d = tmp_path_factory.mktemp("inputs")
    (d / "folder").mkdir()
    (d / "empty.txt").write_text("")
    (d / "empty.csv").write_text("")
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 10)
    (d / "bad.jsonl").write_text('{"nope": 1}\n')
    (d / "good.csv").write_text("nll,pos\n" + "".join(f"{1 + (i % 7) / 10},{i}\n" for i in range(40)))
    (d / "good2.csv").write_text("nll,pos\n" + "".join(f"{1 + (i % 5) / 10},{i}\n" for i in range(40)))
    (d / "disjoint.csv").write_text("nll,pos\n1,100\n1,101\n")
    (d / "nonfinite.csv").write_text("nll,pos\n1,0\nnan,1\n")
    (d / "negative.csv").write_text("nll,pos\n1,0\n-2,1\n")
    (d / "newline-header.jsonl").write_text(json.dumps({"a\nb": 1}) + "\n")
    (d / "notjson.json").write_text("{")
    (d / "corrupt-run").mkdir()
    (d / "corrupt-run" / "results.json").write_text('{"schema_version": 1, "config": ')
    (d / "wrong-run").mkdir()
    (d / "wrong-run" / "results.json").write_text(json.dumps({"schema_version": 1, "status": "running",
                                                              "config": {"max_tokens": "x"}}))
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(RUN + ["--out", str(d / "complete-run")]) == 0
        assert main(["import", "--baseline", str(d / "good.csv"), "--method", str(d / "good2.csv"),
                     "--out", str(d / "import-run")]) == 0
    import shutil

    shutil.copytree(d / "complete-run", d / "interrupted-run")
    res = json.loads((d / "interrupted-run" / "results.json").read_text())
    (d / "interrupted-run" / "results.json").write_text(json.dumps(dict(res, status="interrupted")))
    return d


@pytest.fixture(autouse=True)
def in_workspace(ws, monkeypatch):
    """A default run folder (reports/...) would land in the workspace, not in the repository."""
    monkeypatch.chdir(ws)


def _argv(ws, argv):
    return [str(ws / a[1:]) if a.startswith("@") else a for a in argv]


def _one_error(ws, capsys, argv) -> str:
    code = main(_argv(ws, argv))
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, out, err)
    assert "Traceback" not in out + err
    if argv:  # no subcommand prints the help (on stdout) and exits 2
        assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    return lines[0] if lines else ""


@pytest.mark.parametrize("argv,expected", BAD, ids=[" ".join(a)[:80] for a, _ in BAD])
def test_bad_input_is_one_error_line_and_exit_2(ws, capsys, argv, expected):
    line = _one_error(ws, capsys, argv)
    assert expected in line, line


@pytest.mark.skipif(not os.environ.get("ANOMALY_PROBE_LIST_INPUTS"), reason="set ANOMALY_PROBE_LIST_INPUTS=1")
def test_listing(ws, capsys):
    """``ANOMALY_PROBE_LIST_INPUTS=1 pytest -s -k listing`` prints every bad input with its message."""
    rows = []
    for argv, _ in BAD:
        line = _one_error(ws, capsys, argv)
        rows.append(f"{' '.join(argv) or '(no arguments)'}\n    -> {line or '(help text)'}")
    with capsys.disabled():
        print("\n" + "\n".join(rows))
