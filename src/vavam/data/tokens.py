"""The token store: one uint16 ``.npy`` array ``[T, h, w]`` per scene plus a ``manifest.json``.

Layout of a store folder::

    root/
      manifest.json                         # the finished scenes (see below)
      manifest.part-000-of-004.json         # per-shard parts, merged by merge_manifests()
      scenes/<name>.npy                     # uint16 [T, h, w], frame-major then row-major
      scenes/<name>.timestamps.npy          # int64 [T], µs, non-decreasing

``manifest.json``::

    {
      "format": "vavam-token-store", "version": 1, "dtype": "uint16",
      "grid": [h, w], "image_size": [H, W], "downsample": 16, "codebook_size": 16384,
      "fps": 10.0,                              # frame rate of the store (null when unknown or mixed)
      "tokenizer": {...}, "tokenizer_hash": "<sha256 of the identity JSON>",
      "shard": null | [i, N],
      "complete": false | true,                 # parts of `vavam tokenize` only: the shard finished its scenes
      "scenes": {
        "<name>": {"name": "<name>", "num_frames": T, "file": "scenes/<name>.npy",
                   "timestamps_file": "scenes/<name>.timestamps.npy", "bytes": <size of the .npy>,
                   "source": "<path of the images/video>", "fps": 10.0,
                   "first_timestamp_us": ..., "last_timestamp_us": ...,
                   "fingerprint": "<sha256 of the frames and their timing>",
                   "frames_fingerprint": "<sha256 of the frames alone>", ...}
      }
    }

``fps`` of a scene is its frame rate (null when unknown); the store's ``fps`` is either the rate the
writer was given (a dataset's nominal rate) or, for a writer asked to derive it, the common rate of
its scenes (:func:`common_fps`: null when a scene's rate is unknown or the scenes' rates differ).
A scene's ``fingerprint`` (when the writer was given one) identifies the frames it was made from and
their timing, its ``frames_fingerprint`` the frames alone: a resumed run redoes a scene whose frames
changed, and only rewrites the timestamps and rate of one whose timing alone changed
(:meth:`TokenStoreWriter.check_scene`, :meth:`TokenStoreWriter.retime_scene`).

Scene names may contain ``/`` (``channel/video_id``), which become sub-folders of ``scenes/``.

Writing (:class:`TokenStoreWriter`): each scene's arrays are written atomically (temporary name +
fsync + rename, :func:`vavam.io.atomic_write`), and only then is the scene recorded in the manifest,
which is itself rewritten atomically. A crash or Ctrl-C mid-scene leaves the scene unrecorded, and
the next run redoes it. Reading (:class:`TokenStore`) goes through memory maps.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from vavam.io import atomic_write, atomic_write_json, read_json, sha256_json

FORMAT = "vavam-token-store"
VERSION = 1
MANIFEST = "manifest.json"
SCENES_DIR = "scenes"
UINT16_CODES = 1 << 16
#: manifest keys that must agree between a store and a writer resuming into it / parts being merged
HEADER_KEYS: tuple[str, ...] = ("format", "version", "dtype", "grid", "image_size", "downsample", "codebook_size",
                                "tokenizer_hash")


class TokenStoreError(ValueError):
    """A token store (manifest or scene file) is missing, corrupt or inconsistent; the message names the file."""


#: largest relative spread of the scenes' rates for :func:`common_fps` to call them one rate (29.97 vs 30 fps).
FPS_REL_TOL = 0.02


def common_fps(rates: Iterable[float | None], rel_tol: float = FPS_REL_TOL) -> float | None:
    """The one frame rate of a set of scenes: their median rate (3 decimals) when every rate is known
    and all agree within ``rel_tol``; None when there is no scene, a rate is unknown, or they differ."""
    vals = list(rates)
    if not vals or any(r is None or not float(r) > 0 for r in vals):
        return None
    arr = np.asarray(vals, dtype=np.float64)
    if arr.max() > arr.min() * (1.0 + rel_tol):
        return None
    return round(float(np.median(arr)), 3)


@dataclass(frozen=True)
class SceneCheck:
    """How a recorded scene compares with its source (:meth:`TokenStoreWriter.check_scene`).

    ``state`` is ``absent`` (not recorded), ``current`` (same fingerprint: keep it), ``retime`` (same
    frames, other timing: keep the tokens, rewrite its timestamps and rate), ``stale`` (other frames: redo
    it; ``reason`` says what differs) or ``unverified`` (recorded without a frames fingerprint, by an older
    version, and its timestamps match the source's, or the source knows none before decoding: keep it
    and record the fingerprints).
    """

    state: str
    reason: str = ""


def part_manifest_name(shard_index: int, num_shards: int) -> str:
    """File name of shard ``shard_index`` (0-based) of ``num_shards``'s manifest part."""
    return f"manifest.part-{shard_index:03d}-of-{num_shards:03d}.json"


def empty_part_name(shard_index: int, num_shards: int) -> str:
    """File name of the marker a shard with no scene leaves instead of a manifest part (it knows no grid or
    image size to write one), so that a merge can tell a finished empty shard from one that never ran."""
    return f"manifest.part-{shard_index:03d}-of-{num_shards:03d}.empty"


_PART_NAME = re.compile(r"^manifest\.part-(\d+)-of-(\d+)\.(?:json|empty)$")


def manifest_parts(root: str | Path, markers: bool = False) -> list[Path]:
    """The shard manifest parts in ``root`` (sorted; none when it is not a folder), and the empty shards' markers
    after them when ``markers``."""
    root = Path(root)
    if not root.is_dir():
        return []
    parts = sorted(root.glob("manifest.part-*-of-*.json"))
    return [*parts, *sorted(root.glob("manifest.part-*-of-*.empty"))] if markers else parts


def missing_shards(root: Path) -> list[tuple[int, int]]:
    """``(i, N)`` of every shard of the shard counts found in ``root`` with neither a manifest part nor an empty
    marker (not run yet, still running, or killed), sorted."""
    seen: dict[int, set[int]] = {}
    for path in Path(root).glob("manifest.part-*-of-*.*"):
        m = _PART_NAME.match(path.name)
        if m:
            seen.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    return sorted((i, n) for n, done in seen.items() for i in range(n) if i not in done)


def unfinished_shards(manifests: Iterable[tuple[Path, Mapping[str, Any]]]) -> list[tuple[int, int]]:
    """``(i, N)`` of the manifest parts among ``manifests`` (``(path, manifest)``) marked unfinished
    (``"complete": false``: the shard was killed, failed or is still running), sorted. Parts without the mark
    (older versions, writers that do not keep it) count as finished."""
    out = []
    for path, m in manifests:
        match = _PART_NAME.match(Path(path).name)
        if match and m.get("complete") is False:
            out.append((int(match.group(1)), int(match.group(2))))
    return sorted(out)


def check_codebook_size(codebook_size: int | None) -> None:
    """Refuse codebooks that do not fit in uint16 (more than 65,536 codes)."""
    if codebook_size is not None and int(codebook_size) > UINT16_CODES:
        raise ValueError(f"codebook of {codebook_size} codes does not fit in uint16 tokens (at most {UINT16_CODES})")


def identity_hash(identity: Mapping[str, Any] | None) -> str | None:
    """sha256 of the canonical JSON of a tokenizer identity (None for None)."""
    if identity is None:
        return None
    return sha256_json(identity)


def _scene_relpath(name: str, suffix: str) -> str:
    if not name or name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in name.split("/")):
        raise ValueError(f"invalid scene name {name!r} (use non-empty '/'-separated parts, no '.' or '..')")
    if name.endswith(".timestamps"):  # its token file would be the timestamps file of the scene without the suffix
        raise ValueError(f"invalid scene name {name!r}: its tokens would be written to {SCENES_DIR}/{name}.npy, the "
                         f"timestamps file of scene {name[:-len('.timestamps')]!r} (rename the folder or video)")
    return f"{SCENES_DIR}/{name}{suffix}"


def _npy_nbytes(shape: Sequence[int], dtype: str) -> int:
    """Size of the ``.npy`` file ``np.save`` writes for a C-contiguous array (header + data)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": tuple(shape)}
    import io

    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize


def _save_npy_atomic(path: Path, array: np.ndarray) -> int:
    with atomic_write(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array), allow_pickle=False)
    return path.stat().st_size


def validate_manifest(manifest: Any, path: Path | str) -> dict:
    """Check a manifest's structure; raise :class:`TokenStoreError` naming ``path`` when wrong."""
    if not isinstance(manifest, dict):
        raise TokenStoreError(f"{path}: not a token store manifest (top level is not an object)")
    if manifest.get("format") != FORMAT:
        raise TokenStoreError(f"{path}: not a token store manifest (format={manifest.get('format')!r}, "
                              f"expected {FORMAT!r})")
    if manifest.get("version") != VERSION:
        raise TokenStoreError(f"{path}: token store version {manifest.get('version')!r} is not supported "
                              f"(this vavam reads version {VERSION})")
    for key in ("grid", "scenes", "dtype"):
        if key not in manifest:
            raise TokenStoreError(f"{path}: manifest lacks the key {key!r}")
    if not isinstance(manifest["scenes"], dict):
        raise TokenStoreError(f"{path}: 'scenes' must be an object {{name: entry}}")
    for name, entry in manifest["scenes"].items():
        if not isinstance(entry, dict) or not {"num_frames", "file", "timestamps_file"} <= set(entry):
            raise TokenStoreError(f"{path}: scene {name!r} entry lacks num_frames/file/timestamps_file")
    return manifest


def read_manifest(path: str | Path) -> dict:
    """Read and validate a manifest file; unreadable or malformed -> :class:`TokenStoreError` naming it."""
    path = Path(path)
    try:
        data = read_json(path)
    except ValueError as exc:
        raise TokenStoreError(f"cannot read token store manifest: {exc}") from exc
    return validate_manifest(data, path)


# ------------------------------------------------------------------------------ reading


class TokenStore:
    """Read-only view of a token store through memory maps.

    Attributes:
        root: the store folder.
        manifest: the parsed ``manifest.json``.
        scenes: scene names, sorted.
        grid: ``(h, w)`` tokens per frame.
        image_size: ``(H, W)`` of the tokenized images (None when unknown).
        downsample, codebook_size, fps, tokenizer: from the manifest.
        max_open_scenes: memory maps kept open at once (least recently used dropped first): each holds a file
            descriptor, so a pass over a store of thousands of scenes must not keep one per scene.
    """

    max_open_scenes: int = 128

    def __init__(self, root: str | Path, manifest: str = MANIFEST) -> None:
        self.root = Path(root)
        path = self.root / manifest
        if not path.is_file():
            hint = " (shard parts exist: run merge_manifests / `vavam tokenize merge`)" if manifest_parts(root) else ""
            raise TokenStoreError(f"{path}: token store manifest is missing{hint}")
        self.manifest_path = path
        self.manifest = read_manifest(path)
        m = self.manifest
        self.grid: tuple[int, int] = (int(m["grid"][0]), int(m["grid"][1]))
        self.image_size: tuple[int, int] | None = tuple(m["image_size"]) if m.get("image_size") else None
        self.downsample: int | None = m.get("downsample")
        self.codebook_size: int | None = m.get("codebook_size")
        self.fps: float | None = m.get("fps")
        self.tokenizer: dict | None = m.get("tokenizer")
        self.tokenizer_hash: str | None = m.get("tokenizer_hash")
        self.scenes: list[str] = sorted(m["scenes"])
        self._tokens: OrderedDict[str, np.ndarray] = OrderedDict()
        self._timestamps: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.scenes)

    def __contains__(self, scene: object) -> bool:
        return scene in self.manifest["scenes"]

    def __repr__(self) -> str:
        return (f"TokenStore({str(self.root)!r}, scenes={len(self.scenes)}, frames={self.total_frames()}, "
                f"grid={self.grid[0]}x{self.grid[1]})")

    def entry(self, scene: str) -> dict:
        """The manifest entry of ``scene``."""
        try:
            return self.manifest["scenes"][scene]
        except KeyError:
            raise KeyError(f"{self.manifest_path}: no scene {scene!r} in this token store") from None

    def num_frames(self, scene: str) -> int:
        """Number of frames T of ``scene``."""
        return int(self.entry(scene)["num_frames"])

    def total_frames(self) -> int:
        """Frames over all scenes."""
        return sum(int(e["num_frames"]) for e in self.manifest["scenes"].values())

    def tokens(self, scene: str) -> np.ndarray:
        """Read-only memory map uint16 ``[T, h, w]`` of ``scene`` (cached per store object, the
        ``max_open_scenes`` most recently used; arrays handed out earlier stay valid)."""
        arr = self._tokens.get(scene)
        if arr is not None:
            self._tokens.move_to_end(scene)
        else:
            e = self.entry(scene)
            path = self.root / e["file"]
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except FileNotFoundError as exc:
                raise TokenStoreError(f"{path}: token file of scene {scene!r} is missing") from exc
            except (ValueError, OSError) as exc:
                raise TokenStoreError(f"{path}: cannot read token file of scene {scene!r} "
                                      f"(truncated or corrupt?): {exc}") from exc
            expected = (int(e["num_frames"]), *self.grid)
            if arr.dtype != np.uint16 or tuple(arr.shape) != expected:
                raise TokenStoreError(f"{path}: holds {arr.dtype} {tuple(arr.shape)}, manifest says uint16 {expected}")
            self._tokens[scene] = arr
            while len(self._tokens) > max(1, int(self.max_open_scenes)):
                self._tokens.popitem(last=False)
        return arr

    def release(self, scene: str) -> None:
        """Drop this object's cached memory map of ``scene`` (a pass over a whole split keeps none resident;
        arrays handed out earlier stay valid)."""
        self._tokens.pop(scene, None)

    def timestamps(self, scene: str) -> np.ndarray:
        """Frame timestamps int64 ``[T]`` in µs (non-decreasing)."""
        ts = self._timestamps.get(scene)
        if ts is None:
            e = self.entry(scene)
            path = self.root / e["timestamps_file"]
            try:
                ts = np.load(path, allow_pickle=False)
            except FileNotFoundError as exc:
                raise TokenStoreError(f"{path}: timestamps file of scene {scene!r} is missing") from exc
            except (ValueError, OSError) as exc:
                raise TokenStoreError(f"{path}: cannot read timestamps of scene {scene!r}: {exc}") from exc
            if ts.dtype != np.int64 or ts.shape != (int(e["num_frames"]),):
                raise TokenStoreError(f"{path}: holds {ts.dtype} {ts.shape}, expected int64 ({e['num_frames']},)")
            ts.setflags(write=False)
            self._timestamps[scene] = ts
        return ts

    def window(self, scene: str, start: int, num_frames: int, stride: int = 1) -> np.ndarray:
        """Frames ``start, start+stride, ..., start+(num_frames-1)*stride`` -> uint16 ``[num_frames, h, w]`` (a copy).

        Raises ``IndexError`` when the window does not fit in the scene.
        """
        if num_frames < 1 or stride < 1:
            raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
        arr = self.tokens(scene)
        last = start + (num_frames - 1) * stride
        if start < 0 or last >= arr.shape[0]:
            raise IndexError(f"scene {scene!r}: window start={start} num_frames={num_frames} stride={stride} "
                             f"needs frames {start}..{last}, scene has {arr.shape[0]}")
        return np.array(arr[start:last + 1:stride])

    def window_starts(self, scene: str, num_frames: int, stride: int = 1) -> range:
        """Every valid ``start`` of :meth:`window` for this scene (empty when the scene is too short)."""
        if num_frames < 1 or stride < 1:
            raise ValueError(f"num_frames and stride must be >= 1, got {num_frames}, {stride}")
        span = (num_frames - 1) * stride + 1
        return range(0, max(0, self.num_frames(scene) - span + 1))

    def scene_fps(self, scene: str) -> float | None:
        """The nominal frame rate of ``scene``: its own recorded rate, else the store's; None when neither is known."""
        fps = self.entry(scene).get("fps") or self.fps
        return float(fps) if fps else None

    def steady_window_starts(self, scene: str, num_frames: int, stride: int = 1) -> np.ndarray:
        """The starts of :meth:`window_starts` whose frames are evenly spaced in time -> int64 ``[K]`` (ascending).

        Each step of a window (``stride`` frames) must last ``stride`` frame intervals of the scene's nominal
        rate (:meth:`scene_fps`), give or take half an interval. A frame missing from the scene (one left out as
        bad when the store was prepared, a gap in a recording) stretches a step by a whole interval, and the
        windows holding that step are left out: training and evaluation would take the jump for motion. Frames
        picked from a video at a lower rate (first frame of each slot; OpenDV's 10 Hz from 24 / 25 / 30 fps)
        move each step by less than one source frame, which is under half an interval when the source runs at
        more than twice the rate (slower sources resampled this way lose windows). A scene whose rate is unknown
        (no rate recorded for it or for the store) cannot be checked: every window is kept.
        """
        starts = np.arange(len(self.window_starts(scene, num_frames, stride)), dtype=np.int64)
        fps = self.scene_fps(scene)
        if fps is None or num_frames < 2 or len(starts) == 0:
            return starts
        ts = self.timestamps(scene)
        interval = 1e6 / fps  # µs
        steps = ts[stride:] - ts[:-stride]  # int64 [T - stride]: duration of the step that starts at each frame
        uneven = np.abs(steps - stride * interval) > interval / 2  # bool [T - stride]
        ok = np.ones(len(starts), dtype=bool)
        for j in range(num_frames - 1):  # step j of the window at s runs from frame s + j*stride
            ok &= ~uneven[starts + j * stride]
        return starts[ok]

    def frame_index_at(self, scene: str, timestamps_us: int | Sequence[int] | np.ndarray,
                       tolerance_us: int | None = None) -> np.ndarray:
        """Index of the frame nearest to each timestamp (join ego poses to tokens by time).

        Args:
            scene: the scene.
            timestamps_us: int or int64 ``[N]`` in µs.
            tolerance_us: largest allowed |frame time - query|; default half the median frame interval.

        Returns:
            int64 ``[N]`` (or a 0-d array for a scalar query).

        Raises:
            ValueError: some query has no frame within the tolerance (names scene, query and nearest frame).
        """
        ts = self.timestamps(scene)
        q = np.asarray(timestamps_us, dtype=np.int64)
        if len(ts) == 0:
            raise ValueError(f"scene {scene!r} has no frames")
        if tolerance_us is None:
            tolerance_us = int(np.median(np.diff(ts)) // 2) if len(ts) > 1 else 0
        flat = q.reshape(-1)
        right = np.searchsorted(ts, flat, side="left").clip(0, len(ts) - 1)
        left = (right - 1).clip(0, len(ts) - 1)
        pick = np.where(np.abs(ts[left] - flat) <= np.abs(ts[right] - flat), left, right)
        err = np.abs(ts[pick] - flat)
        bad = np.nonzero(err > tolerance_us)[0]
        if bad.size:
            k = int(bad[0])
            raise ValueError(
                f"scene {scene!r}: no frame within {tolerance_us} µs of timestamp {int(flat[k])} µs "
                f"({bad.size} of {flat.size} queries unmatched; nearest frame {int(pick[k])} "
                f"at {int(ts[pick[k]])} µs, "
                f"scene spans {int(ts[0])}..{int(ts[-1])} µs)"
            )
        return pick.reshape(q.shape).astype(np.int64)


# ------------------------------------------------------------------------------ writing


class TokenStoreWriter:
    """Writes scenes into a store folder; each scene is recorded only after its arrays are complete.

    Args:
        root: store folder (created).
        grid: ``(h, w)``.
        image_size: ``(H, W)`` of the tokenized images (None when unknown, e.g. converted stores).
        downsample: tokenizer downsampling factor.
        codebook_size: number of codes (> 65,536 raises: tokens are uint16).
        tokenizer: identity dict of the tokenizer (config + weight hash), stored in the manifest.
        fps: nominal frame rate of the store (a dataset's known rate); ignored with ``fps_from_scenes``.
        shard: ``(i, N)`` to write the part ``manifest.part-i-of-N.json`` instead of ``manifest.json``.
        resume: keep the finished scenes of an existing manifest (else start the manifest afresh).
        fps_from_scenes: record as the store's ``fps`` the common rate of its scenes (:func:`common_fps`,
            updated with every scene written), not ``fps``.
        complete: with ``shard``, record in the part whether the shard has finished (``False`` until
            :meth:`finish`): a first merge refuses a part still marked unfinished (a shard killed, failed or still
            running), whose scenes would otherwise look like the shard's whole share. None records nothing.

    Raises:
        TokenStoreError: the existing manifest was made with another tokenizer/grid/image size.
    """

    def __init__(
        self,
        root: str | Path,
        grid: tuple[int, int],
        image_size: tuple[int, int] | None = None,
        downsample: int | None = None,
        codebook_size: int | None = None,
        tokenizer: Mapping[str, Any] | None = None,
        fps: float | None = None,
        shard: tuple[int, int] | None = None,
        resume: bool = True,
        fps_from_scenes: bool = False,
        complete: bool | None = None,
    ) -> None:
        check_codebook_size(codebook_size)
        self.fps_from_scenes = fps_from_scenes
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.shard = shard
        self.manifest_path = self.root / (part_manifest_name(*shard) if shard else MANIFEST)
        self.header: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "dtype": "uint16",
            "grid": [int(grid[0]), int(grid[1])],
            "image_size": [int(image_size[0]), int(image_size[1])] if image_size else None,
            "downsample": int(downsample) if downsample else None,
            "codebook_size": int(codebook_size) if codebook_size else None,
            "fps": None if fps_from_scenes else fps,
            "tokenizer": dict(tokenizer) if tokenizer is not None else None,
            "tokenizer_hash": identity_hash(tokenizer),
            "shard": list(shard) if shard else None,
        }
        if shard and complete is not None:
            self.header["complete"] = bool(complete)
        self.scenes: dict[str, dict] = {}
        #: finished scenes of the merged manifest.json (when writing a shard part), also skipped on resume
        self.merged_scenes: dict[str, dict] = {}
        if resume:
            if self.manifest_path.is_file():
                old = read_manifest(self.manifest_path)
                check_compatible(self.header, old, self.manifest_path)
                self.scenes = dict(old["scenes"])
            if shard and (self.root / MANIFEST).is_file():
                main = read_manifest(self.root / MANIFEST)
                check_compatible(self.header, main, self.root / MANIFEST)
                self.merged_scenes = dict(main["scenes"])
        self._update_fps()
        self._write_manifest()

    def _update_fps(self) -> None:
        if self.fps_from_scenes:
            self.header["fps"] = common_fps(e.get("fps") for e in self.scenes.values())

    # -------------------------------------------------------------- queries
    def is_done(self, name: str) -> bool:
        """True when ``name`` is recorded (here or in the merged manifest) and its files are complete."""
        entry = self.entry(name)
        return entry is not None and scene_files_ok(self.root, entry, tuple(self.header["grid"]))

    def entry(self, name: str) -> dict | None:
        """The recorded entry of scene ``name`` (this manifest's, else the merged manifest's), or None."""
        return self.scenes.get(name) or self.merged_scenes.get(name)

    def recorded_timestamps(self, name: str) -> np.ndarray | None:
        """The timestamps file of the recorded scene ``name`` (int64 µs), or None when unrecorded or unreadable."""
        entry = self.entry(name)
        try:
            return np.asarray(np.load(self.root / entry["timestamps_file"], allow_pickle=False), dtype=np.int64)
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def check_scene(
        self,
        name: str,
        fingerprint: str | None = None,
        frames_fingerprint: str | None = None,
        timestamps_us: np.ndarray | Sequence[int] | None = None,
    ) -> SceneCheck:
        """Compare the recorded scene ``name`` with its source (see :class:`SceneCheck`).

        ``fingerprint`` identifies the source's frames and timing, ``frames_fingerprint`` its frames alone
        (equal when only the timestamps / rate differ). An entry recorded without a frames fingerprint
        (older versions) is compared by its timestamps with ``timestamps_us`` when the source knows them.
        """
        entry = self.entry(name)
        if entry is None:
            return SceneCheck("absent")
        old, old_frames = entry.get("fingerprint"), entry.get("frames_fingerprint")
        if fingerprint is not None and old == fingerprint:
            return SceneCheck("current")
        if frames_fingerprint is not None and old_frames is not None:
            if old_frames == frames_fingerprint:
                return SceneCheck("retime", "same frames, other timestamps or rate")
            return SceneCheck("stale", "its frames changed since it was written (other image files, video or cut)")
        if timestamps_us is None:  # a video: known only by its fingerprint (same frames and timing fields)
            if old is not None and fingerprint is not None:
                return SceneCheck("stale", "its video changed since it was written (other file, size, rate or cut)")
            return SceneCheck("unverified")
        want = np.asarray(timestamps_us, dtype=np.int64).reshape(-1)
        have = self.recorded_timestamps(name)
        if have is None:
            return SceneCheck("stale", f"its timestamps file {entry.get('timestamps_file')} cannot be read")
        if have.shape != want.shape:
            return SceneCheck("stale", f"it holds {have.shape[0]} frames, the source has {want.shape[0]}")
        if not np.array_equal(have, want):
            k = int(np.flatnonzero(have != want)[0])
            return SceneCheck("stale", f"its timestamps differ from the source's from frame {k} ({int(have[k])} µs "
                                       f"stored, {int(want[k])} µs now) and it was written without a frames "
                                       "fingerprint, so its frames cannot be shown to be the same")
        return SceneCheck("unverified")

    def retime_scene(self, name: str, timestamps_us: np.ndarray | Sequence[int], fps: float | None,
                     **fields: Any) -> dict:
        """Rewrite the timestamps (atomically) and rate of the recorded scene ``name``; its tokens are kept.

        ``fields`` (e.g. new fingerprints) are set in its manifest entry too. Returns the new entry.
        """
        entry = self.entry(name)
        if entry is None:
            raise KeyError(f"{self.manifest_path}: no scene {name!r} to retime")
        ts = np.asarray(timestamps_us, dtype=np.int64).reshape(-1)
        if ts.shape[0] != int(entry["num_frames"]):
            raise ValueError(f"scene {name!r}: {ts.shape[0]} timestamps for its {entry['num_frames']} stored frames")
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            raise ValueError(f"scene {name!r}: timestamps are not non-decreasing")
        _save_npy_atomic(self.root / entry["timestamps_file"], ts)
        self.scenes[name] = {**entry, "fps": fps, "first_timestamp_us": int(ts[0]) if ts.size else None,
                             "last_timestamp_us": int(ts[-1]) if ts.size else None, **fields}
        self._update_fps()
        self._write_manifest()
        return self.scenes[name]

    def update_scene(self, name: str, write: bool = True, **fields: Any) -> None:
        """Set manifest fields of the recorded scene ``name`` (e.g. a corrected ``fps``); its files are unchanged.

        ``write=False`` leaves the manifest on disk as it is until the next write (:meth:`flush`, or any scene
        written): a pass updating many scenes then writes it once, not once per scene.
        """
        entry = self.entry(name)
        if entry is None:
            raise KeyError(f"{self.manifest_path}: no scene {name!r} to update")
        self.scenes[name] = {**entry, **fields}
        if write:
            self.flush()

    def flush(self) -> None:
        """Write the manifest (store rate recomputed) as the writer holds it."""
        self._update_fps()
        self._write_manifest()

    def finish(self) -> None:
        """Record that this shard has finished its share (``complete`` of a part made with ``complete=False``)
        and write the manifest."""
        if "complete" in self.header:
            self.header["complete"] = True
        self.flush()

    def discard_scene(self, name: str) -> None:
        """Unrecord scene ``name`` and delete its files (a stale scene about to be redone).

        Deleting the files also drops the scene from a merged ``manifest.json`` at the next merge, so a
        redo that fails leaves no out-of-date scene behind.
        """
        entry = self.scenes.pop(name, None) or self.merged_scenes.pop(name, None)
        self.merged_scenes.pop(name, None)
        self._update_fps()
        self._write_manifest()
        for key in ("file", "timestamps_file"):
            rel = (entry or {}).get(key) or _scene_relpath(name, ".npy" if key == "file" else ".timestamps.npy")
            try:
                (self.root / rel).unlink()
            except FileNotFoundError:
                pass

    def manifest(self) -> dict:
        """The manifest as it is on disk."""
        return {**self.header, "scenes": {k: self.scenes[k] for k in sorted(self.scenes)}}

    # -------------------------------------------------------------- writing
    def write_scene(self, name: str, tokens: np.ndarray, timestamps_us: Sequence[int] | np.ndarray,
                    source: str | None = None, fps: float | None = None, **extra: Any) -> dict:
        """Write one scene: tokens integer ``[T, h, w]`` (< 65,536), timestamps int ``[T]`` µs (non-decreasing).

        The arrays are written atomically, then the manifest (atomically) records the scene.
        Returns the manifest entry.
        """
        h, w = self.header["grid"]
        tokens = np.asarray(tokens)
        if tokens.ndim != 3 or tuple(tokens.shape[1:]) != (h, w):
            raise ValueError(f"scene {name!r}: tokens of shape {tuple(tokens.shape)}, store grid is [T,{h},{w}]")
        if tokens.dtype.kind not in "iu":  # float ids would be truncated (NaN cast to an arbitrary id)
            raise ValueError(f"scene {name!r}: token ids must be integers, got dtype {tokens.dtype}")
        if tokens.dtype != np.uint16:
            if tokens.size and (tokens.min() < 0 or tokens.max() >= UINT16_CODES):
                raise ValueError(f"scene {name!r}: token ids outside [0, 65535] cannot be stored as uint16 "
                                 f"(min {tokens.min()}, max {tokens.max()})")
            tokens = tokens.astype(np.uint16)
        codes = self.header.get("codebook_size")
        if codes and tokens.size and int(tokens.max()) >= int(codes):
            raise ValueError(f"scene {name!r}: token id {int(tokens.max())} is outside the store's codebook of "
                             f"{codes} codes (ids 0..{int(codes) - 1})")
        raw_ts = np.asarray(timestamps_us)
        if raw_ts.dtype.kind not in "iu" and raw_ts.size and not np.all(raw_ts == np.round(raw_ts)):
            raise ValueError(f"scene {name!r}: timestamps must be whole microseconds (int64 µs), got "
                             f"{raw_ts.reshape(-1)[:3].tolist()}... (seconds given?)")
        ts = raw_ts.astype(np.int64).reshape(-1)
        if ts.shape[0] != tokens.shape[0]:
            raise ValueError(f"scene {name!r}: {ts.shape[0]} timestamps for {tokens.shape[0]} frames")
        if ts.size > 1 and np.any(np.diff(ts) < 0):
            raise ValueError(f"scene {name!r}: timestamps are not non-decreasing")
        file = _scene_relpath(name, ".npy")
        ts_file = _scene_relpath(name, ".timestamps.npy")
        # Unrecord first: a rewrite of a finished scene must not leave the old entry pointing at new files.
        if name in self.scenes:
            del self.scenes[name]
            self._update_fps()
            self._write_manifest()
        _save_npy_atomic(self.root / ts_file, ts)
        nbytes = _save_npy_atomic(self.root / file, tokens)
        entry = {
            "name": name,
            "num_frames": int(tokens.shape[0]),
            "file": file,
            "timestamps_file": ts_file,
            "bytes": int(nbytes),
            "source": source,
            "fps": fps,
            "first_timestamp_us": int(ts[0]) if ts.size else None,
            "last_timestamp_us": int(ts[-1]) if ts.size else None,
            **extra,
        }
        self.scenes[name] = entry
        self._update_fps()
        self._write_manifest()
        return entry

    def remove_stale_temporaries(self, name: str) -> None:
        """Delete temporary files a killed writer left for scene ``name`` (only this scene's)."""
        for suffix in (".npy", ".timestamps.npy"):
            path = self.root / _scene_relpath(name, suffix)
            if path.parent.is_dir():
                for tmp in path.parent.glob(f".{path.name}.*.tmp"):
                    try:
                        tmp.unlink()
                    except FileNotFoundError:
                        pass

    def _write_manifest(self) -> None:
        atomic_write_json(self.manifest_path, self.manifest())


def scene_files_ok(root: Path, entry: Mapping[str, Any], grid: tuple[int, int]) -> bool:
    """A recorded scene's files exist with the sizes the manifest implies (cheap check, no reading)."""
    try:
        tok = root / entry["file"]
        ts = root / entry["timestamps_file"]
        t = int(entry["num_frames"])
        expected = _npy_nbytes((t, *grid), "uint16")
        if entry.get("bytes") is not None and int(entry["bytes"]) != expected:
            return False
        return tok.stat().st_size == expected and ts.stat().st_size == _npy_nbytes((t,), "int64")
    except (OSError, KeyError, TypeError, ValueError):
        return False


def check_compatible(header: Mapping[str, Any], other: Mapping[str, Any], where: Path | str) -> None:
    """Raise :class:`TokenStoreError` when ``other`` (a manifest) disagrees with ``header`` on a header key."""
    for key in HEADER_KEYS:
        a, b = header.get(key), other.get(key)
        if key == "tokenizer_hash" and (a is None or b is None):
            continue
        if key in ("image_size", "downsample", "codebook_size") and (a is None or b is None):
            continue
        if a != b:
            raise TokenStoreError(
                f"{where}: existing store has {key}={b!r} but this run has {key}={a!r} "
                "(a store holds tokens of one tokenizer at one size; write to a new folder)"
            )


def merge_manifests(root: Path, remove_parts: bool = False, allow_missing: bool = False) -> Path:
    """Merge the shard parts ``manifest.part-*-of-*.json`` of a store into its ``manifest.json``.

    Scenes of the existing ``manifest.json`` are kept; every part must agree on tokenizer, grid and
    image size; a scene recorded by two parts with different files or frame counts raises; a recorded
    scene whose files are incomplete is dropped (it will be redone). Parts of runs with different
    shard counts merge too (an interrupted run re-launched with another number of processes).
    Idempotent. The first merge of a store (no ``manifest.json`` yet) refuses a shard count whose shards did not
    all leave a part (or, for a shard with no scene, an empty marker), or left a part marked unfinished (a shard
    killed, failed or still running), unless ``allow_missing``: a merge of what is there would look complete.

    Args:
        root: the store folder.
        remove_parts: delete the part files (and empty markers) after a successful merge.
        allow_missing: merge the parts there are even when some shards left none or did not finish.

    Returns:
        Path of the written ``manifest.json``.
    """
    root = Path(root)
    parts = manifest_parts(root)
    main_path = root / MANIFEST
    # checked for a first merge (a store with a manifest.json already holds the shards merged before: re-running
    # one of them and merging it alone is the way to redo its scenes)
    first = not main_path.is_file()
    missing = missing_shards(root) if first else []
    if missing and not allow_missing:
        names = ", ".join(f"{i}/{n}" for i, n in missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise TokenStoreError(f"{root}: {len(missing)} shard(s) left no manifest part ({names}): run them (or wait "
                              "for them) before merging, or merge what is there with --allow-missing")
    sources: list[tuple[Path, dict]] = []
    if main_path.is_file():
        sources.append((main_path, read_manifest(main_path)))
    sources += [(p, read_manifest(p)) for p in parts]
    unfinished = unfinished_shards(sources) if first else []
    if unfinished and not allow_missing:
        names = ", ".join(f"{root / part_manifest_name(i, n)}" for i, n in unfinished[:4]) + (
            " ..." if len(unfinished) > 4 else "")
        raise TokenStoreError(f"{root}: {len(unfinished)} shard(s) did not finish "
                              f"({', '.join(f'{i}/{n}' for i, n in unfinished[:8])}; their parts are marked "
                              f"unfinished: {names}): the shard was killed, failed or is still running. Re-run "
                              "them (finished scenes are kept) before merging, or merge what is there with "
                              "--allow-missing")
    if not sources:
        raise TokenStoreError(f"{root}: no manifest.json nor manifest parts to merge")
    header = {k: v for k, v in sources[0][1].items() if k != "scenes"}
    scenes: dict[str, dict] = {}
    origin: dict[str, Path] = {}
    for path, m in sources:
        check_compatible(header, m, path)
        for key in ("image_size", "downsample", "codebook_size", "tokenizer", "tokenizer_hash", "fps"):
            if header.get(key) is None and m.get(key) is not None:
                header[key] = m[key]
        for name, entry in m["scenes"].items():
            if not scene_files_ok(root, entry, tuple(header["grid"])):
                continue
            key = (entry["file"], entry["num_frames"])
            if name in scenes and (scenes[name]["file"], scenes[name]["num_frames"]) != key:
                raise TokenStoreError(f"{path}: scene {name!r} is also recorded by {origin[name]} with other content")
            scenes[name] = entry
            origin[name] = path
    # Store rate: the one every manifest that contributed a merged scene records (a nominal rate, or its
    # scenes' common rate), else the merged scenes' common rate (null when unknown or they differ).
    rates = {m.get("fps") for path, m in sources if path in set(origin.values())}
    if len(rates) == 1 and None not in rates:
        header["fps"] = rates.pop()
    elif scenes:
        header["fps"] = common_fps(e.get("fps") for e in scenes.values())
    header["shard"] = None
    header.pop("complete", None)
    atomic_write_json(main_path, {**header, "scenes": {k: scenes[k] for k in sorted(scenes)}})
    if remove_parts:
        for p in manifest_parts(root, markers=True):
            os.unlink(p)
    return main_path


def stride_step_warning(store: TokenStore, stride: int, flag: str = "--stride") -> str | None:
    """Why ``stride`` frames of ``store`` are not VaViM's 0.5 s step (2 Hz, as every released model was trained),
    or None when they are (within 10 %) or the store records no single rate: e.g. ``--stride 1`` on 10 Hz tokens
    gives 0.1 s steps, ``--stride 5`` on nuScenes' 2 Hz keyframes 2.5 s."""
    from vavam.types import WAYPOINT_DT

    if not store.fps:
        return None
    fps = float(store.fps)
    step = stride / fps
    if abs(step - WAYPOINT_DT) <= 0.1 * WAYPOINT_DT:
        return None
    fit = max(1, round(WAYPOINT_DT * fps))  # the stride that would give 0.5 s, if one does
    hint = f"; {flag} {fit} gives it" if abs(fit / fps - WAYPOINT_DT) <= 0.1 * WAYPOINT_DT else ""
    return (f"{store.root}: {flag} {stride} at {fps:g} fps steps {step:g} s between window frames, not VaViM's "
            f"{WAYPOINT_DT:g} s (2 Hz){hint}")


def write_synthetic_store(root: str | Path, num_scenes: int, num_frames: int, grid: tuple[int, int] = (18, 32),
                          codebook_size: int = 16384, fps: float = 10.0, seed: int = 0) -> TokenStore:
    """A store of random tokens (tests, benchmarks): ``num_scenes`` scenes ``scene_{k:04d}`` of ``num_frames``."""
    rng = np.random.default_rng(seed)
    writer = TokenStoreWriter(root, grid, image_size=None, codebook_size=codebook_size,
                              tokenizer={"name": "synthetic", "seed": seed}, fps=fps, resume=False)
    for k in range(num_scenes):
        toks = rng.integers(0, codebook_size, size=(num_frames, *grid), dtype=np.uint16)
        ts = (np.arange(num_frames) * (1e6 / fps)).round().astype(np.int64)
        writer.write_scene(f"scene_{k:04d}", toks, ts, source="synthetic", fps=fps)
    return TokenStore(root)


def iter_scene_entries(manifest: Mapping[str, Any]) -> Iterable[tuple[str, dict]]:
    """``(name, entry)`` of a manifest's scenes, sorted by name."""
    return sorted(manifest["scenes"].items())


__all__ = [
    "FORMAT",
    "VERSION",
    "MANIFEST",
    "TokenStore",
    "TokenStoreWriter",
    "TokenStoreError",
    "SceneCheck",
    "check_codebook_size",
    "common_fps",
    "stride_step_warning",
    "identity_hash",
    "manifest_parts",
    "merge_manifests",
    "part_manifest_name",
    "read_manifest",
    "scene_files_ok",
    "unfinished_shards",
    "write_synthetic_store",
]
