"""Vectorised pose helpers (numpy): quaternions ``[w, x, y, z]``, rotations, world <-> ego.

Conventions: a pose is *ego-to-world*: ``p_world = R(q) @ p_ego + t``. The ego frame is x forward,
y left, z up (metres). Every function works on arrays with arbitrary leading dimensions ``[...]``.
"""

from __future__ import annotations

import numpy as np


def quat_normalize(q: np.ndarray) -> np.ndarray:
    """``[..., 4]`` -> unit quaternions ``[..., 4]`` (float64)."""
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def quat_conjugate(q: np.ndarray) -> np.ndarray:
    """``[..., 4]`` -> conjugate ``[..., 4]`` (the inverse of a unit quaternion)."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b``: ``[..., 4] x [..., 4] -> [..., 4]`` (broadcasting)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    w1, x1, y1, z1 = np.moveaxis(a, -1, 0)
    w2, x2, y2, z2 = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
            w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
            w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2,
        ],
        axis=-1,
    )


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternions ``[..., 4]`` (w, x, y, z) -> rotation matrices ``[..., 3, 3]`` (normalised first)."""
    w, x, y, z = np.moveaxis(quat_normalize(q), -1, 0)
    m = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return m.reshape(*m.shape[:-1], 3, 3)


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vectors ``v [..., 3]`` by quaternions ``q [..., 4]`` (broadcasting) -> ``[..., 3]``."""
    return np.einsum("...ij,...j->...i", quat_to_matrix(q), np.asarray(v, dtype=np.float64))


def quat_from_yaw(yaw: np.ndarray | float) -> np.ndarray:
    """Rotation about +z by ``yaw`` radians (counter-clockwise seen from above) -> ``[..., 4]``."""
    yaw = np.asarray(yaw, dtype=np.float64)
    zero = np.zeros_like(yaw)
    return np.stack([np.cos(yaw / 2), zero, zero, np.sin(yaw / 2)], axis=-1)


def yaw_from_quat(q: np.ndarray) -> np.ndarray:
    """Heading about +z of quaternions ``[..., 4]`` -> radians ``[...]`` in (-pi, pi]: the angle of the rotated
    x axis, ``atan2(R[1, 0], R[0, 0])`` of :func:`quat_to_matrix`. Any scale of ``q`` gives the same yaw (like
    :func:`quat_to_matrix`, which normalises); a non-finite quaternion gives NaN."""
    w, x, y, z = np.moveaxis(np.asarray(q, dtype=np.float64), -1, 0)
    # w^2 + x^2 - y^2 - z^2 rather than 1 - 2 (y^2 + z^2): equal for unit quaternions, and scale-free
    return np.arctan2(2 * (w * z + x * y), w * w + x * x - y * y - z * z)


def world_to_ego(translation: np.ndarray, rotation: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Express world points in the ego frame of a pose: ``R(q)^T (p - t)``.

    Args:
        translation: ego-to-world translation ``[..., 3]``.
        rotation: ego-to-world quaternion ``[..., 4]`` (w, x, y, z).
        points: world points ``[..., 3]`` (broadcast against the pose).

    Returns:
        ego-frame points ``[..., 3]`` (x forward, y left, z up).
    """
    d = np.asarray(points, dtype=np.float64) - np.asarray(translation, dtype=np.float64)
    return np.einsum("...ji,...j->...i", quat_to_matrix(rotation), d)


__all__ = [
    "quat_conjugate",
    "quat_from_yaw",
    "quat_multiply",
    "quat_normalize",
    "quat_rotate",
    "quat_to_matrix",
    "world_to_ego",
    "yaw_from_quat",
]
