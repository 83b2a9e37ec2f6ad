"""The target's velocity at the ends of its script, the camera extrinsics a model server receives, and bad
inputs to the world refused with their names."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from vavam.world.closedloop import observation, simulate
from vavam.world.scenarios import build_world, make_scenario


def _stop(obs):
    return np.zeros((6, 2))


def test_target_moves_at_the_first_and_last_scripted_times():
    """A frontal / side target moves from t = 0 to the end of the run: its velocity was reported as 0 at both
    ends of its script (a central difference cut off there), 0.5 of it 0.05 s inside them."""
    for kind in ("frontal", "side"):
        spec = make_scenario(kind, 0, 1)
        v_first = (spec.actor_xy[1] - spec.actor_xy[0]) / (spec.actor_times[1] - spec.actor_times[0])
        v_last = (spec.actor_xy[-1] - spec.actor_xy[-2]) / (spec.actor_times[-1] - spec.actor_times[-2])
        np.testing.assert_allclose(spec.actor_state(0.0)[9:11], v_first, rtol=1e-6)
        np.testing.assert_allclose(spec.actor_state(float(spec.actor_times[-1]))[9:11], v_last, rtol=1e-6)
        np.testing.assert_allclose(spec.actor_state(2.0)[9:11], v_first, atol=0.1)  # inside: the same motion
        assert np.all(spec.actor_state(-0.5)[9:11] == 0.0)  # before and after the script it stands
        assert np.all(spec.actor_state(float(spec.actor_times[-1]) + 0.5)[9:11] == 0.0)
    assert np.all(make_scenario("stationary", 0, 1).actor_state(0.0)[9:11] == 0.0)


def test_impact_in_the_last_step_of_a_run_has_the_targets_speed():
    """An ego that stops in front of an oncoming target is hit at its speed, also when the contact comes in the
    run's last 0.1 s (it was read as 0 m/s at t = 8 s, and as half the speed at 7.95 s: a better score)."""
    spec = make_scenario("frontal", 0, 0)
    early = simulate(spec, _stop, reference_speed=10.0)
    assert early.collided and early.collision_time < 7.5
    v = (spec.actor_xy[1] - spec.actor_xy[0]) / (spec.actor_times[1] - spec.actor_times[0])
    speed = float(np.linalg.norm(v))
    assert early.impact_speed == pytest.approx(speed, rel=1e-3)  # the ego stands: the target's speed
    for contact in (7.95, 8.0):  # the same hit, the target started further away
        shift = speed * (contact - early.collision_time)
        late = dataclasses.replace(spec, actor_xy=spec.actor_xy - shift * v / speed)
        res = simulate(late, _stop, reference_speed=10.0)
        assert res.collided and res.collision_time == pytest.approx(contact, abs=1e-6)
        assert res.poses[-1, 4] == 0.0
        assert res.impact_speed == pytest.approx(speed, rel=1e-3), contact
        assert res.score == pytest.approx(4.0 * (1.0 - res.impact_speed / 10.0))


def test_model_server_gets_the_front_cameras_extrinsics():
    """NeuroNCAP sends camera2ego for every camera; the world's HTTP planner sent only the intrinsics."""
    pytest.importorskip("pydantic")
    from vavam.world.camera import Camera
    from vavam.world.http_planner import HTTPPlanner

    camera = Camera(18, 32)

    class Renderer:  # the real camera, no GL
        def __init__(self):
            self.camera = camera

        def render(self, ego_to_world, boxes):
            return type("Frame", (), {"rgb": np.zeros((18, 32, 3), np.uint8)})()

    requests = []

    class Client:
        def reset(self):
            return True

        def infer(self, request):
            requests.append(request)
            return np.zeros((6, 2))

    spec = make_scenario("stationary", 0, 0)
    obs = observation(build_world(spec), spec, 0.0, Renderer())
    HTTPPlanner(Client())(obs)
    calib = requests[0].calibration
    np.testing.assert_allclose(calib.camera2ego["CAM_FRONT"], camera.cam_to_ego())
    np.testing.assert_allclose(calib.camera2image["CAM_FRONT"], camera.intrinsics)
    override = np.eye(4)
    HTTPPlanner(Client(), camera_to_ego=override)(obs)  # an explicit extrinsic still wins
    np.testing.assert_allclose(requests[-1].calibration.camera2ego["CAM_FRONT"], override)


@pytest.mark.parametrize(
    "plan, why",
    [
        (np.ones((6, 2)) * (1 + 1j), "complex"),  # the imaginary part was dropped with a warning
        (np.ones((6, 2), dtype=bool), "bool"),  # True was 1 m
        ([["1.5", "0"]] * 6, "<U"),  # text was parsed as numbers
        ([[1.0, 0.0]] * 5 + [[1.0]], "inhomogeneous"),  # numpy's own error, without the plan named
    ],
)
def test_plans_that_are_not_real_numbers_are_refused(plan, why):
    from vavam.world.tracker import validate_plan

    with pytest.raises(ValueError, match="a plan must be") as err:
        validate_plan(plan)
    assert why in str(err.value)
    assert validate_plan(np.ones((6, 2), dtype=np.float32)).dtype == np.float64  # real numbers still pass
    assert validate_plan([[1, 0]] * 6).dtype == np.float64


@pytest.mark.parametrize("kw", [{"layout": 1.5}, {"layout": True}, {"run": 2.7}])
def test_scenario_indices_must_be_integers(kw):
    args = {"layout": 0, "run": 0, **kw}
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be a non-negative integer"):
        make_scenario("stationary", **args)  # 1.5 was silently layout 1
    assert make_scenario("stationary", np.int64(1), np.int64(2)).layout == 1  # numpy integers are fine


@pytest.mark.parametrize(
    "kw, name",
    [({"dt": math.nan}, "dt"), ({"traffic_density": math.nan}, "traffic_density"),
     ({"turn_weights": (-1.0, 0.0, 1.0)}, "turn_weights"), ({"turn_weights": (1.0, 1.0)}, "turn_weights")],
)
def test_world_config_refuses_nan_and_bad_turn_weights(kw, name):
    from vavam.world.sim import WorldConfig

    with pytest.raises(ValueError, match=name):
        WorldConfig(**kw).validate()
    WorldConfig(turn_weights=(0.0, 0.0, 1.0)).validate()  # the scenarios' straight-only routes


def _gl():
    pytest.importorskip("moderngl")
    from vavam.world.render import create_context

    try:
        create_context().release()
    except RuntimeError as err:
        pytest.skip(str(err))


@pytest.mark.parametrize(
    "kw, name",
    [({"duration_s": math.nan}, "--duration-s"), ({"duration_s": math.inf}, "--duration-s"),
     ({"rate_hz": math.nan}, "--rate-hz"), ({"workers": 0}, "--workers")],
)
def test_generate_refuses_non_finite_times_and_no_workers_before_writing(tmp_path, kw, name):
    """NaN durations wrote meta.json (with NaN in it, which then blocked a corrected re-run) and failed with
    "cannot convert float NaN to integer"; workers=0 was taken as 1."""
    _gl()
    from vavam.world.export import generate

    settings = {"num_scenes": 2, "duration_s": 0.5, "rate_hz": 2.0, "height": 16, "width": 32, "hazard_share": 0.0,
                "progress": False, **kw}
    with pytest.raises(ValueError, match=name):
        generate(tmp_path / "w", **settings)
    assert not (tmp_path / "w" / "meta.json").exists()


def test_episodes_refuse_non_finite_and_zero_durations():
    """record_episode took NaN to numpy's "cannot convert float NaN to integer"; record_hazard_episode took a
    duration of 0 s as "the scenario's" and recorded 8 s."""
    _gl()
    from vavam.world.episode import record_episode, record_hazard_episode
    from vavam.world.roads import NetworkConfig
    from vavam.world.sim import WorldConfig

    with pytest.raises(ValueError, match="duration_s"):
        small = WorldConfig(network=NetworkConfig(grid=(2, 2)))
        record_episode(0, duration_s=math.nan, height=16, width=32, config=small)
    with pytest.raises(ValueError, match="duration_s"):
        record_hazard_episode(make_scenario("stationary", 0, 0), duration_s=0.0, height=16, width=32)


def test_placing_the_ego_releases_its_intersection_grants():
    """``place_ego`` dropped the ego's grants but left it among the connectors' holders: traffic whose path
    conflicts with a connector the ego no longer drives waited at that intersection for ever."""
    from vavam.world.roads import NetworkConfig
    from vavam.world.sim import World, WorldConfig

    world = World(0, WorldConfig(network=NetworkConfig(grid=(3, 3)), traffic_density=2.0))
    for _ in range(300):
        world.step()
        if world.ego_agent.granted:
            break
    held = world.ego_agent.granted.copy()
    assert held and any(0 in ids for d in world.traffic.holders.values() for ids in d.values())
    lane = next(ln for ln in world.net.road_lanes() if ln.length > 30.0 and ln.id != world.ego_agent.path[0])
    world.place_ego([lane.id], 5.0, 5.0)
    assert not world.ego_agent.granted
    assert not any(0 in ids for d in world.traffic.holders.values() for ids in d.values())
    for _ in range(5):
        world.step()  # the world goes on
