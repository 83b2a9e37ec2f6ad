"""The procedural driving frames: shapes, determinism per seed, motion within a clip."""

from __future__ import annotations

import numpy as np

from vavam.data.synthetic import make_clip, make_frames


def test_frames_shape_and_dtype():
    frames = make_frames(3, 32, 64, seed=0)
    assert frames.shape == (3, 32, 64, 3) and frames.dtype == np.uint8
    assert frames.std() > 20  # not a flat image


def test_frames_deterministic_per_seed_and_differ_between_seeds():
    a = make_frames(4, 32, 64, seed=7)
    np.testing.assert_array_equal(a, make_frames(4, 32, 64, seed=7))
    b = make_frames(4, 32, 64, seed=8)
    assert not np.array_equal(a, b)
    assert all(not np.array_equal(a[i], b[i]) for i in range(4))
    assert not np.array_equal(a[0], a[1])  # frames of one call are different scenes


def test_frames_prefix_property():
    np.testing.assert_array_equal(make_frames(2, 16, 32, seed=3), make_frames(5, 16, 32, seed=3)[:2])


def test_sky_above_road_below():
    frames = make_frames(8, 32, 64, seed=1).astype(np.float64)
    top, bottom = frames[:, :3].mean(axis=(0, 1, 2)), frames[:, -3:].mean(axis=(0, 1, 2))
    assert top[2] > top[0]  # sky: more blue than red
    assert abs(bottom[0] - bottom[2]) < 40  # road: greyish


def test_clip_moves_consistently():
    clip = make_clip(6, 32, 64, seed=2)
    assert clip.shape == (6, 32, 64, 3) and clip.dtype == np.uint8
    np.testing.assert_array_equal(clip, make_clip(6, 32, 64, seed=2))
    assert not np.array_equal(clip, make_clip(6, 32, 64, seed=3))
    steps = [np.abs(clip[t + 1].astype(int) - clip[t].astype(int)).mean() for t in range(5)]
    assert all(s > 0 for s in steps)  # ego motion changes every frame ...
    assert max(steps) < 25  # ... but consecutive frames stay similar
    far = np.abs(clip[-1].astype(int) - clip[0].astype(int)).mean()
    assert far > min(steps)  # and differences grow with time
