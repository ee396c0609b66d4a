"""``report`` never writes or deletes through a link out of the folder, and never drops a sample silently."""

from __future__ import annotations

import json
import shutil

import pytest

from anomaly_probe.cli import main
from synthetic_run import write_synthetic_run


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    return write_synthetic_run(tmp_path_factory.mktemp("tpl") / "run", lengths=(200,), samples=2, traces=False)


@pytest.fixture
def run(template, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(template, out)
    return out


@pytest.fixture
def outside(tmp_path):
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "holiday.png").write_bytes(b"precious")
    (folder / "compare-x.png").write_bytes(b"precious too")
    return folder


def _untouched(folder) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["compare-x.png", "holiday.png"]
    assert (folder / "holiday.png").read_bytes() == b"precious"


def test_figures_folder_linked_out_of_the_run_is_never_written_or_cleaned(run, outside, capsys):
    shutil.rmtree(run / "figures", ignore_errors=True)
    (run / "figures").symlink_to(outside, target_is_directory=True)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    _untouched(outside)
    assert "figures not saved" in out and "link out of" in out
    assert "data:image/png;base64," in (run / "report.html").read_text(encoding="utf-8")  # embedded all the same


def test_comparison_figures_folder_linked_elsewhere_is_never_written_or_cleaned(run, outside, tmp_path, capsys):
    (tmp_path / "cmp-figures").symlink_to(outside, target_is_directory=True)
    assert main(["report", str(run), str(run), "--out", str(tmp_path / "cmp.html")]) == 0
    _untouched(outside)
    assert (tmp_path / "cmp.html").is_file() and "figures not saved" in capsys.readouterr().out


def test_a_png_that_is_a_link_is_replaced_never_written_through(run, outside):
    (run / "figures").mkdir(exist_ok=True)
    (run / "figures" / "nll-by-position.png").symlink_to(outside / "holiday.png")
    (run / "figures" / "stale.png").symlink_to(outside / "compare-x.png")
    assert main(["report", str(run)]) == 0
    _untouched(outside)
    png = run / "figures" / "nll-by-position.png"
    assert not png.is_symlink() and png.read_bytes().startswith(b"\x89PNG")
    assert not (run / "figures" / "stale.png").exists()  # the stale link removed, its target kept


def test_a_missing_token_file_is_noted_in_report_and_console(run, capsys):
    res = json.loads((run / "results.json").read_text())
    lost = next(r for r in res["runs"] if r.get("sample") == 1)
    (run / lost["tokens_file"]).unlink()
    broken = next(r for r in res["runs"] if r.get("sample") == 0 and r is not lost)
    (run / broken["tokens_file"]).write_bytes(b"not an npz")
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert "2 token file(s) missing or unreadable" in out and lost["key"] in out and broken["key"] in out
    html = (run / "report.html").read_text(encoding="utf-8")
    assert "Samples left out" in html and lost["key"] in html


def test_a_complete_folder_has_no_dropped_sample_note(run, capsys):
    assert main(["report", str(run)]) == 0
    assert "missing or unreadable" not in capsys.readouterr().out
    assert "Samples left out" not in (run / "report.html").read_text(encoding="utf-8")


def test_a_comparison_notes_dropped_samples_too(run, tmp_path, capsys):
    res = json.loads((run / "results.json").read_text())
    (run / res["runs"][0]["tokens_file"]).unlink()
    assert main(["report", str(run), str(run), "--out", str(tmp_path / "cmp.html")]) == 0
    assert "missing or unreadable" in capsys.readouterr().out
    assert "Samples left out" in (tmp_path / "cmp.html").read_text(encoding="utf-8")
