"""Videos of closed-loop runs: the front camera with the tracked plan drawn in, as mp4 (PyAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vavam.media import write_mp4
from vavam.world.camera import Camera
from vavam.world.closedloop import Planner, RunResult, _others, simulate


def draw_plan(image: np.ndarray, camera: Camera, ego_to_world: np.ndarray, plan_world: np.ndarray) -> np.ndarray:
    """Draw a world-frame plan (``[K, 2]`` on the ground, its origin first) into ``image`` as a polyline with a dot
    on each waypoint (the origin gets none)."""
    pts = np.concatenate([plan_world, np.zeros((len(plan_world), 1))], axis=1)
    uv, depth = camera.project(pts, ego_to_world)
    keep = depth > camera.near
    out = Image.fromarray(image)
    draw = ImageDraw.Draw(out)
    line = [tuple(map(float, p)) for p in uv[keep]]
    if len(line) > 1:
        draw.line(line, fill=(0, 255, 255), width=max(1, camera.width // 256))
    r = max(1.0, camera.width / 200)
    # the waypoints, not the first *visible* point: the origin (rear axle) is behind the camera, so the first visible
    # point is the 0.5 s waypoint, which lost its dot
    for u, v in uv[1:][keep[1:]]:
        draw.ellipse([u - r, v - r, u + r, v + r], fill=(255, 0, 255))
    return np.asarray(out)


def record_run_video(
    spec, planner: Planner | None, path: str | Path, height: int = 288, width: int = 512, ctx=None
) -> RunResult:
    """Run ``spec`` with ``planner`` and write a 10 Hz mp4 of the front camera with the plan drawn in.
    Returns the run's result (scored against the reference run as in :func:`run_scenario`)."""
    from vavam.world.render import Renderer
    from vavam.world.scenarios import _town, build_world

    ref = simulate(spec, None)
    v_ref = ref.impact_speed if ref.collided else spec.ego_speed
    camera = Camera(height, width)
    renderer = Renderer(_town(spec.world_seed), camera, ctx=ctx)
    frames = []

    def on_step(world, spec_, t, plan_world):
        boxes, _, _ = _others(world, spec_, t)
        pose = world.ego_to_world()
        frames.append(draw_plan(renderer.render(pose, boxes[:, :9]).rgb, camera, pose, plan_world))

    needs_images = planner is not None
    try:
        result = simulate(spec, planner, v_ref, renderer if needs_images else None, on_step=on_step)
        if not frames:  # the planner failed on its first call, before any frame: the start, without a plan
            world = build_world(spec)
            boxes, _, _ = _others(world, spec, 0.0)
            frames.append(renderer.render(world.ego_to_world(), boxes[:, :9]).rgb)
    finally:
        renderer.release()
    write_mp4(path, frames, fps=10.0)
    return result

