"""Open-loop collision check: does a planned trajectory run into another agent's (future) box?

A plan is 6 waypoints at 0.5 s spacing in the ego frame of the current frame (x forward, y left,
metres; the waypoints are positions of the ego reference point, the rear axle in nuScenes and in
the world). At waypoint ``i`` the ego box is placed at that point, heading along the plan (the
direction from the previous waypoint, the origin for the first; a waypoint that hardly moves keeps
the previous heading), its centre ``rear_to_centre`` metres ahead of the reference point. It
collides when it overlaps, in bird's-eye view, the box of any other agent at the time of that
waypoint, i.e. the agent's annotated box of the frame nearest ``t + 0.5 (i + 1)`` s (within
``tolerance_s``) expressed in the CURRENT ego frame. Waypoints whose time has no annotated frame are
not checked.

Which boxes count (``classes``): ``"agents"`` (default) are road users -- vehicles of every kind,
cyclists, pedestrians, animals, the world's cars and boxes of unknown category -- and leave out static
objects: nuScenes ``movable_object.*`` (cones, barriers, debris, pushables) and ``static_object.*``
(bicycle racks), nuPlan ``traffic_cone``, ``barrier``, ``czone_sign`` and ``generic_object``. This is
the convention of the ST-P3 / UniAD open-loop collision rate (vehicles and pedestrians). ``"all"``
counts every annotated box.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from vavam.data.geometry import world_to_ego, yaw_from_quat
from vavam.data.records import SceneRecord
from vavam.types import NUM_WAYPOINTS, WAYPOINT_DT
from vavam.world.collision import first_overlap
from vavam.world.geometry import wrap_angle
from vavam.world.vehicle import VehicleParams

_EGO = VehicleParams()
#: (length, width, reference point -> box centre) of the ego box, metres (NeuroNCAP's ego size).
DEFAULT_EGO_BOX = (_EGO.length, _EGO.width, _EGO.rear_to_centre)


#: CollisionClasses: which annotated boxes a plan may not overlap (see the module docstring).
CollisionClasses = Literal["agents", "all"]
_STATIC_PREFIXES = ("movable_object.", "static_object.")  # nuScenes
_STATIC_NAMES = frozenset({"traffic_cone", "barrier", "czone_sign", "generic_object"})  # nuPlan


def is_static_object(category: str) -> bool:
    """True for the categories of static objects (nuScenes ``movable_object.*`` / ``static_object.*``, nuPlan
    ``traffic_cone`` / ``barrier`` / ``czone_sign`` / ``generic_object``), which ``classes="agents"`` leaves out."""
    return category.startswith(_STATIC_PREFIXES) or category in _STATIC_NAMES


def future_boxes(
    record: SceneRecord, frame: int, num_waypoints: int = NUM_WAYPOINTS, dt: float = WAYPOINT_DT,
    tolerance_s: float = 0.1, classes: CollisionClasses = "agents",
) -> list[np.ndarray | None] | None:
    """Other agents' boxes at each waypoint time, in the ego frame of ``frame``.

    Args:
        record: a scene record with ``boxes`` (world frame).
        frame: the current frame (index in the scene).
        num_waypoints, dt: waypoint count and spacing (s).
        tolerance_s: largest allowed gap between a waypoint time and the nearest frame.
        classes: ``"agents"`` leaves static objects out (see the module docstring), ``"all"`` keeps every box.

    Returns:
        None when the record has no boxes; else a list of ``num_waypoints`` entries, each
        ``float64 [M, 5]`` (x, y, yaw, length, width) or None where no frame is close enough.
    """
    if classes not in ("agents", "all"):
        raise ValueError(f"collision classes must be 'agents' or 'all', got {classes!r}")
    if record.boxes is None:
        return None
    keep = None  # [M] rows that count, None: all
    if classes == "agents" and record.boxes.categories is not None:
        keep = np.array([not is_static_object(c) for c in record.boxes.categories], dtype=bool)
    if not 0 <= frame < len(record):
        raise IndexError(f"scene '{record.name}': frame {frame} outside [0, {len(record)})")
    ts = np.asarray(record.timestamps, dtype=np.int64)
    t0, pose_t, pose_q = ts[frame], record.translations[frame], record.rotations[frame]
    ego_yaw = float(yaw_from_quat(pose_q))
    out: list[np.ndarray | None] = []
    for i in range(num_waypoints):
        target = t0 + round((i + 1) * dt * 1e6)
        f = int(np.argmin(np.abs(ts - target)))
        if abs(int(ts[f]) - target) > tolerance_s * 1e6:
            out.append(None)
            continue
        rows = np.arange(record.boxes.offsets[f], record.boxes.offsets[f + 1])  # this frame's boxes
        if keep is not None:
            rows = rows[keep[rows]]
        centers = world_to_ego(pose_t, pose_q, record.boxes.centers[rows])  # [M, 3]
        sizes = record.boxes.sizes[rows]  # [M, 3] (length, width, height)
        yaws = wrap_angle(record.boxes.yaws[rows] - ego_yaw)
        out.append(np.column_stack([centers[:, :2], yaws, sizes[:, 0], sizes[:, 1]]).astype(np.float64))
    return out


def trajectory_yaws(trajectory: np.ndarray, min_step: float = 0.05) -> np.ndarray:
    """Heading at each waypoint from the direction of travel: ``[..., W, 2]`` -> ``[..., W]`` radians.

    The first heading is from the origin; a step shorter than ``min_step`` metres keeps the heading
    before it (0, straight ahead, at the start).
    """
    traj = np.asarray(trajectory, dtype=np.float64)
    prev = np.concatenate([np.zeros_like(traj[..., :1, :]), traj[..., :-1, :]], axis=-2)
    step = traj - prev  # [..., W, 2]
    yaw = np.arctan2(step[..., 1], step[..., 0])
    moving = np.hypot(step[..., 0], step[..., 1]) >= min_step
    out = np.zeros(traj.shape[:-1])
    last = np.zeros(traj.shape[:-2])
    for i in range(traj.shape[-2]):
        last = np.where(moving[..., i], yaw[..., i], last)
        out[..., i] = last
    return out


def trajectory_collides(
    trajectory: np.ndarray, boxes: Sequence[np.ndarray | None], ego_box: tuple[float, float, float] = DEFAULT_EGO_BOX
) -> bool:
    """Whether one plan ``[W, 2]`` overlaps any box at its waypoint's time (``boxes`` from :func:`future_boxes`)."""
    traj = np.asarray(trajectory, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[1] != 2:
        raise ValueError(f"trajectory must be [W, 2], got {list(traj.shape)}")
    if len(boxes) != len(traj):
        raise ValueError(f"{len(boxes)} box sets for {len(traj)} waypoints")
    bad = ~np.isfinite(traj).all(1)  # a NaN waypoint overlaps nothing: it would count as "no collision"
    if bad.any():
        raise ValueError(f"trajectory: waypoint {int(np.flatnonzero(bad)[0])} holds NaN or infinite coordinates")
    length, width, ahead = ego_box
    yaws = trajectory_yaws(traj)
    for (x, y), yaw, others in zip(traj, yaws, boxes):
        if others is None or len(others) == 0:
            continue
        ego = np.array([x + ahead * np.cos(yaw), y + ahead * np.sin(yaw), yaw, length, width])  # box centre
        if first_overlap(ego, others) is not None:
            return True
    return False


def planned_collisions(
    plans: np.ndarray, boxes: Sequence[Sequence[np.ndarray | None] | None],
    ego_box: tuple[float, float, float] = DEFAULT_EGO_BOX,
) -> np.ndarray:
    """Collision flags of K plans per window: ``plans [N, K, W, 2]`` -> float ``[N, K]`` (1 collides, 0 not,
    NaN where the window has no boxes, i.e. ``boxes[n]`` is None)."""
    plans = np.asarray(plans, dtype=np.float64)
    if plans.ndim != 4 or plans.shape[-1] != 2:
        raise ValueError(f"plans must be [N, K, W, 2], got {list(plans.shape)}")
    if len(boxes) != len(plans):
        raise ValueError(f"{len(boxes)} box lists for {len(plans)} windows")
    bad = ~np.isfinite(plans).all(axis=(2, 3))  # [N, K]: a NaN plan overlaps nothing and would count as clear
    if bad.any():
        n, k = (int(v) for v in np.argwhere(bad)[0])
        raise ValueError(f"plans: window {n}, sample {k} holds NaN or infinite coordinates "
                         f"({int(bad.sum())} non-finite plan(s))")
    out = np.full(plans.shape[:2], np.nan)
    for n, window_boxes in enumerate(boxes):
        if window_boxes is None:
            continue
        out[n] = [float(trajectory_collides(p, window_boxes, ego_box)) for p in plans[n]]
    return out
