"""NeuroNCAP's route command rule at its threshold: project the straight-ahead point onto the route."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from vavam.types import Command
from vavam.world.driver import route_command
from vavam.world.vehicle import EgoState


class _Line:
    """A straight lane along x, then a lateral shift of ``offset`` m (a lane change to the left/right)."""

    def __init__(self, offset: float):
        self.offset = offset

    def position(self, s) -> np.ndarray:
        """Point(s) at arc length(s) ``s``: ``[..., 2]`` (like :meth:`Polyline.position`)."""
        s = np.asarray(s, dtype=np.float64)
        return np.stack([s, np.where(s >= 8.0, self.offset, 0.0)], axis=-1)


def _net(offset: float):
    return SimpleNamespace(lanes={0: SimpleNamespace(length=1000.0, line=_Line(offset))})


def test_route_command_thresholds():
    ego = EgoState(x=0.0, y=0.0, yaw=0.0, v=5.0)  # straight-ahead point at 15 m
    assert route_command(_net(2.0), [0], 0.0, ego) == Command.STRAIGHT  # exactly 2 m is not more than 2 m
    assert route_command(_net(2.1), [0], 0.0, ego) == Command.LEFT
    assert route_command(_net(-2.1), [0], 0.0, ego) == Command.RIGHT
    assert route_command(_net(-1.9), [0], 0.0, ego) == Command.STRAIGHT


def test_route_command_uses_min_speed_and_projection():
    # standing still: the rule looks 3 s * 2 m/s = 6 m ahead, before the shift at 8 m -> straight
    assert route_command(_net(3.0), [0], 0.0, EgoState(0.0, 0.0, 0.0, v=0.0)) == Command.STRAIGHT
    # ego 5 m below the route heading +y (towards it): the straight-ahead point (0, 1) projects to
    # (0, 0) on the route, dead ahead of the ego -> straight (the arc-length rule would say RIGHT)
    ego = EgoState(0.0, -5.0, np.pi / 2, v=2.0)
    assert route_command(_net(0.0), [0], 0.0, ego) == Command.STRAIGHT
