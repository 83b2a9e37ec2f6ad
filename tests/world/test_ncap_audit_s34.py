"""Closed-loop audit: the tracker's realisation of planned speeds and the emergency-brake corridor."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vavam.world.geometry import pose_matrix
from vavam.world.planners import EmergencyBrakePlanner
from vavam.world.tracker import TrajectoryTracker
from vavam.world.vehicle import EgoState, VehicleParams, bicycle_step

TIMES = 0.5 * np.arange(1, 7)


def _braking_plan(v: float, decel: float) -> np.ndarray:
    """Waypoints of a constant deceleration from ``v`` to a stop (x forward, y left) at 0.5 ... 3.0 s."""
    t = np.minimum(TIMES, v / decel)
    return np.stack([v * t - 0.5 * decel * t**2, np.zeros(6)], axis=1)


def test_tracker_first_command_matches_the_planned_deceleration():
    # v = 8 m/s, plan braking at 4 m/s^2: waypoints 3.5, 6, 7.5, 8, 8, 8 m. The plan's speed at t = 0 is 8 m/s
    # and it loses 4 m/s^2; the tracker should command about -4 m/s^2 (it commands 2 * (3.5 / 0.5 - 8) = -2).
    params = VehicleParams()
    state = EgoState(0.0, 0.0, 0.0, 8.0)
    acc, _ = TrajectoryTracker(state, _braking_plan(8.0, 4.0), params).control(state, 0.1)
    assert acc == pytest.approx(-4.0, abs=1.0)


@pytest.mark.parametrize("decel", [2.0, 4.0])
def test_replanned_braking_stops_about_where_the_plans_say(decel):
    # A planner that asks, every 0.5 s, for a constant deceleration from the current speed (as closed loop
    # replans) should stop the car in about v^2 / (2 a): 16 m for 2 m/s^2, 8 m for 4 m/s^2 from 8 m/s.
    params = VehicleParams()
    state, t = EgoState(0.0, 0.0, 0.0, 8.0), 0.0
    while state.v > 1e-3 and t < 12.0:
        tracker = TrajectoryTracker(state, _braking_plan(state.v, decel), params)
        for _ in range(5):
            state = bicycle_step(state, *tracker.control(state, 0.1), 0.1, params)
            t += 0.1
    ideal = 8.0**2 / (2 * decel)
    assert state.x <= 1.15 * ideal, f"stopped after {state.x:.2f} m, the plans said {ideal:.2f} m"


def test_emergency_brake_sees_a_crossing_car_inside_its_corridor():
    # A car crossing perpendicular (yaw 90 deg, 4.5 x 1.9 m) with its centre 4 m to the left and 10 m ahead:
    # its box spans y in [1.75, 6.25], so it is already inside the 5 m corridor (|y| < 2.5), and it is closing
    # (ego 8 m/s): its near side is 10 - 0.95 - 3.36 = 5.7 m ahead, TTC 0.7 s < 2 s -> full stop expected.
    boxes = np.array([[10.0, 4.0, math.pi / 2, 4.5, 1.9, 1.5, 1, 1, 1, 0.0, -6.0]])
    obs = {"speed": 8.0, "boxes": boxes, "ego_to_world": pose_matrix(0.0, 0.0, 0.0)}
    plan = EmergencyBrakePlanner()(obs)
    assert np.allclose(plan, 0.0), f"expected a stop plan, got {plan[:, 0].round(2).tolist()}"
