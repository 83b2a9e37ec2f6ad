"""Static things along the roads: buildings, trees, street lights and parked cars.

Everything is placed beside the road network (never on asphalt, sidewalks or intersections, except
parked cars on parking shoulders and street lights at the kerb) and without overlaps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vavam.world.geometry import box_corners, boxes_overlap
from vavam.world.roads import LANE_WIDTH, Network
from vavam.world.style import VEHICLE_COLOURS, Style

# vehicle classes: name, (length, width, height), relative frequency in traffic
VEHICLE_TYPES = {
    "compact": ((3.8, 1.70, 1.45), 0.20),
    "car": ((4.5, 1.85, 1.50), 0.40),
    "suv": ((4.9, 2.00, 1.80), 0.20),
    "van": ((5.4, 2.05, 2.30), 0.10),
    "truck": ((8.5, 2.50, 3.30), 0.06),
    "bus": ((11.0, 2.55, 3.20), 0.04),
}
BOXY = ("van", "truck", "bus")  # drawn as one box with a window band, not a body with a cabin


@dataclass
class Scenery:
    """Arrays of static objects (world frame).

    Attributes:
        buildings: ``[N, 7]`` x, y, yaw, length, width, height, palette index.
        trees: ``[M, 5]`` x, y, crown radius, height, kind (0 round, 1 conifer).
        poles: ``[P, 3]`` x, y, yaw (the lamp arm points towards yaw).
        parked: ``[Q, 9]`` x, y, yaw, length, width, height, r, g, b (boxy flag in the type list).
        parked_types: vehicle type name of each parked car.
    """

    buildings: np.ndarray
    trees: np.ndarray
    poles: np.ndarray
    parked: np.ndarray
    parked_types: list[str]


def draw_vehicle_type(rng: np.random.Generator, allow_large: bool = True) -> str:
    """A vehicle class name, by traffic frequency."""
    names = [n for n in VEHICLE_TYPES if allow_large or n not in ("truck", "bus")]
    p = np.array([VEHICLE_TYPES[n][1] for n in names])
    return str(rng.choice(names, p=p / p.sum()))


class _FreeSpace:
    """Tests whether points lie off the roads, sidewalks and intersections (with a margin)."""

    def __init__(self, net: Network, margin: float):
        self.net, self.margin = net, margin
        self.sidewalk = net.config.sidewalk
        # every road centreline segment in one array, each with its road's clearance
        lines = [road.centre for road in net.roads]
        self.seg_start = np.concatenate([ln.points[:-1] for ln in lines] + [np.zeros((0, 2))])  # [S, 2]
        self.seg_dir = np.concatenate([ln.seg_dir for ln in lines] + [np.zeros((0, 2))])  # [S, 2]
        self.seg_len = np.concatenate([ln.seg_len for ln in lines] + [np.zeros(0)])  # [S]
        self.clearance = np.concatenate([
            np.full(len(road.centre.seg_len), road.half_width + self.sidewalk + margin) for road in net.roads
        ] + [np.zeros(0)])  # fmt: skip
        self.node_xy = np.array([node.xy for node in net.nodes], dtype=np.float64).reshape(-1, 2)  # [K, 2]
        self.node_half = np.array([[node.half_x + margin, node.half_y + margin] for node in net.nodes]).reshape(-1, 2)

    def free(self, pts: np.ndarray) -> bool:
        """Whether every point ``[M, 2]`` is clear of all roads (with sidewalks) and intersections."""
        p = np.asarray(pts, dtype=np.float64)[:, None, :]  # [M, 1, 2]
        rel = p - self.seg_start[None]  # [M, S, 2]
        t = np.clip(rel[..., 0] * self.seg_dir[:, 0] + rel[..., 1] * self.seg_dir[:, 1], 0.0, self.seg_len)
        closest = self.seg_start[None] + self.seg_dir[None] * t[..., None]  # [M, S, 2]
        if np.any(np.sqrt(np.sum((p - closest) ** 2, axis=-1)) < self.clearance):
            return False
        d = np.abs(p - self.node_xy[None])  # [M, K, 2]
        return not np.any((d[..., 0] < self.node_half[:, 0]) & (d[..., 1] < self.node_half[:, 1]))


def _footprint_points(x, y, yaw, length, width) -> np.ndarray:
    c = box_corners(x, y, yaw, length, width)
    return np.concatenate([c, 0.5 * (c + np.roll(c, -1, axis=0)), [[x, y]]])


def build_scenery(rng: np.random.Generator, net: Network, style: Style) -> Scenery:
    """Place buildings, trees, street lights and parked cars along every road of ``net``."""
    space = _FreeSpace(net, margin=0.3)
    buildings: list[list[float]] = []
    corners: list[np.ndarray] = []
    trees: list[list[float]] = []
    poles: list[list[float]] = []
    parked: list[list[float]] = []
    parked_types: list[str] = []
    low, high = style.building_height
    sw = net.config.sidewalk

    def overlaps(c: np.ndarray, xy: np.ndarray, radius: float) -> bool:
        for cb, b in zip(corners, buildings):
            if np.hypot(b[0] - xy[0], b[1] - xy[1]) < radius + 0.5 * np.hypot(b[3], b[4]) and boxes_overlap(c, cb):
                return True
        return False

    for road in net.roads:
        line, hw = road.centre, road.half_width
        for side in (1.0, -1.0):
            s = rng.uniform(0.0, 6.0)
            while s < line.length:
                length, depth = rng.uniform(8.0, 22.0), rng.uniform(8.0, 18.0)
                setback = rng.uniform(0.5, 5.0)
                sc = s + length / 2
                p, h = line.position(sc), float(line.heading(sc))
                n = np.array([-np.sin(h), np.cos(h)])
                xy = p + side * (hw + sw + setback + depth / 2) * n
                c = box_corners(xy[0], xy[1], h, length, depth)
                if space.free(_footprint_points(xy[0], xy[1], h, length, depth)) and not overlaps(
                    c, xy, 0.5 * np.hypot(length, depth)
                ):
                    height = rng.uniform(low, high)
                    buildings.append(
                        [xy[0], xy[1], h, length, depth, height, rng.integers(len(style.building_palette))]
                    )
                    corners.append(c)
                elif rng.random() < style.tree_prob:  # gap: a tree behind the sidewalk
                    txy = p + side * (hw + sw + rng.uniform(2.0, 6.0)) * n
                    r = rng.uniform(1.5, 3.0)
                    if space.free(txy[None]) and not overlaps(box_corners(txy[0], txy[1], 0.0, 2 * r, 2 * r), txy, r):
                        trees.append([txy[0], txy[1], r, rng.uniform(5.0, 10.0), float(rng.random() < 0.3)])
                s += length + rng.uniform(1.0, 8.0)
            # street trees and lights along the outer part of the sidewalk / at the kerb
            s = rng.uniform(3.0, 10.0)
            while s < line.length - 3.0:
                p, h = line.position(s), float(line.heading(s))
                n = np.array([-np.sin(h), np.cos(h)])
                if rng.random() < style.tree_prob * 0.6:
                    txy = p + side * (hw + sw - 0.9) * n
                    trees.append([txy[0], txy[1], rng.uniform(1.3, 2.2), rng.uniform(4.5, 7.5), 0.0])
                elif rng.random() < 0.35:
                    pxy = p + side * (hw + 0.5) * n
                    poles.append([pxy[0], pxy[1], h - side * np.pi / 2])
                s += rng.uniform(9.0, 16.0)
            # parked cars on the parking shoulder
            if road.shoulder > 0:
                occupancy = rng.uniform(0.2, 0.8)
                s = 8.0
                while s < line.length - 8.0:
                    name = draw_vehicle_type(rng, allow_large=False)
                    (length, width, height), _ = VEHICLE_TYPES[name]
                    if rng.random() < occupancy:
                        sc = s + length / 2
                        p, h = line.position(sc), float(line.heading(sc))
                        n = np.array([-np.sin(h), np.cos(h)])
                        xy = p + side * (road.lanes * LANE_WIDTH + road.shoulder / 2) * n
                        yaw = h if side < 0 else h + np.pi
                        colour = VEHICLE_COLOURS[rng.integers(len(VEHICLE_COLOURS))]
                        parked.append([xy[0], xy[1], float(np.angle(np.exp(1j * yaw))), length, width, height, *colour])
                        parked_types.append(name)
                    s += length + rng.uniform(0.8, 2.5)

    def arr(rows, width):
        return np.asarray(rows, dtype=np.float64).reshape(-1, width)

    return Scenery(
        buildings=arr(buildings, 7),
        trees=arr(trees, 5),
        poles=arr(poles, 3),
        parked=arr(parked, 9),
        parked_types=parked_types,
    )
