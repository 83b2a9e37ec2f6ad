"""Pictures of trajectories: perspective projection onto a front-camera frame, and a bird's-eye view.

Conventions (``vavam.types``): trajectories are metres in the ego frame (x forward, y left, on the
ground, z = 0), ``[K, 6, 2]`` (K samples) or ``[6, 2]``, absolute offsets from the current pose.
Images are RGB uint8 ``[H, W, 3]``; pixel (row i, column j) has its centre at ``u = j, v = i``
(OpenCV), as in :mod:`vavam.world.camera`.

Camera model: a level pinhole camera looking straight ahead (optionally pitched down by
``camera_pitch_deg``), mounted ``camera_forward`` metres ahead of the trajectory origin,
``camera_lateral`` metres to its left and ``camera_height`` metres above the ground. When nothing is
given, the intrinsics are nuScenes CAM_FRONT's scaled to the image size and the mount is the embedded
world's front camera (1.70 m ahead of the rear axle, 1.51 m high; :class:`vavam.world.camera.Camera`),
which is right for world data and a reasonable guess for nuScenes/nuPlan-like front cameras. For
other footage the drawn lines are only as right as the intrinsics and mount given.

Everything is drawn with PIL (no matplotlib), so the functions are cheap enough to log images from a
training loop.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

#: sample colours (RGB), a tab10-like cycle without green; green is the ground truth.
SAMPLE_COLORS: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (214, 39, 40),
    (148, 103, 189),
    (23, 190, 207),
    (227, 119, 194),
    (188, 189, 34),
    (140, 86, 75),
    (127, 127, 127),
)
GROUND_TRUTH_COLOR: tuple[int, int, int] = (0, 230, 0)
NEAR_PLANE_M = 0.1  # points closer to the camera plane than this (or behind it) are not drawn


def default_camera(height: int, width: int) -> tuple[np.ndarray, float, float]:
    """Default camera for an image of ``height x width``: ``(K [3,3], camera_height, camera_forward)``.

    nuScenes CAM_FRONT intrinsics resized to the image, mount of the world's front camera
    (:class:`vavam.world.camera.Camera`: 1.70 m ahead of the rear axle, 1.51 m above the ground).
    """
    from vavam.world.camera import Camera

    cam = Camera(int(height), int(width))
    return cam.intrinsics, float(cam.mount[2]), float(cam.mount[0])


def scale_intrinsics(intrinsics: np.ndarray, sx: float, sy: float | None = None) -> np.ndarray:
    """Intrinsics of the same camera after resizing its image by ``(sx, sy)`` (pixel centres kept:
    ``u' + 0.5 = (u + 0.5) * sx``)."""
    sy = sx if sy is None else sy
    k = np.array(intrinsics, dtype=np.float64).copy()
    k[0, 0] *= sx
    k[0, 1] *= sx
    k[1, 1] *= sy
    k[0, 2] = (k[0, 2] + 0.5) * sx - 0.5
    k[1, 2] = (k[1, 2] + 0.5) * sy - 0.5
    return k


def ground_to_camera(
    points: np.ndarray,
    camera_height: float,
    camera_forward: float = 0.0,
    camera_lateral: float = 0.0,
    camera_pitch_deg: float = 0.0,
) -> np.ndarray:
    """Ego-frame ground points ``[..., 2]`` (x forward, y left, z = 0) -> camera coordinates ``[..., 3]``
    (OpenCV: x right, y down, z forward).

    The camera sits at ``(camera_forward, camera_lateral, camera_height)`` in the ego frame and looks
    along +x, pitched down by ``camera_pitch_deg``.
    """
    p = np.asarray(points, dtype=np.float64)
    dx = p[..., 0] - camera_forward
    dy = p[..., 1] - camera_lateral
    dz = -float(camera_height)
    xc, yc, zc = -dy, np.full_like(dx, -dz), dx  # level camera: right = -left, down = -up, forward = x
    if camera_pitch_deg:
        th = math.radians(camera_pitch_deg)
        yc, zc = math.cos(th) * yc - math.sin(th) * zc, math.sin(th) * yc + math.cos(th) * zc
    return np.stack([xc, yc, zc], axis=-1)


def project_ground_points(
    points: np.ndarray,
    intrinsics: np.ndarray,
    camera_height: float,
    camera_forward: float = 0.0,
    camera_lateral: float = 0.0,
    camera_pitch_deg: float = 0.0,
    near: float = NEAR_PLANE_M,
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of ego-frame ground points: ``(uv [..., 2] (u = column, v = row), in_front bool [...])``.

    ``in_front`` is False for points less than ``near`` metres in front of the camera (or behind it);
    their ``uv`` is NaN.
    """
    cam = ground_to_camera(points, camera_height, camera_forward, camera_lateral, camera_pitch_deg)
    k = np.asarray(intrinsics, dtype=np.float64)
    in_front = cam[..., 2] >= near
    z = np.where(in_front, cam[..., 2], np.nan)
    uv = np.stack(
        [k[0, 0] * cam[..., 0] / z + k[0, 1] * cam[..., 1] / z + k[0, 2], k[1, 1] * cam[..., 1] / z + k[1, 2]], axis=-1
    )
    return uv, in_front


def _project_cam(cam: np.ndarray, k: np.ndarray) -> tuple[float, float]:
    return (
        float(k[0, 0] * cam[0] / cam[2] + k[0, 1] * cam[1] / cam[2] + k[0, 2]),
        float(k[1, 1] * cam[1] / cam[2] + k[1, 2]),
    )


def _clipped_polyline(cam: np.ndarray, k: np.ndarray, near: float) -> list[list[tuple[float, float]]]:
    """Project a camera-frame polyline ``[N, 3]``, cut at the near plane -> visible pieces of pixel points
    (a segment with a non-finite end is left out)."""
    pieces: list[list[tuple[float, float]]] = []
    current: list[tuple[float, float]] = []
    for a, b in itertools.pairwise(cam):
        za, zb = a[2], b[2]
        if not (np.isfinite(a).all() and np.isfinite(b).all()) or (za < near and zb < near):  # NaN / inf: a gap
            if current:
                pieces.append(current)
                current = []
            continue
        if za < near:  # enters the view: start at the near-plane crossing
            a = a + (b - a) * (near - za) / (zb - za)
        if zb < near:  # leaves the view
            b = a + (b - a) * (near - a[2]) / (zb - a[2])
        pa, pb = _project_cam(a, k), _project_cam(b, k)
        if current and current[-1] == pa:
            current.append(pb)
        else:
            if current:
                pieces.append(current)
            current = [pa, pb]
        if zb < near:
            pieces.append(current)
            current = []
    if current:
        pieces.append(current)
    return pieces


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=max(6, int(size)))
    except TypeError:  # very old Pillow: fixed-size bitmap font
        return ImageFont.load_default()


def _as_samples(trajectories: np.ndarray, name: str) -> np.ndarray:
    t = np.asarray(trajectories, dtype=np.float64)
    if t.ndim == 2:
        t = t[None]
    if t.ndim != 3 or t.shape[-1] != 2:
        raise ValueError(f"{name} must be [K, N, 2] or [N, 2] metres (x forward, y left), got {tuple(t.shape)}")
    return t


def _check_image(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be RGB uint8 [H, W, 3], got {img.dtype} {tuple(img.shape)}")
    return img


def draw_trajectories(
    image: np.ndarray,
    trajectories: np.ndarray,
    intrinsics: np.ndarray | None = None,
    camera_height: float | None = None,
    camera_forward: float | None = None,
    camera_lateral: float = 0.0,
    camera_pitch_deg: float = 0.0,
    ground_truth: np.ndarray | None = None,
    colors: Sequence[tuple[int, int, int]] | None = None,
    line_width: int | None = None,
    upscale: int = 1,
    start_at_origin: bool = True,
    inset: bool = True,
    inset_height: float = 0.6,
    near: float = NEAR_PLANE_M,
) -> np.ndarray:
    """Draw K sampled trajectories (and optionally the ground truth) onto a front-camera frame.

    Args:
        image: RGB uint8 ``[H, W, 3]``; not modified.
        trajectories: metres, ego frame, ``[K, N, 2]`` or ``[N, 2]``.
        intrinsics: 3x3 K in pixels of ``image``; None: nuScenes CAM_FRONT scaled to ``H x W``
            (:func:`default_camera`).
        camera_height: metres above the ground; None: 1.51 (the world's front camera).
        camera_forward: metres from the trajectory origin forward to the camera; None: 1.70
            (world camera ahead of the rear axle). 0 when the trajectory origin is the camera itself.
        camera_lateral: metres to the left of the trajectory origin.
        camera_pitch_deg: downward pitch of the optical axis.
        ground_truth: metres ``[N, 2]``, drawn in green.
        colors: per-sample RGB (default :data:`SAMPLE_COLORS`, cycled).
        line_width: in output pixels (default from the output width).
        upscale: integer factor to enlarge the image first (small frames); intrinsics follow.
        start_at_origin: lines start at the ego origin (0, 0) (the part before the near plane is cut).
        inset: paste a bird's-eye view (:func:`bev_plot`) in the top-right corner.
        inset_height: inset height as a fraction of the output height.
        near: points closer than this to the camera plane, or behind it, are not drawn.

    Returns:
        RGB uint8 ``[H * upscale, W * upscale, 3]``.
    """
    img = _check_image(image)
    samples = _as_samples(trajectories, "trajectories")
    gt = None if ground_truth is None else _as_samples(ground_truth, "ground_truth")[0]
    h, w = img.shape[:2]
    if isinstance(upscale, bool) or not isinstance(upscale, (int, np.integer)) or upscale < 1:
        raise ValueError(f"upscale must be an integer >= 1, got {upscale!r}")
    if intrinsics is None or camera_height is None or camera_forward is None:
        k_def, height_def, forward_def = default_camera(h, w)
        intrinsics = k_def if intrinsics is None else intrinsics
        camera_height = height_def if camera_height is None else camera_height
        camera_forward = forward_def if camera_forward is None else camera_forward
    k = np.asarray(intrinsics, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"intrinsics must be a 3x3 matrix, got shape {k.shape}")
    pil = Image.fromarray(img)
    if upscale > 1:
        pil = pil.resize((w * upscale, h * upscale), Image.Resampling.BICUBIC)
        k = scale_intrinsics(k, upscale)
    out_w, out_h = pil.size
    lw = line_width or max(1, round(out_w / 200))
    radius = max(1.0, lw * 1.2)
    colors = list(colors or SAMPLE_COLORS)
    draw = ImageDraw.Draw(pil)

    def draw_one(traj: np.ndarray, color: tuple[int, int, int], width: int) -> None:
        pts = np.concatenate([np.zeros((1, 2)), traj]) if start_at_origin else traj
        cam = ground_to_camera(pts, camera_height, camera_forward, camera_lateral, camera_pitch_deg)
        for piece in _clipped_polyline(cam, k, near):
            draw.line(piece, fill=color, width=width, joint="curve")
        wp = cam[1:] if start_at_origin else cam
        for c in wp:
            if np.isfinite(c).all() and c[2] >= near:
                u, v = _project_cam(c, k)
                if -radius <= u <= out_w + radius and -radius <= v <= out_h + radius:
                    draw.ellipse([u - radius, v - radius, u + radius, v + radius], fill=color)

    if gt is not None:
        draw_one(gt, GROUND_TRUTH_COLOR, lw + 1)
    for i, traj in enumerate(samples):
        draw_one(traj, tuple(colors[i % len(colors)]), lw)
    out = np.asarray(pil).copy()
    if inset:
        ih = max(16, round(out_h * inset_height))
        iw = max(12, round(ih * 0.75))
        bev = bev_plot(samples, ground_truth=gt, size=(ih, iw), colors=colors)
        out = paste_inset(out, bev)
    return out


def paste_inset(image: np.ndarray, inset: np.ndarray, margin: int = 4, corner: str = "top-right") -> np.ndarray:
    """Copy of ``image`` with ``inset`` pasted in a corner (cropped when it does not fit)."""
    out = _check_image(image).copy()
    h, w = out.shape[:2]
    ih, iw = min(inset.shape[0], h - 2 * margin), min(inset.shape[1], w - 2 * margin)
    if ih <= 0 or iw <= 0:
        return out
    top = margin if corner.startswith("top") else h - margin - ih
    left = w - margin - iw if corner.endswith("right") else margin
    out[top : top + ih, left : left + iw] = inset[:ih, :iw]
    return out


def _nice_step(span: float, target_lines: int = 5) -> float:
    raw = max(span / target_lines, 1e-6)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def bev_plot(
    trajectories: np.ndarray,
    ground_truth: np.ndarray | None = None,
    size: tuple[int, int] = (240, 180),
    colors: Sequence[tuple[int, int, int]] | None = None,
    forward_range: tuple[float, float] | None = None,
    background: tuple[int, int, int] = (24, 24, 28),
    label: bool = True,
) -> np.ndarray:
    """Bird's-eye view of trajectories: x forward points up, y left points left, equal scale on both axes.

    Args:
        trajectories: metres ``[K, N, 2]`` or ``[N, 2]``.
        ground_truth: metres ``[N, 2]`` (green).
        size: ``(H, W)`` of the picture in pixels.
        colors: per-sample RGB (default :data:`SAMPLE_COLORS`).
        forward_range: ``(x_min, x_max)`` metres shown; default fits the data, at least 20 m ahead.
        background: RGB.
        label: write the grid spacing in a corner.

    Returns:
        RGB uint8 ``[H, W, 3]``; the ego is a white triangle at the origin; grid lines every few metres.
    """
    samples = _as_samples(trajectories, "trajectories")
    gt = None if ground_truth is None else _as_samples(ground_truth, "ground_truth")[0]
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ValueError(f"size must be (H, W) of at least 1 x 1 pixels, got {tuple(size)}")
    pts = samples.reshape(-1, 2) if gt is None else np.concatenate([samples.reshape(-1, 2), gt])
    pts = pts[np.isfinite(pts).all(axis=1)]
    if forward_range is None:
        x_hi = max(20.0, float(pts[:, 0].max()) * 1.1 if len(pts) else 20.0)
        x_lo = min(-0.08 * x_hi, float(pts[:, 0].min()) * 1.1 if len(pts) else 0.0)
    else:
        x_lo, x_hi = float(forward_range[0]), float(forward_range[1])
    y_need = max(1.0, float(np.abs(pts[:, 1]).max()) * 1.15 if len(pts) else 1.0)
    pad = 4
    scale = min((h - 2 * pad) / max(x_hi - x_lo, 1e-6), (w - 2 * pad) / (2 * y_need))  # pixels per metre
    x_hi = x_lo + (h - 2 * pad) / scale  # use the whole height
    col0, row0 = w / 2.0, h - pad - (0 - x_lo) * scale  # pixel of the ego origin

    def px(p: np.ndarray) -> list[tuple[float, float]]:
        return [(col0 - float(y) * scale, row0 - float(x) * scale) for x, y in p]

    pil = Image.new("RGB", (w, h), background)
    draw = ImageDraw.Draw(pil)
    step = _nice_step(x_hi - x_lo)
    grid = tuple(min(255, c + 28) for c in background)
    for x in np.arange(math.ceil(x_lo / step) * step, x_hi + 1e-9, step):
        r = row0 - x * scale
        draw.line([(0, r), (w, r)], fill=grid, width=1)
    y_half = (w / 2.0) / scale
    for y in np.arange(-math.floor(y_half / step) * step, y_half + 1e-9, step):
        c = col0 - y * scale
        draw.line([(c, 0), (c, h)], fill=grid, width=1)
    lw = max(1, round(w / 120))
    radius = max(1.0, lw * 1.1)
    colors = list(colors or SAMPLE_COLORS)

    def line(traj: np.ndarray, color, width: int) -> None:
        pts = np.concatenate([np.zeros((1, 2)), traj])
        finite = np.isfinite(pts).all(axis=1)
        p = px(np.where(finite[:, None], pts, 0.0))
        run: list[tuple[float, float]] = []  # non-finite waypoints (NaN / inf) break the line, are not drawn
        for point, ok in zip([*p, None], [*finite, False]):
            if ok:
                run.append(point)
                continue
            if len(run) > 1:
                draw.line(run, fill=color, width=width, joint="curve")
            run = []
        for (u, v), ok in zip(p[1:], finite[1:]):
            if ok:
                draw.ellipse([u - radius, v - radius, u + radius, v + radius], fill=color)

    if gt is not None:
        line(gt, GROUND_TRUTH_COLOR, lw + 1)
    for i, traj in enumerate(samples):
        line(traj, tuple(colors[i % len(colors)]), lw)
    s = max(3.0, 1.0 * scale)  # ego triangle about 2 m long
    draw.polygon([(col0, row0 - s), (col0 - 0.6 * s, row0 + 0.6 * s), (col0 + 0.6 * s, row0 + 0.6 * s)],
                 fill=(240, 240, 240))
    draw.rectangle([0, 0, w - 1, h - 1], outline=(200, 200, 200), width=1)
    if label:
        draw.text((3, 2), f"BEV, grid {step:g} m", fill=(220, 220, 220), font=_font(max(8, h // 18)))
    return np.asarray(pil).copy()


__all__ = [
    "GROUND_TRUTH_COLOR",
    "SAMPLE_COLORS",
    "bev_plot",
    "default_camera",
    "draw_trajectories",
    "ground_to_camera",
    "paste_inset",
    "project_ground_points",
    "scale_intrinsics",
]
