"""Lane-following traffic: IDM speeds, and first-come-first-served yielding at intersections.

Every vehicle (the ego included) is an :class:`Agent` with a *path*: the lane it is on followed by
the lanes it will take; ``s`` is the arc length of its centre on ``path[0]``.

Yielding rule (simple and collision-free): a vehicle that comes within a request distance of an
intersection asks for the connector it wants. Requests are served in arrival order (ties: nearest
the stop line first); a connector is granted when no vehicle holds a conflicting connector (paths
that come within 3 m: crossing, merging, diverging; 6.5 m when a vehicle longer than 6 m is
involved), no earlier waiting request conflicts, and the exit lane has room. Until its
grant, a vehicle brakes for the stop line as for a standing car; it releases the grant once it is
fully on the exit lane. Arrival order makes waiting acyclic, so there is no deadlock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vavam.world.idm import IDMParams, idm_accel
from vavam.world.roads import Network
from vavam.world.scenery import VEHICLE_TYPES, draw_vehicle_type
from vavam.world.style import VEHICLE_COLOURS

LOOKAHEAD = 80.0  # metres searched for leaders and slow lanes
STOP_MARGIN = 1.0  # metres between the front bumper and the end of the lane when stopping
LONG_VEHICLE = 6.0  # metres; longer vehicles swing out in turns and use the wide conflict table


@dataclass
class Agent:
    """A vehicle on the lane graph.

    Attributes:
        id: unique id (the ego is 0 when present).
        kind: vehicle type name (see ``scenery.VEHICLE_TYPES``).
        length, width, height: metres.
        colour: RGB in [0, 1].
        path: lane ids, ``path[0]`` the current lane.
        s: arc length of the centre on ``path[0]``.
        v: speed, m/s.
        speed_factor: multiplies lane speed limits into the desired speed.
        request: (arrival time, connector id) of the pending intersection request.
        granted: connectors this agent may drive (until it leaves them).
        is_ego: the ego's pose comes from its own vehicle model, not from ``s``.
        prev_lane: the lane before ``path[0]`` (for the rear of the vehicle).
    """

    id: int
    kind: str
    length: float
    width: float
    height: float
    colour: np.ndarray
    path: list[int]
    s: float
    v: float
    speed_factor: float = 1.0
    request: tuple[float, int] | None = None
    granted: set[int] = field(default_factory=set)
    is_ego: bool = False
    prev_lane: int | None = None
    x: float = 0.0
    y: float = 0.0
    yaw: float = 0.0
    a: float = 0.0


class Traffic:
    """The vehicles of a world and their lane-level behaviour.

    Args:
        net: the road network.
        rng: random source (routes, spawning, vehicle looks).
        idm: IDM constants shared by all vehicles.
    """

    def __init__(self, net: Network, rng: np.random.Generator, idm: IDMParams = IDMParams()):
        self.net, self.rng, self.idm = net, rng, idm
        self.agents: list[Agent] = []
        self._next_id = 1
        self.holders: dict[int, dict[int, set[int]]] = {n.id: {} for n in net.nodes}  # node -> connector -> agents

    # ----------------------------------------------------------------- spawning
    def spawn(
        self,
        lane: int,
        s: float,
        v: float | None = None,
        kind: str | None = None,
        is_ego: bool = False,
        colour: np.ndarray | None = None,
    ) -> Agent:
        """Add a vehicle on ``lane`` at arc length ``s``; returns it.

        Raises ``ValueError`` for a lane id outside ``net.lanes`` (a negative id would silently index from the
        end, and the vehicle would be invisible to traffic on that lane), a non-finite ``s``, a negative or
        non-finite ``v`` or a ``kind`` that is not in ``scenery.VEHICLE_TYPES``.
        """
        if isinstance(lane, bool) or not isinstance(lane, (int, np.integer)) or not 0 <= lane < len(self.net.lanes):
            raise ValueError(f"lane must be a lane id in [0, {len(self.net.lanes)}), got {lane!r}")
        if not np.isfinite(s) or (v is not None and not (np.isfinite(v) and v >= 0)):
            raise ValueError(f"s must be finite and v finite and >= 0 (or None), got s={s}, v={v}")
        if kind is not None and kind not in VEHICLE_TYPES:
            raise ValueError(f"unknown vehicle kind {kind!r}; known: {sorted(VEHICLE_TYPES)}")
        lane = int(lane)
        kind = kind or draw_vehicle_type(self.rng)
        (length, width, height), _ = VEHICLE_TYPES[kind]
        factor = 1.0 if is_ego else float(self.rng.uniform(0.8, 1.1))
        agent = Agent(
            id=0 if is_ego else self._next_id,
            kind=kind,
            length=length,
            width=width,
            height=height,
            colour=colour if colour is not None else VEHICLE_COLOURS[self.rng.integers(len(VEHICLE_COLOURS))],
            path=[lane],
            s=s,
            v=self.net.lanes[lane].speed_limit * factor * 0.8 if v is None else v,
            speed_factor=factor,
            is_ego=is_ego,
        )
        if not is_ego:
            self._next_id += 1
        self.extend_path(agent)
        self.update_pose(agent)
        self.agents.append(agent)
        return agent

    def populate(self, count: int, min_gap: float = 14.0, keep_clear: list[tuple[int, float]] = ()) -> None:
        """Spawn up to ``count`` vehicles on random road lanes, ``min_gap`` metres apart (centres)."""
        road_lanes = [ln for ln in self.net.road_lanes() if ln.length > 20.0]
        taken: dict[int, list[float]] = {}
        for a in self.agents:
            taken.setdefault(a.path[0], []).append(a.s)
        for lane_id, s in keep_clear:
            taken.setdefault(lane_id, []).append(s)
        for _ in range(count * 4):
            if count <= 0:
                break
            lane = road_lanes[int(self.rng.integers(len(road_lanes)))]
            s = float(self.rng.uniform(6.0, lane.length - 6.0))
            if all(abs(s - o) > min_gap for o in taken.get(lane.id, [])):
                taken.setdefault(lane.id, []).append(s)
                self.spawn(lane.id, s)
                count -= 1

    # ----------------------------------------------------------------- paths
    def choose_next(self, lane_id: int) -> int:
        """A random successor of a lane (traffic routing)."""
        succ = self.net.lanes[lane_id].successors
        return succ[int(self.rng.integers(len(succ)))]

    def extend_path(self, agent: Agent, lanes_ahead: int = 4) -> None:
        """Make sure the path holds at least ``lanes_ahead`` lanes (random turns for traffic)."""
        while len(agent.path) < lanes_ahead:
            agent.path.append(self.choose_next(agent.path[-1]))

    def point(self, agent: Agent, s: float) -> np.ndarray:
        """World point at arc length ``s`` along the agent's path (negative: on the lane it came from)."""
        lanes = self.net.lanes
        if s < 0.0 and agent.prev_lane is not None:
            line = lanes[agent.prev_lane].line
            return line.position(line.length + s)
        for lane_id in agent.path[:-1]:
            if s <= lanes[lane_id].length:
                return lanes[lane_id].line.position(s)
            s -= lanes[lane_id].length
        return lanes[agent.path[-1]].line.position(s)

    def _point_xy(self, agent: Agent, s: float) -> tuple[float, float]:
        """:meth:`point` as plain floats (finite ``s``)."""
        lanes = self.net.lanes
        if s < 0.0 and agent.prev_lane is not None:
            line = lanes[agent.prev_lane].line
            return line.position_xy(line.length + s)
        for lane_id in agent.path[:-1]:
            if s <= lanes[lane_id].length:
                return lanes[lane_id].line.position_xy(s)
            s -= lanes[lane_id].length
        return lanes[agent.path[-1]].line.position_xy(s)

    def update_pose(self, agent: Agent) -> None:
        """Set x, y, yaw from the lane position: both axles (at +-30 % of the length from the centre)
        sit on the lane centreline, so long vehicles cut corners like real ones instead of swinging out."""
        half = 0.3 * agent.length
        (rx, ry), (fx, fy) = self._point_xy(agent, agent.s - half), self._point_xy(agent, agent.s + half)
        agent.x, agent.y = 0.5 * (rx + fx), 0.5 * (ry + fy)
        agent.yaw = float(np.arctan2(fy - ry, fx - rx))

    # ----------------------------------------------------------------- planning
    def _occupancy(self) -> dict[int, list[Agent]]:
        occ: dict[int, list[Agent]] = {}
        for a in self.agents:
            occ.setdefault(a.path[0], []).append(a)
        return occ

    def leader(self, agent: Agent, occ: dict[int, list[Agent]] | None = None) -> tuple[float, float] | None:
        """(bumper gap, leader speed) of the nearest vehicle ahead along the agent's path, or None."""
        occ = self._occupancy() if occ is None else occ
        offset = -agent.s
        for k, lane_id in enumerate(agent.path):
            best = None
            for b in occ.get(lane_id, ()):
                d = offset + b.s
                if b is agent or (k == 0 and b.s <= agent.s):
                    continue
                gap = d - 0.5 * (agent.length + b.length)
                if best is None or gap < best[0]:
                    best = (gap, b.v)
            if best is not None:
                return best
            offset += self.net.lanes[lane_id].length
            if offset > LOOKAHEAD:
                break
        return None

    def desired_speed(self, agent: Agent) -> float:
        """Speed limit of the current lane, lowered so that slower lanes ahead are reached comfortably (on a
        profile braking at ``b_comf``). IDM follows the lowered target loosely (its free-road term brakes only
        ``a_max (1 - (v / v0)^4)``, -0.6 m/s² at 8 % over), so a car can enter a turn a little above its limit:
        up to 13 % in a world audit (36 seeds x 120 s), about 2.9 m/s² sideways for the 2.5 m/s² limit."""
        lanes = self.net.lanes
        v = lanes[agent.path[0]].speed_limit * agent.speed_factor
        dist = lanes[agent.path[0]].length - agent.s - 0.5 * agent.length
        for lane_id in agent.path[1:]:
            if dist > LOOKAHEAD:
                break
            limit = lanes[lane_id].speed_limit * agent.speed_factor
            v = min(v, float(np.sqrt(limit**2 + 2.0 * self.idm.b_comf * max(dist, 0.0))))
            dist += lanes[lane_id].length
        return v

    def _next_connector(self, agent: Agent) -> tuple[int, float] | None:
        """(connector id, distance from the front bumper to its start) if the next lane is one."""
        lanes = self.net.lanes
        if lanes[agent.path[0]].kind != "road" or len(agent.path) < 2:
            return None
        return agent.path[1], lanes[agent.path[0]].length - agent.s - 0.5 * agent.length

    def update_requests(self, t: float) -> None:
        """File new intersection requests, grant what can be granted, release what was left."""
        lanes = self.net.lanes
        for a in self.agents:
            for c in list(a.granted):  # release once the rear bumper is on the exit lane
                if c in a.path or (a.path[0] == lanes[c].successors[0] and a.s < 0.5 * a.length):
                    continue
                a.granted.discard(c)
                ids = self.holders[lanes[c].node].get(c)
                if ids is not None:
                    ids.discard(a.id)
                    if not ids:
                        del self.holders[lanes[c].node][c]
            nxt = self._next_connector(a)
            near = nxt is not None and nxt[1] < max(30.0, a.v**2 / (2 * self.idm.b_comf) + 15.0)
            if near and nxt[0] not in a.granted and a.request is None:
                a.request = (t, nxt[0])
        occ = self._occupancy()
        self._long = {a.id: a.length > LONG_VEHICLE for a in self.agents}
        waiting = [a for a in self.agents if a.request is not None]  # by arrival, ties: nearest the line first
        waiting.sort(key=lambda a: (a.request[0], lanes[a.path[0]].length - a.s, a.id))
        blocked: dict[int, set[int]] = {}
        for a in waiting:
            c = a.request[1]
            node = self.net.nodes[lanes[c].node]
            held = self.holders[node.id]
            long_self = a.length > LONG_VEHICLE
            conflicts = (node.conflicts_wide if long_self else node.conflicts)[c]
            ok = not any(
                ids and (h in conflicts or (h in node.conflicts_wide[c] and any(self._long.get(i) for i in ids)))
                for h, ids in held.items()
            )
            ok = ok and not ((node.conflicts_wide[c] | {c}) & blocked.get(node.id, set()))
            if ok:
                exit_lane = lanes[c].successors[0]
                tail = min((b.s - 0.5 * b.length for b in occ.get(exit_lane, ())), default=np.inf)
                ok = tail > a.length + 3.0
            if ok:
                held.setdefault(c, set()).add(a.id)
                a.granted.add(c)
                a.request = None
            else:
                blocked.setdefault(node.id, set()).add(c)

    def plan(self, agent: Agent, occ: dict[int, list[Agent]] | None = None) -> float:
        """IDM acceleration for ``agent``: follow the leader, stop at the line without a grant."""
        lead = self.leader(agent, occ)
        gap, v_lead = lead if lead is not None else (None, 0.0)
        nxt = self._next_connector(agent)
        if nxt is not None and nxt[0] not in agent.granted:
            stop_gap = nxt[1] - STOP_MARGIN
            if gap is None or stop_gap < gap:
                gap, v_lead = max(stop_gap, 0.0), 0.0
        return idm_accel(agent.v, self.desired_speed(agent), gap, v_lead, self.idm)

    # ----------------------------------------------------------------- motion
    def advance(self, agent: Agent, acc: float, dt: float) -> None:
        """Move a lane-following agent by ``dt`` with acceleration ``acc`` (speed never negative)."""
        v_new = max(agent.v + acc * dt, 0.0)
        agent.s += 0.5 * (agent.v + v_new) * dt
        agent.v, agent.a = v_new, acc
        self.wrap(agent)
        self.update_pose(agent)

    def wrap(self, agent: Agent) -> None:
        """Move on to the next lanes while ``s`` runs past the end of the current one."""
        lanes = self.net.lanes
        while agent.s > lanes[agent.path[0]].length:
            agent.s -= lanes[agent.path[0]].length
            agent.prev_lane = agent.path.pop(0)
            self.extend_path(agent)

    def step(self, t: float, dt: float) -> None:
        """Advance every non-ego agent by ``dt`` (requests first, then IDM, then motion)."""
        self.update_requests(t)
        self.step_agents(dt)

    def step_agents(self, dt: float) -> None:
        """IDM and motion of every non-ego agent (requests already updated)."""
        occ = self._occupancy()
        accs = [(a, self.plan(a, occ)) for a in self.agents if not a.is_ego]
        for a, acc in accs:
            self.advance(a, acc, dt)

    def boxes(self, include_ego: bool = False) -> np.ndarray:
        """``[N, 10]`` x, y, yaw, length, width, height, r, g, b, id of the agents (world frame)."""
        rows = [
            [a.x, a.y, a.yaw, a.length, a.width, a.height, *a.colour, a.id]
            for a in self.agents
            if include_ego or not a.is_ego
        ]
        return np.asarray(rows, dtype=np.float64).reshape(-1, 10)
