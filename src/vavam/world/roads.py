"""Procedural road networks: a jittered grid of multi-lane two-way roads joined by 4-way intersections.

A town's network is a grid of ``nx x ny`` intersections (nodes) a random 90-140 m apart, jittered, so
roads between them bend (cubic Bézier centrelines, sometimes with an extra bulge). Horizontal roads
(along world x) and vertical roads (along y) have their own number of lanes per direction and an
optional parking shoulder. Traffic keeps to the right. Every lane is a :class:`Lane` with a
centreline :class:`~vavam.world.geometry.Polyline`; intersections hold *connector* lanes:

- straight: lane k -> lane k of the opposite arm;
- left turn: innermost lane (k = 0) -> innermost lane of the arm to the left;
- right turn: outermost lane -> outermost lane of the arm to the right;
- where an arm has no straight exit (corners, T-junctions), every lane k turns into lane k
  (or the outermost lane if the exit has fewer);
- no U-turns.

Roads reach an intersection axis-aligned, so each intersection is a cross of asphalt with four
sidewalk corners. All of it is a pure function of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vavam.types import Command
from vavam.world.geometry import Polyline, cubic_bezier

LANE_WIDTH = 3.5
LATERAL_ACCEL = 2.5  # m/s^2 allowed in curves; sets connector speed limits
MIN_ROAD_LENGTH = 10.0  # metres of road left between two intersections in the closest possible layout
ARM_DIRS = {"E": (1.0, 0.0), "N": (0.0, 1.0), "W": (-1.0, 0.0), "S": (0.0, -1.0)}


@dataclass(frozen=True)
class NetworkConfig:
    """Shape of the procedural road network.

    Attributes:
        grid: number of intersections along x and y (each >= 2).
        spacing: range of the distance between neighbouring intersections, metres.
        jitter: maximum random shift of each intersection, metres.
        lanes_x / lanes_y: choices of lanes per direction for roads along x / along y.
        shoulder_prob: probability that a road axis has a parking shoulder (2.4 m) on each side.
        sidewalk: sidewalk width, metres.
        curve_prob: probability that a road gets an extra sideways bulge.
        drop_prob: probability of removing an interior road (gives T-junctions), keeping the
            network connected and every node with at least two roads.
        speed_limit: range of the road speed limit, m/s.
    """

    grid: tuple[int, int] = (4, 4)
    spacing: tuple[float, float] = (90.0, 140.0)
    jitter: float = 8.0
    lanes_x: tuple[int, ...] = (1, 2)
    lanes_y: tuple[int, ...] = (1, 2)
    shoulder_prob: float = 0.6
    sidewalk: float = 3.0
    curve_prob: float = 0.3
    drop_prob: float = 0.15
    speed_limit: tuple[float, float] = (10.0, 14.0)

    def validate(self) -> None:
        """Raise ``ValueError`` for impossible configurations."""
        if min(self.grid) < 2:
            raise ValueError(f"grid needs at least 2x2 intersections, got {self.grid}")
        if not self.lanes_x or not self.lanes_y or min(self.lanes_x + self.lanes_y) < 1:
            raise ValueError("every road needs at least one lane per direction")
        if not 20.0 <= self.spacing[0] <= self.spacing[1] < np.inf:
            raise ValueError(f"spacing must be an increasing finite range of at least 20 m, got {self.spacing}")
        if not (0.0 <= self.sidewalk < np.inf and 0.0 <= self.jitter < np.inf):  # NaN fails both
            raise ValueError(f"sidewalk and jitter must be finite and >= 0, got {self.sidewalk}, {self.jitter}")
        if not 0.0 < self.speed_limit[0] <= self.speed_limit[1] < np.inf:
            raise ValueError(f"speed_limit must be an increasing finite range above 0 m/s, got {self.speed_limit}")
        # neighbouring intersections (each reaching the crossing road's half-width + sidewalk from its centre)
        # must leave room for the road between them, or its centreline runs backwards
        half = LANE_WIDTH * max(self.lanes_x + self.lanes_y) + 2.4 + self.sidewalk
        room = self.spacing[0] - 2.0 * self.jitter - 2.0 * half
        if room < MIN_ROAD_LENGTH:
            raise ValueError(
                f"spacing {self.spacing} with jitter {self.jitter} leaves {room:.1f} m of road between intersections "
                f"{2 * half:.1f} m wide; need >= {MIN_ROAD_LENGTH} m (raise spacing[0], or lower jitter/lanes/sidewalk)"
            )


@dataclass
class Lane:
    """A directed lane: road lanes run along roads, connector lanes cross an intersection.

    Attributes:
        id: index in ``Network.lanes``.
        line: centreline in driving direction.
        kind: ``"road"`` or ``"connector"``.
        road: road id (road lanes) or -1.
        node: intersection id (connectors) or -1.
        index: lane number counted from the road centre (0 = innermost).
        turn: the connector's manoeuvre (a :class:`~vavam.types.Command`), None for road lanes.
        speed_limit: m/s.
        successors / predecessors: lane ids.
    """

    id: int
    line: Polyline
    kind: str
    road: int = -1
    node: int = -1
    index: int = 0
    turn: Command | None = None
    speed_limit: float = 12.0
    successors: list[int] = field(default_factory=list)
    predecessors: list[int] = field(default_factory=list)

    @property
    def length(self) -> float:
        return self.line.length


@dataclass
class Road:
    """A two-way road between intersections ``a`` and ``b`` (centreline from a to b)."""

    id: int
    a: int
    b: int
    axis: str  # "x" or "y"
    centre: Polyline
    lanes: int  # per direction
    shoulder: float
    forward: list[int] = field(default_factory=list)  # lane ids a -> b, innermost first
    backward: list[int] = field(default_factory=list)  # lane ids b -> a

    @property
    def half_width(self) -> float:
        """Half the asphalt width (lanes + shoulder)."""
        return self.lanes * LANE_WIDTH + self.shoulder


@dataclass
class Node:
    """An intersection: a cross of asphalt ``half_x`` x ``half_y`` around ``xy``."""

    id: int
    xy: np.ndarray
    half_x: float  # extent along x (vertical road half-width + sidewalk)
    half_y: float
    arms: dict[str, int] = field(default_factory=dict)  # arm direction -> road id
    connectors: list[int] = field(default_factory=list)
    conflicts: dict[int, set[int]] = field(default_factory=dict)  # connector -> conflicting connectors (cars)
    conflicts_wide: dict[int, set[int]] = field(default_factory=dict)  # same, when a long vehicle is involved


@dataclass
class Network:
    """Roads, lanes and intersections of a town."""

    config: NetworkConfig
    nodes: list[Node]
    roads: list[Road]
    lanes: list[Lane]
    hw_x: float  # half-width of roads along x
    hw_y: float
    speed_limit: float

    def road_lanes(self) -> list[Lane]:
        """All lanes that run along roads (not connectors)."""
        return [ln for ln in self.lanes if ln.kind == "road"]


def _turn(h_in: np.ndarray, h_out: np.ndarray) -> Command:
    cross = h_in[0] * h_out[1] - h_in[1] * h_out[0]
    if abs(cross) < 0.5:
        return Command.STRAIGHT
    return Command.LEFT if cross > 0 else Command.RIGHT


def _connector_line(p0: np.ndarray, h0: np.ndarray, p3: np.ndarray, h3: np.ndarray) -> Polyline:
    if _turn(h0, h3) == Command.STRAIGHT:
        return Polyline(np.linspace(p0, p3, 8))
    # corner C = p0 + t0 h0 = p3 + t1 h3 where the tangent lines meet; handles 0.5523 of the legs (arc-like)
    a = np.stack([h0, -h3], axis=1)
    t = np.linalg.solve(a, p3 - p0)
    return Polyline(cubic_bezier(p0, p0 + 0.5523 * t[0] * h0, p3 + 0.5523 * t[1] * h3, p3, 24))


def _mean_curvature(line: Polyline) -> float:
    """Total heading change over length (radians per metre)."""
    h = np.unwrap(np.arctan2(line.seg_dir[:, 1], line.seg_dir[:, 0]))
    return float(abs(h[-1] - h[0]) / line.length)


def _drop_edges(edges: list[tuple[int, int]], n: int, prob: float, rng: np.random.Generator, interior) -> list:
    keep = list(edges)
    for e in [e for e in edges if interior(e)]:
        if rng.random() >= prob:
            continue
        trial = [k for k in keep if k != e]
        deg = np.bincount(np.array(trial).ravel(), minlength=n)
        if deg[e[0]] < 2 or deg[e[1]] < 2:
            continue
        adj: dict[int, list[int]] = {i: [] for i in range(n)}
        for a, b in trial:
            adj[a].append(b)
            adj[b].append(a)
        seen, stack = {0}, [0]
        while stack:
            for j in adj[stack.pop()]:
                if j not in seen:
                    seen.add(j)
                    stack.append(j)
        if len(seen) == n:
            keep = trial
    return keep


def build_network(rng: np.random.Generator, config: NetworkConfig = NetworkConfig()) -> Network:
    """Draw a road network from ``rng`` (see the module docstring)."""
    config.validate()
    nx, ny = config.grid
    sx = np.concatenate([[0.0], np.cumsum(rng.uniform(*config.spacing, size=nx - 1))])
    sy = np.concatenate([[0.0], np.cumsum(rng.uniform(*config.spacing, size=ny - 1))])
    lanes_x = int(rng.choice(config.lanes_x))
    lanes_y = int(rng.choice(config.lanes_y))
    shoulder_x = 2.4 if rng.random() < config.shoulder_prob else 0.0
    shoulder_y = 2.4 if rng.random() < config.shoulder_prob else 0.0
    hw_x = lanes_x * LANE_WIDTH + shoulder_x
    hw_y = lanes_y * LANE_WIDTH + shoulder_y
    speed_limit = float(rng.uniform(*config.speed_limit))
    half_x, half_y = hw_y + config.sidewalk, hw_x + config.sidewalk

    nodes = []
    for j in range(ny):
        for i in range(nx):
            xy = np.array([sx[i], sy[j]]) + rng.uniform(-config.jitter, config.jitter, size=2)
            nodes.append(Node(id=len(nodes), xy=xy, half_x=half_x, half_y=half_y))
    edges = [(j * nx + i, j * nx + i + 1) for j in range(ny) for i in range(nx - 1)]
    edges += [(j * nx + i, (j + 1) * nx + i) for j in range(ny - 1) for i in range(nx)]

    def on_border(n: int) -> bool:
        j, i = divmod(n, nx)
        return i in (0, nx - 1) or j in (0, ny - 1)

    def interior(e: tuple[int, int]) -> bool:  # keep the outer ring of roads
        return not (on_border(e[0]) and on_border(e[1]))

    edges = _drop_edges(edges, len(nodes), config.drop_prob, rng, interior)

    roads: list[Road] = []
    lanes: list[Lane] = []
    for a, b in edges:
        axis = "x" if b == a + 1 else "y"
        d = np.array([1.0, 0.0]) if axis == "x" else np.array([0.0, 1.0])
        normal = np.array([-d[1], d[0]])
        half = half_x if axis == "x" else half_y
        p0, p3 = nodes[a].xy + half * d, nodes[b].xy - half * d
        k = 0.4 * float(np.dot(p3 - p0, d))
        bulge = rng.uniform(-0.12, 0.12) * k / 0.4 if rng.random() < config.curve_prob else 0.0
        pts = cubic_bezier(p0, p0 + k * d, p3 - k * d, p3, 48)
        pts += bulge * np.sin(np.linspace(0.0, np.pi, 48))[:, None] ** 2 * normal  # ends stay axis-aligned
        centre = Polyline(Polyline(pts).resample(2.0))
        n_l = lanes_x if axis == "x" else lanes_y
        road = Road(
            id=len(roads),
            a=a,
            b=b,
            axis=axis,
            centre=centre,
            lanes=n_l,
            shoulder=shoulder_x if axis == "x" else shoulder_y,
        )
        rev = Polyline(centre.points[::-1])
        for k_l in range(n_l):
            for line, ids in ((centre, road.forward), (rev, road.backward)):
                lane = Lane(
                    id=len(lanes),
                    line=line.offset(-(k_l + 0.5) * LANE_WIDTH),
                    kind="road",
                    road=road.id,
                    index=k_l,
                    speed_limit=speed_limit,
                )
                lanes.append(lane)
                ids.append(lane.id)
        arm_a, arm_b = ("E", "W") if axis == "x" else ("N", "S")
        nodes[a].arms[arm_a] = road.id
        nodes[b].arms[arm_b] = road.id
        roads.append(road)

    for node in nodes:
        incoming, outgoing = {}, {}
        for arm, rid in node.arms.items():
            road = roads[rid]
            at_a = road.a == node.id
            incoming[arm] = road.backward if at_a else road.forward
            outgoing[arm] = road.forward if at_a else road.backward
        for arm_in, ins in incoming.items():
            h_in = -np.array(ARM_DIRS[arm_in])
            for arm_out, outs in outgoing.items():
                if arm_out == arm_in:
                    continue
                turn = _turn(h_in, np.array(ARM_DIRS[arm_out]))
                opposite = {"E": "W", "W": "E", "N": "S", "S": "N"}[arm_in]
                if turn == Command.STRAIGHT or opposite not in outgoing:  # no straight exit: every lane turns
                    pairs = [(ins[k], outs[min(k, len(outs) - 1)]) for k in range(len(ins))]
                elif turn == Command.LEFT:
                    pairs = [(ins[0], outs[0])]
                else:
                    pairs = [(ins[-1], outs[-1])]
                for li, lo in pairs:
                    lin, lout = lanes[li].line, lanes[lo].line
                    line = _connector_line(lin.points[-1], lin.seg_dir[-1], lout.points[0], lout.seg_dir[0])
                    kappa = _mean_curvature(line)
                    limit = (
                        speed_limit
                        if kappa < 1e-3
                        else float(np.clip(np.sqrt(LATERAL_ACCEL / kappa), 3.0, speed_limit))
                    )
                    con = Lane(
                        id=len(lanes),
                        line=line,
                        kind="connector",
                        node=node.id,
                        index=lanes[li].index,
                        turn=turn,
                        speed_limit=limit,
                        successors=[lo],
                        predecessors=[li],
                    )
                    lanes.append(con)
                    lanes[li].successors.append(con.id)
                    lanes[lo].predecessors.append(con.id)
                    node.connectors.append(con.id)
        # connectors conflict when their paths come within 3 m (crossing, merging, diverging); 6.5 m when
        # a long vehicle, whose box swings out in turns, is involved
        pts = {c: lanes[c].line.resample(0.5) for c in node.connectors}
        node.conflicts = {c: set() for c in node.connectors}
        node.conflicts_wide = {c: set() for c in node.connectors}
        for i, c1 in enumerate(node.connectors):
            for c2 in node.connectors[i + 1 :]:
                d = np.min(np.linalg.norm(pts[c1][:, None] - pts[c2][None], axis=-1))
                for table, limit in ((node.conflicts, 3.0), (node.conflicts_wide, 6.5)):
                    if d < limit:
                        table[c1].add(c2)
                        table[c2].add(c1)
    return Network(config=config, nodes=nodes, roads=roads, lanes=lanes, hw_x=hw_x, hw_y=hw_y, speed_limit=speed_limit)


def lane_markings(net: Network) -> list[tuple[Polyline, str, str]]:
    """Painted lines as ``(polyline, "solid" | "dashed" | "stop", colour name "white" | "yellow")``.

    Per road: the centre line (solid yellow), dashed white dividers between same-direction lanes,
    solid white edge lines where a shoulder or the kerb begins, and stop lines across the incoming
    lanes one metre before each intersection.
    """
    out: list[tuple[Polyline, str, str]] = []
    for road in net.roads:
        c = road.centre
        out.append((c, "solid", "yellow"))
        for k in range(1, road.lanes):
            for side in (1, -1):
                out.append((c.offset(side * k * LANE_WIDTH), "dashed", "white"))
        if road.shoulder > 0:
            for side in (1, -1):
                out.append((c.offset(side * road.lanes * LANE_WIDTH), "solid", "white"))
        w = road.lanes * LANE_WIDTH
        for s, sign in ((1.0, 1.0), (c.length - 1.0, -1.0)):  # stop lines for lanes entering each end
            p, h = c.position(s), c.heading(s)
            n = np.array([-np.sin(h), np.cos(h)])
            out.append((Polyline(np.stack([p, p + sign * w * n])), "stop", "white"))
    return out
