"""Open-loop collision checks on hand-built cases: boxes on and beside the path, headings, and the
rate in the accumulator; on world scenes the expert's own (ground-truth) plans never collide."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vavam.data.geometry import quat_from_yaw
from vavam.data.records import AgentBoxes, SceneRecord
from vavam.eval.collision import future_boxes, planned_collisions, trajectory_collides, trajectory_yaws
from vavam.eval.openloop import OpenLoopAccumulator

STRAIGHT = np.stack([np.arange(1, 7) * 5.0, np.zeros(6)], axis=1)  # 10 m/s straight ahead, [6, 2]


def _box(x, y, yaw=0.0, length=4.0, width=2.0):
    return np.array([[x, y, yaw, length, width]])


def test_box_on_the_path_at_the_right_time_collides():
    # the 4th waypoint (t = 2 s) is at x = 20 m: the ego box centre is 1.35 m ahead, at 21.35 m
    boxes = [None, None, None, _box(23.0, 0.0), None, None]
    assert trajectory_collides(STRAIGHT, boxes)
    # the same box at another time, when the ego is elsewhere, does not
    boxes = [_box(23.0, 0.0), None, None, None, None, None]
    assert not trajectory_collides(STRAIGHT, boxes)


def test_box_beside_the_path_does_not_collide_and_touching_does():
    # half widths 0.925 + 1.0 = 1.925 m: a box 2.0 m to the side is clear, 1.8 m overlaps
    assert not trajectory_collides(STRAIGHT, [_box(5.0 + 1.35, 2.0)] + [None] * 5)
    assert trajectory_collides(STRAIGHT, [_box(5.0 + 1.35, 1.8)] + [None] * 5)


def test_headings_follow_the_direction_of_travel():
    traj = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    yaws = trajectory_yaws(traj)
    np.testing.assert_allclose(yaws, [0.0, 0.0, math.pi / 2, math.pi, math.pi, math.pi])
    # a turned ego box: heading +90 deg at (0, 5) puts its centre at (0, 6.35); a box there collides
    turn = np.array([[0.0, 5.0]] * 6)
    turn[0] = [0.0, 5.0]
    assert trajectory_yaws(turn)[0] == pytest.approx(math.pi / 2)
    assert trajectory_collides(turn, [_box(0.0, 6.35 + 2.5, math.pi / 2)] + [None] * 5)


def test_planned_collisions_and_rate_in_the_accumulator():
    plans = np.stack([STRAIGHT, STRAIGHT + [0.0, 8.0]])[None].repeat(2, 0)  # [2 windows, K=2, 6, 2]
    boxes = [[None, None, None, _box(23.0, 0.0), None, None], None]  # window 1: no annotations
    flags = planned_collisions(plans, boxes)
    assert flags[0].tolist() == [1.0, 0.0] and np.isnan(flags[1]).all()
    acc = OpenLoopAccumulator()
    gt = torch.from_numpy(STRAIGHT).float()[None].repeat(2, 1, 1)
    acc.update(torch.from_numpy(plans).float(), gt, torch.tensor([2, 0]), torch.from_numpy(flags))
    res = acc.compute()
    assert res["all"]["collision_rate"] == pytest.approx(0.5)  # only window 0 counts: 1 of 2 plans
    assert res["straight"]["collision_rate"] == pytest.approx(0.5)
    assert math.isnan(res["right"]["collision_rate"]) and res["right"]["count"] == 1
    with pytest.raises(ValueError, match="collisions must be"):
        acc.update(torch.from_numpy(plans).float(), gt, torch.tensor([2, 0]), torch.zeros(2, 3))


def test_future_boxes_are_expressed_in_the_current_ego_frame():
    # ego at (100, 50) heading +90 deg (north); one agent 10 m north of it at t0, moving north 2 m per 0.5 s
    n = 8
    ts = np.arange(n, dtype=np.int64) * 500_000
    trans = np.tile([100.0, 50.0, 0.0], (n, 1))
    rot = np.tile(quat_from_yaw(math.pi / 2), (n, 1))
    centers = np.stack([np.full(n, 100.0), 60.0 + 2.0 * np.arange(n), np.zeros(n)], axis=1)
    boxes = AgentBoxes(offsets=np.arange(n + 1, dtype=np.int64), centers=centers,
                       sizes=np.tile([4.0, 2.0, 1.5], (n, 1)), yaws=np.full(n, math.pi / 2))
    rec = SceneRecord(name="s", timestamps=ts, translations=trans, rotations=rot,
                      intrinsics=np.eye(3), boxes=boxes)
    fb = future_boxes(rec, 0)
    assert len(fb) == 6
    for i, b in enumerate(fb[:6]):  # ahead of the ego (x forward), 10 + 2 (i + 1) m, same heading
        np.testing.assert_allclose(b[0, :3], [10.0 + 2.0 * (i + 1), 0.0, 0.0], atol=1e-9)
    late = future_boxes(rec, 4)
    assert late[2] is not None and late[3] is None and late[5] is None  # frames 8 ... do not exist
    assert future_boxes(SceneRecord(name="nb", timestamps=ts, translations=trans, rotations=rot,
                                    intrinsics=np.eye(3)), 0) is None


def test_a_nan_plan_is_refused_not_counted_as_clear():
    """A NaN waypoint overlaps no box, so a NaN plan counted as a plan that does not collide (rate biased down)."""
    boxes = [[None, None, None, _box(23.0, 0.0), None, None]]
    bad = STRAIGHT.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"plans: window 0, sample 1 holds NaN or infinite coordinates"):
        planned_collisions(np.stack([STRAIGHT, bad])[None], boxes)
    with pytest.raises(ValueError, match=r"trajectory: waypoint 2 holds NaN or infinite"):
        trajectory_collides(bad, boxes[0])


def test_static_objects_do_not_count_as_collisions_by_default():
    """A traffic cone (nuScenes movable_object.trafficcone, nuPlan traffic_cone) on the plan's path is left out with
    classes="agents", the default (ST-P3 / UniAD count vehicles and pedestrians); a car or a pedestrian counts, and
    classes="all" counts every box. The old check counted the cones."""
    from vavam.eval.collision import is_static_object

    n = 8
    ts = np.arange(n, dtype=np.int64) * 500_000
    trans = np.zeros((n, 3))
    rot = np.tile(quat_from_yaw(0.0), (n, 1))

    def record(category: str) -> SceneRecord:  # one box 12 m straight ahead in every frame
        boxes = AgentBoxes(offsets=np.arange(n + 1, dtype=np.int64), centers=np.tile([12.0, 0.0, 0.0], (n, 1)),
                           sizes=np.tile([0.5, 0.5, 1.0], (n, 1)), yaws=np.zeros(n), categories=[category] * n)
        return SceneRecord(name="s", timestamps=ts, translations=trans, rotations=rot, intrinsics=np.eye(3),
                           boxes=boxes)

    plan = np.stack([np.arange(1, 7) * 4.0, np.zeros(6)], axis=1)  # straight ahead through x = 12 m
    for category, counts in (("movable_object.trafficcone", False), ("traffic_cone", False), ("barrier", False),
                             ("static_object.bicycle_rack", False), ("vehicle.car", True),
                             ("human.pedestrian.adult", True), ("pedestrian", True), ("sedan", True), ("", True)):
        assert is_static_object(category) is not counts
        rec = record(category)
        assert trajectory_collides(plan, future_boxes(rec, 0)) is counts, category
        assert trajectory_collides(plan, future_boxes(rec, 0, classes="all")) is True
    with pytest.raises(ValueError, match="collision classes must be 'agents' or 'all'"):
        future_boxes(record("vehicle.car"), 0, classes="vehicles")
