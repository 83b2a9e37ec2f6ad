"""Planners for closed-loop runs: ``planner(obs) -> [6, 2]`` ego-frame waypoints at 0.5 ... 3.0 s.

An observation is a dict (see :func:`vavam.world.closedloop.observation`): ``image`` (uint8 HxWx3 or
None), ``ego_to_world`` (4x4), ``speed`` (m/s), ``command`` (0 right / 1 left / 2 straight),
``timestamp_us``, ``intrinsics`` and ``camera_to_ego`` (4x4, OpenCV camera -> ego; both None without a
renderer), ``boxes`` (other vehicles ``[N, 11]`` world frame: x, y, yaw, length, width, height, r, g, b,
vx, vy) and, for privileged planners, ``world``.
Planners may define ``reset()``, called before each run.
"""

from __future__ import annotations

import numpy as np

from vavam.types import NUM_WAYPOINTS, WAYPOINT_DT
from vavam.world.driver import path_points
from vavam.world.geometry import box_corners, boxes_overlap

TIMES = WAYPOINT_DT * np.arange(1, NUM_WAYPOINTS + 1)


def _to_ego(ego_to_world: np.ndarray, xy: np.ndarray) -> np.ndarray:
    r, t = ego_to_world[:2, :2], ego_to_world[:2, 3]
    return (np.asarray(xy) - t) @ r


def boxes_in_ego(obs: dict) -> np.ndarray:
    """Other vehicles in the ego frame: ``[N, 7]`` x, y, yaw, length, width, vx, vy."""
    b = np.asarray(obs["boxes"], dtype=np.float64).reshape(-1, 11)
    m = obs["ego_to_world"]
    yaw0 = np.arctan2(m[1, 0], m[0, 0])
    xy = _to_ego(m, b[:, :2])
    v = b[:, 9:11] @ m[:2, :2]
    return np.concatenate([xy, (b[:, 2:3] - yaw0), b[:, 3:5], v], axis=1)


class ConstantVelocityPlanner:
    """Keeps the current speed straight ahead."""

    def __call__(self, obs: dict) -> np.ndarray:
        return np.stack([obs["speed"] * TIMES, np.zeros(NUM_WAYPOINTS)], axis=1)


class EmergencyBrakePlanner:
    """Constant velocity, but a full stop when a vehicle is inside a 5 m wide corridor ahead within a
    2 s time to collision (NeuroNCAP's baseline, with privileged boxes as its detections)."""

    def __init__(self, corridor: float = 2.5, ttc: float = 2.0, ego_front: float = 3.36):
        self.corridor, self.ttc, self.front = corridor, ttc, ego_front

    def __call__(self, obs: dict) -> np.ndarray:
        v = float(obs["speed"])
        b = boxes_in_ego(obs)
        if len(b):
            c, s = np.abs(np.cos(b[:, 2])), np.abs(np.sin(b[:, 2]))
            half_x = 0.5 * (b[:, 3] * c + b[:, 4] * s)  # the box's half extents along the ego's axes (a crossing
            half_y = 0.5 * (b[:, 3] * s + b[:, 4] * c)  # car is long across the corridor, short along it)
            ahead = b[:, 0] - half_x - self.front
            closing = v - b[:, 5]
            in_lane = np.abs(b[:, 1]) < self.corridor + half_y
            ttc = np.where(closing > 0.1, ahead / np.maximum(closing, 1e-6), np.inf)
            if np.any(in_lane & (ahead > -half_x) & ((ttc < self.ttc) | (ahead < 2.0))):
                return np.zeros((NUM_WAYPOINTS, 2))
        return np.stack([v * TIMES, np.zeros(NUM_WAYPOINTS)], axis=1)


def route_plan(obs: dict, speeds: np.ndarray, offset: float = 0.0, ramp: float = 10.0) -> np.ndarray:
    """Waypoints along the ego's route (privileged) reached with the given per-waypoint speeds, each 0.5 s
    covered at the mean of the speeds at its ends from the current speed ``obs["speed"]`` (the speed at its end
    alone made a plan braking at 6 m/s² from 10 m/s stop after 6.0 m, where the car needs 8.3 m), moving smoothly
    (over ``ramp`` metres) from the ego's lateral offset to ``offset`` metres left of the lane centre."""
    world = obs["world"]
    net, path, s0 = world.net, world.ego_agent.path, world.s_rear
    speeds = np.asarray(speeds, dtype=np.float64)
    before = np.concatenate([[float(obs["speed"])], speeds[:-1]])  # the speed at the start of each 0.5 s
    dist = np.cumsum(0.5 * (before + speeds) * WAYPOINT_DT)
    pts = path_points(net, path, s0 + dist)
    ahead = path_points(net, path, s0 + dist + 0.5)
    h = np.arctan2(ahead[:, 1] - pts[:, 1], ahead[:, 0] - pts[:, 0])
    r = np.clip(dist / max(ramp, 1e-3), 0.0, 1.0)
    lat0 = float(getattr(world, "lateral", 0.0))  # start from where the ego is, not from the lane centre
    shift = lat0 + (offset - lat0) * (3 * r**2 - 2 * r**3)
    pts = pts + shift[:, None] * np.stack([-np.sin(h), np.cos(h)], axis=1)
    return _to_ego(obs["ego_to_world"], pts)


class ReferencePlanner:
    """The unreacting ego: its current speed along its route (used for priming and v_reference)."""

    def __call__(self, obs: dict) -> np.ndarray:
        return route_plan(obs, np.full(NUM_WAYPOINTS, float(obs["speed"])))


class ExpertPlanner:
    """Privileged expert: samples route-following plans (lateral offsets x speed profiles), predicts
    every vehicle at constant velocity and picks the cheapest plan that stays clear of them.

    Cost: a collision costs 1000 (more the earlier it comes), then lateral offset, then lost speed.
    Moving vehicles are checked at ``t`` and ``t ± time_buffer`` so that the expert does not try to
    slip through just ahead of or behind a crossing car.
    """

    offsets = (0.0, -2.75, 2.75, -3.5, 3.5)
    decels = (0.0, -2.0, -4.0, -6.0)
    extra = 14  # waypoints (0.5 s each) checked beyond the 3 s plan (10 s in all)
    time_buffer = 0.6  # s: moving vehicles also count where they will be / were this much earlier / later

    def __init__(
        self,
        cruise: float | None = None,
        margin: float = 0.5,
        side_margin: float = 0.25,
        length: float = 4.018,
        width: float = 1.85,
        rear_to_centre: float = 1.35,
    ):
        self.cruise, self.margin, self.side_margin = cruise, margin, side_margin
        self.length, self.width, self.r2c = length, width, rear_to_centre

    def _collision_time(self, plan: np.ndarray, others: np.ndarray, v0: float) -> float:
        # beyond the plan the ego keeps its final velocity for ``extra`` more waypoints: a plan that
        # stops in front of an oncoming car is not safe just because the impact comes after 3 s
        tail = plan[-1] - plan[-2]
        pts = np.concatenate([[[0.0, 0.0]], plan, plan[-1] + tail * np.arange(1, self.extra + 1)[:, None]])
        times = WAYPOINT_DT * np.arange(1, len(pts))
        # each other vehicle at t - buffer, t, t + buffer (moving) or at t only (parked / stopped)
        dts = np.array([-self.time_buffer, 0.0, self.time_buffer])
        moving = np.abs(others[:, 5]) + np.abs(others[:, 6]) > 0.5  # [N]
        checked = np.stack([moving, np.ones_like(moving), moving], axis=1)  # [N, 3]
        reach = 0.5 * (np.hypot(others[:, 3], others[:, 4]) + self.length) + 2 * self.margin  # [N]
        yaw = 0.0
        for i in range(1, len(pts)):
            d = pts[i] - pts[i - 1]
            if np.hypot(*d) > 0.05:  # else keep the last heading (stopped)
                yaw = np.arctan2(d[1], d[0])
            c = pts[i] + self.r2c * np.array([np.cos(yaw), np.sin(yaw)])
            t = times[i - 1]
            ox = others[:, 0:1] + others[:, 5:6] * (t + dts)  # [N, 3]
            oy = others[:, 1:2] + others[:, 6:7] * (t + dts)
            near = checked & ~(np.hypot(ox - c[0], oy - c[1]) > reach[:, None])  # bounding circles meet
            if not near.any():
                continue
            ego = box_corners(c[0], c[1], yaw, self.length + 2 * self.margin, self.width + 2 * self.side_margin)
            for n, k in zip(*np.nonzero(near)):
                if boxes_overlap(ego, box_corners(ox[n, k], oy[n, k], others[n, 2], others[n, 3], others[n, 4])):
                    return float(t)
        return np.inf

    def __call__(self, obs: dict) -> np.ndarray:
        world = obs["world"]
        v = float(obs["speed"])
        cruise = self.cruise if self.cruise is not None else world.traffic.desired_speed(world.ego_agent)
        others = boxes_in_ego(obs)
        others = others[np.hypot(others[:, 0], others[:, 1]) < 100.0] if len(others) else others
        best, best_cost = None, np.inf
        for decel in self.decels:
            acc = 1.0 if decel == 0.0 and v < cruise else decel
            speeds = np.clip(v + acc * TIMES, 0.0, max(cruise, 0.0) if decel == 0.0 else v)
            for off in self.offsets:
                plan = route_plan(obs, speeds, off, ramp=max(8.0, 1.2 * v))
                t_hit = self._collision_time(plan, others, v) if len(others) else np.inf
                cost = 1000.0 + 100.0 * (10.0 - min(t_hit, 10.0)) if np.isfinite(t_hit) else 0.0
                cost += 3.0 * abs(off) + 2.0 * abs(decel) + (0.5 if off > 0 else 0.0)
                if cost < best_cost:
                    best, best_cost = plan, cost
        return best
