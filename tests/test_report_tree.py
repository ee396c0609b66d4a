"""The report tree (plain data) built from a synthetic run folder: structure, ranking, colours, missing data."""

from __future__ import annotations

import json

import pytest
from synthetic_run import HEADLINE, METHOD, write_synthetic_run

from anomaly_probe.reports import figures as figures_pkg
from anomaly_probe.reports.build import build_report
from anomaly_probe.reports.rundata import load_run
from anomaly_probe.reports.tree import Figure, Section, Table, Text, walk


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    return build_report(load_run(write_synthetic_run(tmp_path_factory.mktemp("run") / "run")))


def _table(report, title):
    return next(b for b in walk(report.sections) if isinstance(b, Table) and b.title == title)


def _figure(report, fid) -> Figure:
    return next(f for f in report.figures() if f.id == fid)


def test_headline_and_sections(report):
    assert report.headline == HEADLINE
    titles = [s.title for s in report.sections]
    assert titles[0] == "Overview" and titles[-1] == "Run details"
    assert titles[1].startswith("position")  # ranked by explained share
    # method-side checks after every cause (errors included)
    assert [t.split(":")[0] for t in titles[1:6]] == ["position", "numerics", "eval-bias", "memory", "handling"]
    for h in ("numerics", "dilution", "memory", "eval-bias", "handling", "sinks"):
        assert any(t.startswith(h) for t in titles), h
    assert not report.errors()


def test_verdict_table_ranked_by_share_one_row_per_length(report):
    table = _table(report, "Verdicts")
    order = list(dict.fromkeys(row[1].text for row in table.rows))
    # causes by share, then the method-side checks (handling, sinks) by share
    assert order[:2] == ["position", "numerics"] and order[-2:] == ["handling", "sinks"]
    assert set(order) == {"position", "numerics", "eval-bias", "memory", "handling", "sinks"}
    assert [(r[0].text, r[1].text, r[2].text) for r in table.rows[:2]] == [("1", "position", "600"),
                                                                           ("1", "position", "300")]
    position = table.rows[0]
    assert position[3].tag == "supported" and position[4].text == "0.97 [0.93, 1.00]"
    assert position[7].text == "1198 tokens, 18 blocks, 2 samples"
    assert [r[3].tag for r in table.rows if r[1].text == "memory"] == ["error", "error"]  # last of the causes
    assert table.rows[-1][1].text == "sinks"
    assert _table(report, "Decision thresholds").rows


def test_hypothesis_section_has_every_length(report):
    section = next(s for s in report.sections if s.title.startswith("position"))
    sentences = [b.text for b in section.blocks if isinstance(b, Text) and b.kind == "p"]
    assert sentences[0].startswith("600-token samples: SUPPORTED: explained share 0.97 [0.93, 1.00]")
    assert sentences[1].startswith("300-token samples: SUPPORTED")
    evidence = next(b for b in section.blocks if isinstance(b, Table))
    assert evidence.columns == ["name", "600 tokens", "300 tokens"]
    merged = _figure(report, "position-oracle-share").spec
    assert merged["kind"] == "panels" and [p["title"].split(":")[0] for p in merged["panels"]] == ["600 tokens",
                                                                                                   "300 tokens"]


def test_expected_figures_present(report):
    ids = {f.id for f in report.figures()}
    expected = {"ppl-by-run", "nll-by-position", "ppl-by-position", "gap-by-position", "precision", "logit-range",
                "underflow", "entropy-heatmap", "memory", "stepwise-vs-batched", "position-oracle-share",
                "handling-modes", "sinks", "underflow-by-cache-length", "sink-mass"}
    assert expected <= ids
    panels = [p["title"] for p in _figure(report, "memory").spec["panels"]]
    assert "device memory allocated" not in panels  # the CPU probe's -1 means "unavailable", not -1 bytes
    assert "process memory (RSS)" in panels


def test_one_panel_or_line_per_length(report):
    nll = _figure(report, "nll-by-position").spec
    assert [p["title"].split("-")[0] for p in nll["panels"]] == ["300", "600"]
    assert {s["color_key"] for s in nll["panels"][1]["series"]} == {"baseline", "method", "oracle"}
    gap = _figure(report, "gap-by-position").spec
    assert len(gap["series"]) == 2 and len({s["linestyle"] for s in gap["series"]}) == 2
    labels = [v["label"] for v in gap["vlines"]]
    assert any("trained context" in x for x in labels)
    assert "changepoint (262 tokens, 95% CI 240-290, 600-token samples)" in labels


def test_trained_context_marked_only_where_reached(report):
    panels = _figure(report, "nll-by-position").spec["panels"]
    assert all(v["x"] == 256 for p in panels for v in p["vlines"])


def test_one_colour_per_method(report):
    c = report.colors
    assert c["full"] == c["baseline"] and c[METHOD] == c["method"] and c["recompute(256)"] == c["oracle"]
    assert len({c["baseline"], c["method"], c["oracle"]}) == 3
    for fig in report.figures():
        for spec in [fig.spec, *fig.spec.get("panels", [])]:
            for s in spec.get("series", []):
                assert str(s.get("color_key") or s["name"]) in c


def test_environment_config_and_command(report):
    env = _table(report, "Environment and hardware")
    fields = {row[0].text: row[1].text for row in env.rows}
    assert fields["device"] == "cpu" and fields["total_memory_bytes"] == "25.0 GiB"
    assert fields["model.trained_context"] == "256"
    assert _table(report, "Resolved configuration").rows
    code = [b.text for b in walk(report.sections) if isinstance(b, Text) and b.kind == "code"]
    assert code == ["anomaly-probe run --model synthetic-neox --max-tokens 300 600 --out 'my run folder'"]


def test_missing_data_is_skipped_not_fatal(tmp_path):
    run = write_synthetic_run(tmp_path / "bare", lengths=(200,), samples=1, traces=False, verdicts=False,
                              headline=False)
    report = build_report(load_run(run))
    ids = {f.id for f in report.figures()}
    assert "nll-by-position" in ids
    assert not ids & {"entropy-heatmap", "memory", "underflow", "logit-range", "underflow-by-cache-length", "sink-mass"}
    assert report.headline is None and not report.errors()
    notes = [b.text for b in walk(report.sections) if isinstance(b, Text) and b.kind == "note"]
    assert any("No hypothesis was tested" in n for n in notes)


def test_missing_npz_files_do_not_crash(tmp_path):
    run = write_synthetic_run(tmp_path / "run", lengths=(200,), samples=1)
    for npz in (run / "tokens").glob("*.npz"):
        npz.write_bytes(b"not a zip file")
    report = build_report(load_run(run))
    assert not {"nll-by-position", "gap-by-position", "ppl-by-run"} & {f.id for f in report.figures()}
    assert not report.errors()


def test_a_failing_figure_becomes_an_error_note(tmp_path, monkeypatch):
    def broken(data, verdict=None):
        raise RuntimeError("boom")

    monkeypatch.setitem(figures_pkg.BUILDERS, "position", (broken, *figures_pkg.BUILDERS["position"]))
    report = build_report(load_run(write_synthetic_run(tmp_path / "run", lengths=(200,), samples=1)))
    errors = [e.text for e in report.errors()]
    assert errors == ["broken failed: RuntimeError: boom"]
    assert "nll-by-position" in {f.id for f in report.figures()}  # the rest still renders


def test_malformed_evidence_spec_is_a_note(tmp_path):
    run = write_synthetic_run(tmp_path / "run", lengths=(200,), samples=1)
    results = json.loads((run / "results.json").read_text())
    results["verdicts"][0]["evidence"]["figures"] = [{"kind": "pie", "series": []}, "nonsense"]
    (run / "results.json").write_text(json.dumps(results))
    report = build_report(load_run(run))
    assert len(report.errors()) == 2
    assert all(isinstance(s, Section) for s in report.sections)


def _line(fid: str) -> dict:
    return {"id": fid, "kind": "line", "title": fid, "x": [1.0, 2.0], "series": [{"name": "a", "y": [1.0, 2.0]}]}


def test_position_curves_are_drawn_once(tmp_path):
    """The position judge records its NLL and gap curves; the built-in figures supersede them when drawn."""
    run = write_synthetic_run(tmp_path / "run", lengths=(200,), samples=1)
    results = json.loads((run / "results.json").read_text())
    position = next(v for v in results["verdicts"] if v["hypothesis"] == "position")
    position["evidence"]["figures"] += [_line("position-nll"), _line("position-gap")]
    (run / "results.json").write_text(json.dumps(results))
    ids = [f.id for f in build_report(load_run(run)).figures()]
    assert ids.count("nll-by-position") == 1 and ids.count("gap-by-position") == 1
    assert not {"position-nll", "position-gap"} & set(ids)
    assert "position-oracle-share" in ids  # other evidence figures stay
    for npz in (run / "tokens").glob("*.npz"):  # no saved tokens: the judge's copies are the only ones
        npz.write_bytes(b"not a zip file")
    ids = [f.id for f in build_report(load_run(run)).figures()]
    assert {"position-nll", "position-gap"} <= set(ids) and "nll-by-position" not in ids


def test_every_table_with_an_interval_says_which(report):
    tables = [b for b in walk(report.sections) if isinstance(b, Table)]
    def names_ci(t):
        return any("CI" in c for c in t.columns) or any("ci" in row[0].text.split("_") for row in t.rows)

    with_ci = [t for t in tables if names_ci(t)]
    assert {"Verdicts", "Baseline vs method, same tokens"} <= {t.title for t in with_ci}
    with_ci.append(_table(report, "position: evidence values"))  # its changepoint holds ci_low / ci_high
    assert not _table(report, "numerics: evidence values").ci  # no interval there
    for t in with_ci:
        assert "block-bootstrap CI (64-token blocks" in t.ci, t.title  # the run's thresholds
