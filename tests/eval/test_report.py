"""Reports: Markdown and HTML carry the same sections, tables and figures."""

from __future__ import annotations

import math

from vavam.eval.report import Section, Table, write_report


def test_report_markdown_and_html(tmp_path):
    table = Table(["model", "minADE"], [["VaVAM", 1.23456], ["constant velocity", math.nan]], digits=2)
    assert table.markdown().splitlines()[2] == "| VaVAM | 1.23 |"
    assert "–" in table.markdown()
    md, page = write_report(tmp_path, "Run", [Section("Open loop", "Held-out **towns**:\n- a\n- b", [table],
                                                      ["plot.png", "run.mp4"])], intro="Intro `code`.")
    text = md.read_text()
    assert "## Open loop" in text and "![plot](plot.png)" in text and "[video: run.mp4](run.mp4)" in text
    h = page.read_text()
    assert "<h2>Open loop</h2>" in h and "<b>towns</b>" in h and "<li>a</li>" in h
    assert '<img src="plot.png"' in h and '<video controls src="run.mp4"' in h and "<code>code</code>" in h


def test_missing_values_read_back_from_evaluation_json_show_as_a_dash(tmp_path):
    from vavam.eval.gather import report
    from vavam.eval.report import load_evaluation, save_evaluation

    assert Table(["a", "b"], [[None, 1.0]]).markdown().splitlines()[2] == "| – | 1.000 |"
    table = Table(["planner", "collision rate"], [["VaVAM", math.nan]])
    save_evaluation(tmp_path / "run" / "openloop", "openloop", "Open loop", {}, [Section("Open loop", "", [table])])
    reloaded = load_evaluation(tmp_path / "run" / "openloop" / "evaluation.json")["sections"][0].tables[0]
    assert reloaded.rows[0][1] is None  # JSON has no NaN
    assert reloaded.markdown().splitlines()[2] == "| VaVAM | – |"  # it printed "None"
    report(tmp_path / "run", tmp_path / "page")  # `vavam report`
    page = (tmp_path / "page" / "report.md").read_text()
    assert "| VaVAM | – |" in page and "None" not in page
