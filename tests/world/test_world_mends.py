"""Audit of the world's geometry, renderer and recording: GL objects freed, bad inputs refused by name,
renderers and contexts released on every path."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from vavam.world.camera import Camera
from vavam.world.geometry import Polyline
from vavam.world.roads import LANE_WIDTH, NetworkConfig, build_network
from vavam.world.sim import World, WorldConfig

TINY = NetworkConfig(grid=(2, 2))


@pytest.fixture(scope="module")
def town():
    from vavam.world.town import generate_town

    return generate_town(0, TINY)


class _SpyContext:
    """Forwards to a moderngl context and remembers every GL object made through it."""

    MAKERS = ("buffer", "renderbuffer", "depth_renderbuffer", "framebuffer", "program", "vertex_array", "texture")

    def __init__(self, ctx):
        object.__setattr__(self, "_ctx", ctx)
        object.__setattr__(self, "made", [])

    def __getattr__(self, name):
        attr = getattr(self._ctx, name)
        if name not in self.MAKERS:
            return attr

        def make(*args, **kwargs):
            obj = attr(*args, **kwargs)
            self.made.append((name, obj))
            return obj

        return make

    def __setattr__(self, name, value):
        setattr(self._ctx, name, value)


def test_renderer_release_frees_every_gl_object(gl_context, town):
    """release() left the two vehicle mesh buffers, the sky triangle's buffer and the framebuffer's three
    renderbuffers alive (releasing a framebuffer does not free its attachments): on a shared context
    (generate_episodes, export) every episode leaked them."""
    from moderngl.mgl import InvalidObject

    from vavam.world.render import Renderer

    spy = _SpyContext(gl_context)
    r = Renderer(town, Camera(18, 32), ctx=spy)
    r.render(np.eye(4), np.array([[8.0, 0.0, 0.0, 4.5, 1.8, 1.5, 0.8, 0.1, 0.1]]))
    r.release()
    alive = [name for name, obj in spy.made if not isinstance(obj.mglo, InvalidObject)]
    assert len(spy.made) >= 15 and alive == []


def test_render_refuses_malformed_pose_and_boxes(gl_context, town):
    """Boxes with 8 columns were drawn from a misaligned instance buffer (no error); non-finite boxes and a
    3x3 pose gave nothing or numpy's matmul message, naming neither input."""
    from vavam.world.render import Renderer

    r = Renderer(town, Camera(18, 32), ctx=gl_context)
    try:
        good = np.array([[8.0, 0.0, 0.0, 4.5, 1.8, 1.5, 0.8, 0.1, 0.1]])
        with pytest.raises(ValueError, match=r"boxes must be \[N, >= 9\].*\(1, 8\)"):
            r.render(np.eye(4), good[:, :8])
        with pytest.raises(ValueError, match=r"boxes must be finite; rows \[1\]"):
            r.render(np.eye(4), np.concatenate([good, good * np.nan]))
        with pytest.raises(ValueError, match="ego_to_world must be a finite 4x4"):
            r.render(np.eye(3), good)
        # empty boxes in any shape are "no vehicles", as before
        np.testing.assert_array_equal(r.render(np.eye(4), np.zeros((0, 10))).label, r.render(np.eye(4), []).label)
    finally:
        r.release()


def test_network_config_refuses_spacing_that_leaves_no_road():
    """Two intersections 20 m apart, each reaching 12.4 m (two lanes, shoulder, sidewalk) towards the other,
    gave roads whose centreline ran backwards (from x = 12.4 to 7.6 between nodes at 0 and 20), without error."""
    tight = NetworkConfig(grid=(2, 2), spacing=(20.0, 20.0), jitter=0.0, lanes_x=(2,), lanes_y=(2,))
    with pytest.raises(ValueError, match=r"spacing \(20.0, 20.0\).*-4.8 m of road"):
        build_network(np.random.default_rng(0), tight)
    with pytest.raises(ValueError, match="jitter"):
        build_network(np.random.default_rng(0), NetworkConfig(jitter=math.nan))
    with pytest.raises(ValueError, match="speed_limit"):
        build_network(np.random.default_rng(0), NetworkConfig(speed_limit=(0.0, 0.0)))
    # the closest layout allowed: half = 3.5 + 2.4 + 3 = 8.9 m each side, 10 m of road in between
    ok = NetworkConfig(
        grid=(2, 2), spacing=(27.8, 27.8), jitter=0.0, lanes_x=(1,), lanes_y=(1,), shoulder_prob=1.0, curve_prob=0.0
    )
    net = build_network(np.random.default_rng(0), ok)
    for road in net.roads:
        d = net.nodes[road.b].xy - net.nodes[road.a].xy
        assert np.dot(road.centre.points[-1] - road.centre.points[0], d) > 0  # runs from a to b
        assert road.centre.length == pytest.approx(27.8 - 2 * (LANE_WIDTH + 2.4 + 3.0), abs=1e-6)


def test_polyline_refuses_bad_steps_slices_and_points():
    """resample(-1) silently gave the two ends, resample(0) a ZeroDivisionError; slice(5, 2) a reversed line;
    a NaN vertex a polyline of NaN length."""
    line = Polyline(np.array([[0.0, 0.0], [10.0, 0.0]]))
    for step in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="resample step"):
            line.resample(step)
    with pytest.raises(ValueError, match="s0 < s1"):
        line.slice(5.0, 2.0)
    with pytest.raises(ValueError, match=r"points must be finite; rows \[0\]"):
        Polyline(np.array([[math.nan, 0.0], [1.0, 0.0], [2.0, 0.0]]))
    np.testing.assert_allclose(line.resample(4.0)[:, 0], [0.0, 10 / 3, 20 / 3, 10.0])  # at most 4 m apart


def test_spawn_refuses_unknown_kind_and_bad_lane():
    """An unknown kind got a car's size but kept its name (recorded as a box category); lane -1 indexed the
    last lane while the agent's path said -1, so traffic on that lane never saw it."""
    from vavam.world.traffic import Traffic

    net = build_network(np.random.default_rng(0), TINY)
    tr = Traffic(net, np.random.default_rng(0))
    lane = net.road_lanes()[0]
    with pytest.raises(ValueError, match="'lorry'"):
        tr.spawn(lane.id, 10.0, kind="lorry")
    for bad in (-1, len(net.lanes)):
        with pytest.raises(ValueError, match="lane must be a lane id"):
            tr.spawn(bad, 10.0)
    with pytest.raises(ValueError, match="s=nan"):
        tr.spawn(lane.id, math.nan)
    with pytest.raises(ValueError, match="v=-1.0"):
        tr.spawn(lane.id, 10.0, v=-1.0)
    assert tr.agents == []
    a = tr.spawn(np.int64(lane.id), 10.0, kind="bus")
    assert (a.kind, a.length, a.path[0]) == ("bus", 11.0, lane.id)


class _FakeRenderer:
    def __init__(self, camera, town, fail=False):
        self.camera, self.town, self.fail, self.released = camera, town, fail, False

    def render(self, ego_to_world, boxes=None):
        from vavam.world.render import Frame

        if self.fail:
            raise RuntimeError("GL error")
        h, w = self.camera.height, self.camera.width
        return Frame(np.zeros((h, w, 3), np.uint8), np.zeros((h, w), np.uint8), np.zeros((h, w), np.float32))

    def release(self):
        self.released = True


def test_recording_releases_its_own_renderer_when_it_fails(monkeypatch):
    """The renderer record_episode made for itself was released only after a successful drive."""
    import vavam.world.render as render

    made = []

    def factory(town, camera, ctx=None):
        made.append(_FakeRenderer(camera, town, fail=True))
        return made[-1]

    monkeypatch.setattr(render, "Renderer", factory)
    from vavam.world.episode import record_episode

    world = World(0, WorldConfig(network=TINY, traffic_density=0.0))
    with pytest.raises(RuntimeError, match="GL error"):
        record_episode(0, duration_s=1.0, height=18, width=32, world=world)
    assert len(made) == 1 and made[0].released


def test_recording_refuses_a_renderer_of_another_size_or_town():
    """A given renderer's image size silently replaced height x width, and a renderer of another town drew
    that town around the world's ego."""
    from vavam.world.episode import record_episode
    from vavam.world.town import generate_town

    world = World(0, WorldConfig(network=TINY, traffic_density=0.0))
    with pytest.raises(ValueError, match="18x32 frames, but height x width is 36x64"):
        small = _FakeRenderer(Camera(18, 32), world.town)
        record_episode(0, duration_s=0.5, height=36, width=64, world=world, renderer=small)
    other = _FakeRenderer(Camera(18, 32), generate_town(1, TINY))
    with pytest.raises(ValueError, match="town of seed 1"):
        record_episode(0, duration_s=0.5, height=18, width=32, world=world, renderer=other)
    same = _FakeRenderer(Camera(18, 32), generate_town(0, TINY))  # an equal town, generated again: fine
    ep = record_episode(0, duration_s=0.5, height=18, width=32, world=world, renderer=same)
    assert ep.images.shape == (1, 18, 32, 3) and not same.released  # not ours to release


def test_generate_episodes_releases_its_context(monkeypatch):
    """generate_episodes created an EGL context and never released it (moderngl does not free standalone
    contexts on garbage collection), also when the caller stopped early."""
    import vavam.world.episode as episode
    import vavam.world.render as render

    contexts = []

    class FakeContext:
        released = False

        def release(self):
            self.released = True

    def create():
        contexts.append(FakeContext())
        return contexts[-1]

    monkeypatch.setattr(render, "create_context", create)
    monkeypatch.setattr(episode, "record_episode", lambda seed, *args, **kwargs: seed)
    assert list(episode.generate_episodes(2, seed=1, hazard_share=0.0)) == [100_003, 100_004]
    assert len(contexts) == 1 and contexts[0].released
    gen = episode.generate_episodes(3, hazard_share=0.0)
    next(gen)
    assert not contexts[1].released
    gen.close()
    assert contexts[1].released
    assert list(episode.generate_episodes(0)) == [] and len(contexts) == 2  # nothing to render: no context


@pytest.mark.parametrize("seed", [-1, 1.5, True, "3"])
def test_world_seed_must_be_a_non_negative_integer(seed):
    """World(1.5) silently became world 1 (and an Episode said seed 1); World(-1) failed with numpy's
    "expected non-negative integer", naming no argument."""
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got " + re.escape(repr(seed))):
        World(seed, WorldConfig(network=TINY, traffic_density=0.0))
    assert World(np.int64(3), WorldConfig(network=TINY, traffic_density=0.0)).seed == 3


def test_a_hazard_recording_resets_primes_and_shows_frames_to_its_planner():
    """record_hazard_episode called a given planner without reset() and without the camera frame, and never
    passed it the priming steps' observations: a stateful, frame-reading planner (a VaVAM agent) planned from a
    stale history and no image. It now treats the planner as closed loop does; the recording is unchanged."""
    pytest.importorskip("moderngl")
    from vavam.world.episode import record_hazard_episode
    from vavam.world.planners import ExpertPlanner
    from vavam.world.scenarios import make_scenario

    class Recording(ExpertPlanner):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, bool]] = []

        def reset(self) -> None:
            self.calls.append(("reset", False))

        def observe(self, obs: dict) -> None:
            self.calls.append(("observe", obs["image"] is not None and obs["image"].shape == (36, 64, 3)))

        def __call__(self, obs: dict):
            self.calls.append(("plan", obs["image"] is not None and obs["image"].shape == (36, 64, 3)))
            return super().__call__(obs)

    spec = make_scenario("stationary", 0, 0)
    planner = Recording()
    try:
        ep = record_hazard_episode(spec, duration_s=3.0, rate_hz=2.0, height=36, width=64, planner=planner)
        default = record_hazard_episode(spec, duration_s=3.0, rate_hz=2.0, height=36, width=64)
    except RuntimeError as err:
        pytest.skip(str(err))
    n, plans = spec.priming_steps, 12  # 6 frames 0.5 s apart, then 3 s more (the future commands): 56 steps of 0.1 s
    assert planner.calls == [("reset", False)] + [("observe", True)] * n + [("plan", True)] * (plans - n)
    np.testing.assert_array_equal(ep.images, default.images)  # the same plans: the same drive
