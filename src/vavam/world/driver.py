"""The expert (privileged) ego driver: random route turns, pure-pursuit steering, IDM speed."""

from __future__ import annotations

import numpy as np

from vavam.types import Command
from vavam.world.roads import Network
from vavam.world.traffic import Agent, Traffic
from vavam.world.vehicle import EgoState, VehicleParams, pure_pursuit


class RouteChooser:
    """Picks the ego's next lanes: at each intersection a turn drawn with ``weights``.

    Args:
        net: road network.
        rng: random source.
        weights: relative probabilities of (right, left, straight), renormalised over the turns
            the lane allows.
    """

    def __init__(self, net: Network, rng: np.random.Generator, weights: tuple[float, float, float] = (0.3, 0.3, 0.4)):
        self.net, self.rng, self.weights = net, rng, weights

    def next_lane(self, lane_id: int) -> int:
        """A successor of ``lane_id``."""
        succ = self.net.lanes[lane_id].successors
        if len(succ) == 1:
            return succ[0]
        w = np.array([self.weights[int(self.net.lanes[c].turn)] for c in succ], dtype=np.float64) + 1e-9
        return succ[int(self.rng.choice(len(succ), p=w / w.sum()))]

    def extend(self, path: list[int], lanes_ahead: int = 6) -> None:
        """Append lanes until ``path`` holds ``lanes_ahead`` of them."""
        while len(path) < lanes_ahead:
            path.append(self.next_lane(path[-1]))


def path_point(net: Network, path: list[int], s: float) -> np.ndarray:
    """World point at arc length ``s`` measured from the start of ``path[0]`` along the path."""
    for lane_id in path[:-1]:
        length = net.lanes[lane_id].length
        if s <= length:
            break
        s -= length
    else:
        lane_id = path[-1]
    return net.lanes[lane_id].line.position(s)


def path_points(net: Network, path: list[int], s: np.ndarray) -> np.ndarray:
    """:func:`path_point` of many arc lengths at once (the same arithmetic, element by element): ``[N, 2]``."""
    s = np.array(s, dtype=np.float64)  # a copy: lengths are subtracted in place, lane by lane
    out = np.empty((len(s), 2))
    todo = np.ones(len(s), dtype=bool)
    for lane_id in path[:-1]:
        line = net.lanes[lane_id].line
        here = todo & (s <= net.lanes[lane_id].length)
        if here.any():
            out[here] = line.position(s[here])
        todo &= ~here
        if not todo.any():
            return out
        s[todo] -= net.lanes[lane_id].length
    out[todo] = net.lanes[path[-1]].line.position(s[todo])
    return out


def lookahead_distance(v: float) -> float:
    """Pure-pursuit lookahead, metres, growing with speed."""
    return float(np.clip(3.0 + 0.6 * v, 4.0, 16.0))


class ExpertDriver:
    """Drives the ego along its route: IDM acceleration from :class:`Traffic` (leaders, stop lines,
    intersection grants) and pure-pursuit steering on the route's lane centrelines."""

    def __init__(self, traffic: Traffic, params: VehicleParams = VehicleParams()):
        self.traffic, self.params = traffic, params

    def control(self, state: EgoState, agent: Agent, s_rear: float) -> tuple[float, float]:
        """(acceleration m/s^2, steering angle rad) for this step."""
        acc = self.traffic.plan(agent)
        target = path_point(self.traffic.net, agent.path, s_rear + lookahead_distance(state.v))
        return acc, pure_pursuit(state, (float(target[0]), float(target[1])), self.params)


def route_command(net: Network, path: list[int], s_rear: float, state: EgoState, threshold: float = 2.0,
                  search_m: float = 80.0, step_m: float = 0.25) -> Command:
    """NeuroNCAP's command rule: the point ``3 s * max(v, 2 m/s)`` straight ahead of the ego, projected
    onto the route (nearest route point within ``search_m`` ahead), expressed in the ego frame; more
    than ``threshold`` m to the left -> LEFT, to the right -> RIGHT, else STRAIGHT."""
    reach = 3.0 * max(state.v, 2.0)
    ahead = np.array([state.x + reach * np.cos(state.yaw), state.y + reach * np.sin(state.yaw)])
    arc = s_rear + np.arange(0.0, search_m + step_m, step_m)
    route = path_points(net, path, arc)  # [N, 2] world points
    p = route[int(np.argmin(np.sum((route - ahead) ** 2, axis=1)))]
    dx, dy = p[0] - state.x, p[1] - state.y
    lateral = -np.sin(state.yaw) * dx + np.cos(state.yaw) * dy
    if lateral > threshold:
        return Command.LEFT
    if lateral < -threshold:
        return Command.RIGHT
    return Command.STRAIGHT
