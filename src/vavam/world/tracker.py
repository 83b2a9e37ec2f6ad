"""Tracking a planner's trajectory: 6 ego-frame waypoints at 0.5 s -> acceleration and steering.

The plan is frozen in the world frame when it arrives (origin = the rear axle at that time, t = 0).
At each 0.1 s step the tracker aims half a second ahead in time: longitudinal control drives the speed
towards the planned speed 0.5 s ahead (with a gain of 2 per second, so that it asks for the plan's own
acceleration) plus a correction for the progress error; lateral control is pure pursuit on the planned
polyline.
"""

from __future__ import annotations

import math

import numpy as np

from vavam.types import NUM_WAYPOINTS, WAYPOINT_DT
from vavam.world.geometry import Polyline
from vavam.world.vehicle import EgoState, VehicleParams, pure_pursuit


def validate_plan(plan) -> np.ndarray:
    """Check a planner output: ``[6, 2]`` finite metres (real numbers: not text, booleans or complex numbers).
    Returns it as float64; raises ``ValueError``."""
    try:
        raw = np.asarray(plan)
        if raw.dtype.kind not in "iufO":  # numpy would read "1.5" as 1.5, True as 1 m, and drop imaginary parts
            raise TypeError(f"dtype {raw.dtype}")
        arr = raw.astype(np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"a plan must be [{NUM_WAYPOINTS}, 2] real numbers (x forward, y left, metres), got "
                         f"{type(plan).__name__} ({err})") from err
    if arr.shape != (NUM_WAYPOINTS, 2):
        raise ValueError(f"a plan must be [{NUM_WAYPOINTS}, 2] (x forward, y left, metres), got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("plan has NaN or infinite waypoints")
    return arr


class TrajectoryTracker:
    """Follows one plan (see the module docstring).

    Args:
        state: ego state when the plan was made.
        plan: ``[6, 2]`` ego-frame waypoints at 0.5, 1.0, ... 3.0 s.
        params: vehicle limits and wheelbase.
    """

    def __init__(self, state: EgoState, plan: np.ndarray, params: VehicleParams = VehicleParams()):
        plan = validate_plan(plan)
        c, s = math.cos(state.yaw), math.sin(state.yaw)
        world = np.stack([state.x + c * plan[:, 0] - s * plan[:, 1], state.y + s * plan[:, 0] + c * plan[:, 1]], 1)
        pts = np.concatenate([[[state.x, state.y]], world])
        self.times = np.arange(NUM_WAYPOINTS + 1) * WAYPOINT_DT
        seg = np.linalg.norm(np.diff(pts, axis=0), axis=1)
        self.s_at = np.concatenate([[0.0], np.cumsum(seg)])  # arc length reached at each waypoint time
        self.total = float(self.s_at[-1])
        self.params = params
        # extend the path straight beyond its end so that pure pursuit always has a target
        if self.total > 0.05:
            last = pts[-1] - pts[np.flatnonzero(seg > 1e-3)[-1]]
            direction = last / np.linalg.norm(last)
        else:
            direction = np.array([c, s])
        self.line = Polyline(np.concatenate([pts, [pts[-1] + 30.0 * direction]]))
        self.elapsed = 0.0

    def _s_ref(self, t: float) -> float:
        """Planned arc length at ``t`` s; past the last waypoint the plan goes on at its last segment's speed (its
        end is not an order to stop: a stopping plan's last segment has no length)."""
        if t > self.times[-1]:
            last_speed = (self.s_at[-1] - self.s_at[-2]) / (self.times[-1] - self.times[-2])
            return float(self.s_at[-1] + (t - self.times[-1]) * last_speed)
        return float(np.interp(t, self.times, self.s_at))

    def control(self, state: EgoState, dt: float = 0.1) -> tuple[float, float]:
        """(acceleration, steering angle) for the next ``dt``; call once per step."""
        t = self.elapsed
        self.elapsed += dt
        s_now, _ = self.line.project((state.x, state.y))
        lead = 0.5  # the planned speed half a second ahead (the mean planned speed over t + 0.25 .. t + 0.75 s):
        # with the gain of 2 per second this asks for the plan's own acceleration. The mean speed over t .. t + 0.5
        # used before is the planned speed at t + 0.25 s, which asked for half of it (braking plans stopped ~1.5x
        # as far as planned)
        v_ref = (self._s_ref(t + lead + 0.25) - self._s_ref(t + lead - 0.25)) / 0.5
        progress_err = self._s_ref(t) - s_now
        if self.total < 0.3 or v_ref < 0.05 and progress_err < 0.5:
            acc = -self.params.max_decel if state.v > 0.05 else 0.0  # stop plans
        else:
            acc = 2.0 * (v_ref - state.v) + 0.8 * progress_err
        lookahead = max(3.0, 0.8 * state.v + 2.0)
        target = self.line.position(s_now + lookahead)
        steer = pure_pursuit(state, (float(target[0]), float(target[1])), self.params)
        return acc, steer
