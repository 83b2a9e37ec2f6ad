"""The embedded driving world: procedural towns, traffic, an expert driver, a front-camera renderer,
episode recording and NeuroNCAP-style hazard scenarios.

Main entry points::

    from vavam.world import World, Renderer, Camera, record_episode, make_scenario, run_scenario
    world = World(seed=0)                      # town + traffic + expert ego, 0.1 s steps
    world.step()                               # expert drives; or world.step((accel, steer))
    frame = Renderer(world.town, Camera(288, 512)).render(world.ego_to_world(), world.render_boxes())
    ep = record_episode(0, duration_s=20, rate_hz=2)          # arrays; ep.to_scene_record()
    res = run_scenario(make_scenario("frontal", 0, 3), ConstantVelocityPlanner())

Conventions: world frame x east, y north, z up; ego frame x forward, y left (rear axle); commands
0 right / 1 left / 2 straight; images RGB uint8 here (``vavam.types.uint8_to_unit`` for models).
The renderer needs ``moderngl`` and an EGL-capable Mesa; it is imported lazily.
"""

from __future__ import annotations

from vavam.world.camera import Camera
from vavam.world.closedloop import RunResult, run_scenario, run_scenarios, simulate
from vavam.world.episode import Episode, record_episode
from vavam.world.meshes import LABEL_IDS, LABELS
from vavam.world.ncap import aggregate, ncap_score
from vavam.world.planners import ConstantVelocityPlanner, EmergencyBrakePlanner, ExpertPlanner
from vavam.world.roads import NetworkConfig
from vavam.world.scenarios import SCENARIO_TYPES, ScenarioSpec, make_scenario
from vavam.world.sim import World, WorldConfig
from vavam.world.town import Town, generate_town

__all__ = [
    "LABELS",
    "LABEL_IDS",
    "SCENARIO_TYPES",
    "Camera",
    "ConstantVelocityPlanner",
    "EmergencyBrakePlanner",
    "Episode",
    "ExpertPlanner",
    "NetworkConfig",
    "Renderer",
    "RunResult",
    "ScenarioSpec",
    "Town",
    "World",
    "WorldConfig",
    "aggregate",
    "generate_town",
    "make_scenario",
    "ncap_score",
    "record_episode",
    "run_scenario",
    "run_scenarios",
    "simulate",
]


def __getattr__(name: str):
    if name == "Renderer":
        from vavam.world.render import Renderer

        return Renderer
    if name == "record_run_video":
        from vavam.world.video import record_run_video

        return record_run_video
    raise AttributeError(name)
