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


def _cells(line: str) -> list[str]:
    """The cells of a Markdown table row: split on the pipes that are not escaped."""
    import re

    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_a_pipe_in_a_cell_is_escaped_in_every_markdown_table(tmp_path):
    """A "|" in a cell (a planner or scene name, an error) ended the cell and shifted the rest of the row."""
    from vavam.eval.closedloop import closedloop_table, summarize
    from vavam.world.evaluate import score_table
    from vavam.world.ncap import aggregate

    table = Table(["planner", "note|why"], [["http|v2", "x | y"], ["plain", 1.0]])
    lines = table.markdown().splitlines()
    assert lines[0] == "| planner | note\\|why |" and lines[2] == "| http\\|v2 | x \\| y |"
    assert all(len(_cells(line)) == 2 for line in lines)
    md, page = write_report(tmp_path, "Run", [Section("Open loop", "", [table])])
    assert "| http\\|v2 | x \\| y |" in md.read_text()
    h = page.read_text()  # HTML cells need no escaping and get none
    assert "<th>note|why</th>" in h and "<td>http|v2</td><td>x | y</td>" in h and "\\|" not in h
    # the closed-loop tables build their rows themselves, through the same helper
    runs = [{"type": "stationary", "layout": 0, "run": 0, "collided": False, "score": 5.0, "failure": None,
             "trajectory": []}]
    closed = closedloop_table({"http|v2": summarize(runs)}).splitlines()
    assert closed[2].startswith("| http\\|v2 | stationary |")
    assert len({len(_cells(line)) for line in closed}) == 1
    world = score_table({"http|v2": aggregate(runs)}).splitlines()
    assert world[0] == "| type | http\\|v2 score | http\\|v2 collisions |"
    assert len({len(_cells(line)) for line in world}) == 1
    from vavam.eval.report import markdown_cell  # the one helper they share

    assert markdown_cell("a|b") == "a\\|b" and markdown_cell(1.5) == "1.5"
