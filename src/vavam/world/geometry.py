"""Planar geometry of the world: polylines with arc length, Bézier curves, poses, oriented boxes.

World frame: x east, y north, z up, metres; yaw is counter-clockwise from +x. Ego frame: x forward,
y left (``vavam.types``).
"""

from __future__ import annotations

import bisect

import numpy as np


def wrap_angle(a: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def rot2(yaw: float) -> np.ndarray:
    """2x2 rotation matrix of a yaw angle."""
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s], [s, c]])


def cubic_bezier(p0, p1, p2, p3, n: int) -> np.ndarray:
    """``n`` points of the cubic Bézier curve with control points p0..p3 (2-vectors): ``[n, 2]``."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    p0, p1, p2, p3 = (np.asarray(p, dtype=np.float64) for p in (p0, p1, p2, p3))
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t**2 * p2 + t**3 * p3


class Polyline:
    """A 2-D polyline with arc-length parametrisation.

    Args:
        points: ``[N, 2]`` vertices, N >= 2, consecutive duplicates removed.
    """

    def __init__(self, points: np.ndarray):
        pts = np.asarray(points, dtype=np.float64)
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ValueError(f"points must be [N, 2], got {pts.shape}")
        if not np.isfinite(pts).all():
            raise ValueError(f"points must be finite; rows {np.flatnonzero(~np.isfinite(pts).all(1)).tolist()} are not")
        keep = np.ones(len(pts), dtype=bool)
        keep[1:] = np.linalg.norm(np.diff(pts, axis=0), axis=1) > 1e-9
        pts = pts[keep]
        if len(pts) < 2:
            raise ValueError("a polyline needs at least two distinct points")
        self.points = pts
        seg = np.diff(pts, axis=0)
        self.seg_len = np.linalg.norm(seg, axis=1)
        self.seg_dir = seg / self.seg_len[:, None]
        self.s = np.concatenate([[0.0], np.cumsum(self.seg_len)])
        self.length = float(self.s[-1])
        # plain-float copies for the scalar fast path (the simulation asks for one point at a time)
        self._s_list = self.s.tolist()
        self._pts_list = pts.tolist()
        self._dir_list = self.seg_dir.tolist()
        self._yaw: dict[int, np.float64] = {}  # segment headings, computed on demand

    def __len__(self) -> int:
        return len(self.points)

    def _segment(self, s: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.s, s, side="right") - 1, 0, len(self.seg_len) - 1)

    def _scalar_segment(self, s: float) -> int:
        """``_segment`` of one finite arc length, without numpy's per-call overhead (same index)."""
        return min(max(bisect.bisect_right(self._s_list, s) - 1, 0), len(self._dir_list) - 1)

    def position_xy(self, s: float) -> tuple[float, float]:
        """One point at a finite arc length ``s`` as plain floats (the same float64 arithmetic as
        :meth:`position`, without numpy's per-call overhead: the simulation asks for points one by one)."""
        i = self._scalar_segment(s)
        (px, py), (dx, dy), ds = self._pts_list[i], self._dir_list[i], s - self._s_list[i]
        return px + dx * ds, py + dy * ds

    def position(self, s) -> np.ndarray:
        """Point(s) at arc length ``s`` (extrapolated linearly beyond the ends): ``[..., 2]``."""
        if isinstance(s, (float, int, np.floating, np.integer)) and np.isfinite(s):
            return np.array(self.position_xy(float(s)))
        s = np.asarray(s, dtype=np.float64)
        i = self._segment(s)
        return self.points[i] + self.seg_dir[i] * (s - self.s[i])[..., None]

    def heading(self, s) -> np.ndarray:
        """Heading (yaw, radians) of the segment at arc length ``s``."""
        if isinstance(s, (float, int, np.floating, np.integer)) and np.isfinite(s):
            i = self._scalar_segment(float(s))
            if i not in self._yaw:
                self._yaw[i] = np.arctan2(self.seg_dir[i, 1], self.seg_dir[i, 0])
            return self._yaw[i]
        i = self._segment(np.asarray(s, dtype=np.float64))
        d = self.seg_dir[i]
        return np.arctan2(d[..., 1], d[..., 0])

    def project(self, xy) -> tuple[float, float]:
        """Arc length of the closest point to ``xy`` and the signed lateral offset (left positive)."""
        p = np.asarray(xy, dtype=np.float64)
        rel = p - self.points[:-1]
        t = np.clip(np.einsum("ij,ij->i", rel, self.seg_dir), 0.0, self.seg_len)
        closest = self.points[:-1] + self.seg_dir * t[:, None]
        d2 = np.sum((p - closest) ** 2, axis=1)
        i = int(np.argmin(d2))
        cross = self.seg_dir[i, 0] * rel[i, 1] - self.seg_dir[i, 1] * rel[i, 0]
        return float(self.s[i] + t[i]), float(np.sign(cross) * np.sqrt(d2[i]) if cross != 0 else 0.0)

    def distance(self, xy: np.ndarray) -> np.ndarray:
        """Distance from each point ``[M, 2]`` to the polyline: ``[M]``."""
        p = np.asarray(xy, dtype=np.float64)[:, None, :]
        rel = p - self.points[None, :-1]
        t = np.clip(np.einsum("mij,ij->mi", rel, self.seg_dir), 0.0, self.seg_len)
        closest = self.points[None, :-1] + self.seg_dir[None] * t[..., None]
        return np.sqrt(np.min(np.sum((p - closest) ** 2, axis=-1), axis=1))

    def normals(self) -> np.ndarray:
        """Unit left normals at the vertices (averaged over adjacent segments): ``[N, 2]``."""
        d = np.concatenate([self.seg_dir[:1], self.seg_dir[:-1] + self.seg_dir[1:], self.seg_dir[-1:]])
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        return np.stack([-d[:, 1], d[:, 0]], axis=1)

    def offset(self, d: float) -> Polyline:
        """The parallel polyline ``d`` metres to the left (negative: right)."""
        return Polyline(self.points + d * self.normals())

    def slice(self, s0: float, s1: float) -> Polyline:
        """The part between arc lengths ``s0 < s1`` (finite; beyond the ends it is extrapolated)."""
        if not (np.isfinite(s0) and np.isfinite(s1) and s0 < s1):
            raise ValueError(f"slice needs finite arc lengths s0 < s1, got s0={s0}, s1={s1}")
        inner = self.points[(self.s > s0) & (self.s < s1)]
        return Polyline(np.concatenate([self.position(s0)[None], inner, self.position(s1)[None]]))

    def resample(self, step: float) -> np.ndarray:
        """Points every ``step`` metres at most (evenly spaced, both ends included): ``[M, 2]``."""
        if not (np.isfinite(step) and step > 0):
            raise ValueError(f"resample step must be a finite number of metres > 0, got {step}")
        n = max(2, int(np.ceil(self.length / step)) + 1)
        return self.position(np.linspace(0.0, self.length, n))


def concat_polylines(lines: list[Polyline]) -> Polyline:
    """Join polylines end to start into one."""
    return Polyline(np.concatenate([ln.points for ln in lines]))


def box_corners(x, y, yaw, length, width) -> np.ndarray:
    """Corners of oriented boxes (centre x, y, yaw, length along heading, width): ``[..., 4, 2]``."""
    x, y, yaw, length, width = np.broadcast_arrays(
        *(np.asarray(v, dtype=np.float64) for v in (x, y, yaw, length, width))
    )
    c, s = np.cos(yaw)[..., None], np.sin(yaw)[..., None]
    lx = np.array([0.5, 0.5, -0.5, -0.5]) * length[..., None]
    ly = np.array([0.5, -0.5, -0.5, 0.5]) * width[..., None]
    return np.stack([x[..., None] + c * lx - s * ly, y[..., None] + s * lx + c * ly], axis=-1)


def boxes_overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two convex quadrilaterals (``[4, 2]`` corners) overlap (separating-axis test)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        axes = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        pa, pb = a @ axes.T, b @ axes.T
        if np.any((pa.max(0) < pb.min(0)) | (pb.max(0) < pa.min(0))):
            return False
    return True


def yaw_to_quaternion(yaw) -> np.ndarray:
    """Quaternion (w, x, y, z) of a rotation about +z: ``[..., 4]``."""
    yaw = np.asarray(yaw, dtype=np.float64)
    z = np.zeros_like(yaw)
    return np.stack([np.cos(yaw / 2), z, z, np.sin(yaw / 2)], axis=-1)


def pose_matrix(x: float, y: float, yaw: float, z: float = 0.0) -> np.ndarray:
    """4x4 local-to-world transform of a planar pose."""
    m = np.eye(4)
    m[:2, :2] = rot2(yaw)
    m[:3, 3] = (x, y, z)
    return m
