"""The ego front camera: nuScenes CAM_FRONT-like pinhole intrinsics scaled to any image size.

Camera frame (OpenCV): x right, y down, z forward. Pixel (row i, column j) has its centre at
``u = j, v = i`` (OpenCV convention). The camera looks straight ahead, level, from
``Camera.mount`` in the ego frame (x forward, y left, z up; origin at the rear axle).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vavam.types import IMAGE_SIZE

NUSCENES_SIZE = (900, 1600)  # (H, W) of nuScenes CAM_FRONT
NUSCENES_K = np.array([[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]])

# ego (x fwd, y left, z up) -> camera (x right, y down, z fwd)
EGO_TO_CAM_ROT = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class Camera:
    """Pinhole camera: image size, intrinsics and its pose on the ego vehicle."""

    height: int = IMAGE_SIZE[0]
    width: int = IMAGE_SIZE[1]
    mount: tuple[float, float, float] = (1.70, 0.0, 1.51)  # position in the ego frame, metres
    near: float = 0.3
    far: float = 1000.0

    def __post_init__(self):
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be positive, got {self.height}x{self.width}")

    @property
    def intrinsics(self) -> np.ndarray:
        """3x3 K: nuScenes CAM_FRONT resized from 1600x900 to ``width x height``."""
        sx, sy = self.width / NUSCENES_SIZE[1], self.height / NUSCENES_SIZE[0]
        k = NUSCENES_K.copy()
        k[0] *= sx
        k[1] *= sy
        # keep pixel centres consistent under resizing: u' + 0.5 = (u + 0.5) * s
        k[0, 2] = (NUSCENES_K[0, 2] + 0.5) * sx - 0.5
        k[1, 2] = (NUSCENES_K[1, 2] + 0.5) * sy - 0.5
        return k

    def cam_to_ego(self) -> np.ndarray:
        """4x4 camera-to-ego transform."""
        m = np.eye(4)
        m[:3, :3] = EGO_TO_CAM_ROT.T
        m[:3, 3] = self.mount
        return m

    def world_to_cam(self, ego_to_world: np.ndarray) -> np.ndarray:
        """4x4 world-to-camera transform for an ego pose."""
        return np.linalg.inv(ego_to_world @ self.cam_to_ego())

    def projection(self) -> np.ndarray:
        """4x4 OpenGL clip matrix from camera (OpenCV) coordinates, matching :attr:`intrinsics`.

        NDC y points up; the renderer flips rows after reading so that row 0 is the image top.
        """
        k, w, h, n, f = self.intrinsics, self.width, self.height, self.near, self.far
        return np.array(
            [
                [2 * k[0, 0] / w, 0.0, 2 * (k[0, 2] + 0.5) / w - 1.0, 0.0],
                [0.0, -2 * k[1, 1] / h, 1.0 - 2 * (k[1, 2] + 0.5) / h, 0.0],
                [0.0, 0.0, (f + n) / (f - n), -2 * f * n / (f - n)],
                [0.0, 0.0, 1.0, 0.0],
            ]
        )

    def project(self, points_world: np.ndarray, ego_to_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates ``[N, 2]`` (u = column, v = row) and depths ``[N]`` of world points ``[N, 3]``."""
        p = np.asarray(points_world, dtype=np.float64)
        cam = (self.world_to_cam(ego_to_world) @ np.concatenate([p, np.ones((len(p), 1))], axis=1).T)[:3].T
        uvw = cam @ self.intrinsics.T
        return uvw[:, :2] / uvw[:, 2:3], cam[:, 2]
