"""Expert driving episodes: drive a world, record camera frames, poses and boxes as plain arrays.

An :class:`Episode` holds one drive as numpy arrays (frames ``[T, H, W, 3]`` uint8, optional labels
and depth, µs timestamps, ego-to-world poses with wxyz quaternions, commands, other vehicles' boxes
in CSR layout). :meth:`Episode.to_arrays` gives a flat ``dict`` of arrays + a JSON-able ``meta``;
:meth:`Episode.to_scene_record` gives the common :class:`~vavam.data.records.SceneRecord`.

Commands follow nuScenes: the ego position 3 s later, in the current ego frame, more than 2 m to
the left -> LEFT, more than 2 m to the right -> RIGHT, else STRAIGHT. The world runs 3 s past the
last frame so that every frame has its future.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vavam.types import Command
from vavam.world.camera import Camera
from vavam.world.geometry import yaw_to_quaternion
from vavam.world.meshes import LABELS
from vavam.world.sim import World, WorldConfig

DATASET_NAME = "vavam-world"
BOX_RADIUS = 80.0  # metres around the ego within which boxes are recorded


def future_commands(xy: np.ndarray, yaw: np.ndarray, steps_ahead: int, threshold: float = 2.0) -> np.ndarray:
    """nuScenes-style commands from a pose log: lateral offset of pose ``i + steps_ahead`` in ego
    frame ``i`` (> threshold: LEFT, < -threshold: RIGHT, else STRAIGHT). Poses without a future
    that far use the last pose. Returns ``[T]`` int64."""
    n = len(xy)
    j = np.minimum(np.arange(n) + steps_ahead, n - 1)
    d = xy[j] - xy
    lateral = -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1]
    out = np.full(n, int(Command.STRAIGHT), dtype=np.int64)
    out[lateral > threshold] = int(Command.LEFT)
    out[lateral < -threshold] = int(Command.RIGHT)
    return out


@dataclass
class Episode:
    """One recorded drive (world frame; ego pose = rear axle on the ground).

    Attributes:
        seed: world seed.
        rate_hz: frame rate.
        images: ``[T, H, W, 3]`` uint8 RGB.
        labels: ``[T, H, W]`` uint8 label ids (``label_names``) or None.
        depths: ``[T, H, W]`` float32 metres (sky = camera far plane) or None.
        timestamps: ``[T]`` int64 microseconds.
        translations: ``[T, 3]`` ego-to-world translation.
        rotations: ``[T, 4]`` ego-to-world quaternion (w, x, y, z).
        speeds: ``[T]`` m/s.
        commands: ``[T]`` int64 (0 right, 1 left, 2 straight), from the logged future.
        route_commands: ``[T]`` int64, NeuroNCAP's route rule at each frame.
        intrinsics: ``[3, 3]``; cam_to_ego: ``[4, 4]``.
        box_offsets: ``[T + 1]`` int64; boxes of frame i are rows ``box_offsets[i]:box_offsets[i+1]``.
        box_centers ``[M, 3]``, box_sizes ``[M, 3]`` (length, width, height), box_yaws ``[M]``,
        box_ids ``[M]`` int64 (parked cars negative), box_categories (M strings).
    """

    seed: int
    rate_hz: float
    images: np.ndarray
    labels: np.ndarray | None
    depths: np.ndarray | None
    timestamps: np.ndarray
    translations: np.ndarray
    rotations: np.ndarray
    speeds: np.ndarray
    commands: np.ndarray
    route_commands: np.ndarray
    intrinsics: np.ndarray
    cam_to_ego: np.ndarray
    box_offsets: np.ndarray
    box_centers: np.ndarray
    box_sizes: np.ndarray
    box_yaws: np.ndarray
    box_ids: np.ndarray
    box_categories: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.timestamps)

    def to_arrays(self) -> dict[str, Any]:
        """Plain numpy arrays plus ``meta`` (a JSON-able dict, label table included)."""
        out = {
            k: getattr(self, k)
            for k in (
                "images",
                "timestamps",
                "translations",
                "rotations",
                "speeds",
                "commands",
                "route_commands",
                "intrinsics",
                "cam_to_ego",
                "box_offsets",
                "box_centers",
                "box_sizes",
                "box_yaws",
                "box_ids",
            )
        }
        if self.labels is not None:
            out["labels"] = self.labels
        if self.depths is not None:
            out["depths"] = self.depths
        out["box_categories"] = np.asarray(self.box_categories, dtype=str)
        out["meta"] = {
            **self.meta,
            "seed": self.seed,
            "rate_hz": self.rate_hz,
            "label_names": {str(k): v for k, v in LABELS.items()},
            "dataset": DATASET_NAME,
        }
        return out

    def to_scene_record(self, image_paths: list[str] | None = None, name: str | None = None):
        """The drive as a :class:`vavam.data.records.SceneRecord` (frames themselves stay here;
        pass ``image_paths`` once they are written to disk). Commands go to ``metadata``."""
        from vavam.data.records import AgentBoxes, SceneRecord

        boxes = AgentBoxes(
            offsets=self.box_offsets,
            centers=self.box_centers,
            sizes=self.box_sizes,
            yaws=self.box_yaws,
            categories=list(self.box_categories),
            track_ids=[str(int(i)) for i in self.box_ids],
        )
        return SceneRecord(
            name=name or f"world-{self.seed}",
            timestamps=self.timestamps,
            translations=self.translations,
            rotations=self.rotations,
            camera="CAM_FRONT",
            dataset=DATASET_NAME,
            image_paths=image_paths,
            intrinsics=self.intrinsics,
            boxes=boxes,
            metadata={
                "seed": self.seed,
                "rate_hz": self.rate_hz,
                "commands": self.commands.tolist(),
                "speeds": self.speeds.tolist(),
                **self.meta,
            },
        )


def record_episode(
    seed: int,
    duration_s: float = 20.0,
    rate_hz: float = 2.0,
    height: int = 288,
    width: int = 512,
    labels: bool = False,
    depth: bool = False,
    config: WorldConfig = WorldConfig(),
    renderer=None,
    world: World | None = None,
    ctx=None,
) -> Episode:
    """Drive the expert in the world of ``seed`` for ``duration_s`` and record frames at ``rate_hz``.

    Args:
        seed: world seed (town, traffic, route).
        duration_s: recorded time; frames at ``0, 1/rate_hz, ...`` strictly below ``duration_s``.
        rate_hz: frame rate; ``1 / (rate_hz * dt)`` must be a whole number of simulation steps.
        height, width: image size.
        labels, depth: also keep label maps / depth maps.
        config: world settings.
        renderer: an existing :class:`~vavam.world.render.Renderer` for this world's town (reuse).
        world: an existing world to continue (default: a new ``World(seed, config)``).
        ctx: a moderngl context to render with (default: a new one).
    """
    world = world or World(seed, config)
    return _record(world, seed, duration_s, rate_hz, height, width, labels, depth, renderer, ctx=ctx)


def record_hazard_episode(
    spec,
    duration_s: float | None = None,
    rate_hz: float = 2.0,
    height: int = 288,
    width: int = 512,
    labels: bool = False,
    depth: bool = False,
    planner=None,
    renderer=None,
    ctx=None,
) -> Episode:
    """Record the privileged expert driving through a hazard scenario (evasive manoeuvres in the data).

    ``spec`` is a :class:`~vavam.world.scenarios.ScenarioSpec`; the target actor is rendered and
    recorded with box id ``-100000`` and category ``hazard``. ``planner`` defaults to
    :class:`~vavam.world.planners.ExpertPlanner`; it is called at 2 Hz and tracked as in closed loop
    (the first ``spec.priming_steps`` plans come from the unreacting reference driver). As in closed loop, a
    given planner is ``reset()`` first (when it has the method), sees the recorded camera frame in its
    observations and gets the priming steps' observations through ``observe(obs)`` (when it has the method).
    """
    from vavam.world.closedloop import STEPS_PER_PLAN, next_plan
    from vavam.world.planners import ExpertPlanner, ReferencePlanner
    from vavam.world.scenarios import build_world
    from vavam.world.tracker import TrajectoryTracker

    world = build_world(spec)
    sees = planner is not None  # the privileged default plans from the world, not from frames: none rendered
    planner = planner or ExpertPlanner()
    if hasattr(planner, "reset"):
        planner.reset()
    reference = ReferencePlanner()
    state = {"tracker": None}
    own = sees and renderer is None
    if own:
        from vavam.world.render import Renderer

        renderer = Renderer(world.town, Camera(height, width), ctx=ctx)

    def control(step: int):
        if step % STEPS_PER_PLAN == 0:
            plan = next_plan(world, spec, world.t, step // STEPS_PER_PLAN, planner, reference,
                             renderer if sees else None)
            state["tracker"] = TrajectoryTracker(world.ego, plan, world.params)
        return state["tracker"].control(world.ego, world.config.dt)

    def extra(t: float):
        return spec.actor_state(t)[None, :10]

    try:
        ep = _record(
            world,
            spec.world_seed,
            spec.duration if duration_s is None else duration_s,
            rate_hz,
            height,
            width,
            labels,
            depth,
            renderer,
            control=control,
            extra_boxes=extra,
            ctx=ctx,
        )
    finally:
        if own:
            renderer.release()
    ep.meta.update({"hazard": spec.kind, "layout": spec.layout, "run": spec.run})
    return ep


def _record(
    world: World,
    seed: int,
    duration_s: float,
    rate_hz: float,
    height: int,
    width: int,
    labels: bool,
    depth: bool,
    renderer,
    control=None,
    extra_boxes=None,
    ctx=None,
) -> Episode:
    """The recording loop shared by expert and hazard episodes."""
    if not (np.isfinite(duration_s) and duration_s > 0 and np.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"duration_s and rate_hz must be positive finite numbers, got {duration_s}, {rate_hz}")
    every = 1.0 / (rate_hz * world.config.dt)
    if abs(every - round(every)) > 1e-6 or round(every) < 1:
        raise ValueError(f"rate_hz={rate_hz} is not a whole divisor of the simulation rate {1 / world.config.dt} Hz")
    every = int(round(every))
    n_frames = int(np.ceil(duration_s * rate_hz - 1e-9))
    own = renderer is None
    if own:
        from vavam.world.render import Renderer

        renderer = Renderer(world.town, Camera(height, width), ctx=ctx)
    else:  # a renderer of another size or town would give frames that do not match what was asked / recorded
        got = (renderer.camera.height, renderer.camera.width)
        if got != (height, width):
            raise ValueError(f"renderer renders {got[0]}x{got[1]} frames, but height x width is {height}x{width}")
        town = getattr(renderer, "town", world.town)
        if town is not world.town and (town.seed, town.network.config) != (world.town.seed, world.town.network.config):
            raise ValueError(f"renderer draws the town of seed {town.seed}, the world is in town {world.town.seed}")
    try:
        return _drive_and_record(world, seed, rate_hz, n_frames, every, labels, depth, renderer, control, extra_boxes)
    finally:
        if own:
            renderer.release()


def _drive_and_record(
    world: World,
    seed: int,
    rate_hz: float,
    n_frames: int,
    every: int,
    labels: bool,
    depth: bool,
    renderer,
    control,
    extra_boxes,
) -> Episode:
    """The body of :func:`_record`: step the world, render ``n_frames`` frames every ``every`` steps."""
    cam = renderer.camera
    images, label_maps, depth_maps, poses, speeds, route_cmds, times = [], [], [], [], [], [], []
    offsets, centers, sizes, yaws, ids, cats = [0], [], [], [], [], []
    parked = world.town.scenery.parked
    parked_types = world.town.scenery.parked_types
    future_xy = []
    t0 = world.t
    total_steps = (n_frames - 1) * every + int(round(3.0 / world.config.dt)) + 1
    for step in range(total_steps):
        future_xy.append(world.ego_pose.copy())
        if step % every == 0 and len(images) < n_frames:
            hazard = extra_boxes(world.t - t0) if extra_boxes is not None else np.zeros((0, 10))
            frame = renderer.render(world.ego_to_world(), np.concatenate([world.render_boxes(), hazard], axis=0))
            images.append(frame.rgb)
            if labels:
                label_maps.append(frame.label)
            if depth:
                depth_maps.append(frame.depth)
            poses.append(world.ego_pose.copy())
            speeds.append(world.ego.v)
            route_cmds.append(int(world.command()))
            times.append(int(round((world.t - t0) * 1e6)))
            ex, ey = world.ego.x, world.ego.y
            boxes = world.vehicle_boxes()
            kinds = {a.id: a.kind for a in world.traffic.agents}
            near = np.hypot(boxes[:, 0] - ex, boxes[:, 1] - ey) < BOX_RADIUS
            near_p = np.hypot(parked[:, 0] - ex, parked[:, 1] - ey) < BOX_RADIUS
            for b in boxes[near]:
                centers.append([b[0], b[1], b[5] / 2]), sizes.append(b[3:6]), yaws.append(b[2])
                ids.append(int(b[9])), cats.append(kinds[int(b[9])])
            for k in np.flatnonzero(near_p):
                b = parked[k]
                centers.append([b[0], b[1], b[5] / 2]), sizes.append(b[3:6]), yaws.append(b[2])
                ids.append(-1 - int(k)), cats.append(parked_types[k])
            for b in hazard:
                centers.append([b[0], b[1], b[5] / 2]), sizes.append(b[3:6]), yaws.append(b[2])
                ids.append(-100000), cats.append("hazard")
            offsets.append(len(ids))
        world.step(control(step) if control is not None else None)
    pose = np.asarray(poses)
    log = np.asarray(future_xy)
    cmd_all = future_commands(log[:, :2], log[:, 2], int(round(3.0 / world.config.dt)))
    commands = cmd_all[np.arange(n_frames) * every]
    return Episode(
        seed=int(seed),
        rate_hz=float(rate_hz),
        images=np.stack(images),
        labels=np.stack(label_maps) if labels else None,
        depths=np.stack(depth_maps) if depth else None,
        timestamps=np.asarray(times, dtype=np.int64),
        translations=np.concatenate([pose[:, :2], np.zeros((n_frames, 1))], axis=1),
        rotations=yaw_to_quaternion(pose[:, 2]),
        speeds=np.asarray(speeds),
        commands=commands,
        route_commands=np.asarray(route_cmds, dtype=np.int64),
        intrinsics=cam.intrinsics,
        cam_to_ego=cam.cam_to_ego(),
        box_offsets=np.asarray(offsets, dtype=np.int64),
        box_centers=np.asarray(centers, dtype=np.float64).reshape(-1, 3),
        box_sizes=np.asarray(sizes, dtype=np.float64).reshape(-1, 3),
        box_yaws=np.asarray(yaws, dtype=np.float64),
        box_ids=np.asarray(ids, dtype=np.int64),
        box_categories=cats,
        meta={"town_seed": world.town.seed, "image_size": [cam.height, cam.width]},
    )


def generate_episodes(
    num: int,
    seed: int = 0,
    duration_s: float = 20.0,
    rate_hz: float = 10.0,
    height: int = 288,
    width: int = 512,
    hazard_share: float = 0.2,
    labels: bool = False,
    depth: bool = False,
    config: WorldConfig = WorldConfig(),
) -> Iterator[Episode]:
    """``num`` episodes, deterministic for ``seed``: a ``hazard_share`` of them drive through a random
    hazard scenario (expert evasion, at most the scenario's duration; never one of the benchmark layouts
    0 .. 99), the rest are expert drives of ``duration_s`` in their own towns. One rendering context is shared."""
    if num < 0 or not 0.0 <= hazard_share <= 1.0:
        raise ValueError(f"num must be >= 0 and hazard_share in [0, 1], got {num}, {hazard_share}")
    from vavam.world.export import HAZARD_LAYOUT_BASE
    from vavam.world.render import create_context
    from vavam.world.scenarios import SCENARIO_TYPES, make_scenario

    if num == 0:
        return
    ctx = create_context()
    try:  # released when the generator ends, is closed early or raises (EGL contexts are not garbage-collected)
        rng = np.random.default_rng([int(seed), 99])
        for i in range(num):
            if rng.random() < hazard_share:
                kind = SCENARIO_TYPES[int(rng.integers(len(SCENARIO_TYPES)))]
                # layouts below HAZARD_LAYOUT_BASE are the benchmark's (``vavam world scenarios``): never train on them
                layout = HAZARD_LAYOUT_BASE + int(rng.integers(10_000 - HAZARD_LAYOUT_BASE))
                spec = make_scenario(kind, layout, int(rng.integers(10_000)))
                yield record_hazard_episode(
                    spec, min(duration_s, spec.duration), rate_hz, height, width, labels, depth, ctx=ctx
                )
            else:
                yield record_episode(
                    int(seed) * 100_003 + i, duration_s, rate_hz, height, width, labels, depth, config, ctx=ctx
                )
    finally:
        ctx.release()
