"""``anomaly-probe import`` of logs as other tools write them, aligned when they cover different tokens,
and ``anomaly-probe export`` of a run folder read back by ``import``.

Each layout is written here as its script writes it (attention_sinks ``benchmark/perplexity.py``:
``input_length,nll,ppl,overall_ppl,cuda_vram_allocated,latency``; streaming-llm ``eval_long_ppl.py``:
``log.txt`` with one NLL per line).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from anomaly_probe.cli import main
from anomaly_probe.errors import UserError
from anomaly_probe.importer.formats import detect, read_one
from synthetic_run import write_synthetic_run

TC = 1024  # trained context of the synthetic logs (8 blocks inside it: a bootstrap needs both sides)
N = 4096  # tokens the method's log scores
DENSE = 3000  # tokens the dense log scores before it "runs out of memory" (23 bootstrap blocks of 128)


def nll_pair(seed: int = 0, break_at: int = TC):
    """Per-token NLL of the method and the dense baseline, indexed by query position; the baseline is
    0.6 nats worse from position ``break_at`` on."""
    rng = np.random.default_rng(seed)
    m = np.abs(3.0 + rng.normal(0, 0.3, N))
    b = m + 0.02 + 0.6 * (np.arange(N) >= break_at) + rng.normal(0, 0.1, N)
    return np.abs(b), m


def write_attention_sinks(path: Path, nll: np.ndarray, gib: np.ndarray, latency: np.ndarray,
                          data_idx: np.ndarray | None = None, memory_col: str = "cuda_vram_allocated") -> Path:
    """A benchmark CSV as ``pd.DataFrame(logs).to_csv(index=False)`` writes it: row ``idx`` has
    ``input_length = idx + 1`` and the NLL of token ``idx + 1``."""
    cols = (["data_idx"] if data_idx is not None else []) + ["input_length", "nll", "ppl", "overall_ppl",
                                                             memory_col, "latency"]
    lines = [",".join(cols)]
    run = 0.0
    for idx, x in enumerate(nll):
        run += x
        first = [str(int(data_idx[idx]))] if data_idx is not None else []
        length = idx + 1 if data_idx is None else int(np.sum(data_idx[:idx] == data_idx[idx])) + 1
        lines.append(",".join(first + [str(length), repr(float(x)), repr(math.exp(x)), repr(math.exp(run / (idx + 1))),
                                       repr(float(gib[idx])), repr(float(latency[idx]))]))
    path.write_text("\n".join(lines) + "\n")
    return path


def write_log_txt(path: Path, nll: np.ndarray) -> Path:
    """streaming-llm's log.txt: ``print(neg_log_likelihood.item(), file=f)`` per scored token."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{float(x)}\n" for x in nll))
    return path


def run_cli(capsys, args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def verdict(res: dict, name: str) -> dict:
    return next(v for v in res["verdicts"] if v["hypothesis"] == name)


# ----------------------------------------------------------------------------------------- attention_sinks
def test_attention_sinks_csvs_with_a_shorter_dense_log_are_aligned_and_diagnosed(tmp_path, capsys):
    b, m = nll_pair()
    pos = np.arange(N)
    dense = write_attention_sinks(tmp_path / "transformers.csv", b[:DENSE], 12.5 + 1e-4 * pos[:DENSE],
                                  0.02 + 1e-5 * pos[:DENSE])  # latency grows with the cache: not a running clock
    sinks = write_attention_sinks(tmp_path / "attention_sinks.csv", m, np.full(N, 12.5), np.full(N, 0.02))
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["import", "--baseline", dense, "--method", sinks, "--trained-context", TC,
                                      "--out", out_dir])
    assert code == 0, err
    assert (f"aligned: kept {DENSE} of the {N} (sample, position) pairs; the baseline log stops at position "
            f"{DENSE - 1} in sample '0' ({N - DENSE} dropped from {sinks})") in out
    res = results(out_dir)
    al = res["alignment"]
    assert al["tokens_kept"] == DENSE and al["tokens_total"] == N and al["samples_kept"] == 1
    assert al["dropped"] == [{"file": str(sinks), "role": "method", "sample": "0", "tokens": N - DENSE,
                              "first_position": DENSE, "last_position": N - 1}]
    assert al["samples_only_in"] == {}
    assert res["config"]["formats"] == {"baseline": "attention-sinks", "method": "attention-sinks"}
    pos_v = verdict(res, "position")
    assert pos_v["status"] == "supported", pos_v["message"]
    assert abs(pos_v["evidence"]["changepoint"] - TC) <= 0.25 * TC  # input_length - 1 is the query position
    assert res["comparisons"][0]["tokens_scored"] == DENSE
    assert res["comparisons"][0]["nll_gap_mean"] == pytest.approx(float((b[:DENSE] - m[:DENSE]).mean()))
    base_run = next(r for r in res["runs"] if r["method"] == "full")
    assert base_run["peak_rss_bytes"] == pytest.approx((12.5 + 1e-4 * (DENSE - 1)) * 2**30)  # GB (1024**3) -> bytes
    with np.load(out_dir / base_run["tokens_file"]) as z:
        np.testing.assert_array_equal(z["query_pos"], np.arange(DENSE))
    with np.load(out_dir / base_run["trace_file"]) as z:
        np.testing.assert_allclose(z["process.step_seconds"], 0.02 + 1e-5 * pos[:DENSE])  # per token as written
    assert "running clock" not in out
    html = (out_dir / "report.html").read_text()
    assert f"The imported logs were aligned: kept {DENSE} of the {N}" in html


def test_attention_sinks_fork_with_samples_and_hpu_memory(tmp_path, capsys):
    """Forks add ``data_idx`` (the sample) and write ``hpu_ram_allocated``; input_length restarts per sample."""
    rng = np.random.default_rng(1)
    n = 300
    ids = np.repeat([1, 2], n)
    m = np.abs(3 + rng.normal(0, 0.3, 2 * n))
    b = m + 0.1
    mem = np.full(2 * n, 2.0)
    lat = np.full(2 * n, 0.05)
    dense = write_attention_sinks(tmp_path / "dense.csv", b, mem, lat, ids, "hpu_ram_allocated")
    sinks = write_attention_sinks(tmp_path / "sinks.csv", m, mem, lat, ids, "hpu_ram_allocated")
    code, out, err = run_cli(capsys, ["import", "--baseline", dense, "--method", sinks, "--out", tmp_path / "run"])
    assert code == 0, err
    res = results(tmp_path / "run")
    assert [r["sample_id"] for r in res["runs"] if r["method"] == "full"] == ["1", "2"]
    assert res["comparisons"][0]["num_samples"] == 2 and res["comparisons"][0]["tokens_scored"] == 2 * n
    assert res["runs"][0]["peak_rss_bytes"] == pytest.approx(2 * 2**30)
    assert "alignment" in res and res["alignment"]["dropped"] == [] and "aligned:" not in out


# ----------------------------------------------------------------------------------------- streaming-llm
def test_streaming_llm_log_txt_pair_is_diagnosed(tmp_path, capsys):
    b, m = nll_pair(seed=2)
    dense = write_log_txt(tmp_path / "dense" / "log.txt", b[:DENSE])
    stream = write_log_txt(tmp_path / "streaming" / "log.txt", m)
    out_dir = tmp_path / "run"
    code, out, err = run_cli(capsys, ["import", "--baseline", dense, "--method", stream, "--trained-context", TC,
                                      "--out", out_dir])
    assert code == 0, err
    assert "streaming-llm log.txt" in out and "so the file is one sample" in out
    assert f"the baseline log stops at position {DENSE - 1} in sample '0' ({N - DENSE} dropped from {stream})" in out
    res = results(out_dir)
    assert res["config"]["formats"] == {"baseline": "streaming-llm", "method": "streaming-llm"}
    assert res["method"]["label"] == "streaming (imported)"  # log.txt: named after its folder
    assert res["alignment"]["tokens_kept"] == DENSE
    assert verdict(res, "position")["status"] == "supported", verdict(res, "position")["message"]
    run = next(r for r in res["runs"] if r["method"] == "full")
    with np.load(out_dir / run["tokens_file"]) as z:
        np.testing.assert_array_equal(z["query_pos"], np.arange(DENSE))  # line k: query position k
        np.testing.assert_allclose(z["nll"], b[:DENSE])


def test_several_files_per_role_pair_in_order(tmp_path, capsys):
    """Files without a sample column: the k-th baseline file pairs with the k-th method file."""
    rng = np.random.default_rng(4)
    paths = {"b": [], "m": []}
    for k in range(2):
        m = np.abs(3 + rng.normal(0, 0.3, 200))
        paths["b"].append(write_log_txt(tmp_path / f"dense{k}" / "log.txt", m + 0.2 * (k + 1)))
        paths["m"].append(write_log_txt(tmp_path / f"sink{k}" / "log.txt", m))
    code, out, err = run_cli(capsys, ["import", "--baseline", *paths["b"], "--method", *paths["m"],
                                      "--out", tmp_path / "run"])
    assert code == 0, err
    res = results(tmp_path / "run")
    assert res["comparisons"][0]["nll_gap_mean"] == pytest.approx(0.3)
    assert [r["source_file"] for r in res["runs"]] == [str(p) for pair in zip(paths["b"], paths["m"]) for p in pair]


# ----------------------------------------------------------------------------------------- detection
def test_detection_rules(tmp_path):
    def det(name, text):
        p = tmp_path / name
        p.write_text(text)
        return detect(str(p))

    assert det("a.csv", "input_length,nll,ppl,overall_ppl,cuda_vram_allocated,latency\n1,2,7,7,0,0.1\n") \
        == "attention-sinks"
    assert det("results", "input_length,nll,ppl,overall_ppl\n1,2,7,7\n") == "attention-sinks"  # no extension
    assert det("a.csv", "input_length,nll\n1,2\n") == "csv"  # generic recognition unchanged
    assert det("a.tsv", "step\tnll\n0\t2\n") == "tsv"
    assert det("a.jsonl", '{"nll": 1}\n') == "jsonl"
    assert det("log.txt", "2.5\n3.25\n\n") == "streaming-llm"
    assert det("x.log", "1e-3\n") == "streaming-llm"
    assert det("e.csv", "# anomaly-probe per-token log v1 {}\nsample,position,nll\n0,1,2\n") == "ours"
    with pytest.raises(UserError, match="not a streaming-llm log.txt"):
        det("table.txt", "step,nll\n0,1\n")
    with pytest.raises(UserError, match="unknown extension '.xlsx'"):
        det("a.xlsx", "nll\n1\n")


def test_forced_format_reads_as_told(tmp_path):
    """``--format csv`` reads an attention_sinks CSV as a generic table: input_length is the position as is."""
    b, _ = nll_pair()
    p = write_attention_sinks(tmp_path / "t.csv", b[:50], np.zeros(50), np.full(50, 0.1))
    explicit = dict.fromkeys(("nll", "position", "sample", "memory", "latency", "correct"))
    generic = read_one(str(p), "csv", explicit, None)
    known = read_one(str(p), "auto", explicit, None)
    assert generic.format == "csv" and known.format == "attention-sinks"
    assert generic.samples[0].position[0] == 1 and known.samples[0].position[0] == 0
    assert generic.samples[0].memory is None and known.samples[0].memory is not None


# ----------------------------------------------------------------------------------------- errors
def _bad(tmp: Path) -> list[tuple[list, str]]:
    _, m = nll_pair()
    sinks = write_attention_sinks(tmp / "attention_sinks.csv", m[:100], np.zeros(100), np.full(100, 0.1))
    txt = write_log_txt(tmp / "s" / "log.txt", m[:100])
    dup = tmp / "dup.csv"
    dup.write_text(sinks.read_text() + "100,2.0,7.4,7.4,0.0,0.1\n")  # input_length 100 twice
    named = tmp / "named.csv"
    named.write_text("sample,position,nll\n" + "".join(f"a,{i},2.0\n" for i in range(100)))
    disjoint = tmp / "disjoint.csv"
    disjoint.write_text("input_length,nll,ppl,overall_ppl\n" + "".join(f"{i},2,7,7\n" for i in range(500, 520)))
    return [
        (["--baseline", sinks, "--method", txt, "--format", "attention-sinks"],
         "is not an attention_sinks benchmark CSV: no column(s) input_length, nll, overall_ppl"),
        (["--baseline", sinks, "--method", sinks, "--format", "streaming-llm"], "is not a streaming-llm log.txt"),
        (["--baseline", txt, "--method", txt, "--format", "ours"], "is not an anomaly-probe per-token log"),
        (["--baseline", sinks, "--method", sinks, "--format", "jsonl"], "line 1: not valid JSON"),
        (["--baseline", sinks, "--method", sinks, "--format", "excel"], "--format 'excel': use one of auto"),
        (["--baseline", dup, "--method", sinks], "sample '0' has input_length 100 twice"),
        (["--baseline", disjoint, "--method", sinks], "the logs share no (sample, position) pair"),
        (["--baseline", txt, "--method", txt, "--nll-col", "nll"], "column flags (--nll ...) do not apply"),
        (["--baseline", named, named, "--method", sinks], "sample 'a' is in both"),
    ]


def test_bad_inputs_are_one_line_and_exit_2(tmp_path, capsys):
    for args, message in _bad(tmp_path):
        code, out, err = run_cli(capsys, ["import", *args, "--out", tmp_path / "run"])
        assert code == 2, (args, out, err)
        assert err.startswith("error:") and err.count("\n") == 1, err
        assert message in err, (message, err)
        assert not (tmp_path / "run" / "results.json").exists()


def test_logs_that_start_later_or_miss_samples_are_aligned(tmp_path, capsys):
    rng = np.random.default_rng(5)
    base, meth = ["sample,position,nll"], ["sample,position,nll"]
    for s in ("a", "b"):
        for i in range(300):
            x = 3 + rng.normal(0, 0.2)
            meth.append(f"{s},{i},{x}")
            if i >= 20:  # the baseline log starts at position 20
                base.append(f"{s},{i},{x + 0.1}")
    meth += [f"c,{i},3.0" for i in range(40)]  # a sample the baseline never scored
    (tmp_path / "b.csv").write_text("\n".join(base) + "\n")
    (tmp_path / "m.csv").write_text("\n".join(meth) + "\n")
    code, out, err = run_cli(capsys, ["import", "--baseline", tmp_path / "b.csv", "--method", tmp_path / "m.csv",
                                      "--out", tmp_path / "run"])
    assert code == 0, err
    al = results(tmp_path / "run")["alignment"]
    assert al["tokens_kept"] == 2 * 280 and al["tokens_total"] == 2 * 300 + 40 and al["samples_kept"] == 2
    assert al["samples_only_in"] == {str(tmp_path / "m.csv"): ["c"]}
    assert {(d["sample"], d["tokens"]) for d in al["dropped"]} == {("a", 20), ("b", 20), ("c", 40)}
    assert "the baseline log starts at position 20 in sample 'a'" in out
    assert "sample(s) 'c' only in the method log (40 tokens dropped)" in out


# ----------------------------------------------------------------------------------------- export
def _roles(res: dict, L: int) -> tuple[list[dict], list[dict]]:
    plain = [r for r in res["runs"] if r["intervention"] == "none" and r["max_tokens"] == L]
    base = [r for r in plain if r["method"] == "full" and r["engine"] != "stepwise"]
    meth = [r for r in plain if r["label"] == res["method"]["label"] and r["method"] != "full"]
    return sorted(base, key=lambda r: r["sample"]), sorted(meth, key=lambda r: r["sample"])


def test_export_then_import_reproduces_the_comparison(tmp_path, capsys):
    run_dir = tmp_path / "run"
    code, _, err = run_cli(capsys, ["run", "--model", "tiny-neox", "--hypothesis", "none", "--max-tokens", 150,
                                    "--num-samples", 2, "--recent-size", 28, "--probes", "none", "--out", run_dir])
    assert code == 0, err
    code, out, err = run_cli(capsys, ["export", run_dir])
    assert code == 0, err
    res = results(run_dir)
    base, meth = _roles(res, 150)
    files = {r["key"]: run_dir / "export" / f"{r['key']}.csv" for r in res["runs"]}
    assert all(p.is_file() for p in files.values()) and len(files) == len(res["runs"])
    first = files[base[0]["key"]].read_text().splitlines()
    assert first[0].startswith("# anomaly-probe per-token log v1 {")
    meta = json.loads(first[0].split(" ", 5)[5])
    assert meta["role"] == "baseline" and meta["trained_context"] == 128 and meta["max_tokens"] == 150
    assert first[1] == "sample,position,nll,correct,query_pos,n_keys"
    assert first[2].startswith("0,1,")  # entry 0 scores token 1
    assert "re-import the baseline and method: anomaly-probe import --baseline" in out

    again = tmp_path / "again"
    code, out, err = run_cli(capsys, ["import", "--baseline", *(files[r["key"]] for r in base),
                                      "--method", *(files[r["key"]] for r in meth), "--out", again])
    assert code == 0, err
    res2 = results(again)
    assert res2["model"]["trained_context"] == 128  # from the exported header, no flag needed
    assert res2["method"]["label"] == res["method"]["label"]
    c1, c2 = res["comparisons"][0], res2["comparisons"][0]
    for k in ("max_tokens", "num_samples", "tokens_scored", "baseline_ppl", "method_ppl", "baseline_acc",
              "method_acc", "nll_gap_mean", "acc_diff"):
        assert c2[k] == pytest.approx(c1[k], rel=1e-12, abs=1e-15), k
    assert res2["alignment"]["dropped"] == []

    # an imported run exports the positions it was imported with, and reads back the same
    code, _, err = run_cli(capsys, ["export", again, "--out", tmp_path / "exp2"])
    assert code == 0, err
    exported = sorted((tmp_path / "exp2").glob("*.csv"))
    b2 = [p for p in exported if "-baseline-" in p.name]
    m2 = [p for p in exported if "-method-" in p.name]
    code, _, err = run_cli(capsys, ["import", "--baseline", *b2, "--method", *m2, "--out", tmp_path / "third"])
    assert code == 0, err
    c3 = results(tmp_path / "third")["comparisons"][0]
    assert c3["nll_gap_mean"] == pytest.approx(c1["nll_gap_mean"], rel=1e-12)
    assert c3["tokens_scored"] == c1["tokens_scored"]


def test_export_of_an_aligned_import_keeps_positions(tmp_path, capsys):
    b, m = nll_pair(seed=7)
    later = tmp_path / "b.csv"
    later.write_text("position,nll\n" + "".join(f"{i},{b[i]}\n" for i in range(100, 400)))
    meth = tmp_path / "m.csv"
    meth.write_text("position,nll\n" + "".join(f"{i},{m[i]}\n" for i in range(400)))
    assert main(["import", "--baseline", str(later), "--method", str(meth), "--out", str(tmp_path / "run")]) == 0
    assert main(["export", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    rows = (tmp_path / "run" / "export" / "L301-s0-baseline-imported.csv").read_text().splitlines()
    assert rows[2].split(",")[:2] == ["0", "101"]  # query position 100 scores token 101


def test_export_needs_no_torch(tmp_path):
    """Like ``report`` and ``import``, ``export`` runs without loading torch."""
    import subprocess
    import sys

    run_dir = write_synthetic_run(tmp_path / "run", lengths=(300,), samples=1, traces=False)
    code = ("import sys; from anomaly_probe.cli import main; "
            f"rc = main(['export', {str(run_dir)!r}]); print(rc, 'torch' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.stdout.strip().splitlines()[-1] == "0 False", res.stdout + res.stderr
    assert len(list((run_dir / "export").glob("*.csv"))) == 6
