"""User-supplied strings on the console: rich markup in them is text, terminal escapes in them are shown escaped.

Recipes from issue #17 item 9: ``--out 'x[/]y'`` and ``--method-label 'a[/]'`` crashed on rich markup,
``--out 'red[red]dir'`` printed the wrong path, and OSC 8 / OSC 52 sequences from results.json or a
scorer's exception reached the terminal raw.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest

from anomaly_probe.cli import main

OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"  # write "rm -rf ~" to the clipboard
OSC8 = "\x1b]8;;http://evil.example\x1b\\click\x1b]8;;\x1b\\"  # a hidden hyperlink


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def logs(tmp_path: Path) -> tuple[str, str]:
    base, meth = tmp_path / "base.csv", tmp_path / "meth.csv"
    base.write_text("nll,pos\n" + "".join(f"{1 + (i % 7) / 10},{i}\n" for i in range(40)))
    meth.write_text("nll,pos\n" + "".join(f"{1 + (i % 5) / 10},{i}\n" for i in range(40)))
    return str(base), str(meth)


def test_safe_escapes_markup_and_shows_control_characters():
    from anomaly_probe.console import safe, visible

    assert visible("a\x1b]52;c;x\x07\nb\u202e") == "a\\x1b]52;c;x\\x07\\nb\\u202e"
    from rich.console import Console

    buf = io.StringIO()
    Console(file=buf, width=200).print(f"[bold]path[/] {safe('x[/]y red[red]dir ' + OSC52)}")
    text = buf.getvalue()
    assert "x[/]y red[red]dir \\x1b]52;c;" in text and "\x1b" not in text


@pytest.mark.parametrize("name", ["x[/]y", "red[red]dir", "a[bold]b[/bold]c"])
def test_import_out_with_markup_prints_the_path(tmp_path, name):
    base, meth = logs(tmp_path)
    out = tmp_path / name
    code, stdout, stderr = run(["import", "--baseline", base, "--method", meth, "--out", str(out)])
    assert code == 0, stderr
    assert (out / "results.json").is_file()
    assert f"run folder {out}" in stdout.replace("\n", "")
    assert f"results: {out / 'results.json'}" in stdout.replace("\n", "")


def test_import_method_label_with_markup_and_escapes(tmp_path):
    base, meth = logs(tmp_path)
    label = "a[/]" + OSC52
    code, stdout, stderr = run(["import", "--baseline", base, "--method", meth, "--method-label", label,
                                "--out", str(tmp_path / "r")])
    assert code == 0, stderr
    assert "a[/]\\x1b]52;c;" in stdout.replace("\n", "")  # rich wraps long lines at spaces
    assert "\x1b" not in stdout + stderr
    saved = json.loads((tmp_path / "r" / "results.json").read_text())
    assert saved["method"]["label"] == label  # stored as given; only the console shows it escaped


def test_run_out_with_markup(tmp_path):
    out = tmp_path / "x[/]y"
    code, stdout, stderr = run(["run", "--model", "tiny-neox", "--hypothesis", "none", "--max-tokens", "24",
                                "--recent-size", "8", "--out", str(out)])
    assert code == 0, stderr
    assert f"run folder {out}" in stdout.replace("\n", "")
    assert f"results: {out / 'results.json'}" in stdout.replace("\n", "")


def test_escapes_in_results_json_are_shown_escaped(tmp_path):
    base, meth = logs(tmp_path)
    folder = tmp_path / "r"
    assert run(["import", "--baseline", base, "--method", meth, "--out", str(folder)])[0] == 0
    data = json.loads((folder / "results.json").read_text())
    data["headline"] = f"evil {OSC52} and {OSC8} [red]not red[/]"
    for v in data["verdicts"]:
        v["message"] = "msg " + OSC8
    (folder / "results.json").write_text(json.dumps(data))
    code, stdout, stderr = run(["report", str(folder)])
    assert code == 0, stderr
    assert "\x1b" not in stdout + stderr
    flat = stdout.replace("\n", "")
    assert "\\x1b]52;c;" in flat and "\\x1b]8;;http://evil.example" in flat
    assert "[red]not red[/]" in flat or "[red]not red[/]" in stdout.replace("\n", " ")


def test_error_line_shows_escapes(tmp_path):
    code, _, stderr = run(["report", str(tmp_path / ("nope" + OSC52 + "[/]"))])
    assert code == 2
    assert stderr.startswith("error: ") and "\x1b" not in stderr and "\\x1b]52" in stderr and "[/]" in stderr


def test_scorer_message_in_the_check_table_is_escaped():
    from rich.console import Console

    from anomaly_probe.check.output import results_table
    from anomaly_probe.check.result import CheckResult

    buf = io.StringIO()
    Console(file=buf, width=300).print(results_table([CheckResult("scorer.x[/]", "error",
                                                                  "scorer raised: " + OSC8 + " [red]x")]))
    text = buf.getvalue()
    assert "\x1b" not in text and "\\x1b]8;;http://evil.example" in text and "[red]x" in text
    assert "scorer.x[/]" in text
