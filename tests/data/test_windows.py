"""Windows: hand-computed trajectories, commands (3 s look-ahead), scene boundaries, token adapter."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vavam.data.geometry import quat_from_yaw, quat_multiply, quat_rotate, quat_to_matrix, world_to_ego, yaw_from_quat
from vavam.data.records import SceneRecord
from vavam.data.windows import (
    TokenWindowDataset,
    WindowConfig,
    WindowDataset,
    WindowIndex,
    infer_subsampling,
    trajectory_targets,
)
from vavam.types import Command


def make_scene(
    name: str,
    xy: np.ndarray,
    yaw: np.ndarray,
    hz: float = 2.0,
    z: np.ndarray | None = None,
    t0: int = 0,
    paths: bool = False,
) -> SceneRecord:
    n = len(xy)
    trans = np.zeros((n, 3))
    trans[:, :2] = xy
    if z is not None:
        trans[:, 2] = z
    ts = t0 + np.round(np.arange(n) * 1e6 / hz).astype(np.int64)
    return SceneRecord(
        name=name,
        timestamps=ts,
        translations=trans,
        rotations=quat_from_yaw(yaw),
        image_paths=[f"{name}/f_{i:06d}.jpg" for i in range(n)] if paths else None,
    )


def straight(n: int, speed: float, hz: float, heading: float = 0.0, origin=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(n) / hz
    d = speed * t
    xy = np.stack([origin[0] + d * math.cos(heading), origin[1] + d * math.sin(heading)], axis=1)
    return xy, np.full(n, heading)


# ------------------------------------------------------------------------------------- geometry


def test_geometry_helpers() -> None:
    q = quat_from_yaw(np.pi / 2)
    np.testing.assert_allclose(quat_rotate(q, [1.0, 0, 0]), [0, 1, 0], atol=1e-12)  # +x turns to +y (left)
    np.testing.assert_allclose(quat_to_matrix(q), [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    np.testing.assert_allclose(yaw_from_quat(quat_multiply(q, quat_from_yaw(0.3))), np.pi / 2 + 0.3)
    # ego at (5, 5) facing +y: a world point at (4, 8) is 3 m ahead and 1 m to the left
    np.testing.assert_allclose(world_to_ego([5.0, 5, 0], q, [4.0, 8, 0]), [3, 1, 0], atol=1e-12)


# ------------------------------------------------------------------------------------- trajectories


def test_straight_line_constant_speed_nuscenes() -> None:
    xy, yaw = straight(20, speed=10.0, hz=2.0)
    index = WindowIndex([make_scene("s", xy, yaw)], WindowConfig(subsampling=1))
    assert len(index) == 20 - 13
    w = index[0]
    assert w.positions.shape == (8, 6, 2) and w.positions.dtype == np.float32
    assert w.commands.shape == (8,) and w.commands.dtype == np.int64
    expected = np.stack([5.0 * np.arange(1, 7), np.zeros(6)], axis=1)  # 10 m/s, 0.5 s steps
    np.testing.assert_allclose(w.positions, np.broadcast_to(expected, (8, 6, 2)), atol=1e-5)
    assert (w.commands == Command.STRAIGHT).all()
    np.testing.assert_array_equal(w.frame_indices, np.arange(8))
    np.testing.assert_array_equal(w.timestamps_us, np.arange(8) * 500_000)


def test_rotated_translated_ego_frame() -> None:
    """Driving along world +y from (100, -50): the trajectory is still along ego +x."""
    xy, yaw = straight(20, speed=4.0, hz=2.0, heading=np.pi / 2, origin=(100.0, -50.0))
    pos, cmd = trajectory_targets(np.pad(xy, ((0, 0), (0, 1))), quat_from_yaw(yaw), WindowConfig())
    np.testing.assert_allclose(pos[0], np.stack([2.0 * np.arange(1, 7), np.zeros(6)], 1), atol=1e-9)
    assert cmd[0] == Command.STRAIGHT


def test_lateral_sign_y_left() -> None:
    """Ego facing world +y; a sideways drift toward world -x is to the ego's LEFT (y > 0)."""
    n = 14
    xy = np.stack([-1.0 * np.arange(n), 3.0 * np.arange(n)], axis=1)  # 3 m/step forward, 1 m/step left
    yaw = np.full(n, np.pi / 2)
    pos, cmd = trajectory_targets(np.pad(xy, ((0, 0), (0, 1))), quat_from_yaw(yaw), WindowConfig())
    np.testing.assert_allclose(pos[0], np.stack([3.0 * np.arange(1, 7), 1.0 * np.arange(1, 7)], 1), atol=1e-9)
    assert cmd[0] == Command.LEFT  # lateral offset 6 m after 3 s


@pytest.mark.parametrize("side", [+1, -1])
def test_ninety_degree_turn(side: int) -> None:
    """Quarter circle of radius 10 m in 3 s starting at frame 0 (2 Hz): hand-computed waypoints."""
    r, n = 10.0, 20
    theta = np.minimum(np.arange(n) * (np.pi / 12), np.pi / 2)  # quarter turn over 6 steps, then straight
    xy = np.stack([r * np.sin(theta), side * r * (1 - np.cos(theta))], axis=1)
    after = np.arange(n) > 6
    xy[after, 0] = r
    xy[after, 1] = side * (r + 5.0 * (np.arange(n)[after] - 6))
    yaw = side * theta
    pos, cmd = trajectory_targets(np.pad(xy, ((0, 0), (0, 1))), quat_from_yaw(yaw), WindowConfig())
    m = np.arange(1, 7)
    expected = np.stack([r * np.sin(m * np.pi / 12), side * r * (1 - np.cos(m * np.pi / 12))], 1)
    np.testing.assert_allclose(pos[0], expected, atol=1e-5)
    np.testing.assert_allclose(pos[0, -1], [10.0, side * 10.0], atol=1e-5)
    assert cmd[0] == (Command.LEFT if side > 0 else Command.RIGHT)
    # once the turn is done (frame 7 onwards, heading +-90 deg), the car drives straight in its ego frame
    np.testing.assert_allclose(pos[7], np.stack([5.0 * m, np.zeros(6)], 1), atol=1e-5)
    assert cmd[7] == Command.STRAIGHT


def test_command_threshold_and_3d() -> None:
    """Threshold is strict at 2 m; the command uses the full 3D offset in the current ego frame."""
    n = 7
    for lat, expected in [
        (2.0, Command.STRAIGHT),
        (2.01, Command.LEFT),
        (-2.0, Command.STRAIGHT),
        (-2.01, Command.RIGHT),
    ]:
        xy = np.stack([np.arange(n) * 5.0, np.linspace(0, lat, n)], 1)
        _, cmd = trajectory_targets(np.pad(xy, ((0, 0), (0, 1))), quat_from_yaw(np.zeros(n)), WindowConfig())
        assert cmd[0] == expected, (lat, cmd[0])
    # ego rolled by +90 deg about x: ego +y points to world +z, so climbing 3 m reads as LEFT
    roll = np.array([math.cos(math.pi / 4), math.sin(math.pi / 4), 0, 0])
    trans = np.zeros((n, 3))
    trans[:, 0] = np.arange(n) * 5.0
    trans[:, 2] = np.linspace(0, 3, n)
    _, cmd = trajectory_targets(trans, np.tile(roll, (n, 1)), WindowConfig())
    assert cmd[0] == Command.LEFT
    _, cmd = trajectory_targets(trans * [1, 1, -1], np.tile(roll, (n, 1)), WindowConfig())
    assert cmd[0] == Command.RIGHT


def test_nuplan_commands_look_three_seconds_ahead() -> None:
    """10 Hz scene, straight then a left turn: 2 s before the turn the command is already LEFT.

    The reference looked 6 raw frames (0.6 s) ahead on nuPlan and said STRAIGHT here.
    """
    hz, v, r, k_turn, n = 10.0, 10.0, 10.0, 60, 140
    t = np.arange(n) / hz
    t_turn = k_turn / hz
    theta = np.clip((t - t_turn) * v / r, 0, np.pi / 2)
    on_straight = t <= t_turn
    xy = np.where(
        on_straight[:, None],
        np.stack([v * t, np.zeros(n)], 1),
        np.stack([v * t_turn + r * np.sin(theta), r * (1 - np.cos(theta))], 1),
    )
    # after the quarter turn, keep going along +y
    t_end = t_turn + (np.pi / 2) * r / v
    done = t > t_end
    xy[done] = np.stack([np.full(done.sum(), v * t_turn + r), r + v * (t[done] - t_end)], 1)
    rec = make_scene("log", xy, theta, hz=hz)

    fixed = WindowConfig.for_dataset("nuplan")
    assert fixed.subsampling == 5 and fixed.lookahead == 30
    buggy = WindowConfig.for_dataset("nuplan", command_lookahead_frames=6)
    _, cmd_fixed = trajectory_targets(rec.translations, rec.rotations, fixed)
    _, cmd_buggy = trajectory_targets(rec.translations, rec.rotations, buggy)
    k = k_turn - 20  # 2 s before the turn: 1 s into the turn 3 s later, lateral 10 (1 - cos 1) = 4.6 m
    assert cmd_fixed[k] == Command.LEFT
    assert cmd_buggy[k] == Command.STRAIGHT
    # far before the turn both agree on STRAIGHT
    assert cmd_fixed[0] == cmd_buggy[0] == Command.STRAIGHT
    # over the whole scene the fixed rule sees the turn for many more frames
    assert (cmd_fixed == Command.LEFT).sum() > 2 * (cmd_buggy == Command.LEFT).sum()
    # and through the index, the window's context frame carries the fixed command
    index = WindowIndex([rec], fixed)
    w = index[k - 7 * 5]  # window whose last context frame is frame k
    assert w.frame_indices[-1] == k and w.commands[-1] == Command.LEFT
    # positions at 10 Hz use every 5th frame: 0.5 s steps at 10 m/s on the straight part
    np.testing.assert_allclose(index[0].positions[0], np.stack([5.0 * np.arange(1, 7), np.zeros(6)], 1), atol=1e-5)


# ------------------------------------------------------------------------------------- boundaries


def _reference_starts(scene_of_entry: list[str], s: int, total: int = 14) -> list[int]:
    """The reference's loop: start i is valid when the 14 entries i, i+s, ... share the scene."""
    out = []
    for i in range(len(scene_of_entry)):
        ok = True
        for t in range(0, s * total, s):
            if i + t >= len(scene_of_entry) or scene_of_entry[i + t] != scene_of_entry[i]:
                ok = False
                break
        if ok:
            out.append(i)
    return out


@pytest.mark.parametrize("s", [1, 5])
def test_no_window_crosses_a_scene(s: int) -> None:
    rng = np.random.default_rng(0)
    lengths = [3, 13 * s, 13 * s + 1, 80, 5, 150]
    records = []
    for k, n in enumerate(lengths):
        xy = np.cumsum(rng.normal(size=(n, 2)), axis=0)
        records.append(make_scene(f"scene{k}", xy, rng.uniform(-3, 3, n), hz=2.0 * s, t0=k * 10**9))
    index = WindowIndex(records, WindowConfig(subsampling=s))
    assert len(index) == sum(max(0, n - 13 * s) for n in lengths)
    entries = [r.name for r in records for _ in range(len(r))]
    np.testing.assert_array_equal(index.window_starts, _reference_starts(entries, s))
    for i in range(len(index)):
        w = index[i]
        n = lengths[w.scene_index]
        assert w.frame_indices[-1] + 6 * s < n and w.frame_indices[0] >= 0
        assert np.isfinite(w.positions).all() and (w.commands >= 0).all()
        np.testing.assert_array_equal(np.diff(w.frame_indices), s)
    batch = index.batch(np.arange(len(index)))
    assert batch["positions"].shape == (len(index), 8, 6, 2)
    assert np.isfinite(batch["positions"]).all()


def test_positions_match_reference_quaternion_math() -> None:
    """Per-frame targets equal the reference's q^-1 (p_m - p_0) q on (dx, dy, 0), even with 3D tilt."""
    rng = np.random.default_rng(1)
    n, s = 40, 5
    trans = np.cumsum(rng.normal(size=(n, 3)), axis=0)
    rots = rng.normal(size=(n, 4))
    rots /= np.linalg.norm(rots, axis=1, keepdims=True)
    pos, cmd = trajectory_targets(trans, rots, WindowConfig(subsampling=s))
    for k in range(n - 6 * s):
        qinv = rots[k] * [1, -1, -1, -1]
        for m in range(1, 7):
            d = np.array([0.0, *(trans[k + m * s, :2] - trans[k, :2]), 0.0])
            rot = quat_multiply(quat_multiply(qinv, d), rots[k])
            np.testing.assert_allclose(pos[k, m - 1], rot[1:3], atol=1e-4)
        lat = world_to_ego(trans[k], rots[k], trans[k + 6 * s])[1]
        assert cmd[k] == (Command.LEFT if lat > 2 else Command.RIGHT if lat < -2 else Command.STRAIGHT)
    assert np.isnan(pos[n - 6 * s :]).all() and (cmd[n - 6 * s :] == -1).all()


def test_stride_and_dropped_frames() -> None:
    xy, yaw = straight(40, 10.0, 10.0)
    rec = make_scene("a", xy, yaw, hz=10.0)
    assert WindowConfig(subsampling=5).span == 66
    assert len(WindowIndex([rec], WindowConfig(subsampling=5))) == 0  # 40 frames < 66
    xy, yaw = straight(100, 10.0, 10.0)
    rec = make_scene("a", xy, yaw, hz=10.0)
    full = WindowIndex([rec], WindowConfig(subsampling=5))
    assert len(full) == 100 - 65
    strided = WindowIndex([rec], WindowConfig(subsampling=5, stride=4))
    np.testing.assert_array_equal(strided.window_starts, np.arange(0, 35, 4))
    # a 1 s hole in the timestamps after frame 50: windows whose sampled steps span it are dropped
    rec.timestamps[51:] += 1_000_000
    checked = WindowIndex([rec], WindowConfig(subsampling=5, max_step_error_us=20_000))
    starts = set(checked.window_starts.tolist())
    assert len(checked) < len(full)
    for st in range(35):
        crosses = any(a <= 50 < a + 5 for a in range(st, st + 65, 5))  # 13 sampled steps
        assert (st in starts) == (not crosses)


def test_image_paths_and_infer_subsampling() -> None:
    xy, yaw = straight(30, 5.0, 10.0)
    rec = make_scene("cam", xy, yaw, hz=10.0, paths=True)
    assert infer_subsampling(rec.timestamps) == 5
    assert infer_subsampling(np.arange(10) * 500_000) == 1
    index = WindowIndex([rec], WindowConfig(subsampling=2))
    w = index[3]
    assert w.image_paths == [f"cam/f_{i:06d}.jpg" for i in range(3, 3 + 16, 2)]
    d = w.as_dict()
    assert d["positions"].dtype == torch.float32 and d["commands"].dtype == torch.int64
    assert d["image_paths"] == w.image_paths
    ds = WindowDataset(index, image_root="/data/nuplan")
    item = ds[3]
    assert item["image_paths"][0] == "/data/nuplan/cam/f_000003.jpg" and item["window_idx"] == 3
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["positions"].shape == (2, 8, 6, 2) and batch["commands"].shape == (2, 8)


def test_duplicate_scene_names_rejected() -> None:
    xy, yaw = straight(20, 5.0, 2.0)
    with pytest.raises(ValueError, match="scene 'x'"):
        WindowIndex([make_scene("x", xy, yaw), make_scene("x", xy, yaw)])


# ------------------------------------------------------------------------------------- token adapter


class FakeTokenStore:
    """Token rows at the record's timestamps shifted by +1 ms, a few extra frames, 2x3 grid."""

    def __init__(self, scenes: dict[str, np.ndarray]) -> None:
        self._ts = {k: np.asarray(v, dtype=np.int64) + 1000 for k, v in scenes.items()}
        self._tok = {
            k: (np.arange(len(v))[:, None, None] * 10 + np.arange(6).reshape(1, 2, 3)).astype(np.uint16)
            for k, v in scenes.items()
        }

    def timestamps(self, scene: str) -> np.ndarray:
        return self._ts[scene]

    def tokens(self, scene: str) -> np.ndarray:
        return self._tok[scene]

    def frame_index_at(self, scene: str, timestamps_us: np.ndarray, tolerance_us: int) -> np.ndarray:
        ts = self._ts[scene]
        i = np.clip(np.searchsorted(ts, timestamps_us), 0, len(ts) - 1)
        j = np.clip(i - 1, 0, len(ts) - 1)
        best = np.where(np.abs(ts[j] - timestamps_us) < np.abs(ts[i] - timestamps_us), j, i)
        return np.where(np.abs(ts[best] - timestamps_us) <= tolerance_us, best, -1)


def test_token_window_dataset() -> None:
    xy, yaw = straight(30, 10.0, 2.0)
    a = make_scene("a", xy, yaw)
    b = make_scene("b", xy, yaw, t0=5_000_000_000)
    index = WindowIndex([a, b], WindowConfig())
    store = FakeTokenStore({"a": a.timestamps, "b": b.timestamps})
    ds = TokenWindowDataset(index, store, tolerance_us=5000)
    assert len(ds) == 2 * (30 - 13)
    item = ds[len(ds) - 1]
    assert item["scene"] == "b"
    assert item["tokens"].shape == (8, 2, 3) and item["tokens"].dtype == torch.int64
    first = int(item["frame_indices"][0])
    assert int(item["tokens"][0, 0, 0]) == first * 10 and int(item["tokens"][7, 1, 2]) == (first + 7) * 10 + 5
    assert item["positions"].shape == (8, 6, 2) and item["commands"].shape == (8,)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    assert batch["tokens"].shape == (2, 8, 2, 3)
    # tolerance too small: the error names the scene
    with pytest.raises(KeyError, match="scene 'a'"):
        TokenWindowDataset(index, store, tolerance_us=10)[0]


def test_dataset_windows_refuse_a_dropped_frame():
    """A frame dropped by a reader (skip_bad) leaves a 0.6 s step at 10 Hz: dataset configs refuse
    every window whose sampled steps cross it, instead of stretching the trajectory silently."""
    n = 120
    xy = np.stack([np.arange(n) * 1.0, np.zeros(n)], 1)
    full = make_scene("a", xy, np.zeros(n), hz=10.0)
    keep = np.ones(n, dtype=bool)
    keep[60] = False
    cut = SceneRecord(name="a", timestamps=full.timestamps[keep], translations=full.translations[keep],
                      rotations=full.rotations[keep])
    cfg = WindowConfig.for_dataset("nuplan")
    assert cfg.max_step_error_us == 75_000
    whole, gapped = WindowIndex([full], cfg), WindowIndex([cut], cfg)
    assert len(gapped) < len(whole)
    for i in range(len(gapped)):  # every remaining window has exact 0.5 s steps, trajectory included
        w = gapped[i]
        np.testing.assert_allclose(np.diff(w.positions[-1][:, 0]), 5.0, atol=1e-9)
    lax = WindowIndex([cut], WindowConfig(subsampling=5))  # the reference's behaviour: keeps them all
    assert len(lax) > len(gapped)


def test_frame_speeds_backward_difference_and_scene_start() -> None:
    """Speed of a frame = planar distance to the pose one 0.5-s step earlier / the time between them;
    the first step of a scene looks one step ahead instead. Hand-computed on an accelerating 10 Hz scene."""
    n, hz = 80, 10.0  # one window needs 13 steps of 5 frames + 1
    t = np.arange(n) / hz
    x = 2.0 * t + 0.5 * 1.0 * t**2  # 2 m/s, +1 m/s^2
    xy = np.stack([x * math.cos(0.7), x * math.sin(0.7)], axis=1)  # heading does not matter
    z = np.linspace(0.0, 5.0, n)  # nor does height
    index = WindowIndex([make_scene("a", xy, np.full(n, 0.7), hz=hz, z=z)], WindowConfig(subsampling=5))
    s = 5
    expected = np.empty(n)
    expected[s:] = (x[s:] - x[:-s]) / 0.5
    expected[:s] = (x[s : 2 * s] - x[:s]) / 0.5
    np.testing.assert_allclose(index.frame_speeds, expected, rtol=1e-5)
    w = index[3]
    np.testing.assert_allclose(w.speeds, expected[3 : 3 + 8 * s : s], rtol=1e-5)
    assert w.as_dict()["speeds"].dtype == torch.float32
    np.testing.assert_array_equal(index.batch([3, 4])["speeds"], index.frame_speeds[index.context_frames([3, 4])])
    # the speed the constant-velocity baseline reads: the previous frame's first waypoint over 0.5 s
    np.testing.assert_allclose(w.speeds[1:], np.linalg.norm(w.positions[:-1, 0], axis=1) / 0.5, rtol=1e-4)


def test_frame_speeds_do_not_cross_scenes() -> None:
    xy1, yaw1 = straight(16, speed=4.0, hz=2.0)
    xy2, yaw2 = straight(16, speed=12.0, hz=2.0, origin=(500.0, 0.0))
    one = make_scene("one", xy1[:1], yaw1[:1])
    index = WindowIndex([make_scene("a", xy1, yaw1), one, make_scene("b", xy2, yaw2, t0=10**9)],
                        WindowConfig(subsampling=1))
    np.testing.assert_allclose(index.frame_speeds[:16], 4.0, rtol=1e-5)
    assert index.frame_speeds[16] == 0.0  # a one-frame scene has no speed to measure
    np.testing.assert_allclose(index.frame_speeds[17:], 12.0, rtol=1e-5)  # its first frame looks ahead, not back
