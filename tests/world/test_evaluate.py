"""Closed-loop evaluation (``vavam world scenarios``): score table, per-run records, failing planners."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vavam.world.evaluate import evaluate_planner, score_table
from vavam.world.planners import ConstantVelocityPlanner


@pytest.fixture(scope="module")
def cv_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("cv")
    return out, evaluate_planner(ConstantVelocityPlanner(), "cv", runs=2, layouts=1, out=out, progress=False)


def test_constant_velocity_table(cv_report):
    out, rep = cv_report
    assert rep["num_runs"] == 6 and rep["failures"] == 0
    assert set(rep["types"]) == {"stationary", "frontal", "side"}
    for t in rep["types"].values():
        assert 0.0 <= t["score"] <= 5.0 and t["runs"] == 2
    assert rep["collision_rate"] >= 0.5  # an unreacting planner mostly collides
    table = score_table({"cv": rep, "cv2": rep})
    lines = table.splitlines()
    assert lines[0].startswith("| type | cv score | cv collisions | cv2 score")
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == ["stationary", "frontal", "side", "**overall**"]
    saved = json.loads((out / "scores.json").read_text())
    assert saved["score"] == pytest.approx(rep["score"])
    assert (out / "scores.md").read_text().startswith("| type")
    runs = json.loads((out / "runs.json").read_text())
    assert len(runs) == 6 and {"type", "layout", "run", "score", "collided", "trajectory", "plans"} <= set(runs[0])
    assert np.asarray(runs[0]["trajectory"]).shape[1] == 5


class Crashing:
    def __init__(self):
        self.calls = 0

    def __call__(self, obs):
        self.calls += 1
        if obs["speed"] > 0 and self.calls % 2 == 1:
            raise RuntimeError("boom")
        return np.full((6, 2), np.nan) if self.calls % 4 == 0 else np.zeros((6, 2))


class NeedsImages:
    def __init__(self):
        self.shapes, self.observed = [], 0

    def observe(self, obs):
        assert obs["image"] is not None
        self.observed += 1

    def __call__(self, obs):
        self.shapes.append(obs["image"].shape)
        return ConstantVelocityPlanner()(obs)


def test_crashing_planner_fails_its_runs_and_evaluation_goes_on(tmp_path):
    rep = evaluate_planner(Crashing(), "crash", runs=2, layouts=1, kinds=["stationary"], out=tmp_path, progress=False)
    assert rep["num_runs"] == 2 and rep["failures"] >= 1
    failed = [r for r in rep["runs"] if r["failure"]]
    assert all(r["score"] == 0.0 for r in failed)
    assert any("boom" in r["failure"] or "NaN" in r["failure"] for r in failed)


def test_planner_gets_camera_frames_and_video(tmp_path):
    pytest.importorskip("moderngl")
    pytest.importorskip("av")
    p = NeedsImages()
    rep = evaluate_planner(
        p, "img", runs=1, layouts=1, kinds=["frontal"], images=True, image_size=(36, 64), out=tmp_path,
        video_runs=1, progress=False,
    )  # fmt: skip
    assert rep["failures"] == 0 and p.shapes and set(p.shapes) == {(36, 64, 3)}
    assert p.observed == 2  # the priming steps
    assert len(rep["videos"]) == 1 and (tmp_path / "videos" / "frontal-layout0-run0.mp4").stat().st_size > 0
