"""Procedural driving-like front-camera frames (numpy only), the stand-in data source.

A pinhole camera 1.5 m above a flat ground looks down a straight road: sky gradient, asphalt with
dashed lane lines and solid edge lines, kerbs and sidewalks, grass or pavement beyond, boxes for
buildings (some with windows), trees (trunk + crown) and a few cars driving in the lanes. Ego
motion moves everything along the road between frames, so lane dashes and roadside objects stream
past in a clip. Vertical faces go through a per-pixel depth buffer; distance haze blends far
surfaces toward the horizon colour; frames are rendered at ``supersample`` x resolution and
box-filtered down (anti-aliasing).

It is deliberately small: no curves, no lighting model, no textures beyond windows. It exists so
that the tokenizer (and later the video model) can be trained and tested before the embedded
driving world (:mod:`vavam.world`) lands; that world replaces it as the default data source.

Everything is a pure function of its seed: ``make_frames(n, h, w, seed)`` draws frame ``i`` from its
own scene seeded by ``(seed, i)`` (so a larger ``n`` extends a smaller one), ``make_clip`` renders
one scene at consecutive times.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CAMERA_HEIGHT = 1.5  # metres above the ground
LOOP_LENGTH = 160.0  # roadside objects repeat every LOOP_LENGTH metres along the road
FAR = 140.0  # far clip of objects, metres
NEAR = 0.5  # near clip, metres


@dataclass(frozen=True)
class Box:
    """An axis-aligned box on (or above) the ground: x lateral (left < 0 < right), z along the road."""

    x0: float
    x1: float
    z0: float  # position along the road at t = 0 (wrapped into [0, LOOP_LENGTH))
    length: float  # extent along the road
    bottom: float  # height of the lower face above ground
    top: float
    color: tuple[float, float, float]
    speed: float = 0.0  # own speed along +z, m/s (cars)
    windows: bool = False


@dataclass(frozen=True)
class Scene:
    """Everything that stays fixed in a clip."""

    sky_top: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    haze: tuple[float, float, float]
    fog_distance: float
    road_color: tuple[float, float, float]
    marking_color: tuple[float, float, float]
    sidewalk_color: tuple[float, float, float]
    ground_color: tuple[float, float, float]
    num_lanes: int
    lane_width: float
    sidewalk_width: float
    ego_lane: int
    ego_speed: float  # m/s
    sway_amplitude: float  # lateral oscillation of the ego car, metres
    sway_period: float  # seconds
    horizon: float  # horizon row as a fraction of the image height
    focal: float  # focal length as a fraction of the image width
    boxes: tuple[Box, ...]

    @property
    def road_half_width(self) -> float:
        return self.num_lanes * self.lane_width / 2


def _jitter(rng: np.random.Generator, color, amount: float = 0.06) -> tuple[float, float, float]:
    c = np.clip(np.asarray(color, dtype=np.float64) + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return tuple(float(v) for v in c)


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw the fixed part of a clip: palette, road layout, ego lane and speed, roadside objects, cars."""
    dusk = rng.random() < 0.25
    if dusk:
        sky_top, sky_horizon = _jitter(rng, (0.25, 0.3, 0.55)), _jitter(rng, (0.95, 0.65, 0.45))
    else:
        sky_top, sky_horizon = _jitter(rng, (0.3, 0.5, 0.85)), _jitter(rng, (0.8, 0.87, 0.95))
    num_lanes = int(rng.integers(2, 5))
    lane_width = float(rng.uniform(3.0, 3.8))
    sidewalk_width = float(rng.uniform(1.5, 3.5))
    half = num_lanes * lane_width / 2
    edge = half + sidewalk_width

    boxes: list[Box] = []
    for side in (-1.0, 1.0):
        z = float(rng.uniform(0, 10))
        while z < LOOP_LENGTH - 8:
            kind = rng.random()
            if kind < 0.55:  # building
                depth = float(rng.uniform(8, 25))
                setback = float(rng.uniform(0.5, 6))
                width = float(rng.uniform(6, 15))
                near = edge + setback
                x0, x1 = (near, near + width) if side > 0 else (-near - width, -near)
                boxes.append(
                    Box(x0, x1, z, depth, 0.0, float(rng.uniform(5, 25)),
                        _jitter(rng, rng.choice([(0.75, 0.7, 0.62), (0.6, 0.35, 0.3), (0.55, 0.58, 0.62),
                                                 (0.85, 0.82, 0.75), (0.4, 0.42, 0.48)]), 0.08),
                        windows=bool(rng.random() < 0.6))
                )
                z += depth + float(rng.uniform(1, 12))
            else:  # tree: trunk + crown
                xc = side * (edge + float(rng.uniform(0.3, 3)))
                trunk = float(rng.uniform(0.25, 0.45))
                crown = float(rng.uniform(1.5, 3.5))
                crown_bottom = float(rng.uniform(1.5, 3))
                boxes.append(Box(xc - trunk / 2, xc + trunk / 2, z, trunk, 0.0, crown_bottom + 0.5,
                                 _jitter(rng, (0.35, 0.25, 0.15), 0.04)))
                boxes.append(Box(xc - crown / 2, xc + crown / 2, z - crown / 2 + trunk / 2, crown, crown_bottom,
                                 crown_bottom + float(rng.uniform(2, 5)), _jitter(rng, (0.2, 0.45, 0.2), 0.08)))
                z += float(rng.uniform(4, 14))

    ego_lane = int(rng.integers(num_lanes // 2, num_lanes))  # drive on the right half
    ego_speed = float(rng.uniform(6, 16))
    for _ in range(int(rng.integers(1, 4))):  # cars
        lane = int(rng.integers(0, num_lanes))
        center = -half + (lane + 0.5) * lane_width
        car_width = float(rng.uniform(1.7, 2.0))
        oncoming = lane < num_lanes // 2
        speed = -float(rng.uniform(6, 14)) if oncoming else ego_speed + float(rng.uniform(-3, 3))
        z = float(rng.uniform(8, 60))
        color = _jitter(rng, rng.choice([(0.8, 0.1, 0.1), (0.1, 0.2, 0.6), (0.9, 0.9, 0.9), (0.15, 0.15, 0.15),
                                         (0.85, 0.7, 0.1)]), 0.05)
        boxes.append(Box(center - car_width / 2, center + car_width / 2, z, 4.2, 0.25, 0.9, color, speed=speed))
        boxes.append(Box(center - car_width / 2 + 0.15, center + car_width / 2 - 0.15, z + 0.8, 2.2, 0.9, 1.45,
                         (0.12, 0.14, 0.18), speed=speed))

    return Scene(
        sky_top=sky_top,
        sky_horizon=sky_horizon,
        haze=sky_horizon,
        fog_distance=float(rng.uniform(60, 200)),
        road_color=_jitter(rng, (0.33, 0.33, 0.35), 0.05),
        marking_color=_jitter(rng, (0.95, 0.95, 0.9), 0.03) if rng.random() < 0.8 else (0.95, 0.8, 0.2),
        sidewalk_color=_jitter(rng, (0.65, 0.63, 0.6), 0.06),
        ground_color=_jitter(rng, rng.choice([(0.3, 0.5, 0.22), (0.5, 0.5, 0.45), (0.55, 0.5, 0.35)]), 0.06),
        num_lanes=num_lanes,
        lane_width=lane_width,
        sidewalk_width=sidewalk_width,
        ego_lane=ego_lane,
        ego_speed=ego_speed,
        sway_amplitude=float(rng.uniform(0, 0.6)),
        sway_period=float(rng.uniform(4, 12)),
        horizon=float(rng.uniform(0.38, 0.5)),
        focal=float(rng.uniform(0.7, 1.1)),
        boxes=tuple(boxes),
    )


def render(scene: Scene, time: float, height: int, width: int, supersample: int = 2) -> np.ndarray:
    """Render ``scene`` at ``time`` seconds -> uint8 ``[height, width, 3]``."""
    H, W = height * supersample, width * supersample
    f = scene.focal * W
    cx, cy = (W - 1) / 2, scene.horizon * H
    travelled = scene.ego_speed * time
    ego_x = -scene.road_half_width + (scene.ego_lane + 0.5) * scene.lane_width
    ego_x += scene.sway_amplitude * np.sin(2 * np.pi * time / scene.sway_period)

    rows = np.arange(H, dtype=np.float64)[:, None] + 0.5  # [H,1]
    cols = np.arange(W, dtype=np.float64)[None, :] + 0.5  # [1,W]
    img = np.empty((H, W, 3), dtype=np.float64)
    depth = np.full((H, W), np.inf)

    # sky: vertical gradient from the top colour to the horizon colour
    a = np.clip(rows / max(cy, 1.0), 0, 1)[..., None]  # [H,1,1]
    sky = (1 - a) * np.asarray(scene.sky_top) + a * np.asarray(scene.sky_horizon)
    img[:] = sky

    # ground: row -> distance, column -> lateral position
    below = rows[:, 0] > cy + 0.5
    r = rows[below]  # [Hg,1]
    z = f * CAMERA_HEIGHT / (r - cy)  # [Hg,1]
    x = (cols - cx) * z / f + ego_x  # [Hg,W]
    zz = np.broadcast_to(z, x.shape)
    ax = np.abs(x)
    half = scene.road_half_width
    ground = np.broadcast_to(np.asarray(scene.ground_color), x.shape + (3,)).copy()
    ground[ax < half + scene.sidewalk_width] = scene.sidewalk_color
    kerb = (ax >= half) & (ax < half + 0.2)
    ground[kerb] = np.asarray(scene.sidewalk_color) * 0.8
    ground[ax < half] = scene.road_color
    z_world = zz + travelled  # position along the road
    line_w = 0.15
    edge_line = np.abs(ax - (half - 0.3)) < line_w / 2
    marks = edge_line
    for k in range(1, scene.num_lanes):
        xb = -half + k * scene.lane_width
        centre = scene.num_lanes % 2 == 0 and k == scene.num_lanes // 2  # solid between the two directions
        line = np.abs(x - xb) < line_w / 2
        marks = marks | (line if centre else line & (np.mod(z_world, 9.0) < 3.0))  # dashes: 3 m every 9 m
    ground[marks] = scene.marking_color
    img[below] = ground
    depth[below] = zz

    # boxes, through the depth buffer
    for box in scene.boxes:
        z0 = box.z0 + box.speed * time - travelled
        z0 = np.mod(z0, LOOP_LENGTH) if box.speed == 0.0 else np.mod(z0 + 20.0, LOOP_LENGTH) - 20.0
        if z0 > FAR or z0 + box.length < NEAR:
            continue
        _draw_box(img, depth, box, z0, ego_x, f, cx, cy, rows, cols)

    # haze toward the horizon colour
    fog = 1 - np.exp(-np.minimum(depth, 1e6) / scene.fog_distance)
    fog[np.isinf(depth)] = 0.0
    img = img * (1 - fog[..., None]) + np.asarray(scene.haze) * fog[..., None]

    if supersample > 1:
        img = img.reshape(height, supersample, width, supersample, 3).mean(axis=(1, 3))
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _draw_box(img, depth, box: Box, z0: float, ego_x: float, f: float, cx: float, cy: float, rows, cols) -> None:
    """Draw the visible vertical faces of ``box`` (front at ``z0``) into ``img`` where nearer than ``depth``."""
    z1 = z0 + box.length
    x0, x1 = box.x0 - ego_x, box.x1 - ego_x
    color = np.asarray(box.color)
    faces = [((x0, z0), (x1, z0), 1.0)]  # the face toward the camera
    if x0 > 0:
        faces.append(((x0, z0), (x0, z1), 0.75))  # left face of a box on the right
    elif x1 < 0:
        faces.append(((x1, z0), (x1, z1), 0.75))
    for (ax_, az), (bx, bz), shade in faces:
        _draw_wall(img, depth, ax_, az, bx, bz, box, color * shade, f, cx, cy, rows, cols)


def _draw_wall(img, depth, ax_, az, bx, bz, box: Box, color, f, cx, cy, rows, cols) -> None:
    # ray of column u on the ground plane: x = a z with a = (u - cx) / f; wall: P = A + s (B - A)
    a = (cols[0] - cx) / f  # [W]
    dx, dz = bx - ax_, bz - az
    denom = dx - a * dz
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (a * az - ax_) / denom
    zc = az + s * dz  # [W] depth of the wall in each column
    ok = (s >= 0) & (s <= 1) & (zc > NEAR) & np.isfinite(zc)
    if not ok.any():
        return
    cols_ok = np.nonzero(ok)[0]
    zc = zc[cols_ok]
    top = cy + f * (CAMERA_HEIGHT - box.top) / zc  # row of the top edge
    bottom = cy + f * (CAMERA_HEIGHT - box.bottom) / zc
    r = rows  # [H,1]
    inside = (r >= top[None, :]) & (r < bottom[None, :]) & (zc[None, :] < depth[:, cols_ok])  # [H,Wok]
    if not inside.any():
        return
    block = np.broadcast_to(color, inside.shape + (3,)).copy()
    if box.windows:
        along = s[cols_ok] * np.hypot(dx, dz)  # metres along the wall
        height = CAMERA_HEIGHT - (r - cy) * zc[None, :] / f  # metres above ground, [H,Wok]
        win = (np.mod(along, 3.5)[None, :] > 1.2) & (np.mod(along, 3.5)[None, :] < 2.6)
        win = win & (np.mod(height, 3.2) > 1.1) & (np.mod(height, 3.2) < 2.4) & (height > 2.5)
        block[win] = color * 0.35 + np.array([0.05, 0.08, 0.12])
    sub = img[:, cols_ok]
    sub[inside] = block[inside]
    img[:, cols_ok] = sub
    dsub = depth[:, cols_ok]
    dsub[inside] = np.broadcast_to(zc[None, :], inside.shape)[inside]
    depth[:, cols_ok] = dsub


def make_frames(n: int, height: int, width: int, seed: int, supersample: int = 2) -> np.ndarray:
    """``n`` independent frames -> uint8 ``[n, height, width, 3]``.

    Frame ``i`` comes from its own scene and time, seeded by ``(seed, i)``: deterministic per seed,
    different between seeds, and ``make_frames(n + 1, ...)[:n] == make_frames(n, ...)``.
    """
    _check_sizes(n=n, height=height, width=width, seed=seed, supersample=supersample)
    out = np.empty((n, height, width, 3), dtype=np.uint8)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        scene = sample_scene(rng)
        out[i] = render(scene, float(rng.uniform(0, 60)), height, width, supersample)
    return out


def make_clip(
    num_frames: int, height: int, width: int, seed: int, fps: float = 10.0, supersample: int = 2
) -> np.ndarray:
    """``num_frames`` consecutive frames of one scene at ``fps`` -> uint8 ``[T, height, width, 3]`` (``T = 0``: an
    empty array, like ``make_frames(0, ...)``)."""
    _check_sizes(num_frames=num_frames, height=height, width=width, seed=seed, supersample=supersample)
    if not (isinstance(fps, (int, float, np.integer, np.floating)) and np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive finite number, got {fps!r}")
    rng = np.random.default_rng([seed, 1 << 20])
    scene = sample_scene(rng)
    start = float(rng.uniform(0, 60))
    out = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        out[t] = render(scene, start + t / fps, height, width, supersample)
    return out


def _check_sizes(**values: int) -> None:
    """Refuse counts and sizes that are not integers of their range, naming them: ``n`` / ``num_frames`` / ``seed``
    ``>= 0``, ``height`` / ``width`` / ``supersample`` ``>= 1`` (numpy's errors named none, and ``make_clip(0)``
    failed in ``np.stack``)."""
    from vavam.checks import check_nonnegative_int, check_positive_int

    for name, value in values.items():
        if name in ("n", "num_frames", "seed"):
            check_nonnegative_int(value, name, "none" if name != "seed" else "seed 0")
        else:
            check_positive_int(value, name)


__all__ = ["Box", "Scene", "sample_scene", "render", "make_frames", "make_clip"]
