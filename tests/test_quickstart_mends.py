"""Mends of ``vavam quickstart``: inputs refused before the run folder is tied to them, and no file of an earlier
report left beside stages that are running again."""

from __future__ import annotations

import dataclasses
import json

import pytest
from test_quickstart_report import PLAN, _build

from vavam.quickstart import _stages, quickstart
from vavam.quickstart.plan import MAX_SCENES, QuickstartPlan
from vavam.quickstart.report import write_quickstart_report
from vavam.stages import DONE_FILE, run_stages


def _no_stage_runs(monkeypatch) -> None:
    import vavam.quickstart as qs

    def ran(*args, **kwargs):
        raise AssertionError("the stages ran")

    monkeypatch.setattr(qs, "run_stages", ran)


@pytest.mark.parametrize("seed", [-1, 2**32, True])
def test_a_seed_the_stages_refuse_is_refused_before_plan_json(tmp_path, monkeypatch, seed):
    """--seed -1 failed in the world stage and --seed 2^32 in the VaViM stage (after world, tokenizer and tokens had
    run), each after plan.json had tied the folder to that seed: the same command with a good seed was then refused
    ("holds a run with another budget or seed")."""
    _no_stage_runs(monkeypatch)
    out = tmp_path / "qs"
    with pytest.raises(ValueError, match=r"--seed must be an integer in \[0, 2\^32 - 1\]"):
        quickstart(out=out, budget=1.0, seed=seed)
    assert not out.exists()
    import vavam.quickstart as qs  # the largest seed the trainers take is fine

    monkeypatch.setattr(qs, "run_stages", lambda *a, **k: {"report": {"report_html": "r.html", "headline": []}})
    assert quickstart(out=out, budget=1.0, seed=2**32 - 1) == 0
    assert json.loads((out / "plan.json").read_text())["seed"] == 2**32 - 1


def test_a_budget_with_more_scenes_than_the_world_renders_is_refused_by_the_plan():
    """--budget 600 planned 7,840 scenes: the world stage failed with "at most 7800 scenes per dataset" (not naming
    the budget) after plan.json was written; --budget 1e307 crashed with an OverflowError traceback."""
    from vavam.world.export import HAZARD_LAYOUT_SPAN

    assert MAX_SCENES == HAZARD_LAYOUT_SPAN  # the world's own limit
    for budget in (600.0, 1e6, 1e307, 1.7e308):
        with pytest.raises(ValueError, match=r"--budget .* more than the 7800 scenes"):
            QuickstartPlan.from_budget(budget)
    largest = QuickstartPlan.from_budget(597)  # the docstring's "about 597 minutes": its scenes just fit
    assert largest.train_scenes + largest.heldout_scenes == 7800
    with pytest.raises(ValueError, match="--budget"):
        QuickstartPlan.from_budget(598)


def test_a_stage_that_runs_again_removes_every_file_the_report_wrote(tmp_path):
    """Only report.md / .html were the report stage's outputs: after an earlier stage ran again (and was interrupted,
    or while it ran) the copies of the old run's pictures (reconstructions, trajectories, generated frames, probe),
    its training curves, held-out frames and closed-loop video stayed at the top of the run folder."""
    import numpy as np
    from PIL import Image

    from vavam.data.records import SceneRecord, save_records
    from vavam.media import write_mp4

    out = tmp_path / "qs"
    res = _build(out)
    video = write_mp4(out / "eval" / "closed_loop" / "vavam" / "run.mp4", [np.zeros((16, 16, 3), np.uint8)] * 2)
    res["closed_loop"]["VaVAM"]["videos"] = [str(video)]
    (out / "eval" / "results.json").write_text(json.dumps(res))
    for stage in ("video", "action"):
        (out / stage / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n"
                                                           for s in range(1, 5)))
    (out / "world" / "frames" / "s").mkdir(parents=True)
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(out / "world" / "frames" / "s" / "0.png")
    save_records(out / "world" / "heldout.npz", [SceneRecord(
        name="s", timestamps=np.zeros(1, np.int64), translations=np.zeros((1, 3)),
        rotations=np.array([[1.0, 0, 0, 0]]), image_paths=["frames/s/0.png"], metadata={"split": "heldout"})],
        image_root=str(out / "world"))
    summary = write_quickstart_report(out, PLAN, seed=0)
    (out / "report").mkdir()
    (out / "report" / DONE_FILE).write_text(json.dumps({"stage": "report", "seconds": 1.0, "summary": summary}))
    (out / "plan.json").write_text("{}")
    written = {p.name for p in out.iterdir() if p.is_file()} - {"plan.json"}
    assert {"report.md", "reconstructions.png", "training_curves.png", "heldout_frames.png",
            "closed_loop_vavam.mp4"} <= written  # every kind of file the report writes is there

    def interrupted(folder):
        raise KeyboardInterrupt

    stages = [dataclasses.replace(s, fn=interrupted) for s in _stages(out, PLAN, 0)]
    (out / "tokenizer" / DONE_FILE).unlink()  # the tokenizer is to run again (its folder deleted, say)
    with pytest.raises(KeyboardInterrupt):
        run_stages(out, stages, log=lambda message: None)
    left = {p.name for p in out.iterdir() if p.is_file()} - {"plan.json"}
    assert not left, f"files of the earlier report left beside newer stages: {sorted(left)}"


def test_a_folder_whose_report_files_are_not_a_run_s_is_refused_untouched(tmp_path, monkeypatch):
    """Without plan.json only folders named like the stages were refused: the first stage deleted the user's own
    report.md (and the report stage overwrote their pictures named like the report's)."""
    _no_stage_runs(monkeypatch)
    out = tmp_path / "notes"
    out.mkdir()
    (out / "report.md").write_text("my notes")
    with pytest.raises(SystemExit, match="holds report.md but no plan.json"):
        quickstart(out=out, budget=1.0, seed=0)
    assert (out / "report.md").read_text() == "my notes" and not (out / "plan.json").exists()


def test_a_tiny_frechet_distance_is_not_shown_as_zero(tmp_path):
    """A budget-0.5 run measured Fréchet distances of 1.98e-9 (generated) and 5.32e-12 (copying): the report printed
    "0.000 (copying the last frame: 0.000)", a 400-fold difference shown as a tie."""
    out = tmp_path / "qs"
    res = _build(out)
    res["generated_frames"].update(frechet_tokenizer_features=1.9822e-09, frechet_tokenizer_features_copy=5.3232e-12)
    (out / "eval" / "results.json").write_text(json.dumps(res))
    write_quickstart_report(out, PLAN, seed=0)
    md = (out / "report.md").read_text()
    assert "to the true frames: 1.98e-09 (copying the last frame: 5.32e-12)" in md
    res["generated_frames"].update(frechet_tokenizer_features=0.0, frechet_tokenizer_features_copy=1.23456)
    (out / "eval" / "results.json").write_text(json.dumps(res))
    write_quickstart_report(out, PLAN, seed=0)  # zero and ordinary sizes keep 3 decimals
    assert "to the true frames: 0.000 (copying the last frame: 1.235)" in (out / "report.md").read_text()


def test_a_run_with_no_finished_stage_takes_a_new_budget_or_seed(tmp_path, monkeypatch):
    """plan.json is written before the first stage, so a run stopped in its world stage (or failing there) tied the
    folder to its budget and seed for good: the command with another budget was refused although nothing had
    finished. Now such a folder starts over with the new plan; one with a finished stage is still refused."""
    import vavam.quickstart as qs

    calls = []
    monkeypatch.setattr(qs, "run_stages", lambda *a, **k: calls.append(a) or {"report": {"report_html": "r.html",
                                                                                          "headline": []}})
    out = tmp_path / "qs"
    assert quickstart(out=out, budget=1.0, seed=0) == 0
    (out / "world").mkdir()  # stopped in the world stage: an unfinished attempt, no DONE.json
    (out / "world" / "partial.npz").write_bytes(b"x")
    assert quickstart(out=out, budget=2.0, seed=1) == 0
    saved = json.loads((out / "plan.json").read_text())
    assert (saved["seed"], saved["budget_min"], len(calls)) == (1, 2.0, 2)

    (out / "world" / DONE_FILE).write_text(json.dumps({"stage": "world", "seconds": 1.0, "summary": {}}))
    with pytest.raises(SystemExit, match="another budget or seed.*finished stages: world"):
        quickstart(out=out, budget=1.0, seed=1)
    assert json.loads((out / "plan.json").read_text()) == saved and len(calls) == 2
