"""Embedded driving world: render frames/s (front camera) and simulation steps/s.

``run() -> list[dict]`` with name, config, metric, value, unit; ``python benchmarks/bench_world.py``
prints JSON lines. Rendering uses moderngl on EGL (Mesa llvmpipe on a CPU).
"""

from __future__ import annotations

import json
import time


def _render_only_rows(world, sizes, frames: int) -> list[dict]:
    from vavam.world.camera import Camera
    from vavam.world.render import Renderer, create_context

    ctx = create_context()
    rows = []
    for h, w in sizes:
        r = Renderer(world.town, Camera(h, w), ctx=ctx)
        pose, boxes = world.ego_to_world(), world.render_boxes()
        r.render(pose, boxes)
        t = time.perf_counter()
        for _ in range(frames):
            r.render(pose, boxes)
        rows.append(
            {
                "name": "world_render_static_pose",
                "config": {"height": h, "width": w, "seed": world.seed},
                "metric": "frames_per_s",
                "value": frames / (time.perf_counter() - t),
                "unit": "frames/s",
            }
        )
        r.release()
    return rows


def run(frames: int = 100, steps: int = 500) -> list[dict]:
    """Measure rendering at 288x512, 144x256 and 64x128, simulation steps/s, scenario runs/s (constant
    velocity planner, no images) and world construction time."""
    from vavam.world.sim import World

    world = World(0)
    for _ in range(20):
        world.step()
    rows = _render_only_rows(world, [(288, 512), (144, 256), (64, 128)], frames)
    t = time.perf_counter()
    for _ in range(steps):
        world.step()
    rows.append(
        {
            "name": "world_sim",
            "config": {"seed": 0, "vehicles": len(world.traffic.agents), "dt": world.config.dt},
            "metric": "steps_per_s",
            "value": steps / (time.perf_counter() - t),
            "unit": "steps/s",
        }
    )
    from vavam.world.closedloop import simulate
    from vavam.world.planners import ConstantVelocityPlanner
    from vavam.world.scenarios import SCENARIO_TYPES, make_scenario

    specs = [make_scenario(kind, 0, run) for kind in SCENARIO_TYPES for run in range(3)]
    simulate(specs[0], None)  # warm the town cache
    t = time.perf_counter()
    for spec in specs:
        simulate(spec, ConstantVelocityPlanner())
    rows.append(
        {
            "name": "world_scenario",
            "config": {"planner": "constant_velocity", "render": False, "runs": len(specs)},
            "metric": "runs_per_s",
            "value": len(specs) / (time.perf_counter() - t),
            "unit": "runs/s",
        }
    )
    t = time.perf_counter()
    World(1)
    rows.append(
        {
            "name": "world_build",
            "config": {"seed": 1},
            "metric": "seconds",
            "value": time.perf_counter() - t,
            "unit": "s",
        }
    )
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
