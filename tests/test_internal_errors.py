"""Inputs that used to end as ``internal error`` (issue 17, item 11): a corrupt ``.gguf`` as ``--model``,
positions >= 2**63 in imported logs, and deeply nested JSON wherever a user's JSON is read. Each must be
one ``error:`` line and exit code 2."""

from __future__ import annotations

import json

import pytest

from anomaly_probe.cli import main


def one_error_line(capsys, argv: list[str], *phrases: str) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "internal error" not in err and "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err
    return err


# ------------------------------------------------------------------------------------------ corrupt .gguf
@pytest.mark.parametrize("content, phrase", [
    (b"", "is not a GGUF file: it is empty"),
    (b"PK\x03\x04 a zip, not a gguf" * 10, "it does not start with the GGUF magic bytes"),
    (b"GGUF\x03\x00\x00\x00garbage", "cannot read GGUF file"),  # the magic, then a truncated header
    (b"GGUF\x03\x00\x00\x00" + b"\xff" * 64, "cannot read GGUF file"),  # absurd tensor and key counts
])
@pytest.mark.parametrize("command", ["run", "check"])
def test_a_corrupt_gguf_as_model_is_one_error_line(tmp_path, capsys, monkeypatch, content, phrase, command):
    monkeypatch.setenv("ANOMALY_PROBE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    extra = ["--hypothesis", "none", "--out", str(tmp_path / "run")] if command == "run" else []
    one_error_line(capsys, [command, "--model", str(path), "--max-tokens", "80", "--num-samples", "2", *extra],
                   phrase, "model.gguf")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())  # nothing half-converted


@pytest.mark.slow
def test_a_truncated_real_gguf_is_one_error_line(tmp_path, capsys, monkeypatch):
    from anomaly_probe.models.smollm2 import find_gguf

    monkeypatch.setenv("ANOMALY_PROBE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "smollm2-cut.gguf"
    with open(find_gguf(), "rb") as f:
        path.write_bytes(f.read(3_000_000))  # the header and the first tensors' start
    one_error_line(capsys, ["run", "--model", str(path), "--hypothesis", "none", "--max-tokens", "80",
                            "--num-samples", "1", "--out", str(tmp_path / "run")],
                   "cannot read GGUF file", "is it a complete, uncorrupted GGUF checkpoint?")


# ------------------------------------------------------------------------------------------ huge positions
def _logs(tmp_path, suffix: str, last: str) -> list[str]:
    files = []
    for role in ("base", "meth"):
        path = tmp_path / f"{role}.{suffix}"
        rows = [(i, 2.0 + 0.001 * i) for i in range(300)]
        if suffix == "csv":
            path.write_text("position,nll\n" + "".join(f"{p},{x}\n" for p, x in rows) + f"{last},2.0\n")
        else:
            path.write_text("".join(json.dumps({"position": p, "nll": x}) + "\n" for p, x in rows)
                            + f'{{"position": {last}, "nll": 2.0}}\n')
        files.append(str(path))
    return files


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
@pytest.mark.parametrize("last", [str(2**63), str(2**64 + 5), "1" + "0" * 40, str(2**53 + 1)])
def test_a_position_past_2_to_the_53_is_one_error_line(tmp_path, capsys, suffix, last):
    base, meth = _logs(tmp_path, suffix, last)
    one_error_line(capsys, ["import", "--baseline", base, "--method", meth, "--trained-context", "100",
                            "--out", str(tmp_path / "out")], f"line {302 if suffix == 'csv' else 301}:",
                   "is not a token index", last[:20])
    assert not (tmp_path / "out").exists()


def test_a_large_but_exact_position_is_still_read(tmp_path, capsys):
    base, meth = _logs(tmp_path, "csv", str(2**53 - 1))
    assert main(["import", "--baseline", base, "--method", meth, "--trained-context", "100",
                 "--out", str(tmp_path / "out")]) == 0


# ------------------------------------------------------------------------------------------ nested JSON
def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("depth", [150, 100_000])  # past our bound; past Python's recursion limit
def test_deeply_nested_json_is_one_error_line_everywhere(tmp_path, capsys, depth):
    deep = _nested(depth)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text('{"schema_version": 1, "x": ' + deep + "}")
    one_error_line(capsys, ["report", str(run_dir)], "results.json", "nested too deeply")
    one_error_line(capsys, ["run", "--resume", str(run_dir)], "nested too deeply")

    rows = "".join(json.dumps({"position": i, "nll": 2.0}) + "\n" for i in range(300))
    log = tmp_path / "log.jsonl"
    log.write_text(rows + '{"position": 300, "nll": 2.0, "x": ' + deep + "}\n")
    one_error_line(capsys, ["import", "--baseline", str(log), "--method", str(log), "--trained-context", "100",
                            "--out", str(tmp_path / "out")], "line 301", "nested too deeply")

    ours = tmp_path / "ours.csv"
    ours.write_text('# anomaly-probe per-token log v1 {"x": ' + deep + "}\nsample,position,nll\n0,1,2.0\n")
    one_error_line(capsys, ["import", "--baseline", str(ours), "--method", str(ours), "--trained-context", "100",
                            "--out", str(tmp_path / "out")], "line 1", "nested too deeply")

    config = tmp_path / "config.json"
    config.write_text('{"max_position_embeddings": 128, "x": ' + deep + "}")
    plain = tmp_path / "plain.jsonl"
    plain.write_text(rows)
    one_error_line(capsys, ["import", "--baseline", str(plain), "--method", str(plain), "--model-config",
                            str(config), "--out", str(tmp_path / "out")], "--model-config", "as JSON")

    text = tmp_path / "text.jsonl"
    text.write_text('{"text": "hello world", "x": ' + deep + "}\n")
    one_error_line(capsys, ["run", "--model", "tiny-neox", "--text", str(text), "--max-tokens", "4",
                            "--num-samples", "1", "--hypothesis", "none", "--out", str(tmp_path / "r2")],
                   "--text", "line 1 is not valid JSON")


def test_json_nesting_bound():
    from anomaly_probe.json_input import MAX_DEPTH, loads

    assert loads(_nested(MAX_DEPTH)) == loads(_nested(MAX_DEPTH))  # at the bound: read
    assert loads('{"a": "' + "[" * 500 + '"}') == {"a": "[" * 500}  # brackets inside strings are text
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        loads(_nested(MAX_DEPTH + 1))
    with pytest.raises(json.JSONDecodeError, match="nested too deeply"):
        loads('{"a": [{"b": ' + _nested(MAX_DEPTH) + "}]}")
