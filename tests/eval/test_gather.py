"""``vavam report``: evaluations saved by ``save_evaluation`` are found, ordered, and their figures re-linked."""

from __future__ import annotations

import json

import pytest

from vavam.eval.gather import find_evaluations, report
from vavam.eval.report import EVAL_FILE, Section, Table, load_evaluation, save_evaluation


def _save(folder, kind, value, figure="plot.png"):
    (folder).mkdir(parents=True, exist_ok=True)
    (folder / figure).write_bytes(b"\x89PNG")
    sec = Section(f"{kind} section", "text", [Table(["name", "value"], [["x", value]])], [figure])
    return save_evaluation(folder, kind, kind.title(), {"value": value, "nan": float("nan")}, [sec])


def test_save_and_load_round_trip(tmp_path):
    path = _save(tmp_path / "a", "openloop", 1.5)
    data = json.loads(path.read_text())
    assert data["results"] == {"value": 1.5, "nan": None}  # JSON has no NaN
    ev = load_evaluation(path)
    assert ev["kind"] == "openloop" and ev["sections"][0].tables[0].rows == [["x", 1.5]]
    assert (tmp_path / "a" / "report.md").is_file() and (tmp_path / "a" / "report.html").is_file()
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not an evaluation file"):
        load_evaluation(tmp_path / "bad.json")


def test_report_orders_kinds_and_relinks_figures(tmp_path, capsys):
    run = tmp_path / "run"
    _save(run / "z_closed", "closedloop", 3.0)
    _save(run / "a_probe", "probe", 2.0)
    _save(run / "m_next", "nexttoken", 1.0)
    (run / "train").mkdir()
    (run / "train" / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 1.0 / s}) for s in (1, 2, 3)))
    (run / "broken").mkdir()
    (run / "broken" / EVAL_FILE).write_text("not json")
    assert [ev["kind"] for _, ev in find_evaluations(run)] == ["nexttoken", "probe", "closedloop"]
    out = report(run)
    page = (run / "summary" / "report.md").read_text()
    order = [page.index(f"## {k.title()}") for k in ("nexttoken", "probe", "closedloop")]
    assert order == sorted(order)
    assert "![plot](../a_probe/plot.png)" in page and "training_curves.png" in page
    assert len(out["evaluations"]) == 3 and "skipping" in capsys.readouterr().err
    # a second run does not pick up its own summary
    assert len(report(run)["evaluations"]) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no evaluation.json"):
        report(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        report(tmp_path / "missing")
