"""The ego vehicle: a kinematic bicycle model about the rear axle, with actuator limits.

The ego pose (x, y, yaw) is that of the rear-axle centre on the ground, as in nuScenes' ego frame;
the box centre lies ``rear_to_centre`` metres ahead of it: 1.35 m, half the wheelbase. NeuroNCAP's
collision check puts its (same-sized) ego box 0.5 m ahead of the rear axle, so our front bumper is 0.85 m
further forward; the scenarios are laid out from this geometry (``front`` in :mod:`vavam.world.scenarios`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class VehicleParams:
    """Ego dimensions and limits (box as NeuroNCAP's ego: 4.018 x 1.85 m)."""

    length: float = 4.018
    width: float = 1.85
    height: float = 1.6
    wheelbase: float = 2.7
    rear_to_centre: float = 1.35  # rear axle -> box centre, metres
    max_accel: float = 6.0  # m/s^2, forward
    max_decel: float = 6.0  # m/s^2, braking
    max_steer: float = 0.6  # rad
    max_steer_rate: float = 1.5  # rad/s
    max_speed: float = 25.0  # m/s


@dataclass(frozen=True)
class EgoState:
    """Rear-axle pose, speed, steering angle and last acceleration."""

    x: float
    y: float
    yaw: float
    v: float
    steer: float = 0.0
    a: float = 0.0

    def centre(self, params: VehicleParams = VehicleParams()) -> tuple[float, float]:
        """World position of the box centre."""
        return (
            self.x + params.rear_to_centre * math.cos(self.yaw),
            self.y + params.rear_to_centre * math.sin(self.yaw),
        )


def bicycle_step(
    state: EgoState, accel: float, steer: float, dt: float, p: VehicleParams = VehicleParams()
) -> EgoState:
    """Advance the kinematic bicycle model by ``dt`` seconds.

    ``accel`` (m/s^2) is clipped to ``[-max_decel, max_accel]``; the steering angle moves towards
    ``steer`` at most ``max_steer_rate`` rad/s and stays within ``±max_steer``. Speed stays within
    ``[0, max_speed]`` (no reversing). Integration: exact arc for constant speed/steer over the step
    using the mean speed.
    """
    if not (math.isfinite(accel) and math.isfinite(steer)):
        raise ValueError(f"non-finite control (accel={accel}, steer={steer})")
    a = min(max(accel, -p.max_decel), p.max_accel)
    d_max = p.max_steer_rate * dt
    delta = min(max(steer, state.steer - d_max, -p.max_steer), state.steer + d_max, p.max_steer)
    v_new = min(max(state.v + a * dt, 0.0), p.max_speed)
    a_eff = (v_new - state.v) / dt
    dist = 0.5 * (state.v + v_new) * dt
    kappa = math.tan(delta) / p.wheelbase
    dyaw = dist * kappa
    if abs(dyaw) < 1e-9:
        x = state.x + dist * math.cos(state.yaw)
        y = state.y + dist * math.sin(state.yaw)
    else:
        r = 1.0 / kappa
        x = state.x + r * (math.sin(state.yaw + dyaw) - math.sin(state.yaw))
        y = state.y - r * (math.cos(state.yaw + dyaw) - math.cos(state.yaw))
    yaw = (state.yaw + dyaw + math.pi) % (2 * math.pi) - math.pi
    return replace(state, x=x, y=y, yaw=yaw, v=v_new, steer=delta, a=a_eff)


def pure_pursuit(state: EgoState, target_xy: tuple[float, float], p: VehicleParams = VehicleParams()) -> float:
    """Steering angle that brings the rear axle onto a circle through ``target_xy`` (world frame)."""
    dx, dy = target_xy[0] - state.x, target_xy[1] - state.y
    c, s = math.cos(state.yaw), math.sin(state.yaw)
    lx, ly = c * dx + s * dy, -s * dx + c * dy
    ld2 = lx * lx + ly * ly
    if ld2 < 1e-6:
        return 0.0
    return math.atan(2.0 * p.wheelbase * ly / ld2)
