"""Helpers shared by the table-based sources (nuScenes, nuPlan): image checks, frame screening.

* :func:`check_image` / :func:`check_images`: a cheap test that an image file exists and is a
  complete JPEG/PNG (magic bytes, end-of-image marker, header parse with PIL) — no pixel decoding.
* :func:`screen_frames`: given one scene's per-frame timestamps, poses and already known problems
  (missing table rows, bad images), finds the remaining problems (non-finite or non-unit poses,
  duplicate or out-of-order timestamps) and either raises :class:`SourceError` naming the scene and the
  first bad frame, or, with ``skip_bad``, drops the bad frames and counts them in a :class:`SkipLog`.
* :func:`in_time_order`: which frames of a sequence to keep so that their timestamps increase
  strictly (the longest such run), so that one frame with a far-off timestamp is the one dropped.
* :func:`restricted_loads`: unpickle a small blob (nuPlan's pickled camera matrices) through the
  restricted unpickler of :mod:`vavam.io` (containers and numpy arrays only).
"""

from __future__ import annotations

import bisect
import io as _io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from vavam.data.records import _NUMPY_GLOBALS, QUAT_TOL
from vavam.data.sources import SkipLog, SourceError
from vavam.io import RestrictedUnpickler, to_plain

JPEG_MAGIC = b"\xff\xd8\xff"
JPEG_EOI = b"\xff\xd9"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: bytes at the end of a JPEG searched for the end-of-image marker (encoders may pad after it).
_EOI_TAIL = 1024


def check_image(path: str | os.PathLike, expected_size: tuple[int, int] | None = None) -> str | None:
    """Cheap integrity check of one image file.

    Checks that the file exists, is not empty, starts with the JPEG or PNG signature, that a JPEG
    has its end-of-image marker (``FF D9``) within its last kilobyte (catches truncated files), and
    that PIL can parse the header. With ``expected_size`` ``(width, height)``, the header's size must
    match it.

    Returns:
        None when the file looks fine, else a short reason ("image file is missing", ...).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        return f"image file is missing: {p}"
    except OSError as exc:
        return f"image file cannot be read: {p} ({exc})"
    if size == 0:
        return f"image file is empty: {p}"
    try:
        with open(p, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - _EOI_TAIL))
            tail = f.read()
    except OSError as exc:
        return f"image file cannot be read: {p} ({exc})"
    if head.startswith(JPEG_MAGIC):
        if JPEG_EOI not in tail:
            return f"image file is corrupt or truncated (no JPEG end-of-image marker): {p}"
    elif not head.startswith(PNG_MAGIC):
        return f"image file is corrupt (not a JPEG or PNG: starts with {head[:4].hex()}): {p}"
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            wh = im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"image file is corrupt (header unreadable: {exc}): {p}"
    if expected_size is not None and tuple(expected_size) != tuple(wh):
        return f"image is {wh[0]}x{wh[1]}, the tables say {expected_size[0]}x{expected_size[1]}: {p}"
    return None


def check_images(
    paths: Sequence[str | os.PathLike],
    expected_sizes: Sequence[tuple[int, int] | None] | None = None,
    workers: int = 8,
) -> list[str | None]:
    """:func:`check_image` for many files (threads; I/O bound) -> one reason or None per path."""
    sizes = list(expected_sizes) if expected_sizes is not None else [None] * len(paths)
    if len(paths) < 64 or workers <= 1:
        return [check_image(p, s) for p, s in zip(paths, sizes)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_image, paths, sizes))


def in_time_order(timestamps: np.ndarray) -> np.ndarray:
    """Mask ``[N]`` bool of the frames to keep so that the kept timestamps increase strictly.

    The kept frames are a longest strictly increasing subsequence of ``timestamps`` (``[N]`` int, in the
    dataset's own order), the one with the earliest frames where several are as long. So a frame whose
    timestamp jumps far ahead is dropped alone (not every later frame with it), and of two frames that
    are out of order with each other only, or that share a timestamp, the later one is dropped.
    """
    ts = [int(t) for t in np.asarray(timestamps).reshape(-1).tolist()]
    n = len(ts)
    # run[i]: length of the longest strictly increasing run starting at frame i (patience sort from the end).
    run = [0] * n
    tails: list[int] = []  # ascending -ts of run ends, for runs read backwards
    for i in range(n - 1, -1, -1):
        pos = bisect.bisect_left(tails, -ts[i])
        if pos == len(tails):
            tails.append(-ts[i])
        else:
            tails[pos] = -ts[i]
        run[i] = pos + 1
    keep = np.zeros(n, dtype=bool)
    need = max(run, default=0)
    last: int | None = None
    for i in range(n):
        if need and run[i] == need and (last is None or ts[i] > last):
            keep[i] = True
            last = ts[i]
            need -= 1
    return keep


def table_timestamp(value: Any) -> int | None:
    """A table's timestamp (integer µs; a whole float or a numeric string is accepted) -> int, or None when
    missing, malformed or not positive (the frame is then reported, never placed at time 0)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    if not isinstance(value, int):
        return None
    return value if value > 0 else None


def screen_frames(
    scene: str,
    labels: Sequence[str],
    timestamps: np.ndarray,
    translations: np.ndarray,
    rotations: np.ndarray,
    problems: list[str | None],
    *,
    skip_bad: bool,
    skipped: SkipLog,
    quat_tol: float = QUAT_TOL,
) -> np.ndarray | None:
    """Find bad frames of one scene; raise, or drop and count them.

    Frame ``i`` is bad when ``problems[i]`` is set (found by the caller), when its pose is not finite
    or its quaternion is not unit (within ``quat_tol``), or when its timestamp breaks the time order
    of the other good frames (duplicate, backwards or far-ahead timestamps): the good frames kept are
    those of :func:`in_time_order`, so a single frame with a wrong timestamp is the one dropped, and of
    two frames out of order with each other only (or sharing a timestamp) the later one.

    Args:
        scene: scene name for messages.
        labels: per frame, what identifies it in the raw data (file name, token) for messages.
        timestamps: ``[N]`` int64 µs, frames in the dataset's own order.
        translations: ``[N, 3]`` float (NaN allowed).
        rotations: ``[N, 4]`` float (w, x, y, z; NaN allowed).
        problems: ``N`` reasons or None, already known (missing rows, bad images).
        skip_bad: drop bad frames (logged in ``skipped``) instead of raising.
        skipped: the skip log to add to.
        quat_tol: allowed deviation of a quaternion's norm from 1.

    Returns:
        indices ``[K]`` of the frames kept, in order; None when no frame is left (then the scene
        is logged as skipped; only with ``skip_bad``, else :class:`SourceError` was raised).

    Raises:
        SourceError: without ``skip_bad``, for the first bad frame: ``scene '<name>', frame <i>
        (<label>): <reason>``.
    """
    n = len(timestamps)
    reasons = list(problems)
    t = np.asarray(translations, dtype=np.float64).reshape(n, 3)
    q = np.asarray(rotations, dtype=np.float64).reshape(n, 4)
    bad_t = ~np.isfinite(t).all(axis=1)
    bad_q = ~np.isfinite(q).all(axis=1)
    with np.errstate(invalid="ignore"):
        off_unit = np.abs(np.linalg.norm(q, axis=1) - 1.0) > quat_tol
    for i in np.flatnonzero(bad_t | bad_q | off_unit).tolist():
        if reasons[i] is None:
            if bad_t[i] or bad_q[i]:
                reasons[i] = f"ego pose is not finite (translation {t[i].tolist()}, rotation {q[i].tolist()})"
            else:
                reasons[i] = f"ego rotation quaternion {q[i].tolist()} is not unit (norm {np.linalg.norm(q[i]):.6f})"
    ts = np.asarray(timestamps, dtype=np.int64).reshape(n)
    ok = np.array([r is None for r in reasons], dtype=bool)
    if n:
        good = np.flatnonzero(ok)
        kept_good = good[in_time_order(ts[good])]
        for i in np.setdiff1d(good, kept_good).tolist():
            # the nearest kept frame before it is not earlier (backwards / duplicate), else the nearest
            # kept frame after it is not later (this frame's timestamp jumps ahead)
            before = kept_good[kept_good < i]
            j = int(before[-1]) if len(before) else -1
            if j >= 0 and ts[i] <= ts[j]:
                kind = "duplicate timestamp" if ts[i] == ts[j] else "timestamp goes backwards"
                reasons[i] = f"{kind}: {int(ts[i])} us, frame {j} ({labels[j]}) has {int(ts[j])} us"
            else:
                k = int(kept_good[kept_good > i][0])
                kind = "duplicate timestamp" if ts[i] == ts[k] else "timestamp jumps ahead of later frames"
                reasons[i] = f"{kind}: {int(ts[i])} us, later frame {k} ({labels[k]}) has {int(ts[k])} us"
        ok = np.array([r is None for r in reasons], dtype=bool)
    bad = [i for i, r in enumerate(reasons) if r is not None]
    if bad and not skip_bad:
        i = bad[0]
        more = f" (and {len(bad) - 1} more bad frame(s))" if len(bad) > 1 else ""
        raise SourceError(f"scene '{scene}', frame {i} ({labels[i]}): {reasons[i]}{more}; pass --skip-bad to drop them")
    for i in bad:
        skipped.add(scene, i, f"{labels[i]}: {reasons[i]}")
    kept = np.flatnonzero(ok)
    if len(kept) == 0:
        skipped.add(scene, None, "no usable frame left")
        return None
    return kept


def scene_problem(scene: str, reason: str, *, skip_bad: bool, skipped: SkipLog) -> None:
    """A whole scene is unusable: raise :class:`SourceError` naming it, or (``skip_bad``) log it."""
    if not skip_bad:
        raise SourceError(f"scene '{scene}': {reason}; pass --skip-bad to skip such scenes")
    skipped.add(scene, None, reason)


def restricted_loads(blob: bytes, source: str) -> Any:
    """Unpickle ``blob`` allowing only containers, numbers and numpy arrays (plus ``extra`` list types).

    nuPlan's devkit pickles plain lists or its own list subclasses (``Translation``, ``Rotation``,
    ``CameraIntrinsic`` in ``nuplan.database.common.data_types``); those are read as plain lists.
    Anything else raises :class:`vavam.io.UnsafePickleError` before any code runs.
    """
    extra = dict(_NUMPY_GLOBALS)
    for name in ("Translation", "Rotation", "CameraIntrinsic", "Size", "Bbox"):
        extra[("nuplan.database.common.data_types", name)] = list
    unpickler = type("NuplanBlobUnpickler", (RestrictedUnpickler,), {"extra_globals": extra, "source": source})
    return to_plain(unpickler(_io.BytesIO(bytes(blob))).load())


__all__ = [
    "check_image", "check_images", "in_time_order", "restricted_loads", "scene_problem", "screen_frames",
    "table_timestamp",
]
