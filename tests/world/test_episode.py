"""Recording expert episodes and exporting them."""

from __future__ import annotations

import numpy as np
import pytest

from vavam.types import Command
from vavam.world.episode import future_commands, record_episode
from vavam.world.roads import NetworkConfig
from vavam.world.sim import WorldConfig

SMALL = WorldConfig(network=NetworkConfig(grid=(3, 3)))


def test_future_command_thresholds():
    # straight log, then a lateral move of exactly 2 m (not enough) and 2.1 m (enough)
    xy = np.array([[0.0, 0.0], [5.0, 0.0], [10.0, 2.0], [15.0, -2.1]])
    yaw = np.zeros(4)
    cmd = future_commands(xy, yaw, 2)
    assert cmd[0] == Command.STRAIGHT  # +2.0 m is not more than 2 m
    assert cmd[1] == Command.RIGHT  # -2.1 m relative to y = 0
    xy[2, 1] = 2.01
    assert future_commands(xy, yaw, 2)[0] == Command.LEFT
    # rotated ego frame: heading +y, a point to the -x side is to the left
    assert future_commands(np.array([[0.0, 0.0], [-3.0, 5.0]]), np.array([np.pi / 2, np.pi / 2]), 1)[0] == Command.LEFT


@pytest.fixture(scope="module")
def episode():
    pytest.importorskip("moderngl")
    try:
        return record_episode(
            2, duration_s=5.0, rate_hz=2.0, height=36, width=64, labels=True, depth=True, config=SMALL
        )
    except RuntimeError as err:
        pytest.skip(str(err))


def test_episode_arrays(episode):
    ep = episode
    assert len(ep) == 10
    assert ep.images.shape == (10, 36, 64, 3) and ep.images.dtype == np.uint8
    assert ep.labels.shape == (10, 36, 64) and ep.depths.dtype == np.float32
    np.testing.assert_array_equal(ep.timestamps, np.arange(10) * 500_000)
    np.testing.assert_allclose(np.linalg.norm(ep.rotations, axis=1), 1.0)
    assert ep.translations.shape == (10, 3) and ep.commands.shape == (10,)
    assert ep.box_offsets[0] == 0 and ep.box_offsets[-1] == len(ep.box_ids) == len(ep.box_categories)
    # the ego moves forward: consecutive positions differ by about speed * 0.5 s
    step = np.linalg.norm(np.diff(ep.translations[:, :2], axis=0), axis=1)
    np.testing.assert_allclose(step, 0.25 * (ep.speeds[1:] + ep.speeds[:-1]), atol=0.3)
    arrays = ep.to_arrays()
    assert arrays["meta"]["label_names"]["6"] == "vehicle"
    assert not (set(arrays) - {"meta", "box_categories"}) - {k for k, v in arrays.items() if isinstance(v, np.ndarray)}


def test_episode_to_scene_record(episode):
    records = pytest.importorskip("vavam.data.records")
    rec = episode.to_scene_record()
    records.validate_record(rec)
    assert rec.num_frames == 10 and rec.dataset == "vavam-world"
    assert rec.boxes.num_frames == 10
    centers, _, _ = rec.boxes_in_ego(0)
    assert len(centers) == episode.box_offsets[1]


def test_bad_rates():
    with pytest.raises(ValueError):
        record_episode(0, duration_s=-1.0, config=SMALL)
    with pytest.raises(ValueError, match="divisor"):
        record_episode(0, duration_s=1.0, rate_hz=3.0, height=36, width=64, config=SMALL)


def test_hazard_episode_records_the_evasion():
    pytest.importorskip("moderngl")
    from vavam.world.episode import record_hazard_episode
    from vavam.world.scenarios import make_scenario

    try:
        ep = record_hazard_episode(make_scenario("stationary", 0, 0), rate_hz=2.0, height=36, width=64)
    except RuntimeError as err:
        pytest.skip(str(err))
    assert len(ep) == 16 and ep.meta["hazard"] == "stationary"
    assert "hazard" in ep.box_categories
    assert ep.speeds[-1] < 0.5 * ep.speeds[0]  # the expert brakes for the stopped car
    ep.to_scene_record()


def test_generate_episodes_mixes_hazards():
    pytest.importorskip("moderngl")
    from vavam.world.episode import generate_episodes

    try:
        eps = list(
            generate_episodes(
                3, seed=1, duration_s=2.0, rate_hz=2.0, height=18, width=32, hazard_share=0.5, config=SMALL
            )
        )
    except RuntimeError as err:
        pytest.skip(str(err))
    assert [len(e) for e in eps] == [4, 4, 4]
    assert any("hazard" in e.meta for e in eps) and any("hazard" not in e.meta for e in eps)
    with pytest.raises(ValueError):
        next(generate_episodes(1, hazard_share=2.0))
