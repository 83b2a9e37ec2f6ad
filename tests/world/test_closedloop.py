"""Trajectory tracking, collision checks, NCAP score, hazard scenarios and closed-loop runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vavam.world.closedloop import run_scenario, simulate
from vavam.world.collision import first_overlap, swept_collision
from vavam.world.ncap import aggregate, ncap_score
from vavam.world.planners import ConstantVelocityPlanner, EmergencyBrakePlanner, ExpertPlanner
from vavam.world.scenarios import SCENARIO_TYPES, make_scenario
from vavam.world.tracker import TrajectoryTracker, validate_plan
from vavam.world.vehicle import EgoState, VehicleParams, bicycle_step


def _track(plan: np.ndarray, v0: float) -> list[EgoState]:
    p = VehicleParams()
    state = EgoState(0.0, 0.0, 0.0, v0)
    tracker = TrajectoryTracker(state, plan, p)
    states = []
    for _ in range(30):
        state = bicycle_step(state, *tracker.control(state, 0.1), 0.1, p)
        states.append(state)
    return states


def test_tracker_follows_a_straight_plan():
    t = 0.5 * np.arange(1, 7)
    states = _track(np.stack([10.0 * t, np.zeros(6)], 1), 8.0)  # speeds up from 8 to 10 m/s
    assert states[-1].x == pytest.approx(30.0, abs=1.5)
    assert max(abs(s.y) for s in states) < 0.05
    stop = _track(np.zeros((6, 2)), 8.0)
    assert stop[-1].v == 0.0 and stop[-1].x < 8.0**2 / (2 * 6.0) + 1.0


def test_tracker_follows_a_curved_plan():
    r, v = 30.0, 8.0
    ang = v * 0.5 * np.arange(1, 7) / r
    plan = np.stack([r * np.sin(ang), r * (1 - np.cos(ang))], 1)  # left-hand arc
    states = _track(plan, v)
    end = plan[-1]
    assert math.hypot(states[-1].x - end[0], states[-1].y - end[1]) < 1.5
    for s in states:  # stays within 0.5 m of the arc
        assert abs(math.hypot(s.x, s.y - r) - r) < 0.5


def test_bad_plans_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        validate_plan(np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        validate_plan(np.full((6, 2), np.nan))


def test_thin_fast_crossing_is_caught_only_with_substeps():
    ego = np.array([0.0, 0.0, 0.0, 4.0, 1.85])
    # a thin (0.3 m long) object crossing at 40 m/s: at 0.1 s steps it jumps from y=-2 to y=+2
    before = np.array([[0.0, -2.0, np.pi / 2, 0.3, 1.0]])
    after = np.array([[0.0, 2.0, np.pi / 2, 0.3, 1.0]])
    assert first_overlap(ego, before) is None and first_overlap(ego, after) is None
    assert swept_collision(ego, ego, before, after, substeps=1) is None
    hit = swept_collision(ego, ego, before, after, substeps=2)
    assert hit == (0.5, 0)


def test_ncap_score_hand_cases():
    assert ncap_score(False) == 5.0
    assert ncap_score(True, 0.0, 10.0) == 4.0
    assert ncap_score(True, 5.0, 10.0) == 2.0
    assert ncap_score(True, 12.0, 10.0) == 0.0
    assert ncap_score(True, 1.0, 0.0) == 0.0
    rows = [
        {"type": "a", "layout": 0, "score": 5.0, "collided": False},
        {"type": "a", "layout": 0, "score": 3.0, "collided": True},
        {"type": "a", "layout": 1, "score": 0.0, "collided": True},
        {"type": "b", "layout": 0, "score": 5.0, "collided": False},
    ]
    agg = aggregate(rows)
    assert agg["types"]["a"]["score"] == pytest.approx((4.0 + 0.0) / 2)
    assert agg["score"] == pytest.approx((2.0 + 5.0) / 2)
    assert agg["types"]["a"]["collision_rate"] == pytest.approx((0.5 + 1.0) / 2)


@pytest.mark.parametrize("kind", SCENARIO_TYPES)
def test_unreacting_ego_collides_after_about_4_s(kind):
    for run in range(3):
        spec = make_scenario(kind, run % 2, run)
        ref = simulate(spec, None)
        assert ref.collided and ref.hit_target, f"{kind} layout {spec.layout} run {run}"
        assert 3.0 <= ref.collision_time <= 5.0


def test_scenarios_are_deterministic_and_validated():
    a, b = make_scenario("side", 1, 4), make_scenario("side", 1, 4)
    np.testing.assert_array_equal(a.actor_xy, b.actor_xy)
    assert a.ego_speed == b.ego_speed
    assert make_scenario("side", 1, 5).collision_time != a.collision_time
    with pytest.raises(ValueError):
        make_scenario("rear", 0, 0)


def test_baselines_on_stationary():
    spec = make_scenario("stationary", 0, 0)
    assert run_scenario(spec, ConstantVelocityPlanner()).score < 1.0
    assert run_scenario(spec, EmergencyBrakePlanner()).score >= 4.0
    assert run_scenario(spec, ExpertPlanner()).score == 5.0


@pytest.mark.parametrize("kind", ["frontal", "side"])
def test_expert_avoids_frontal_and_side_hazards(kind):
    spec = make_scenario(kind, 0, 0)
    res = run_scenario(spec, ExpertPlanner())
    assert not res.collided and res.score == 5.0
    assert run_scenario(spec, ConstantVelocityPlanner()).collided


def test_crashing_or_malformed_planner_fails_only_that_run():
    spec = make_scenario("stationary", 0, 1)

    def crash(obs):
        raise RuntimeError("boom")

    res = run_scenario(spec, crash)
    assert res.failure == "RuntimeError: boom" and res.score == 0.0
    res = run_scenario(spec, lambda obs: np.zeros((3, 2)))
    assert "shape" in res.failure


@pytest.mark.slow
def test_done_criteria_with_10_runs_per_type():
    cv = {k: [] for k in SCENARIO_TYPES}
    for kind in SCENARIO_TYPES:
        for run in range(10):
            spec = make_scenario(kind, run % 3, run)
            ref = simulate(spec, None)
            assert ref.collided and 3.0 <= ref.collision_time <= 5.0
            cv[kind].append(run_scenario(spec, ConstantVelocityPlanner()).collided)
    assert np.mean(cv["frontal"]) >= 0.9 and np.mean(cv["side"]) >= 0.9
    eb = [run_scenario(make_scenario("stationary", r % 3, r), EmergencyBrakePlanner()).score for r in range(10)]
    assert np.mean(eb) >= 4.0
    for kind in SCENARIO_TYPES:
        ex = [run_scenario(make_scenario(kind, r % 3, r), ExpertPlanner()).score for r in range(10)]
        assert np.mean(ex) >= 4.5, kind


def test_planner_gets_camera_images_when_rendering(gl_context):
    from vavam.world.camera import Camera
    from vavam.world.render import Renderer

    seen = []

    def planner(obs):
        seen.append((obs["image"].shape, obs["command"], obs["intrinsics"].shape))
        return ConstantVelocityPlanner()(obs)

    res = run_scenario(make_scenario("stationary", 0, 2), planner,
                       lambda town: Renderer(town, Camera(18, 32), ctx=gl_context))
    assert res.collided and seen and seen[0] == ((18, 32, 3), seen[0][1], (3, 3))
    assert len(seen) == res.collision_time // 0.5 + 1 - 2  # 2 Hz after the 2 priming steps


def test_run_video_with_plan_overlay(tmp_path, gl_context):
    av = pytest.importorskip("av")
    from vavam.world.video import record_run_video

    path = tmp_path / "run.mp4"
    res = record_run_video(make_scenario("stationary", 0, 0), EmergencyBrakePlanner(), path, 36, 64, ctx=gl_context)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) == len(res.poses) and frames[0].shape == (36, 64, 3)


def test_ncap_score_refuses_impossible_speeds():
    """A negative impact speed scored above 4 for a crash, a NaN speed silently scored 0."""
    assert ncap_score(True, 0.0, 0.0) == 0.0 and ncap_score(False, math.nan, math.nan) == 5.0
    for args, name in (((-1.0, 10.0), "impact_speed"), ((math.nan, 10.0), "impact_speed"),
                       ((5.0, math.nan), "reference_speed"), ((5.0, math.inf), "reference_speed"),
                       ((5.0, -2.0), "reference_speed")):
        with pytest.raises(ValueError, match=rf"ncap_score: {name} must be a finite speed >= 0"):
            ncap_score(True, *args)


def test_swept_collision_refuses_boxes_that_do_not_match_row_for_row():
    """One box before and two after broadcast silently: both 'after' boxes were swept from the one 'before' box."""
    ego = np.array([0.0, 0.0, 0.0, 4.0, 1.85])
    before = np.array([[0.0, -20.0, 0.0, 4.0, 2.0]])
    after = np.array([[0.0, -20.0, 0.0, 4.0, 2.0], [0.0, 0.0, 0.0, 4.0, 2.0]])
    with pytest.raises(ValueError, match=r"others0 \[1, 5\] and others1 \[2, 5\] must hold the same boxes"):
        swept_collision(ego, ego, before, after)
