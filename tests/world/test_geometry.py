"""Polylines, oriented boxes and poses."""

from __future__ import annotations

import numpy as np

from vavam.world.geometry import Polyline, box_corners, boxes_overlap, pose_matrix, yaw_to_quaternion


def test_polyline_arc_length_position_heading_and_projection():
    line = Polyline(np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]))
    assert line.length == 20.0
    np.testing.assert_allclose(line.position([0.0, 5.0, 15.0]), [[0, 0], [5, 0], [10, 5]])
    np.testing.assert_allclose(line.heading([5.0, 15.0]), [0.0, np.pi / 2])
    s, lateral = line.project((4.0, 1.0))
    assert np.isclose(s, 4.0) and np.isclose(lateral, 1.0)  # left of the direction is positive
    s, lateral = line.project((11.0, 3.0))
    assert np.isclose(s, 13.0) and np.isclose(lateral, -1.0)
    np.testing.assert_allclose(line.distance(np.array([[5.0, -2.0]])), [2.0])


def test_polyline_offset_slice_resample():
    line = Polyline(np.array([[0.0, 0.0], [10.0, 0.0]]))
    np.testing.assert_allclose(line.offset(-1.5).points[:, 1], [-1.5, -1.5])
    part = line.slice(2.0, 5.0)
    assert np.isclose(part.length, 3.0)
    assert len(line.resample(2.5)) == 5


def test_box_overlap_separating_axis():
    a = box_corners(0.0, 0.0, 0.0, 4.0, 2.0)
    assert boxes_overlap(a, box_corners(3.9, 0.0, 0.0, 4.0, 2.0))
    assert not boxes_overlap(a, box_corners(4.1, 0.0, 0.0, 4.0, 2.0))
    # rotated 45 deg: corner reaches sqrt(2) * 1 further
    assert boxes_overlap(a, box_corners(2.0 + 1.3, 0.0, np.pi / 4, 2.0, 2.0))
    assert not boxes_overlap(a, box_corners(2.0 + 1.5, 0.0, np.pi / 4, 2.0, 2.0))


def test_quaternion_and_pose():
    q = yaw_to_quaternion(np.pi / 2)
    np.testing.assert_allclose(q, [np.sqrt(0.5), 0, 0, np.sqrt(0.5)])
    m = pose_matrix(1.0, 2.0, np.pi / 2)
    np.testing.assert_allclose(m @ [1.0, 0.0, 0.0, 1.0], [1.0, 3.0, 0.0, 1.0], atol=1e-12)


def test_scalar_fast_path_equals_array_path_bit_for_bit():
    """One arc length at a time (plain floats) gives exactly the array path's points and headings,
    inside, at vertices and beyond both ends (extrapolation)."""
    rng = np.random.default_rng(3)
    line = Polyline(np.cumsum(rng.normal(size=(30, 2)) * 5.0, axis=0))
    s = np.concatenate([rng.uniform(-10.0, line.length + 10.0, 200), line.s, [0.0, line.length]])
    arr_pos, arr_head = line.position(s), line.heading(s)
    for k, sk in enumerate(s):
        assert np.array_equal(line.position(float(sk)), arr_pos[k])
        assert np.array_equal(line.position(sk), arr_pos[k])  # numpy scalar
        assert line.position_xy(float(sk)) == tuple(arr_pos[k])
        assert line.heading(float(sk)) == arr_head[k]


def test_path_points_equal_path_point():
    """The vectorised route lookup equals the one-point lookup across lane boundaries and past the end."""
    from types import SimpleNamespace

    from vavam.world.driver import path_point, path_points

    rng = np.random.default_rng(4)
    lanes = {i: SimpleNamespace(line=Polyline(np.cumsum(rng.normal(size=(6, 2)) * 4.0, axis=0))) for i in range(3)}
    for lane in lanes.values():
        lane.length = lane.line.length
    net = SimpleNamespace(lanes=lanes)
    path = [0, 1, 2]
    s = np.linspace(-5.0, sum(lane.length for lane in lanes.values()) + 5.0, 301)
    got = path_points(net, path, s)
    assert np.array_equal(got, np.stack([path_point(net, path, float(x)) for x in s]))
    assert np.array_equal(path_points(net, [1], s), np.stack([path_point(net, [1], float(x)) for x in s]))
