"""The HTML page and the ``anomaly-probe report`` command: escaping, self-containment, bad input."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import pytest
from synthetic_run import write_synthetic_run

from anomaly_probe.cli import main
from anomaly_probe.reports import write_report

EVIL = 'Gap <script>alert("x")</script> & <img src=https://evil.example/x.png>'


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("run") / "run", lengths=(200, 300), samples=1, message=EVIL)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """No traces, one length: few figures, so the CLI tests stay quick."""
    return write_synthetic_run(tmp_path_factory.mktemp("small") / "run", lengths=(200,), samples=1, traces=False)


@pytest.fixture(scope="module")
def html(run):
    return write_report(run).read_text(encoding="utf-8")


def test_report_files(run, html):
    assert (run / "report.html").is_file()
    pngs = sorted(p.name for p in (run / "figures").glob("*.png"))
    assert "nll-by-position.png" in pngs and len(pngs) >= 10
    assert html.count("<img ") == len(pngs)


def test_text_is_escaped(html):
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img src=https://evil.example/x.png&gt;" in html


def test_no_external_resources(html):
    for attr, value in re.findall(r'\b(src|href|action|poster|data)\s*=\s*"([^"]*)"', html):
        assert value.startswith(("data:image/png;base64,", "#")), (attr, value[:80])
    assert "url(" not in html and "@import" not in html
    unescaped = re.sub(r"&lt;.*?&gt;", "", html)  # the escaped user text may mention URLs, nothing may load them
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", unescaped)
    assert "default-src &#39;none&#39;" in html  # and the page forbids loads anyway


def test_images_are_inline_pngs(html):
    uris = re.findall(r'<img src="data:image/png;base64,([^"]+)"', html)
    assert uris
    for uri in uris:
        assert base64.b64decode(uri, validate=True).startswith(b"\x89PNG\r\n\x1a\n")


def test_contents(html):
    assert "Verdicts" in html and "SUPPORTED" in html and "Environment and hardware" in html
    assert "Resolved configuration" in html and "anomaly-probe run --model synthetic-neox" in html
    assert "&#39;my run folder&#39;" in html  # shell-quoted argv


def test_cli_report_rerenders(small_run, capsys):
    (small_run / "figures").mkdir(exist_ok=True)
    (small_run / "figures" / "stale.png").write_bytes(b"old")
    assert main(["report", str(small_run)]) == 0
    out = capsys.readouterr().out
    assert "report:" in out and "SUPPORTED" in out
    assert (small_run / "report.html").is_file() and (small_run / "figures" / "nll-by-position.png").is_file()
    assert not (small_run / "figures" / "stale.png").exists()


def test_cli_report_imports_no_torch(small_run):
    code = ("import sys; from anomaly_probe.cli import main; rc = main(['report', sys.argv[1], '--out', sys.argv[2]]);"
            "assert rc == 0, rc; bad = {'torch', 'transformers'} & set(sys.modules); assert not bad, bad")
    proc = subprocess.run([sys.executable, "-c", code, str(small_run), str(small_run / "again.html")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (small_run / "again.html").is_file()


def _bad(tmp_path, kind):
    folder = tmp_path / kind
    if kind == "missing":
        return folder
    folder.mkdir()
    if kind == "corrupt":
        (folder / "results.json").write_text('{"schema_version": 1, "runs": [')
    elif kind == "schema":
        (folder / "results.json").write_text(json.dumps({"schema_version": 99}))
    elif kind == "not-object":
        (folder / "results.json").write_text("[1, 2]")
    return folder


@pytest.mark.parametrize("kind, needle", [("missing", "is not a folder"), ("empty", "has no results.json"),
                                          ("corrupt", "is not valid JSON"), ("schema", "schema_version 99"),
                                          ("not-object", "not a results object")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, kind, needle):
    assert main(["report", str(_bad(tmp_path, kind))]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_out_must_not_be_a_folder(small_run, tmp_path, capsys):
    assert main(["report", str(small_run), "--out", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
