"""A running world: a town, its traffic and the ego, stepped at a fixed 0.1 s."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from vavam.types import Command
from vavam.world.driver import ExpertDriver, RouteChooser, route_command
from vavam.world.geometry import pose_matrix
from vavam.world.roads import NetworkConfig
from vavam.world.town import Town, generate_town
from vavam.world.traffic import Agent, Traffic
from vavam.world.vehicle import EgoState, VehicleParams, bicycle_step


@dataclass(frozen=True)
class WorldConfig:
    """Knobs of a world.

    Attributes:
        network: road network shape.
        traffic_density: moving vehicles per km of road lane.
        dt: simulation step, seconds.
        turn_weights: ego route preference for (right, left, straight) at intersections.
        vehicle: ego dimensions and limits.
    """

    network: NetworkConfig = field(default_factory=NetworkConfig)
    traffic_density: float = 8.0
    dt: float = 0.1
    turn_weights: tuple[float, float, float] = (0.3, 0.3, 0.4)
    vehicle: VehicleParams = field(default_factory=VehicleParams)

    def validate(self) -> None:
        """Raise ``ValueError`` for impossible settings."""
        if not (math.isfinite(self.dt) and self.dt > 0 and math.isfinite(self.traffic_density)
                and self.traffic_density >= 0):  # NaN passes a plain comparison
            raise ValueError(f"dt must be > 0 and traffic_density >= 0, both finite (got {self.dt}, "
                             f"{self.traffic_density})")
        w = self.turn_weights
        if len(w) != 3 or not all(math.isfinite(x) and x >= 0 for x in w):
            raise ValueError(f"turn_weights must be three finite weights >= 0 (right, left, straight), got {w}")
        self.network.validate()


class World:
    """Town + traffic + ego. ``step()`` advances by ``config.dt``; the ego follows the expert unless
    a control ``(acceleration, steering angle)`` is given.

    Args:
        seed: the world's seed (town, traffic and route all follow from it).
        config: world settings.
        town: reuse an already generated town (must come from the same seed for determinism).
    """

    def __init__(self, seed: int, config: WorldConfig = WorldConfig(), town: Town | None = None):
        config.validate()
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            # int() would turn 1.5 into world 1 without a word; numpy's own message names no argument
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed, self.config = int(seed), config
        self.town = town if town is not None else generate_town(seed, config.network)
        net = self.town.network
        self.net = net
        self.params = config.vehicle
        self.traffic = Traffic(net, np.random.default_rng([self.seed, 1]))
        self.router = RouteChooser(net, np.random.default_rng([self.seed, 2]), config.turn_weights)
        rng = np.random.default_rng([self.seed, 3])
        candidates = [ln for ln in net.road_lanes() if ln.length > 50.0] or net.road_lanes()
        lane = candidates[int(rng.integers(len(candidates)))]
        s_rear = float(rng.uniform(5.0, max(6.0, lane.length - 35.0)))
        path = [lane.id]
        self.router.extend(path)
        x, y = lane.line.position(s_rear)
        v0 = float(lane.speed_limit * rng.uniform(0.5, 0.9))
        self.ego = EgoState(x=float(x), y=float(y), yaw=float(lane.line.heading(s_rear)), v=v0)
        self.ego_agent: Agent = self.traffic.spawn(
            lane.id, s_rear + self.params.rear_to_centre, v=v0, kind="car", is_ego=True
        )
        self.ego_agent.path = path
        self.ego_agent.length, self.ego_agent.width, self.ego_agent.height = (
            self.params.length,
            self.params.width,
            self.params.height,
        )
        self.s_rear = s_rear
        lane_km = sum(ln.length for ln in net.road_lanes()) / 1000.0
        self.traffic.populate(int(round(config.traffic_density * lane_km)), keep_clear=[(lane.id, s_rear)])
        self.expert = ExpertDriver(self.traffic, self.params)
        self.t = 0.0
        self._sync_ego()

    def place_ego(self, path: list[int], s_rear: float, speed: float) -> None:
        """Put the ego's rear axle at arc length ``s_rear`` of ``path[0]``, heading along it, at ``speed``;
        ``path`` (lane ids) becomes its route (extended by the route chooser)."""
        lane = self.net.lanes[path[0]]
        x, y = lane.line.position(s_rear)
        self.ego = EgoState(x=float(x), y=float(y), yaw=float(lane.line.heading(s_rear)), v=float(speed))
        self.ego_agent.path = list(path)
        for c in self.ego_agent.granted:  # release the intersections it held, or their traffic waits forever
            node = self.traffic.holders[self.net.lanes[c].node]
            ids = node.get(c)
            if ids is not None:
                ids.discard(self.ego_agent.id)
                if not ids:
                    del node[c]
        self.ego_agent.granted.clear()
        self.ego_agent.request = None
        self.router.extend(self.ego_agent.path)
        self._sync_ego()

    def remove_traffic_near(self, points: np.ndarray, radius: float) -> None:
        """Remove moving vehicles within ``radius`` of any of ``points`` ``[K, 2]`` (and their grants)."""
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        keep = []
        for a in self.traffic.agents:
            if not a.is_ego and np.min(np.hypot(pts[:, 0] - a.x, pts[:, 1] - a.y)) < radius:
                for c in a.granted:
                    self.traffic.holders[self.net.lanes[c].node].get(c, set()).discard(a.id)
                continue
            keep.append(a)
        self.traffic.agents = keep

    # ------------------------------------------------------------------ ego bookkeeping
    def _sync_ego(self) -> None:
        """Project the rear axle onto the route, advance the route, mirror the ego into its agent."""
        path, lanes = self.ego_agent.path, self.net.lanes
        s, lat = lanes[path[0]].line.project((self.ego.x, self.ego.y))
        while s >= lanes[path[0]].length - 1e-6 and len(path) > 1:
            path.pop(0)
            self.router.extend(path)
            s, lat = lanes[path[0]].line.project((self.ego.x, self.ego.y))
        self.s_rear, self.lateral = s, lat  # rear axle: arc length on path[0], offset (left +)
        a = self.ego_agent
        a.s = s + self.params.rear_to_centre
        a.x, a.y = self.ego.centre(self.params)
        a.yaw, a.v, a.a = self.ego.yaw, self.ego.v, self.ego.a

    def expert_control(self) -> tuple[float, float]:
        """What the expert would do now: (acceleration, steering angle)."""
        return self.expert.control(self.ego, self.ego_agent, self.s_rear)

    def step(self, control: tuple[float, float] | None = None) -> None:
        """Advance the world by one ``dt``. ``control``: ego (acceleration m/s^2, steering rad) or None."""
        dt = self.config.dt
        self.traffic.update_requests(self.t)
        acc, steer = self.expert_control() if control is None else control
        self.traffic.step_agents(dt)
        self.ego = bicycle_step(self.ego, acc, steer, dt, self.params)
        self._sync_ego()
        self.t = round(self.t + dt, 9)

    # ------------------------------------------------------------------ queries
    @property
    def ego_pose(self) -> np.ndarray:
        """Rear-axle pose ``[x, y, yaw]`` (world frame)."""
        return np.array([self.ego.x, self.ego.y, self.ego.yaw])

    def ego_to_world(self) -> np.ndarray:
        """4x4 ego-to-world transform (rear axle on the ground)."""
        return pose_matrix(self.ego.x, self.ego.y, self.ego.yaw)

    def command(self) -> Command:
        """The route command by NeuroNCAP's rule (see :func:`~vavam.world.driver.route_command`)."""
        return route_command(self.net, self.ego_agent.path, self.s_rear, self.ego)

    def vehicle_boxes(self) -> np.ndarray:
        """``[N, 10]`` boxes of moving traffic: x, y, yaw, length, width, height, r, g, b, id."""
        return self.traffic.boxes(include_ego=False)

    def render_boxes(self) -> np.ndarray:
        """``[N, 10]`` vehicle boxes for the renderer: moving traffic and parked cars (id -1)."""
        parked = self.town.scenery.parked
        parked = np.concatenate([parked, -np.ones((len(parked), 1))], axis=1)
        return np.concatenate([self.vehicle_boxes(), parked], axis=0)
