"""Collision checks between the ego box and other vehicles' oriented boxes, with sub-steps.

NeuroNCAP checks BEV box overlap at 10 interpolated sub-steps per 0.5 s so that a thin, fast
crossing is not skipped over; the runner steps at 0.1 s, so :func:`swept_collision` interpolates
two sub-steps inside each simulation step.
"""

from __future__ import annotations

import numpy as np

from vavam.world.geometry import box_corners, boxes_overlap, wrap_angle


def first_overlap(ego: np.ndarray, others: np.ndarray) -> int | None:
    """Index of the first box in ``others`` ``[N, >=5]`` (x, y, yaw, length, width) that overlaps the
    ``ego`` box (same layout), or None."""
    if len(others) == 0:
        return None
    reach = 0.5 * (np.hypot(ego[3], ego[4]) + np.hypot(others[:, 3], others[:, 4]))
    near = np.flatnonzero(np.hypot(others[:, 0] - ego[0], others[:, 1] - ego[1]) <= reach)
    if len(near) == 0:
        return None
    e = box_corners(*ego[:5])
    for i in near:
        if boxes_overlap(e, box_corners(*others[i, :5])):
            return int(i)
    return None


def _lerp_boxes(a: np.ndarray, b: np.ndarray, f: float) -> np.ndarray:
    out = a + f * (b - a)
    out[..., 2] = a[..., 2] + f * wrap_angle(b[..., 2] - a[..., 2])
    return out


def swept_collision(
    ego0: np.ndarray, ego1: np.ndarray, others0: np.ndarray, others1: np.ndarray, substeps: int = 2
) -> tuple[float, int] | None:
    """First overlap while every box moves linearly from pose 0 to pose 1 (same rows in ``others0``
    and ``others1``), checked at ``substeps`` evenly spaced instants in (0, 1].

    Returns (fraction of the step, index of the other box) or None.
    """
    if np.shape(others0) != np.shape(others1):  # numpy would broadcast a single row over all the others
        raise ValueError(f"others0 {list(np.shape(others0))} and others1 {list(np.shape(others1))} must hold the "
                         "same boxes, row for row")
    for k in range(1, substeps + 1):
        f = k / substeps
        hit = first_overlap(_lerp_boxes(ego0, ego1, f), _lerp_boxes(others0, others1, f))
        if hit is not None:
            return f, hit
    return None
