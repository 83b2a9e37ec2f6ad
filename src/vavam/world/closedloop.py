"""Closed-loop scenario runs: a planner at 2 Hz drives the ego through a hazard scenario; NCAP score.

Per run: the world of the scenario is built, the first ``priming_steps`` plans come from the
unreacting reference driver, then the planner's; every plan is tracked for 0.5 s (5 simulation
steps of 0.1 s) by :class:`~vavam.world.tracker.TrajectoryTracker`; collisions are checked with 2
sub-steps per simulation step (10 per 0.5 s). A run ends at the first collision or after the
scenario duration. The reference speed comes from the same scenario driven by the reference
driver: the relative speed between ego and target at that run's impact.
A planner that raises or returns a bad plan fails that run (``failure`` holds the reason).
A planner with an ``observe(obs)`` method gets the observations of the priming steps through it (with
the camera frame when a renderer is given), so that it can build its frame history before it drives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field

import numpy as np

from vavam.world.collision import swept_collision
from vavam.world.ncap import aggregate, ncap_score
from vavam.world.planners import ReferencePlanner
from vavam.world.scenarios import SCENARIO_TYPES, ScenarioSpec, build_world, make_scenario
from vavam.world.sim import World
from vavam.world.tracker import TrajectoryTracker, validate_plan

Planner = Callable[[dict], np.ndarray]
STEPS_PER_PLAN = 5


@dataclass
class RunResult:
    """Outcome of one scenario run."""

    type: str
    layout: int
    run: int
    collided: bool
    collision_time: float | None
    impact_speed: float
    reference_speed: float
    score: float
    hit_target: bool = False
    failure: str | None = None
    poses: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))  # t, x, y, yaw, v
    plans: list = field(default_factory=list)  # (t, [6, 2]) per plan tracked (the priming steps': the reference's)

    def summary(self) -> dict:
        """JSON-able dict without the per-step arrays."""
        d = asdict(self)
        d.pop("poses")
        d.pop("plans")
        return d


def _others(world: World, spec: ScenarioSpec, t: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Boxes ``[N, 11]`` (x, y, yaw, l, w, h, r, g, b, vx, vy) of traffic, parked cars and the target
    (last row); returns boxes, velocities and the target's row."""
    traffic = world.vehicle_boxes()
    vel = np.array([[a.v * math.cos(a.yaw), a.v * math.sin(a.yaw)] for a in world.traffic.agents if not a.is_ego])
    vel = vel.reshape(-1, 2)
    parked = world.town.scenery.parked
    target = spec.actor_state(t)
    boxes = np.concatenate(
        [
            np.concatenate([traffic[:, :9], vel], axis=1),
            np.concatenate([parked[:, :9], np.zeros((len(parked), 2))], axis=1),
            target[None],
        ],
        axis=0,
    )
    return boxes, boxes[:, 9:11], len(boxes) - 1


def _ego_box(world: World) -> np.ndarray:
    p = world.params
    cx, cy = world.ego.centre(p)
    return np.array([cx, cy, world.ego.yaw, p.length, p.width])


def observation(world: World, spec: ScenarioSpec, t: float, renderer=None) -> dict:
    """What a planner receives (see :mod:`vavam.world.planners`)."""
    boxes, _, _ = _others(world, spec, t)
    image = cam_to_ego = None
    if renderer is not None:
        image = renderer.render(world.ego_to_world(), boxes[:, :9]).rgb
        if hasattr(renderer.camera, "cam_to_ego"):
            cam_to_ego = renderer.camera.cam_to_ego()
    return {
        "image": image,
        "ego_to_world": world.ego_to_world(),
        "speed": float(world.ego.v),
        "command": int(world.command()),
        "timestamp_us": round(t * 1e6),
        "intrinsics": None if renderer is None else renderer.camera.intrinsics,
        "camera_to_ego": cam_to_ego,
        "boxes": boxes,
        "world": world,
        "time": t,
    }


def next_plan(world: World, spec: ScenarioSpec, t: float, k: int, planner: Planner | None, reference: Planner,
              renderer=None) -> np.ndarray:
    """The plan of planner call ``k`` at time ``t``: the ``reference`` driver's in the first ``spec.priming_steps``
    calls (and throughout without a ``planner``), where a planner with ``observe(obs)`` is shown the observation
    (its history), then the ``planner``'s. Frames are rendered (with ``renderer``) only for a planner that sees
    them."""
    use_reference = planner is None or k < spec.priming_steps
    observes = use_reference and planner is not None and hasattr(planner, "observe")
    obs = observation(world, spec, t, renderer if (not use_reference or observes) else None)
    if observes:  # priming: the planner sees the frame (history) but the reference drives
        planner.observe(obs)
    return (reference if use_reference else planner)(obs)


def simulate(
    spec: ScenarioSpec,
    planner: Planner | None,
    reference_speed: float | None = None,
    renderer=None,
    on_step: Callable[[World, ScenarioSpec, float, np.ndarray], None] | None = None,
) -> RunResult:
    """Run ``spec`` with ``planner`` (None: the reference driver throughout).

    ``on_step(world, spec, t, plan_world)`` is called at the start and after every 0.1 s step with the
    plan being tracked (``[7, 2]`` world frame, its origin first) -- e.g. to render a video.
    """
    world = build_world(spec)
    reference = ReferencePlanner()
    if planner is not None and hasattr(planner, "reset"):
        planner.reset()
    dt = world.config.dt
    t = 0.0
    poses = [[t, world.ego.x, world.ego.y, world.ego.yaw, world.ego.v]]
    plans = []
    ego_prev = _ego_box(world)
    others_prev, vel_prev, _ = _others(world, spec, t)
    n_plans = round(spec.duration / (STEPS_PER_PLAN * dt))
    for k in range(n_plans):
        try:
            plan = validate_plan(next_plan(world, spec, t, k, planner, reference, renderer))
        except Exception as err:  # noqa: BLE001 - a failing planner fails this run only
            return RunResult(
                spec.kind,
                spec.layout,
                spec.run,
                False,
                None,
                0.0,
                reference_speed or 0.0,
                0.0,
                failure=f"{type(err).__name__}: {err}",
                poses=np.asarray(poses),
                plans=plans,
            )
        plans.append((t, plan))
        tracker = TrajectoryTracker(world.ego, plan, world.params)
        if on_step is not None:
            plan_world = tracker.line.points[:-1]
            if k == 0:
                on_step(world, spec, t, plan_world)
        for _ in range(STEPS_PER_PLAN):
            ego_vel_prev = _ego_velocity(world)
            world.step(tracker.control(world.ego, dt))
            t = round(t + dt, 9)
            poses.append([t, world.ego.x, world.ego.y, world.ego.yaw, world.ego.v])
            if on_step is not None:
                on_step(world, spec, t, plan_world)
            ego_now = _ego_box(world)
            others_now, vel, target_row = _others(world, spec, t)
            if len(others_now) != len(others_prev):  # traffic changed: no interpolation for this step
                others_prev, vel_prev = others_now, vel
            hit = swept_collision(ego_prev, ego_now, others_prev[:, :5], others_now[:, :5])
            if hit is not None:
                frac, row = hit
                t_hit = t - dt * (1.0 - frac)
                # velocities at the sub-step of the first contact, interpolated over the 0.1 s step (as
                # NeuroNCAP interpolates the ego's speed to its collision sub-steps)
                v_ego = ego_vel_prev + frac * (_ego_velocity(world) - ego_vel_prev)
                v_other = vel_prev[row] + frac * (vel[row] - vel_prev[row])
                v_imp = float(np.linalg.norm(v_ego - v_other))
                v_ref = v_imp if reference_speed is None else reference_speed
                return RunResult(
                    spec.kind,
                    spec.layout,
                    spec.run,
                    True,
                    t_hit,
                    v_imp,
                    v_ref,
                    ncap_score(True, v_imp, v_ref),
                    hit_target=row == target_row,
                    poses=np.asarray(poses),
                    plans=plans,
                )
            ego_prev, others_prev, vel_prev = ego_now, others_now, vel
    return RunResult(
        spec.kind,
        spec.layout,
        spec.run,
        False,
        None,
        0.0,
        reference_speed or 0.0,
        5.0,
        poses=np.asarray(poses),
        plans=plans,
    )


def _ego_velocity(world) -> np.ndarray:
    """The ego's velocity vector ``[2]`` (m/s, world frame)."""
    return world.ego.v * np.array([math.cos(world.ego.yaw), math.sin(world.ego.yaw)])


def run_scenario(spec: ScenarioSpec, planner: Planner, renderer_factory=None) -> RunResult:
    """Score ``planner`` on one run: a reference run for v_reference, then the planner's run.
    ``renderer_factory(town)`` makes the camera renderer when the planner needs images."""
    ref = simulate(spec, None)
    v_ref = ref.impact_speed if ref.collided else spec.ego_speed
    if renderer_factory is None:
        return simulate(spec, planner, reference_speed=v_ref)
    from vavam.world.scenarios import _town

    renderer = renderer_factory(_town(spec.world_seed))
    try:
        return simulate(spec, planner, reference_speed=v_ref, renderer=renderer)
    finally:
        if hasattr(renderer, "release"):  # GL buffers: one renderer per run would otherwise pile up
            renderer.release()


def run_scenarios(
    planner: Planner, kinds: Iterable[str] = SCENARIO_TYPES, layouts: int = 3, runs: int = 10, renderer_factory=None
) -> tuple[list[RunResult], dict]:
    """All runs of all layouts of ``kinds``; returns the per-run results and the aggregate."""
    results = []
    for kind in kinds:
        for layout in range(layouts):
            for run in range(runs):
                results.append(run_scenario(make_scenario(kind, layout, run), planner, renderer_factory))
    return results, aggregate([r.summary() for r in results])
