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


def test_report_into_the_run_folder_itself(tmp_path):
    # `vavam report RUN --out RUN` excluded every evaluation under --out, i.e. all of them, and said
    # "no evaluation.json"; an absolute --out beside a relative RUN_DIR is compared as the same folder
    run = tmp_path / "run"
    _save(run / "m_next", "nexttoken", 1.0)
    _save(run / "a_probe", "probe", 2.0)
    out = report(run, out=run)
    assert len(out["evaluations"]) == 2
    assert "![plot](a_probe/plot.png)" in (run / "report.md").read_text()
    assert len(report(run, out=tmp_path)["evaluations"]) == 2  # a folder above the run folder
    with pytest.raises(ValueError, match=r"--out .*m_next holds an evaluation"):  # would overwrite its own report
        report(run, out=run / "m_next")


def test_report_includes_tokenizer_runs(tmp_path, capsys):
    """A ``vavam train tokenizer`` run logs to metrics.csv (not metrics.jsonl); its loss curve is in the report."""
    import csv

    import torch

    from vavam.train.tokenizer import train_tokenizer

    run = tmp_path / "runs"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_tokenizer(run / "tok", preset="vq_tiny", steps=4, batch_size=2, image_size=(16, 32), val_frames=2,
                        log_every=2, progress=False)
    finally:
        torch.set_num_threads(threads)
    (run / "vim").mkdir()
    (run / "vim" / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 2.0 / s}) for s in (1, 2)))
    with open(run / "tok" / "metrics.csv", newline="") as f:
        logged = [(int(r["step"]), float(r["train_loss"])) for r in csv.DictReader(f) if r["train_loss"]]
    assert [s for s, _ in logged] == [2, 4]  # evaluation rows (no training loss) are left out
    out = report(run)
    assert [p.rsplit("/", 1)[-1] for p in out["training_runs"]] == ["tok", "vim"]
    page = (run / "summary" / "report.md").read_text()
    table = page[page.index("## Training"):]
    assert f"| tok | 4 | {logged[-1][1]:.4f} |" in table and "| vim | 2 | 1.0000 |" in table
    # the tokenizer's log alone is a run to report on
    only = tmp_path / "only"
    (only / "tok").mkdir(parents=True)
    (only / "tok" / "metrics.csv").write_bytes((run / "tok" / "metrics.csv").read_bytes())
    assert len(report(only)["training_runs"]) == 1
    # CSVs that are not tokenizer logs (Lightning's CSVLogger: 'train/loss' or a 'train_loss' without the
    # tokenizer's other columns) are not runs; an unreadable one is skipped with a message
    other = tmp_path / "other"
    (other / "logs").mkdir(parents=True)
    (other / "logs" / "metrics.csv").write_text("step,train/loss\n1,0.5\n")
    (other / "lit").mkdir()
    (other / "lit" / "metrics.csv").write_text("epoch,step,train_loss\n0,1,0.5\n")
    (other / "latin").mkdir()
    (other / "latin" / "metrics.csv").write_bytes("step,train_loss,val_psnr,lr\n1,0.5,,caf\xe9\n".encode("latin-1"))
    with pytest.raises(FileNotFoundError, match="no training log"):
        report(other)
    assert "skipping" in capsys.readouterr().err
    # a folder with both logs is one run (its metrics.jsonl)
    (run / "vim" / "metrics.csv").write_bytes((run / "tok" / "metrics.csv").read_bytes())
    assert [p.rsplit("/", 1)[-1] for p in report(run)["training_runs"]] == ["tok", "vim"]


def test_evaluations_below_the_out_folder_are_on_the_page(tmp_path):
    """`vavam report runs --out runs/eval` left out every evaluation under runs/eval (those under --out were
    excluded), so the page missed them or the command said "no evaluation.json"."""
    run = tmp_path / "runs"
    _save(run / "eval" / "openloop", "openloop", 1.0)
    _save(run / "other" / "probe", "probe", 2.0)
    out = report(run, out=run / "eval")
    assert sorted(p.rsplit("/", 1)[-1] for p in out["evaluations"]) == ["openloop", "probe"]
    page = (run / "eval" / "report.md").read_text()
    assert "## Openloop: openloop section" in page and "![plot](openloop/plot.png)" in page
    only = tmp_path / "only"
    _save(only / "eval" / "openloop", "openloop", 1.0)
    assert len(report(only, out=only / "eval")["evaluations"]) == 1  # it said "no evaluation.json"
    assert len(report(only)["evaluations"]) == 1


def test_an_evaluation_file_with_malformed_sections_is_skipped(tmp_path, capsys):
    """A section without a title (or sections that are not a list) stopped `vavam report` with a KeyError
    instead of being skipped with a message like any other unreadable evaluation.json."""
    run = tmp_path / "run"
    _save(run / "good", "probe", 2.0)
    for name, sections in (("untitled", [{"text": "no title"}]), ("notalist", "abc"), ("badtable", [
            {"title": "t", "tables": [{"rows": []}]}])):
        (run / name).mkdir()
        (run / name / EVAL_FILE).write_text(json.dumps({"kind": "probe", "sections": sections}))
        with pytest.raises(ValueError, match="not an evaluation file"):
            load_evaluation(run / name / EVAL_FILE)
    assert [f.name for f, _ in find_evaluations(run)] == ["good"]
    assert capsys.readouterr().err.count("skipping") == 3
    assert len(report(run)["evaluations"]) == 1
