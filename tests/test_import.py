"""``anomaly-probe import``: synthetic per-token logs with a planted break, without one, and malformed files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from anomaly_probe.cli import main

TC = 256  # trained context of the synthetic logs
N = 1024  # tokens per sample


def _ar(rng, n, scale):
    e = rng.normal(0, scale, n)
    out, acc = np.empty(n), 0.0
    for i in range(n):
        acc = 0.8 * acc + e[i]
        out[i] = acc
    return out


def synthetic(break_at: int | None, samples: int = 2, seed: int = 0):
    """Rows of a baseline and a method log; the baseline is 0.6 nats/token worse from ``break_at`` on."""
    rng = np.random.default_rng(seed)
    base, meth = [], []
    for s in range(samples):
        pos = np.arange(N)
        m = 3.0 + _ar(rng, N, 0.3)
        b = m + 0.02 + (0.6 * (pos >= break_at) if break_at is not None else 0.0) + _ar(rng, N, 0.1)
        for i in range(N):
            common = {"sample_id": f"doc{s}", "step": int(pos[i])}
            base.append({**common, "nll": float(b[i]), "mem_bytes": 1e8 + 1e5 * i, "latency": 0.01})
            meth.append({**common, "nll": float(m[i]), "mem_bytes": 1e8, "latency": 0.01})
    return base, meth


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_cli(capsys, args):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def verdict(run_dir: Path, name: str) -> dict:
    res = json.loads((run_dir / "results.json").read_text())
    return next(v for v in res["verdicts"] if v["hypothesis"] == name)


def test_planted_break_supports_position_and_writes_a_report(tmp_path, capsys):
    base, meth = synthetic(break_at=TC)
    b, m = write_csv(tmp_path / "base.csv", base), write_jsonl(tmp_path / "stream.jsonl", meth)
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--trained-context", str(TC),
                                      "--out", str(out_dir)])
    assert code == 0, err
    res = json.loads((out_dir / "results.json").read_text())
    assert res["schema_version"] == 1 and res["status"] == "complete"
    assert res["model"]["trained_context"] == TC
    assert {v["hypothesis"] for v in res["verdicts"]} == {"numerics", "dilution", "memory", "eval-bias", "position",
                                                          "handling", "sinks"}
    pos = verdict(out_dir, "position")
    assert pos["status"] == "supported", pos["message"]
    assert abs(pos["evidence"]["changepoint"] - TC) <= 0.25 * TC
    assert pos["ci_low"] > 0.5
    for name in ("numerics", "dilution", "handling", "sinks"):
        v = verdict(out_dir, name)
        assert v["status"] == "inconclusive" and f"anomaly-probe run --hypothesis {name}" in v["message"]
    mem = verdict(out_dir, "memory")
    assert mem["status"] == "inconclusive" and "--hypothesis memory" in mem["message"]
    assert mem["evidence"]["memory_column"] and mem["evidence"]["latency_column"]
    eb = verdict(out_dir, "eval-bias")
    assert eb["evidence"]["power"]["acc_diff"] is None and "accuracy unavailable" in eb["message"]
    assert eb["evidence"]["power"]["nll_significant"]
    assert len(res["runs"]) == 4 and {r["sample_id"] for r in res["runs"]} == {"doc0", "doc1"}
    for r in res["runs"]:
        with np.load(out_dir / r["tokens_file"]) as z:
            assert z["nll"].shape == (N,)
        assert (out_dir / r["trace_file"]).exists()
    assert res["comparisons"][0]["nll_gap_mean"] > 0.3
    assert "the logs point to positions beyond the trained context (est. share" in res["headline"]
    assert (out_dir / "report.html").exists() and any((out_dir / "figures").glob("*.png"))
    assert "report:" in out and "SUPPORTED" in out
    # one bootstrap: the report's gap CI is the headline's, and the headline names the catalog's title
    from anomaly_probe.hypotheses.catalog import title
    from anomaly_probe.reports import intervals
    from anomaly_probe.reports.build import build_report
    from anomaly_probe.reports.rundata import load_run
    from anomaly_probe.reports.tree import Table, walk

    assert f"the logs point to {title('position')}" in res["headline"]
    data = load_run(out_dir)
    L = res["comparisons"][0]["max_tokens"]
    start, _ = intervals.region_start(data, L)  # the headline's tokens: past the trained context
    assert start == TC
    g = intervals.gap_with_ci(intervals.paired_gaps(data, L), intervals.run_thresholds(data), start)
    assert f"by {g['mean']:.3f} nats/token (95% CI {g['ci_low']:.3f}..{g['ci_high']:.3f})" in res["headline"]
    table = next(b for b in walk(build_report(data).sections) if isinstance(b, Table) and b.title.startswith("Baseline"))
    assert table.rows[0][8].text.startswith(f"{g['mean']:+.4f} [{g['ci_low']:+.4f}, {g['ci_high']:+.4f}] on positions {TC + 1}-")


@pytest.mark.parametrize("gap", [0.0, 0.3])
def test_no_break_does_not_support_position(tmp_path, capsys, gap):
    base, meth = synthetic(break_at=None)
    for r in base:
        r["nll"] += gap  # a uniform gap: the method is better everywhere, not past the trained context
    b, m = write_csv(tmp_path / "b.csv", base), write_csv(tmp_path / "m.csv", meth)
    code, _, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--trained-context", str(TC),
                                    "--out", str(tmp_path / "run")])
    assert code == 0, err
    assert verdict(tmp_path / "run", "position")["status"] in ("refuted", "inconclusive")


def test_break_far_from_the_trained_context_is_not_supported(tmp_path, capsys):
    base, meth = synthetic(break_at=700)
    b, m = write_csv(tmp_path / "b.csv", base), write_csv(tmp_path / "m.csv", meth)
    code, _, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--trained-context", "128",
                                    "--out", str(tmp_path / "run")])
    assert code == 0, err
    v = verdict(tmp_path / "run", "position")
    assert v["status"] != "supported" and abs(v["evidence"]["changepoint"] - 700) <= 64


def test_trained_context_from_a_model_config_and_column_flags(tmp_path, capsys):
    base, meth = synthetic(break_at=TC, samples=1)
    rename = lambda rows: [{"t": r["step"], "loss_nats": r["nll"]} for r in rows]  # noqa: E731
    b, m = write_csv(tmp_path / "b.csv", rename(base)), write_csv(tmp_path / "m.csv", rename(meth))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text(json.dumps({"max_position_embeddings": TC}))
    code, _, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--nll-col", "loss_nats",
                                    "--pos-col", "t", "--model-config", str(tmp_path / "model"),
                                    "--method-label", "streaming_llm(4+252)", "--out", str(tmp_path / "run")])
    assert code == 0, err
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["model"]["trained_context"] == TC and res["config"]["trained_context_source"].endswith("config.json")
    assert res["method"]["label"] == "streaming_llm(4+252)"
    mem = verdict(tmp_path / "run", "memory")
    assert mem["status"] == "inconclusive" and "no memory or latency column" in mem["message"]


def test_without_a_trained_context_position_is_inconclusive(tmp_path, capsys):
    base, meth = synthetic(break_at=TC, samples=1)
    b, m = write_csv(tmp_path / "b.csv", base), write_csv(tmp_path / "m.csv", meth)
    code, _, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--out", str(tmp_path / "run")])
    assert code == 0, err
    v = verdict(tmp_path / "run", "position")
    assert v["status"] == "inconclusive" and "--trained-context" in v["message"]


# --------------------------------------------------------------------------- malformed input: exit 2, one line
GOOD = [{"step": i, "nll": 2.0 + 0.001 * i} for i in range(300)]


def _bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    good = write_csv(tmp / "good.csv", GOOD)
    cases = []

    def add(name: str, text: str, message: str, role: str = "method"):
        p = tmp / name
        p.write_text(text)
        args = ["--baseline", str(good), "--method", str(p)] if role == "method" else ["--baseline", str(p), "--method", str(good)]
        cases.append((args, message))

    add("nocol.csv", "step,value\n0,1.0\n1,2.0\n", "no NLL column")
    add("text.csv", "step,nll\n0,1.0\n1,abc\n", "'abc' is not a number")
    add("empty.csv", "", "is empty")
    add("header_only.csv", "step,nll\n", "is empty (no data rows)")
    add("empty.jsonl", "\n\n", "is empty")
    add("log.txt", "step,nll\n0,1\n", "not a streaming-llm log.txt (line 1 'step,nll' is not one number)")
    add("log.parquet", "PAR1", "unknown extension '.parquet'")
    add("badjson.jsonl", '{"step": 0, "nll": 1.0}\n{"step": 1, "nll": \n', "line 2: not valid JSON")
    add("list.jsonl", "[1, 2]\n", "expected a JSON object")
    add("neg.csv", "step,nll\n" + "".join(f"{i},-2.0\n" for i in range(300)), "NLL -2.0 < 0")
    add("nan.csv", "step,nll\n0,nan\n", "is not finite")
    add("dup.csv", "step,nll\n0,1.0\n0,1.0\n", "position 0 twice")
    add("frac.csv", "step,nll\n0.5,1.0\n", "not a whole number")
    add("ragged.csv", "step,nll\n0,1.0,7\n", "3 fields, the header has 2")
    add("other_sample.csv", "sample,step,nll\n" + "".join(f"x,{i},2.0\n" for i in range(300)), "the logs share no (sample, position) pair")
    cases.append((["--baseline", str(good), "--method", str(tmp / "missing.csv")], "no such file"))
    cases.append((["--baseline", str(good), "--method", str(good), "--nll-col", "zzz"], "--nll-col 'zzz' is not a column"))
    cases.append((["--baseline", str(good), "--method", str(good), "--model-config", str(tmp / "none.json")],
                  "no such file or folder"))
    (tmp / "cfg.json").write_text("{}")
    cases.append((["--baseline", str(good), "--method", str(good), "--model-config", str(tmp / "cfg.json")],
                  "has none of max_position_embeddings"))
    cases.append((["--baseline", str(good), "--method", str(good), "--memory-unit", "parsecs"], "--memory-unit"))
    cases.append((["--baseline", str(good)], "required"))
    return cases


def test_malformed_files_are_one_line_and_exit_2(tmp_path, capsys):
    for args, message in _bad_cases(tmp_path):
        code, out, err = run_cli(capsys, ["import", *args, "--out", str(tmp_path / "run")])
        assert code == 2, (args, out, err)
        assert message in err, (message, err)
        assert err.startswith("error:") and err.count("\n") == 1, err
        assert not (tmp_path / "run" / "results.json").exists()


def test_running_clock_latency_and_memory_units(tmp_path, capsys):
    base, meth = synthetic(break_at=TC, samples=1)
    for rows in (base, meth):
        for i, r in enumerate(rows):
            r["time"] = 100.0 + 0.01 * i  # a wall clock, not per-token latency
            r["mem_bytes"] = r.pop("mem_bytes") / 2**20
            r.pop("latency")
    b, m = write_jsonl(tmp_path / "b.jsonl", base), write_jsonl(tmp_path / "m.jsonl", meth)
    code, out, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--trained-context", str(TC),
                                      "--memory-unit", "MiB", "--out", str(tmp_path / "run")])
    assert code == 0, err
    assert "running clock" in " ".join(out.split())
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    base_run = next(r for r in res["runs"] if r["method"] == "full")
    assert base_run["peak_rss_bytes"] == pytest.approx(1e8 + 1e5 * (N - 1))
    with np.load(tmp_path / "run" / base_run["trace_file"]) as z:
        assert np.nanmedian(z["process.step_seconds"]) == pytest.approx(0.01)


def test_memory_supported_when_latency_jumps_with_the_gap(tmp_path, capsys):
    rng = np.random.default_rng(3)
    base, meth = [], []
    for i in range(N):
        m = 3.0 + rng.normal(0, 0.3)
        swap = i >= 600
        base.append({"step": i, "nll": m + (0.8 if swap else 0.0) + rng.normal(0, 0.05),
                     "vram": 1e9 + (5e8 if swap else 0) + 1e5 * i, "seconds": 0.5 if swap else 0.01})
        meth.append({"step": i, "nll": m, "vram": 1e9, "seconds": 0.01})
    b, m = write_csv(tmp_path / "b.csv", base), write_csv(tmp_path / "m.csv", meth)
    code, _, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--trained-context", "4096",
                                    "--out", str(tmp_path / "run")])
    assert code == 0, err
    mem = verdict(tmp_path / "run", "memory")
    assert mem["status"] == "supported", mem["message"]
    assert mem["evidence"]["swap_signature_at"] == 512 or abs(mem["evidence"]["swap_signature_at"] - 600) <= 128
    assert verdict(tmp_path / "run", "position")["status"] == "refuted"  # no position reaches 4096


def test_import_needs_no_torch(tmp_path):
    """Like ``report``, ``import`` runs without loading torch (fast, and fine on a machine without it)."""
    import subprocess
    import sys

    b = write_csv(tmp_path / "b.csv", GOOD)
    code = ("import sys; from anomaly_probe.cli import main; "
            f"rc = main(['import', '--baseline', {str(b)!r}, '--method', {str(b)!r}, '--out', {str(tmp_path / 'run')!r}]); "
            "print(rc, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip().splitlines()[-1] == "0 False", res.stdout + res.stderr


def test_import_ranks_and_headlines_like_run_and_saves_its_role_table(tmp_path, capsys):
    from anomaly_probe.ranking import rank
    from anomaly_probe.verdict import Verdict

    base, meth = synthetic(break_at=TC)
    b, m = write_csv(tmp_path / "b.csv", base), write_csv(tmp_path / "m.csv", meth)
    code, _, err = run_cli(capsys, ["import", "--baseline", str(b), "--method", str(m), "--trained-context", str(TC),
                                    "--out", str(tmp_path / "run")])
    assert code == 0, err
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    saved = [Verdict.from_dict(v) for v in res["verdicts"]]
    assert [v.hypothesis for v in saved] == [v.hypothesis for v in rank(saved)]
    assert [v.hypothesis for v in saved][-2:] == ["handling", "sinks"]  # method-side checks after the causes
    assert "In the imported logs" in res["headline"] and "the logs point to positions beyond the trained context " \
        "(est. share" in res["headline"] and "method-side checks: handling inconclusive" in res["headline"]
    roles = {e["role"]: e["units"] for e in res["roles"] if e["hypothesis"] == "none"}
    keys = {r["key"]: r for r in res["runs"]}
    assert [keys[k]["method"] for k in roles["baseline"]] == ["full", "full"]
    assert [keys[k]["method"] for k in roles["method"]] == ["imported", "imported"]
