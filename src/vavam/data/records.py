"""The common scene record: one camera's frames and ego poses per scene, for every real dataset.

A :class:`SceneRecord` holds one scene as per-scene numpy arrays (no Python object per frame):

==================  ===================  ==========================================================
field               shape / dtype        meaning
==================  ===================  ==========================================================
``name``            str                  scene identifier (unique inside a record file)
``timestamps``      ``[N]`` int64        frame times, microseconds, strictly increasing
``translations``    ``[N, 3]`` float64   ego-to-world translation (x, y, z), metres
``rotations``       ``[N, 4]`` float64   ego-to-world quaternion (w, x, y, z), unit norm
``camera``          str                  camera name (``CAM_FRONT``, ``CAM_F0``, ...)
``dataset``         str                  dataset name (``nuscenes``, ``nuplan``, ...), may be ""
``image_paths``     list[str] (N) | None image file per frame, relative to an image root (or absolute)
``token_indices``   ``[N]`` int64 | None row of each frame in the scene's token array, if known
``intrinsics``      ``[3, 3]`` | None    camera matrix (pixels) of the scene's camera
``boxes``           AgentBoxes | None    other agents' 3D boxes per frame (world frame)
==================  ===================  ==========================================================

Ego frame: x forward, y left, z up. Poses map ego to world: ``p_world = R(q) p_ego + t``.

On-disk format (``save_records`` / ``load_records``), format ``vavam-records`` version 1: one
uncompressed (or, on request, zip-compressed) ``.npz`` written atomically, loadable with
``np.load(path, allow_pickle=False)``; the scenes are concatenated along the frame axis:

- ``header``: uint8, the UTF-8 bytes of a JSON object ``{"format": "vavam-records", "version": 1,
  "dataset": str, "image_root": str | null, "metadata": {...}, "scenes": [{"name", "camera",
  "dataset", "num_frames", "has_image_paths", "has_token_indices", "has_intrinsics",
  "has_boxes"}, ...]}``; ``image_root`` is stored absolute (files written before held the folder as the user
  typed it, possibly relative: such a root is still read relative to the working directory);
- ``frame_offsets`` ``[S+1]`` int64: scene ``s`` owns frames ``frame_offsets[s]:frame_offsets[s+1]``;
- ``timestamps`` ``[F]`` int64, ``translations`` ``[F, 3]`` float64, ``rotations`` ``[F, 4]`` float64;
- ``token_indices`` ``[F]`` int64 (-1 for scenes without);
- ``intrinsics`` ``[S, 3, 3]`` float64 (NaN for scenes without);
- ``path_bytes`` uint8 + ``path_offsets`` ``[F+1]`` int64: path of frame ``f`` is
  ``path_bytes[path_offsets[f]:path_offsets[f+1]].decode("utf-8")`` (empty for scenes without);
- ``box_offsets`` ``[F+1]`` int64 (boxes of global frame ``f`` are rows ``box_offsets[f]:box_offsets[f+1]``),
  ``box_centers`` ``[M, 3]`` float64, ``box_sizes`` ``[M, 3]`` float64 (length, width, height),
  ``box_yaws`` ``[M]`` float64, and string columns ``box_categories`` / ``box_track_ids`` stored as
  ``*_bytes`` + ``*_offsets`` ``[M+1]`` like the paths (empty strings where unknown).

Records are validated on save and on load (:func:`validate_record`): strictly increasing
timestamps, finite poses, unit quaternions (within ``quat_tol``), consistent lengths, sane boxes
and, when asked, existing image files; every error is a :class:`RecordError` naming the scene and
the frame.

:func:`records_from_reference_pickle` reads the authors' per-timestamp pickle lists (reference §4.4)
through the restricted unpickler of :mod:`vavam.io`.
"""

from __future__ import annotations

import io as _io
import itertools
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vavam.io import atomic_write, safe_pickle_load

FORMAT_NAME = "vavam-records"
FORMAT_VERSION = 1
QUAT_TOL = 1e-3  # |  |q| - 1 | allowed


class RecordError(ValueError):
    """A scene record is malformed; the message names the scene (and the frame when it is one)."""


# ------------------------------------------------------------------------------------- boxes


@dataclass
class AgentBoxes:
    """3D boxes of other agents for the N frames of one scene, in CSR layout (world frame).

    Boxes of frame ``i`` are rows ``offsets[i]:offsets[i+1]`` of the box arrays.

    Attributes:
        offsets: ``[N+1]`` int64, non-decreasing, ``offsets[0] == 0``.
        centers: ``[M, 3]`` float64 box centres in the world frame, metres.
        sizes: ``[M, 3]`` float64 (length along heading, width, height), metres, >= 0.
        yaws: ``[M]`` float64 heading about world +z, radians.
        categories: ``M`` strings or None.
        track_ids: ``M`` strings (instance/track tokens) or None.
    """

    offsets: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    yaws: np.ndarray
    categories: list[str] | None = None
    track_ids: list[str] | None = None

    def __post_init__(self) -> None:
        self.offsets = np.asarray(self.offsets, dtype=np.int64).reshape(-1)
        self.centers = np.asarray(self.centers, dtype=np.float64).reshape(-1, 3)
        self.sizes = np.asarray(self.sizes, dtype=np.float64).reshape(-1, 3)
        self.yaws = np.asarray(self.yaws, dtype=np.float64).reshape(-1)
        if self.categories is not None:
            self.categories = [str(c) for c in self.categories]
        if self.track_ids is not None:
            self.track_ids = [str(t) for t in self.track_ids]

    @classmethod
    def from_frames(cls, frames: Sequence[dict[str, Any]]) -> AgentBoxes:
        """Build from one dict per frame with keys ``centers [K,3]``, ``sizes [K,3]``, ``yaws [K]`` and
        optional ``categories`` / ``track_ids`` (K strings). Categories / ids are kept when every
        frame that has boxes gives them."""
        counts = [len(np.asarray(f.get("yaws", []), dtype=np.float64).reshape(-1)) for f in frames]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

        def cat(key: str, width: int | None) -> np.ndarray:
            parts = [np.asarray(f.get(key, []), dtype=np.float64).reshape((-1, width) if width else -1) for f in frames]
            empty = np.zeros((0, width) if width else (0,))
            return np.concatenate(parts) if parts else empty

        def strings(key: str) -> list[str] | None:
            if any(n and f.get(key) is None for f, n in zip(frames, counts)):
                return None
            return [str(s) for f in frames for s in (f.get(key) or [])]

        return cls(
            offsets, cat("centers", 3), cat("sizes", 3), cat("yaws", None), strings("categories"), strings("track_ids")
        )

    @property
    def num_frames(self) -> int:
        """N."""
        return len(self.offsets) - 1

    def frame_slice(self, frame: int) -> slice:
        """Rows of frame ``frame``."""
        return slice(int(self.offsets[frame]), int(self.offsets[frame + 1]))


# ------------------------------------------------------------------------------------- records


@dataclass
class SceneRecord:
    """One scene of one camera: frames, timestamps, ego poses (see the module docstring for shapes)."""

    name: str
    timestamps: np.ndarray
    translations: np.ndarray
    rotations: np.ndarray
    camera: str = "CAM_FRONT"
    dataset: str = ""
    image_paths: list[str] | None = None
    token_indices: np.ndarray | None = None
    intrinsics: np.ndarray | None = None
    boxes: AgentBoxes | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = str(self.name)
        self.timestamps = np.asarray(self.timestamps).reshape(-1)
        if self.timestamps.dtype.kind == "f":
            if not np.all(np.isfinite(self.timestamps)):
                bad = int(np.flatnonzero(~np.isfinite(self.timestamps))[0])
                raise RecordError(f"scene '{self.name}', frame {bad}: timestamp is not finite")
            self.timestamps = np.round(self.timestamps)
        self.timestamps = self.timestamps.astype(np.int64)
        self.translations = np.asarray(self.translations, dtype=np.float64)
        self.rotations = np.asarray(self.rotations, dtype=np.float64)
        if self.image_paths is not None:
            self.image_paths = [os.fspath(p) for p in self.image_paths]
        if self.token_indices is not None:
            self.token_indices = np.asarray(self.token_indices, dtype=np.int64).reshape(-1)
        if self.intrinsics is not None:
            self.intrinsics = np.asarray(self.intrinsics, dtype=np.float64)

    def __len__(self) -> int:
        return len(self.timestamps)

    @property
    def num_frames(self) -> int:
        """N."""
        return len(self.timestamps)

    def boxes_in_ego(self, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes of ``frame`` in that frame's ego frame -> (centers ``[K,3]``, sizes ``[K,3]``, yaws ``[K]``).

        Yaws are relative to the ego heading (about +z). Empty arrays when the scene has no boxes.
        """
        from vavam.data.geometry import world_to_ego, yaw_from_quat

        if self.boxes is None:
            return np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0,))
        rows = self.boxes.frame_slice(frame)
        centers = world_to_ego(self.translations[frame], self.rotations[frame], self.boxes.centers[rows])
        yaws = self.boxes.yaws[rows] - yaw_from_quat(self.rotations[frame])
        yaws = (yaws + np.pi) % (2 * np.pi) - np.pi
        return centers, self.boxes.sizes[rows].copy(), yaws


def _err(scene: str, frame: int | None, msg: str) -> RecordError:
    where = f"scene '{scene}'" + (f", frame {frame}" if frame is not None else "")
    return RecordError(f"{where}: {msg}")


def _first_bad_row(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask.reshape(len(mask), -1).any(axis=1))[0])


def _resolve(path: str, image_root: str | os.PathLike | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or image_root is None else Path(image_root) / p


def validate_record(
    record: SceneRecord,
    *,
    image_root: str | os.PathLike | None = None,
    check_files: bool = False,
    quat_tol: float = QUAT_TOL,
) -> None:
    """Check one record; raise :class:`RecordError` naming the scene and the first bad frame.

    Checks: shapes ``[N]``, ``[N,3]``, ``[N,4]`` agree; timestamps strictly increasing; poses
    finite; ``| |q| - 1 | <= quat_tol``; ``image_paths`` / ``token_indices`` have N entries;
    intrinsics ``[3,3]`` finite; boxes consistent (N+1 offsets, finite, sizes >= 0). With
    ``check_files``, every image path (relative ones resolved against ``image_root``) must exist.
    """
    s = record.name
    n = len(record.timestamps)
    if n == 0:
        raise _err(s, None, "has no frames")
    if record.translations.shape != (n, 3):
        raise _err(s, None, f"translations have shape {record.translations.shape}, expected ({n}, 3)")
    if record.rotations.shape != (n, 4):
        raise _err(s, None, f"rotations have shape {record.rotations.shape}, expected ({n}, 4)")
    dt = np.diff(record.timestamps)
    if np.any(dt <= 0):
        i = int(np.flatnonzero(dt <= 0)[0]) + 1
        raise _err(
            s,
            i,
            f"timestamps must increase strictly (frame {i - 1}: {record.timestamps[i - 1]} us, "
            f"frame {i}: {record.timestamps[i]} us)",
        )
    bad = ~np.isfinite(record.translations)
    if bad.any():
        i = _first_bad_row(bad)
        raise _err(s, i, f"translation is not finite: {record.translations[i].tolist()}")
    bad = ~np.isfinite(record.rotations)
    if bad.any():
        i = _first_bad_row(bad)
        raise _err(s, i, f"rotation is not finite: {record.rotations[i].tolist()}")
    norms = np.linalg.norm(record.rotations, axis=1)
    bad = np.abs(norms - 1.0) > quat_tol
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise _err(
            s,
            i,
            f"rotation quaternion (w, x, y, z) {record.rotations[i].tolist()} has norm {norms[i]:.6f}, "
            f"not 1 (tolerance {quat_tol})",
        )
    if record.image_paths is not None:
        if len(record.image_paths) != n:
            raise _err(s, None, f"has {len(record.image_paths)} image paths for {n} frames")
        for i, p in enumerate(record.image_paths):
            if not p:
                raise _err(s, i, "image path is empty")
        if check_files:
            for i, p in enumerate(record.image_paths):
                full = _resolve(p, image_root)
                if not full.is_file():
                    raise _err(s, i, f"image file {str(full)!r} does not exist")
    if record.token_indices is not None:
        if record.token_indices.shape != (n,):
            raise _err(s, None, f"has {record.token_indices.shape[0]} token indices for {n} frames")
        if np.any(record.token_indices < 0):
            raise _err(s, int(np.flatnonzero(record.token_indices < 0)[0]), "token index is negative")
    if record.intrinsics is not None:
        if record.intrinsics.shape != (3, 3):
            raise _err(s, None, f"intrinsics have shape {record.intrinsics.shape}, expected (3, 3)")
        if not np.all(np.isfinite(record.intrinsics)):
            raise _err(s, None, "intrinsics are not finite")
    if record.boxes is not None:
        _validate_boxes(s, n, record.boxes)


def _validate_boxes(s: str, n: int, b: AgentBoxes) -> None:
    if len(b.offsets) != n + 1:
        raise _err(s, None, f"boxes have {len(b.offsets)} offsets for {n} frames (expected {n + 1})")
    if b.offsets[0] != 0 or np.any(np.diff(b.offsets) < 0):
        raise _err(s, None, "box offsets must start at 0 and not decrease")
    m = int(b.offsets[-1])
    if b.centers.shape != (m, 3) or b.sizes.shape != (m, 3) or b.yaws.shape != (m,):
        raise _err(
            s,
            None,
            f"box arrays do not hold {m} boxes (centers {b.centers.shape}, sizes {b.sizes.shape}, yaws {b.yaws.shape})",
        )
    for name, col in (("categories", b.categories), ("track_ids", b.track_ids)):
        if col is not None and len(col) != m:
            raise _err(s, None, f"box {name} have {len(col)} entries for {m} boxes")
    frame_of_box = np.searchsorted(b.offsets, np.arange(m), side="right") - 1
    for name, arr in (("center", b.centers), ("size", b.sizes), ("yaw", b.yaws)):
        bad = ~np.isfinite(arr)
        if bad.any():
            r = _first_bad_row(bad)
            raise _err(s, int(frame_of_box[r]), f"box {r - int(b.offsets[frame_of_box[r]])} has a non-finite {name}")
    bad = b.sizes < 0
    if bad.any():
        r = _first_bad_row(bad)
        raise _err(
            s,
            int(frame_of_box[r]),
            f"box {r - int(b.offsets[frame_of_box[r]])} has a negative size {b.sizes[r].tolist()}",
        )


def validate_records(
    records: Sequence[SceneRecord],
    *,
    image_root: str | os.PathLike | None = None,
    check_files: bool = False,
    quat_tol: float = QUAT_TOL,
) -> None:
    """:func:`validate_record` for each record, plus unique scene names."""
    seen: set[str] = set()
    for r in records:
        if r.name in seen:
            raise _err(r.name, None, "scene name appears more than once")
        seen.add(r.name)
        validate_record(r, image_root=image_root, check_files=check_files, quat_tol=quat_tol)


# ------------------------------------------------------------------------------------- save / load


def _pack_strings(strings: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    encoded = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def _unpack_strings(data: np.ndarray, offsets: np.ndarray, start: int, stop: int) -> list[str]:
    raw = data.tobytes()
    offs = offsets[start : stop + 1].tolist()
    return [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offs)]


def save_records(
    path: str | os.PathLike,
    records: Sequence[SceneRecord],
    *,
    dataset: str = "",
    image_root: str | os.PathLike | None = None,
    metadata: dict[str, Any] | None = None,
    compress: bool = False,
    validate: bool = True,
) -> Path:
    """Write records to one ``.npz`` file atomically (format in the module docstring).

    Args:
        path: destination file (``.npz`` recommended).
        records: the scenes, in the order to keep.
        dataset: dataset name stored in the header (and the default of scenes without one).
        image_root: folder that relative image paths are resolved against, stored in the header made absolute
            (against the working directory, ``~`` expanded), so the file reads the same from any directory.
        metadata: JSON-serialisable free-form dict for the header.
        compress: zip-deflate the arrays (smaller, slower).
        validate: run :func:`validate_records` first (files are not checked here).

    Returns:
        ``Path(path)``.
    """
    if validate:
        validate_records(records)
    path = Path(path)
    lengths = np.array([len(r) for r in records], dtype=np.int64)
    frame_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    total = int(frame_offsets[-1])

    def cat(arrays: list[np.ndarray], shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.concatenate(arrays).astype(dtype) if arrays else np.zeros(shape, dtype=dtype)

    timestamps = cat([r.timestamps for r in records], (0,), np.int64)
    translations = cat([r.translations for r in records], (0, 3), np.float64)
    rotations = cat([r.rotations for r in records], (0, 4), np.float64)
    token_indices = np.full(total, -1, dtype=np.int64)
    intrinsics = np.full((len(records), 3, 3), np.nan)
    paths: list[str] = []
    box_counts = np.zeros(total, dtype=np.int64)
    box_centers, box_sizes, box_yaws, box_cats, box_ids = [], [], [], [], []
    scenes_meta = []
    for s, r in enumerate(records):
        a, b = frame_offsets[s], frame_offsets[s + 1]
        if r.token_indices is not None:
            token_indices[a:b] = r.token_indices
        if r.intrinsics is not None:
            intrinsics[s] = r.intrinsics
        paths.extend(r.image_paths if r.image_paths is not None else [""] * len(r))
        if r.boxes is not None:
            box_counts[a:b] = np.diff(r.boxes.offsets)
            box_centers.append(r.boxes.centers)
            box_sizes.append(r.boxes.sizes)
            box_yaws.append(r.boxes.yaws)
            m = len(r.boxes.yaws)
            box_cats.extend(r.boxes.categories if r.boxes.categories is not None else [""] * m)
            box_ids.extend(r.boxes.track_ids if r.boxes.track_ids is not None else [""] * m)
        scenes_meta.append(
            {
                "name": r.name,
                "camera": r.camera,
                "dataset": r.dataset or dataset,
                "num_frames": len(r),
                "has_image_paths": r.image_paths is not None,
                "has_token_indices": r.token_indices is not None,
                "has_intrinsics": r.intrinsics is not None,
                "has_boxes": r.boxes is not None,
                "has_box_categories": r.boxes is not None and r.boxes.categories is not None,
                "has_box_track_ids": r.boxes is not None and r.boxes.track_ids is not None,
                "metadata": r.metadata,
            }
        )
    header = {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "dataset": dataset,
        "image_root": None if image_root is None else os.path.abspath(os.path.expanduser(os.fspath(image_root))),
        "metadata": metadata or {},
        "scenes": scenes_meta,
    }
    path_bytes, path_offsets = _pack_strings(paths)
    cat_bytes, cat_offsets = _pack_strings(box_cats)
    id_bytes, id_offsets = _pack_strings(box_ids)
    arrays = {
        "header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8),
        "frame_offsets": frame_offsets,
        "timestamps": timestamps,
        "translations": translations,
        "rotations": rotations,
        "token_indices": token_indices,
        "intrinsics": intrinsics,
        "path_bytes": path_bytes,
        "path_offsets": path_offsets,
        "box_offsets": np.concatenate([[0], np.cumsum(box_counts)]).astype(np.int64),
        "box_centers": cat(box_centers, (0, 3), np.float64),
        "box_sizes": cat(box_sizes, (0, 3), np.float64),
        "box_yaws": cat(box_yaws, (0,), np.float64),
        "box_categories_bytes": cat_bytes,
        "box_categories_offsets": cat_offsets,
        "box_track_ids_bytes": id_bytes,
        "box_track_ids_offsets": id_offsets,
    }
    buf = _io.BytesIO()
    (np.savez_compressed if compress else np.savez)(buf, **arrays)
    with atomic_write(path, "wb") as f:
        f.write(buf.getbuffer())
    return path


def _open_npz(path: Path) -> tuple[Any, dict[str, Any]]:
    try:
        data = np.load(path, allow_pickle=False)
        header = json.loads(data["header"].tobytes().decode("utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: record file is missing") from exc
    except (OSError, KeyError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not a vavam record file ({exc})") from exc
    if header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: not a vavam record file (format {header.get('format')!r})")
    if header.get("version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: record format version {header.get('version')} is not supported (expected {FORMAT_VERSION})"
        )
    return data, header


def read_records_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of a record file (dataset, image_root, metadata, per-scene summaries)."""
    data, header = _open_npz(Path(path))
    data.close()
    return header


def load_records(
    path: str | os.PathLike,
    *,
    image_root: str | os.PathLike | None = None,
    check_files: bool = True,
    validate: bool = True,
    quat_tol: float = QUAT_TOL,
) -> list[SceneRecord]:
    """Read a file written by :func:`save_records` and validate it.

    Args:
        path: the ``.npz`` file.
        image_root: folder for relative image paths; default the header's ``image_root``, else the
            record file's folder.
        check_files: check that every image file exists (only for scenes that have image paths).
        validate: run :func:`validate_records` (raises :class:`RecordError` naming scene and frame).
        quat_tol: allowed deviation of quaternion norms from 1.

    Returns:
        the scene records in file order.
    """
    path = Path(path)
    data, header = _open_npz(path)
    with data:
        a = {k: data[k] for k in data.files}
    fo = a["frame_offsets"]
    bo = a["box_offsets"]
    scenes = header["scenes"]
    if len(fo) != len(scenes) + 1:
        raise ValueError(f"{path}: header lists {len(scenes)} scenes but frame_offsets has {len(fo)} entries")
    records = []
    for s, meta in enumerate(scenes):
        lo, hi = int(fo[s]), int(fo[s + 1])
        boxes = None
        if meta.get("has_boxes"):
            b0, b1 = int(bo[lo]), int(bo[hi])
            boxes = AgentBoxes(
                offsets=bo[lo : hi + 1] - b0,
                centers=a["box_centers"][b0:b1],
                sizes=a["box_sizes"][b0:b1],
                yaws=a["box_yaws"][b0:b1],
                categories=_unpack_strings(a["box_categories_bytes"], a["box_categories_offsets"], b0, b1)
                if meta.get("has_box_categories")
                else None,
                track_ids=_unpack_strings(a["box_track_ids_bytes"], a["box_track_ids_offsets"], b0, b1)
                if meta.get("has_box_track_ids")
                else None,
            )
        records.append(
            SceneRecord(
                name=meta["name"],
                timestamps=a["timestamps"][lo:hi],
                translations=a["translations"][lo:hi],
                rotations=a["rotations"][lo:hi],
                camera=meta.get("camera", ""),
                dataset=meta.get("dataset", ""),
                image_paths=_unpack_strings(a["path_bytes"], a["path_offsets"], lo, hi)
                if meta.get("has_image_paths")
                else None,
                token_indices=a["token_indices"][lo:hi] if meta.get("has_token_indices") else None,
                intrinsics=a["intrinsics"][s] if meta.get("has_intrinsics") else None,
                boxes=boxes,
                metadata=meta.get("metadata") or {},
            )
        )
    if validate:
        root = image_root if image_root is not None else header.get("image_root") or path.parent
        validate_records(records, image_root=root, check_files=check_files, quat_tol=quat_tol)
    return records


# ------------------------------------------------------------------------------------- reference pickles

#: numpy globals a reference pickle may hold (arrays of poses); plain data, no code.
try:
    from numpy._core.multiarray import _reconstruct as _np_reconstruct  # numpy >= 2
    from numpy._core.multiarray import scalar as _np_scalar
except ImportError:  # numpy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct
    from numpy.core.multiarray import scalar as _np_scalar

_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {}
for _mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _NUMPY_GLOBALS[(_mod, "_reconstruct")] = _np_reconstruct
    _NUMPY_GLOBALS[(_mod, "scalar")] = _np_scalar
_NUMPY_GLOBALS[("numpy", "ndarray")] = np.ndarray
_NUMPY_GLOBALS[("numpy", "dtype")] = np.dtype
for _name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType"):
    if hasattr(np, "dtypes") and hasattr(np.dtypes, _name):
        _NUMPY_GLOBALS[("numpy.dtypes", _name)] = getattr(np.dtypes, _name)

_INTRINSICS_KEYS = ("intrinsics", "camera_intrinsic", "cam_intrinsic", "intrinsic")


def reference_pickle_split(
    source: list | tuple | dict, split: str | None = None, where: str = "<pickle data>", split_option: str = "split="
) -> tuple[list | tuple, str | None]:
    """The entries of one split of the authors' pickle data, and the split chosen (None: not a dict of splits).

    A dict of splits needs ``split`` unless it holds one split; errors name ``where`` (the file) and
    ``split_option`` (how the caller's user passes the split: ``split=``, ``--split``).
    """
    if isinstance(source, dict):
        if split is None:
            if len(source) != 1:
                raise ValueError(f"{where}: holds splits {sorted(source)}; pass {split_option} (one of them)")
            split = next(iter(source))
        if split not in source:
            raise ValueError(f"{where}: no split {split!r} (has {sorted(source)}; pass one of them as {split_option})")
        source = source[split]
    elif split is not None:
        raise ValueError(f"{where}: holds one list of entries, not a dict of splits, so {split_option} {split!r} "
                         "cannot pick one")
    if not isinstance(source, (list, tuple)):
        raise TypeError(f"{where}: expected a list of per-timestamp dicts, got {type(source).__name__}")
    return source, split


def records_from_reference_pickle(
    source: str | os.PathLike | list | dict,
    *,
    camera: str = "CAM_FRONT",
    split: str | None = None,
    dataset: str = "",
    validate: bool = True,
    where: str | None = None,
    split_option: str = "split=",
) -> list[SceneRecord]:
    """Convert the authors' pickle format (reference §4.4) to scene records.

    The pickle is a list of per-timestamp dicts ``{"scene": {"name": str, ...}, camera:
    {"file_path": str, "timestamp": int (us), "ego_to_world_tran": [x, y, z], "ego_to_world_rot":
    [w, x, y, z], ...}}`` (or a dict of such lists per split, e.g. ``{"train": [...], "val": [...]}``).
    Entries are grouped by scene name and sorted by timestamp, like the reference. Intrinsics are
    taken from the camera dict when present (``intrinsics`` / ``camera_intrinsic`` / ``cam_intrinsic``).

    Args:
        source: a pickle path (loaded with :func:`vavam.io.safe_pickle_load`, numpy arrays allowed)
            or the already loaded list / dict.
        camera: camera key (``CAM_FRONT`` for nuScenes, ``CAM_F0`` for nuPlan).
        split: key to pick when the pickle is a dict of splits (required then, unless it has one key).
        dataset: dataset name stored in each record.
        validate: validate each record (see :func:`validate_record`).
        where: how messages name the data (default: the pickle path, or ``<pickle data>``).
        split_option: how messages name the split argument (``--split`` on a command line).

    Returns:
        one record per scene, sorted by scene name.
    """
    if isinstance(source, (str, os.PathLike)):
        where = where or os.fspath(source)
        source = safe_pickle_load(source, extra_globals=_NUMPY_GLOBALS)
    where = where or "<pickle data>"
    source, _ = reference_pickle_split(source, split, where, split_option)
    n = len(source)
    names: list[str] = []
    stamps = np.empty(n, dtype=np.int64)
    trans = np.empty((n, 3), dtype=np.float64)
    rots = np.empty((n, 4), dtype=np.float64)
    paths: list[str] = []
    intr: list[Any] = []
    for i, item in enumerate(source):
        try:
            name = str(item["scene"]["name"])
            cam = item[camera]
            stamps[i] = int(cam["timestamp"])
            t = np.asarray(cam["ego_to_world_tran"], dtype=np.float64).reshape(-1)
            if t.size not in (2, 3):  # (x, y) gets z = 0; an empty or 1-value list is no position
                raise ValueError(f"ego_to_world_tran has {t.size} values, expected 3 (x, y, z) or 2 (x, y)")
            trans[i] = t if t.size == 3 else np.append(t, 0.0)
            rots[i] = np.asarray(cam["ego_to_world_rot"], dtype=np.float64).reshape(4)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{where}: entry {i} is not in the reference format for camera {camera!r} ({exc!r})"
            ) from exc
        names.append(name)
        paths.append(str(cam.get("file_path", "")))
        intr.append(next((cam[k] for k in _INTRINSICS_KEYS if k in cam and cam[k] is not None), None))
    if n == 0:
        return []
    uniq, codes = np.unique(np.asarray(names, dtype=object).astype(str), return_inverse=True)
    order = np.lexsort((stamps, codes))
    codes_sorted = codes[order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(codes_sorted)) + 1, [n]])
    records = []
    for s in range(len(bounds) - 1):
        idx = order[bounds[s] : bounds[s + 1]]
        scene_paths = [paths[j] for j in idx]
        k = next((intr[j] for j in idx if intr[j] is not None), None)
        records.append(
            SceneRecord(
                name=str(uniq[codes_sorted[bounds[s]]]),
                timestamps=stamps[idx],
                translations=trans[idx],
                rotations=rots[idx],
                camera=camera,
                dataset=dataset,
                image_paths=scene_paths if all(scene_paths) else None,
                intrinsics=None if k is None else np.asarray(k, dtype=np.float64).reshape(3, 3),
            )
        )
    if validate:
        validate_records(records)
    return records


__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "AgentBoxes",
    "RecordError",
    "SceneRecord",
    "load_records",
    "read_records_header",
    "records_from_reference_pickle",
    "reference_pickle_split",
    "save_records",
    "validate_record",
    "validate_records",
]
