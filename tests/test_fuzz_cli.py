"""Property-based fuzz of every subcommand's flags and of the import reader: never a traceback.

Each example runs in-process through :func:`anomaly_probe.cli.main`. Whatever the flags, main returns
0, 1, 2 or 130 and nothing on stderr says ``Traceback`` or ``internal error``. Examples stay cheap:
lengths are tiny or far too large to pass validation, the memory hypothesis (a multi-GiB ballast) is
never drawn, and report rendering is stubbed (it has its own tests). ``ANOMALY_PROBE_FUZZ_SCALE=10``
runs ten times more examples, with a random seed.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import shutil

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly_probe.cli import main

SCALE = int(os.environ.get("ANOMALY_PROBE_FUZZ_SCALE", "1"))
EXIT_CODES = {0, 1, 2, 130}
_counter = itertools.count()


def fuzz_settings(n: int):
    return settings(max_examples=n * SCALE, deadline=None, derandomize=SCALE == 1, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much])


def _not_an_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return True
    return False


TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
JUNK = TEXT.filter(_not_an_int)
SMALL_OR_HUGE = st.one_of(st.integers(-5, 40), st.integers(10**7, 10**25)).map(str)
ANY_INT = st.one_of(st.integers(-10, 300), st.integers(-10**25, 10**25)).map(str)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """Files and folders the flags point at: good and bad texts, logs, run folders."""
    d = tmp_path_factory.mktemp("fuzz")
    (d / "folder").mkdir()
    (d / "empty.txt").write_text("")
    (d / "short.txt").write_text("hello")
    (d / "binary.txt").write_bytes(b"\xff\xfe\x00\x81" * 10)
    (d / "bad.jsonl").write_text('{"text": 1}\n[1, 2]\n')
    (d / "good.jsonl").write_text("\n".join(json.dumps({"text": "some words " * 20}) for _ in range(5)))
    (d / "good.csv").write_text("nll,pos\n" + "".join(f"{1 + (i % 7) / 10},{i}\n" for i in range(40)))
    (d / "good2.csv").write_text("nll,pos\n" + "".join(f"{1 + (i % 5) / 10},{i}\n" for i in range(40)))
    (d / "config.json").write_text('{"max_position_embeddings": 32}')
    (d / "notjson.json").write_text("{")
    run = d / "complete-run"
    with _quiet():
        assert main(["run", "--model", "tiny-neox", "--hypothesis", "none", "--max-tokens", "24", "--recent-size",
                     "8", "--out", str(run)]) == 0
    corrupt = d / "corrupt-run"
    corrupt.mkdir()
    (corrupt / "results.json").write_text('{"schema_version": 1, "status": "running", "config": ')
    wrong = d / "wrong-run"
    wrong.mkdir()
    (wrong / "results.json").write_text(json.dumps({"schema_version": 1, "status": "interrupted",
                                                    "config": {"model": 3, "max_tokens": "x"}}))
    return d


@contextlib.contextmanager
def _quiet():
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        yield err


@pytest.fixture(autouse=True)
def cheap(monkeypatch, ws):
    """One thread, no hub lookups, no report rendering (its own tests cover it), cwd in the workspace."""
    monkeypatch.chdir(ws)  # a default run folder (reports/...) lands there, not in the repository
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("anomaly_probe.run.command._write_run_report", lambda run_dir: None)
    monkeypatch.setattr("anomaly_probe.importer.command._report", lambda run_dir, console: None)
    yield
    torch.set_num_threads(before)


def run_main(argv: list[str]) -> tuple[int, str]:
    with _quiet() as err:
        code = main(argv)
    text = err.getvalue()
    assert code in EXIT_CODES, (argv, code, text)
    assert "Traceback" not in text and "internal error" not in text, (argv, text)
    if code == 2:
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("error: "), (argv, text)
    return code, text


def _path(ws, name: str) -> str:
    return str(ws / name) if not name.startswith(("/", "~")) and name not in ("", ".") else name


def _fresh(ws) -> str:
    return str(ws / "out" / f"o{next(_counter)}")


# ---------------------------------------------------------------------------------------------- run
RUN_VALUES = {
    "--model": st.sampled_from(["tiny-neox", "tiny-neo", "", " ", "nosuch", "org/not-cached", ".", "x.gguf",
                                "@good.csv", "@folder", "~/nope"]),
    "--hypothesis": st.lists(st.sampled_from(["none", "numerics", "position", "sinks", "handling", "dilution",
                                              "eval-bias", "numerix", "memry", ""]), min_size=1, max_size=3),
    "--max-tokens": st.lists(SMALL_OR_HUGE | JUNK, min_size=1, max_size=2),
    "--num-samples": (st.integers(-2, 3) | st.integers(10**6, 10**25)).map(str) | JUNK,
    "--trained-context": ANY_INT | JUNK,
    "--text": st.sampled_from(["@folder", "@empty.txt", "@short.txt", "@binary.txt", "@bad.jsonl",
                               "@good.jsonl", "@missing.txt", ""]),
    "--method": st.sampled_from(["streaming_llm", "window", "full", "recompute", "streaming", ""]) | TEXT,
    "--sink-size": ANY_INT | JUNK,
    "--recent-size": ANY_INT | JUNK,
    "--position-mode": st.sampled_from(["in-cache", "absolute", "naive", "relative", ""]),
    "--engine": st.sampled_from(["auto", "stepwise", "batched", "parallel", "recompute", "warp"]),
    "--chunk-size": ANY_INT | JUNK,
    "--device": st.sampled_from(["auto", "cpu", "cuda", "mps", "tpu", ""]),
    "--dtype": st.sampled_from(["auto", "float32", "float16", "bfloat16", "float8", ""]),
    "--seed": ANY_INT | JUNK,
    "--stepwise-tokens": ANY_INT | JUNK,
    "--probes": st.sampled_from(["none", "all", "attention", "cache,process", "all,cache", "bogus", ",,"]),
    "--out": st.sampled_from(["@complete-run", "@good.csv", "", "/proc/version/x", "@folder/sub"]),
    "--resume": st.sampled_from(["@complete-run", "@corrupt-run", "@wrong-run", "@folder", "@missing", "@good.csv"]),
    "--frobnicate": st.just(["x"]),
}


def _flag_args(ws, flag: str, value) -> list[str]:
    values = value if isinstance(value, list) else [value]
    return [flag, *[_path(ws, v[1:]) if v.startswith("@") else v for v in values]]


FLAG_VALUE = st.sampled_from(sorted(RUN_VALUES)).flatmap(lambda f: st.tuples(st.just(f), RUN_VALUES[f]))


@fuzz_settings(70)
@given(flags=st.lists(FLAG_VALUE, max_size=4))
def test_fuzz_run_flags(ws, flags):
    argv = ["run", "--model", "tiny-neox", "--max-tokens", "24", "--hypothesis", "none", "--recent-size", "8",
            "--out", _fresh(ws)]
    for flag, value in flags:
        argv += _flag_args(ws, flag, value)
    run_main(argv)


# ---------------------------------------------------------------------------------------------- report
@fuzz_settings(25)
@given(dirs=st.lists(st.sampled_from(["@complete-run", "@corrupt-run", "@wrong-run", "@folder", "@missing",
                                      "@good.csv", ""]) | TEXT, min_size=0, max_size=3),
       out=st.none() | st.sampled_from(["@r.html", "@folder", "", "/proc/version/r.html", "@nodir/x/r.html"]),
       extra=st.lists(st.sampled_from(["--frobnicate", "--out"]), max_size=1))
def test_fuzz_report(ws, dirs, out, extra):
    argv = ["report", *[_path(ws, d[1:]) if d.startswith("@") else d for d in dirs]]
    if out is not None:
        argv += ["--out", _path(ws, out[1:]) if out.startswith("@") else out]
    run_main(argv + extra)


# ---------------------------------------------------------------------------------------------- check
CHECK_VALUES = {
    "--model": st.sampled_from(["tiny-neox", "nosuch", "", "@folder"]),
    "--max-tokens": SMALL_OR_HUGE | JUNK,
    "--num-samples": st.integers(-2, 3).map(str) | JUNK,
    "--method": st.sampled_from(["streaming_llm", "window", "full", "recompute", "bogus"]),
    "--sink-size": st.integers(-3, 40).map(str) | JUNK,
    "--recent-size": st.integers(-3, 80).map(str) | JUNK,
    "--position-mode": st.sampled_from(["in-cache", "absolute", "naive", "bogus"]),
    "--scorer": st.sampled_from(["x", "nosuch_module:fn", "/nonexistent.py:f", "@good.csv:f", "::", "a:1b"]),
    "--only": st.lists(st.sampled_from(["accounting", "nothing*", "bogus"]) | TEXT.filter(
        lambda t: not any(c in t for c in "*?[") and t.split(".")[0] not in
        ("engines", "cache", "probes", "reproducibility", "numerics", "scorer")), min_size=1, max_size=2),
    "--tolerance": st.sampled_from(["0", "-1", "nan", "inf", "1e-4", "abc", "1e400"]),
    "--json": st.sampled_from(["@folder", "@nodir/x.json", "@c.json", ""]),
    "--junit": st.sampled_from(["@folder", "@nodir/x.xml", "@c.xml"]),
    "--device": st.sampled_from(["cpu", "cuda", "tpu"]),
    "--dtype": st.sampled_from(["float32", "bfloat16", "float8"]),
    "--seed": ANY_INT | JUNK,
}
CHECK_FLAG = st.sampled_from(sorted(CHECK_VALUES)).flatmap(lambda f: st.tuples(st.just(f), CHECK_VALUES[f]))


@fuzz_settings(40)
@given(flags=st.lists(CHECK_FLAG, max_size=3))
def test_fuzz_check_flags(ws, flags):
    argv = ["check", "--only", "accounting", "--max-tokens", "80", "--recent-size", "20"]
    for flag, value in flags:
        argv += _flag_args(ws, flag, value)
    if "--only" in dict(flags):  # keep the suite cheap: a valid --only still selects accounting only
        argv += ["--only", "accounting"]
    run_main(argv)


# ---------------------------------------------------------------------------------------------- import
IMPORT_VALUES = {
    "--baseline": st.sampled_from(["@good.csv", "@good.jsonl", "@folder", "@missing.csv", "@empty.txt", "@x.parquet"]),
    "--method": st.sampled_from(["@good2.csv", "@good.csv", "@bad.jsonl", "@missing.tsv"]),
    "--method-label": st.sampled_from(["full", "", "stream"]) | TEXT,
    "--nll-col": st.sampled_from(["nll", "NLL", "pos", "missing", ""]) | TEXT,
    "--pos-col": st.sampled_from(["pos", "nll", "missing"]) | TEXT,
    "--sample-col": st.sampled_from(["pos", "missing"]) | TEXT,
    "--memory-col": st.sampled_from(["pos", "missing"]),
    "--latency-col": st.sampled_from(["pos", "missing"]),
    "--correct-col": st.sampled_from(["pos", "missing"]),
    "--memory-unit": st.sampled_from(["B", "MiB", "gb", "XB", ""]),
    "--trained-context": ANY_INT | JUNK,
    "--model-config": st.sampled_from(["@config.json", "@notjson.json", "@folder", "@missing", "org/none", ""]),
    "--out": st.sampled_from(["@complete-run", "@good.csv", "", "/proc/version/x"]),
}
IMPORT_FLAG = st.sampled_from(sorted(IMPORT_VALUES)).flatmap(lambda f: st.tuples(st.just(f), IMPORT_VALUES[f]))


@fuzz_settings(50)
@given(flags=st.lists(IMPORT_FLAG, max_size=4))
def test_fuzz_import_flags(ws, flags):
    argv = ["import", "--baseline", str(ws / "good.csv"), "--method", str(ws / "good2.csv"), "--out", _fresh(ws)]
    for flag, value in flags:
        argv += _flag_args(ws, flag, value)
    run_main(argv)


COLUMNS = ["nll", "loss", "pos", "position", "token", "sample", "doc", "memory", "latency", "time", "correct",
           "acc", "text", ""]
CELL = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-3, 200), st.booleans(),
                 st.sampled_from(["", " ", "nan", "inf", "-inf", "true", "1e309", "-0", "0x1", "1,5", '"']), TEXT)


@st.composite
def log_file(draw):
    """(suffix, content) of a random per-token log: mostly well-formed rows with random defects."""
    columns = draw(st.lists(st.sampled_from(COLUMNS) | TEXT, min_size=1, max_size=5))
    n = draw(st.integers(0, 30))
    kind = draw(st.sampled_from([".csv", ".tsv", ".jsonl"]))
    rows = []
    for i in range(n):
        row = {}
        for c in columns:
            if c in ("pos", "position") and draw(st.booleans()):
                row[c] = i
            elif c in ("nll", "loss") and draw(st.booleans()):
                row[c] = round(1 + (i % 7) / 10, 3)
            else:
                row[c] = draw(CELL)
        rows.append(row)
    if kind == ".jsonl":
        lines = [json.dumps(r) for r in rows]  # NaN/Infinity tokens included (json allows them on read)
        if draw(st.booleans()) and lines:
            lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["[1]", "{", "null", '"x"', ""])))
        return kind, "\n".join(lines)
    sep = "\t" if kind == ".tsv" else ","
    lines = [sep.join(columns)] + [sep.join(str(r[c]) for c in columns) for r in rows]
    if draw(st.booleans()) and len(lines) > 1:
        lines[draw(st.integers(1, len(lines) - 1))] += sep + "extra"
    return kind, ("\ufeff" if draw(st.booleans()) else "") + "\n".join(lines)


@fuzz_settings(60)
@given(base=log_file(), meth=log_file() | st.none(), extra=st.lists(IMPORT_FLAG.filter(
    lambda f: f[0] not in ("--baseline", "--method", "--out")), max_size=1))
def test_fuzz_import_reader(ws, base, meth, extra):
    i = next(_counter)
    paths = []
    for role, (suffix, content) in (("b", base), ("m", meth or base)):
        p = ws / f"log{i}{role}{suffix}"
        p.write_text(content, encoding="utf-8")
        paths.append(str(p))
    argv = ["import", "--baseline", paths[0], "--method", paths[1], "--out", _fresh(ws)]
    for flag, value in extra:
        argv += _flag_args(ws, flag, value)
    run_main(argv)


# ---------------------------------------------------------------------------------------------- results.json
OTHER_TYPES = {"null": None, "bool": True, "int": 7, "negative": -3, "float": 2.5, "huge": 1e308,
               "str": "x[/]\x1b]52;c;AA\x07", "list": [1, "a"], "dict": {"a": [None]}}
"""A value of each JSON type (and two numbers a type check alone misses) put in place of a field."""


def _type_of(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "int" if isinstance(value, int) else "float"
    return {str: "str", list: "list", dict: "dict"}[type(value)]


def _field_paths(data) -> list[tuple]:
    """One path per field of ``data``: list entries count once per pattern (``runs[*].nll_mean``), at the
    first entry that has it."""
    seen: dict[str, tuple] = {}

    def walk(x, path: tuple, pattern: str) -> None:
        if path:
            seen.setdefault(pattern, path)
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, path + (k,), f"{pattern}.{k}")
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, path + (i,), f"{pattern}[*]")

    walk(data, (), "")
    return list(seen.values())


def _replaced(data, path: tuple, value):
    out = json.loads(json.dumps(data))
    node = out
    for p in path[:-1]:
        node = node[p]
    node[path[-1]] = value
    return out


@pytest.fixture(scope="module")
def saved_runs(ws):
    """results.json of a tiny run with verdicts (every section a run writes) and of an import."""
    run, imported = ws / "typed-run", ws / "typed-import"
    with _quiet():
        assert main(["run", "--model", "tiny-neox", "--hypothesis", "numerics", "sinks", "handling", "eval-bias",
                     "--max-tokens", "24", "--recent-size", "8", "--out", str(run)]) == 0
        assert main(["import", "--baseline", str(ws / "good.csv"), "--method", str(ws / "good2.csv"),
                     "--out", str(imported)]) == 0
    return {"run": run, "import": imported}


@pytest.mark.parametrize("which", ["run", "import"])
def test_fuzz_results_json_types(ws, saved_runs, monkeypatch, which):
    """Every field of a saved results.json replaced by values of other types: ``report`` renders it or ends
    in ``error:`` lines, never a traceback or an internal error. Figures are built (their specs) but not
    drawn. ``ANOMALY_PROBE_FUZZ_SCALE`` > 1 tries every other type at every field (else two per field)."""
    from anomaly_probe.reports.render import Rendered

    def not_drawn(report, out_dir, prefix=""):
        return {f.id: Rendered(error="not drawn") for f in report.figures()}

    monkeypatch.setattr("anomaly_probe.reports.write.render_figures", not_drawn)
    src = saved_runs[which]
    data = json.loads((src / "results.json").read_text())
    folder = ws / f"fuzzed-{which}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(src, folder)
    names = sorted(OTHER_TYPES)
    failures, cases = [], 0
    for n, path in enumerate(_field_paths(data)):
        node = data
        for p in path:
            node = node[p]
        others = [k for k in names if k != _type_of(node)]
        picked = others if SCALE > 1 else [others[n % len(others)], others[(n + 3) % len(others)]]
        for kind in picked:
            (folder / "results.json").write_text(json.dumps(_replaced(data, path, OTHER_TYPES[kind])))
            with _quiet() as err:
                code = main(["report", str(folder)])
            cases += 1
            text = err.getvalue()
            lines = [line for line in text.splitlines() if line.strip()]
            ok = code == 0 or (code == 2 and lines and all(line.startswith("error: ") for line in lines))
            if not ok or "Traceback" in text or "internal error" in text:
                failures.append(f"{'.'.join(map(str, path))} = {kind}: exit {code}: {text.strip()[:200]}")
    assert cases > 100
    assert not failures, f"{len(failures)} of {cases} cases:\n" + "\n".join(failures[:40])
