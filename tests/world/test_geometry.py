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
