"""Kinematic bicycle model and pure pursuit."""

from __future__ import annotations

import math

import pytest

from vavam.world.vehicle import EgoState, VehicleParams, bicycle_step, pure_pursuit


def test_straight_line_and_acceleration_limit():
    p = VehicleParams()
    s = EgoState(0.0, 0.0, 0.0, 10.0)
    for _ in range(10):
        s = bicycle_step(s, 100.0, 0.0, 0.1, p)  # asks for far more than the limit
    assert s.v == pytest.approx(10.0 + p.max_accel)
    assert s.y == pytest.approx(0.0) and s.x == pytest.approx(10.0 + 0.5 * p.max_accel)
    for _ in range(100):
        s = bicycle_step(s, -100.0, 0.0, 0.1, p)
    assert s.v == 0.0  # no reversing


def test_constant_steer_drives_a_circle_of_the_bicycle_radius():
    p = VehicleParams()
    delta = 0.2
    s = EgoState(0.0, 0.0, 0.0, 5.0, steer=delta)
    radius = p.wheelbase / math.tan(delta)
    for _ in range(50):
        s = bicycle_step(s, 0.0, delta, 0.1, p)
        assert math.hypot(s.x, s.y - radius) == pytest.approx(radius, rel=1e-9)


def test_steering_rate_and_angle_limits():
    p = VehicleParams()
    s = bicycle_step(EgoState(0.0, 0.0, 0.0, 5.0), 0.0, 1.0, 0.1, p)
    assert s.steer == pytest.approx(p.max_steer_rate * 0.1)
    for _ in range(20):
        s = bicycle_step(s, 0.0, 1.0, 0.1, p)
    assert s.steer == pytest.approx(p.max_steer)
    with pytest.raises(ValueError):
        bicycle_step(s, float("nan"), 0.0, 0.1, p)


def test_pure_pursuit_steers_towards_the_target():
    s = EgoState(0.0, 0.0, 0.0, 5.0)
    assert pure_pursuit(s, (10.0, 0.0)) == 0.0
    assert pure_pursuit(s, (10.0, 2.0)) > 0.0  # left
    assert pure_pursuit(s, (10.0, -2.0)) < 0.0
    # the steering angle of the circle through the target
    p = VehicleParams()
    r = (10.0**2 + 2.0**2) / (2 * 2.0)
    assert pure_pursuit(s, (10.0, 2.0), p) == pytest.approx(math.atan(p.wheelbase / r))
