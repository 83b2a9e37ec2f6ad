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
