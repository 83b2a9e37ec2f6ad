"""Read front-camera frames from image folders and video files, resized and normalised for a tokenizer.

A *frame source* is one scene/video: either a folder of images (``.jpg``/``.jpeg``/``.png``, in
natural sort order, so ``f_2`` comes before ``f_10``) or one video file (``.mp4``, ``.webm``, ...,
decoded with PyAV; no ffmpeg binary needed). Each frame comes with a timestamp in microseconds:

* image folder: from a sidecar ``timestamps.json`` (a list of µs, one per sorted frame, or a dict
  ``{file name: µs}``) or ``timestamps.txt`` (one ``µs`` or ``name µs`` / ``name,µs`` per line);
  else from the trailing ``__<digits>`` of nuScenes-style names (``..__CAM_FRONT__1535385095912404.jpg``);
  else ``index * 1e6 / fps`` (with no ``fps`` given, ``index * 1e5`` as a placeholder: the rate is unknown);
* video: from each decoded frame's presentation timestamp (``pts * time_base``).

``FrameSource.timestamps_from`` says which (``given`` / ``sidecar`` / ``names``: real timestamps;
``index``: ``index / fps`` with an ``fps`` given; ``stand-in``: the ``index * 1e5`` placeholders; ``pts``),
:meth:`FrameSource.known_fps` the scene's true frame rate when it can be known before decoding (from
real timestamps, a resampling rate or an ``fps`` given for index timestamps; None otherwise), and
:meth:`FrameSource.fingerprint` / :meth:`FrameSource.frames_fingerprint` identify the scene's frames with
and without their timing (a token store redoes a scene whose frames changed, and only rewrites the
timestamps of one whose timing alone changed).

Preprocessing (reference §1.2): RGB uint8 -> antialiased bilinear resize -> float in [-1, 1],
``[3, H, W]``. The target size is either explicit (``size=(H, W)``) or the per-dataset divisor rule
``(int(H / div), int(W / div))`` (OpenDV 1.0, nuPlan 3.75, nuScenes 3.125). The resize is
``torch.nn.functional.interpolate(..., mode="bilinear", antialias=True)`` on the uint8 values, rounded
back to integers as torchvision's resize of a uint8 image does, then normalised with the reference's float32
ops (``x * (1 / 255)``, then ``2 * x - 1``: bit-identical to its ``to_dtype(scale=True)`` + ``2x - 1``).

Every decoding or size problem raises :class:`FrameError` naming the file (and the frame index
for videos) and what is wrong.
"""

from __future__ import annotations

import glob as _glob
import json
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from vavam.io import sha256_json
from vavam.types import uint8_to_unit

IMAGE_EXTS: tuple[str, ...] = (".jpg", ".jpeg", ".png")
VIDEO_EXTS: tuple[str, ...] = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
TIMESTAMP_SIDECARS: tuple[str, ...] = ("timestamps.json", "timestamps.txt")

#: Per-dataset divisor applied to both sides of the source frame (reference §1.2).
DATASET_DIVISORS: dict[str, float] = {"opendv": 1.0, "nuplan": 3.75, "nuscenes": 3.125}

_NUSCENES_TS = re.compile(r"__(\d{10,})$")
_NATURAL = re.compile(r"(\d+)")


class FrameError(ValueError):
    """A frame cannot be read or has the wrong size; the message names the file (and frame)."""


def check_fps(fps: float | None, name: str = "fps") -> None:
    """A frame rate is None (no resampling / unknown) or a positive finite number; else :class:`FrameError`
    naming ``name`` (``--fps`` on a command line): 0 used to mean every frame and a negative rate failed late."""
    if fps is None:
        return
    try:
        good = not isinstance(fps, bool) and math.isfinite(float(fps)) and float(fps) > 0
    except (TypeError, ValueError):
        good = False
    if not good:
        raise FrameError(f"{name} must be a positive frame rate in frames per second (or None: keep every video "
                         f"frame / rate unknown), got {fps!r}")


def natural_key(name: str) -> list:
    """Sort key that orders embedded numbers numerically (``f_2`` < ``f_10``)."""
    return [int(part) if part.isdigit() else part for part in _NATURAL.split(name)]


#: resampling a video to ``fps``: a frame up to this fraction of a slot before a slot's start counts as that slot's
#: (timestamps jitter by a few ms: a 10 fps video resampled to 10 fps lost every frame stamped early)
SLOT_TOLERANCE = 0.05
#: a video whose own rate is below the resampling rate by more than this (relative) keeps its own rate
_RATE_REL_TOL = 0.02

#: an interval longer than this many median intervals is a gap (a missing frame), not jitter
_GAP_FACTOR = 1.75
#: relative gap between the median interval and the mean of the intervals that are not gaps past which the mean wins
_JITTER_REL = 0.05


def rate_from_timestamps(timestamps_us: Sequence[int] | np.ndarray) -> float | None:
    """Frame rate (Hz, 3 decimals) of µs timestamps; None for < 2 frames or no interval.

    The interval is the median interval, robust to missing frames (gaps). Frames picked from a video at
    a rate that is no multiple of the target (the first frame of each 0.1 s slot of a 24 / 25 fps video)
    alternate between a long and a short interval (125 / 83 ms, 120 / 80 ms), whose median is one of
    them, not the 100 ms between frames: when the mean of the intervals that are not gaps (at most
    ``_GAP_FACTOR`` median intervals) differs from the median by more than ``_JITTER_REL``, it is the interval.
    """
    ts = np.asarray(timestamps_us, dtype=np.int64).reshape(-1)
    if ts.size < 2:
        return None
    dt = np.diff(ts)
    step = float(np.median(dt))
    if step <= 0:
        return None
    regular = dt[(dt > 0) & (dt <= _GAP_FACTOR * step)]
    mean = float(regular.mean())
    if abs(mean - step) > _JITTER_REL * step:
        step = mean
    return round(1e6 / step, 3)


# ------------------------------------------------------------------------------ resize + normalise


def resized_shape(height: int, width: int, divisor: float) -> tuple[int, int]:
    """Divisor rule of the reference: ``(int(height / divisor), int(width / divisor))`` (truncation)."""
    if divisor <= 0:
        raise ValueError(f"divisor must be > 0, got {divisor}")
    return int(height / divisor), int(width / divisor)


def preprocess_frame(
    image: np.ndarray,
    size: tuple[int, int] | None = None,
    divisor: float | None = None,
    expected: tuple[int, int] | None = None,
    where: str = "<frame>",
) -> torch.Tensor:
    """RGB uint8 ``[H0, W0, 3]`` -> float ``[3, H, W]`` in [-1, 1].

    Args:
        image: the decoded frame.
        size: explicit output ``(H, W)``; wins over ``divisor``.
        divisor: divisor rule (``int(H0/div), int(W0/div)``); ``None`` and no ``size`` = keep the size.
        expected: the size the output must have (e.g. the store's image size); a mismatch raises.
        where: names the frame in error messages (file, frame index).

    Raises:
        FrameError: not an ``[H, W, 3]`` uint8 array, or the output size differs from ``expected``.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise FrameError(f"{where}: expected an RGB uint8 image [H,W,3], got {image.dtype} {tuple(image.shape)}")
    h0, w0 = image.shape[:2]
    if size is not None:
        out = (int(size[0]), int(size[1]))
    elif divisor is not None:
        out = resized_shape(h0, w0, divisor)
    else:
        out = (h0, w0)
    if expected is not None and tuple(out) != tuple(expected):
        rule = f"explicit size {out[0]}x{out[1]}" if size is not None else (
            f"divisor {divisor} gives {out[1]}x{out[0]} (WxH)" if divisor is not None else "no resize"
        )
        raise FrameError(
            f"{where}: wrong frame size: source is {w0}x{h0} (WxH), {rule}, "
            f"but this store/scene needs {expected[1]}x{expected[0]} (WxH)"
        )
    if min(out) < 1:
        raise FrameError(f"{where}: source {w0}x{h0} (WxH) resizes to an empty image {out[1]}x{out[0]}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, order="C")
    x = torch.from_numpy(image).permute(2, 0, 1)
    if out != (h0, w0):
        xf = F.interpolate(x[None].float(), size=out, mode="bilinear", antialias=True, align_corners=False)[0]
        x = xf.round_().clamp_(0, 255)
    return uint8_to_unit(x)  # the reference's float32 ops (to_dtype(float32, scale=True), then 2x - 1)


# ------------------------------------------------------------------------------ decoding


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """PIL's errors while reading ``path`` -> :class:`FrameError` naming it."""
    from PIL import UnidentifiedImageError

    try:
        yield
    except FileNotFoundError as exc:
        raise FrameError(f"{path}: image file is missing") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise FrameError(f"{path}: cannot decode image (truncated or corrupt?): {exc}") from exc


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file -> RGB uint8 ``[H, W, 3]``. Truncated/corrupt files raise :class:`FrameError`."""
    from PIL import Image

    path = Path(path)
    with _decoding(path), Image.open(path) as im:
        im.load()
        rgb = im.convert("RGB")
    return np.asarray(rgb, dtype=np.uint8)


def check_image(path: str | Path) -> None:
    """Cheaply check that an image file is whole, without decoding it fully: a PNG's chunks and their checksums
    up to its end (PIL's ``verify``, no inflating), a JPEG decoded at 1/8 scale (which still reads and
    entropy-decodes all its data), other formats decoded. A truncated or corrupt file raises :class:`FrameError`."""
    from PIL import Image

    path = Path(path)
    with _decoding(path), Image.open(path) as im:
        if im.format == "PNG":
            im.verify()
        else:
            if im.format in ("JPEG", "MPO"):
                im.draft("RGB", (1, 1))
            im.load()


@dataclass
class Frame:
    """One preprocessed frame: ``image`` float ``[3, H, W]`` in [-1, 1]."""

    index: int
    timestamp_us: int
    image: torch.Tensor
    name: str = ""


@dataclass
class FrameSource:
    """One scene: an image folder (``files``) or a video file (``path``).

    Build with :meth:`from_image_folder`, :meth:`from_files`, :meth:`from_video` or :func:`discover_sources`.
    """

    name: str
    path: Path
    kind: str  # "images" | "video"
    files: tuple[Path, ...] = ()
    timestamps_us: np.ndarray | None = None  # known up front for image folders
    fps: float | None = None  # video: resample to this rate (None = every frame); images: nominal rate (None: unknown)
    num_frames_hint: int | None = None
    extra: dict = field(default_factory=dict)
    timestamps_from: str = ""  # "given" | "sidecar" | "names" | "index" (index / fps) | "stand-in" | "pts" (video)

    #: :meth:`fingerprint_fields` keys that are the frames' timing (left out of :meth:`frames_fingerprint`)
    TIMING_FIELDS = ("timestamps_us", "timing")

    # -------------------------------------------------------------- identity
    def known_fps(self) -> float | None:
        """The scene's true frame rate when it is known before decoding, else None.

        Images with real timestamps (given, sidecar, names): measured from them (their median
        interval; ``fps`` for a single frame); images with index timestamps: the ``fps`` they were
        made with, None when none was given (the rate cannot be known). Videos: the resampling rate,
        None when every frame is kept or the video's own rate (``extra["source_fps"]``) is below the resampling
        rate (resampling keeps one frame per slot and never repeats one, so such a video keeps its own rate:
        measure it from the decoded timestamps).
        """
        real = self.timestamps_from not in ("index", "stand-in")
        if self.kind == "images" and real and self.timestamps_us is not None:
            return rate_from_timestamps(self.timestamps_us) or self.fps
        own = self.extra.get("source_fps") if self.kind != "images" else None
        if self.fps and own and float(own) < self.fps * (1 - _RATE_REL_TOL):
            return None
        return self.fps

    def timing(self) -> str:
        """Where an image scene's timestamps come from: ``real`` (given, sidecar or names), ``index / <fps> fps``
        (an ``fps`` given for unstamped frames) or ``stand-in`` (placeholders, rate unknown); ``pts`` for videos."""
        if self.kind != "images":
            return "pts"
        if self.timestamps_from == "stand-in":
            return "stand-in"
        if self.timestamps_from == "index":
            return f"index / {self.fps:g} fps"
        return "real"

    def fingerprint_fields(self) -> dict:
        """What makes this scene's frames (see :meth:`fingerprint`); subclasses add their own fields.

        Images: the files and their timing (:data:`TIMING_FIELDS`: the timestamps and :meth:`timing`, so
        timestamps given by ``fps`` and identical stand-ins differ); videos: file, size and resampling rate.
        """
        if self.kind == "images":
            ts = [] if self.timestamps_us is None else [int(t) for t in self.timestamps_us]
            prefix = str(self.path) + os.sep
            files = [str(f)[len(prefix):] if str(f).startswith(prefix) else os.path.relpath(f, self.path)
                     for f in self.files]
            return {"kind": "images", "files": [f.replace(os.sep, "/") for f in files], "timestamps_us": ts,
                    "timing": self.timing()}
        try:
            size = self.path.stat().st_size
        except OSError:
            size = None
        return {"kind": self.kind, "file": self.path.name, "bytes": size, "fps": self.fps}

    def fingerprint(self) -> str:
        """sha256 of the scene's frames and their timing (image files + timestamps and where they come from;
        video file, size, rate and cut).

        Stored with the scene in a token store, so a resumed run redoes a scene whose frames changed.
        """
        return self.fingerprints()[0]

    def frames_fingerprint(self) -> str:
        """sha256 of the scene's frames without their timing (:data:`TIMING_FIELDS`): equal for two runs that
        differ only in timestamps or rate (the tokens are the same; only the timestamps need rewriting)."""
        return self.fingerprints()[1]

    def fingerprints(self) -> tuple[str, str]:
        """``(fingerprint, frames_fingerprint)`` from one reading of :meth:`fingerprint_fields`."""
        fields = self.fingerprint_fields()
        return sha256_json(fields), sha256_json({k: v for k, v in fields.items() if k not in self.TIMING_FIELDS})

    # -------------------------------------------------------------- constructors
    @classmethod
    def from_files(
        cls,
        name: str,
        files: Sequence[str | Path],
        timestamps_us: Sequence[int] | None = None,
        fps: float | None = 10.0,
        timestamps_from: str = "given",
    ) -> "FrameSource":
        """A scene from an explicit, already ordered list of image files (e.g. one nuScenes scene).

        Without ``timestamps_us``: from nuScenes-style names, else ``index / fps`` (``fps`` None: the
        rate is unknown, ``index * 1e5`` placeholders labelled ``stand-in``). ``timestamps_from`` labels
        given timestamps.
        """
        check_fps(fps)
        files = tuple(Path(f) for f in files)
        if not files:
            raise FrameError(f"scene {name!r}: no image files given")
        if timestamps_us is None:
            ts = _timestamps_from_names(files)
            timestamps_from = "names"
            if ts is None:
                ts = (np.arange(len(files), dtype=np.float64) * 1e6 / (fps or 10.0)).round().astype(np.int64)
                timestamps_from = "index" if fps else "stand-in"
        else:
            ts = np.asarray(timestamps_us, dtype=np.int64)
            if ts.shape != (len(files),):
                raise FrameError(f"scene {name!r}: {len(ts)} timestamps for {len(files)} files")
        _check_frame_order(name, files, ts, timestamps_from)
        parent = files[0].parent
        return cls(name=name, path=parent, kind="images", files=files, timestamps_us=ts, fps=fps,
                   num_frames_hint=len(files), timestamps_from=timestamps_from)

    @classmethod
    def from_image_folder(
        cls, folder: str | Path, name: str | None = None, fps: float | None = 10.0
    ) -> "FrameSource":
        """All ``.jpg``/``.jpeg``/``.png`` of ``folder`` (natural sort); timestamps as in the module doc."""
        check_fps(fps)
        folder = Path(folder)
        if not folder.is_dir():
            raise FrameError(f"{folder}: not a folder")
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file()),
                       key=lambda p: natural_key(p.name))
        if not files:
            raise FrameError(f"{folder}: no {'/'.join(IMAGE_EXTS)} images in this folder")
        ts = _read_sidecar(folder, files)
        source = cls.from_files(name or folder.name, files, timestamps_us=ts, fps=fps, timestamps_from="sidecar")
        source.path = folder
        return source

    @classmethod
    def from_video(cls, path: str | Path, name: str | None = None, fps: float | None = None) -> "FrameSource":
        """A video file; ``fps`` resamples to that rate (first frame reaching each 1/fps slot, up to
        :data:`SLOT_TOLERANCE` of a slot early), None keeps all. A video slower than ``fps`` keeps its own frames
        (none is repeated), so its rate is its own (:meth:`known_fps`)."""
        check_fps(fps)
        path = Path(path)
        if not path.is_file():
            raise FrameError(f"{path}: video file is missing")
        hint = None
        extra: dict = {}
        try:
            import av

            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                hint = int(stream.frames) or None
                if stream.average_rate:
                    extra["source_fps"] = float(stream.average_rate)
                if fps and hint and stream.average_rate:  # the slots 0 .. (n - 1) / rate · fps, as _video_frames
                    hint = min(hint, int(np.floor((hint - 1) * fps / float(stream.average_rate) + SLOT_TOLERANCE)) + 1)
        except Exception as exc:  # noqa: BLE001 - reported when the scene is decoded; never hide it
            raise FrameError(f"{path}: cannot open video (truncated or corrupt?): {exc}") from exc
        return cls(name=name or path.stem, path=path, kind="video", fps=fps, num_frames_hint=hint,
                   timestamps_from="pts", extra=extra)

    # -------------------------------------------------------------- reading
    def frames(
        self,
        size: tuple[int, int] | None = None,
        divisor: float | None = None,
        expected: tuple[int, int] | None = None,
        num_workers: int = 0,
    ) -> Iterator[Frame]:
        """Decoded, resized, normalised frames in order. Sizes as in :func:`preprocess_frame`.

        When ``expected`` is None the first frame's output size becomes the expected one for the rest.
        """
        if self.kind == "images":
            yield from self._image_frames(size, divisor, expected, num_workers)
        elif self.kind == "video":
            yield from self._video_frames(size, divisor, expected)
        else:
            raise ValueError(f"unknown frame source kind {self.kind!r}")

    def _image_frames(self, size, divisor, expected, num_workers) -> Iterator[Frame]:
        assert self.timestamps_us is not None

        def load(i: int) -> torch.Tensor:
            path = self.files[i]
            return preprocess_frame(read_image(path), size, divisor, expected, where=f"{path} (frame {i})")

        n = len(self.files)
        if expected is None and n:
            first = load(0)
            expected = tuple(first.shape[1:])
            yield Frame(0, int(self.timestamps_us[0]), first, self.files[0].name)
            start = 1
        else:
            start = 0
        if num_workers > 0:
            with ThreadPoolExecutor(num_workers) as pool:
                chunk = max(4 * num_workers, 8)
                for lo in range(start, n, chunk):
                    idx = range(lo, min(n, lo + chunk))
                    for i, img in zip(idx, pool.map(load, idx)):
                        yield Frame(i, int(self.timestamps_us[i]), img, self.files[i].name)
        else:
            for i in range(start, n):
                yield Frame(i, int(self.timestamps_us[i]), load(i), self.files[i].name)

    def _video_frames(self, size, divisor, expected) -> Iterator[Frame]:
        import av

        path = self.path
        try:
            container = av.open(str(path))
        except Exception as exc:  # noqa: BLE001
            raise FrameError(f"{path}: cannot open video (truncated or corrupt?): {exc}") from exc
        decoded = 0
        kept = 0
        last_slot = -1
        t0: int | None = None
        last_ts: int | None = None  # latest timestamp decoded so far
        try:
            if not container.streams.video:
                raise FrameError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            declared = int(stream.frames or 0)
            time_base = stream.time_base or Fraction(1, 1)
            rate = float(stream.average_rate) if stream.average_rate else None
            it = container.decode(stream)
            while True:
                try:
                    frame = next(it)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - av.error.* and friends
                    raise FrameError(f"{path} (frame {decoded}): cannot decode video frame "
                                     f"(truncated or corrupt?): {exc}") from exc
                if frame.pts is not None:
                    ts = int(round(float(frame.pts * time_base) * 1e6))
                else:
                    ts = int(round(decoded * 1e6 / (rate or 10.0)))
                i = decoded
                decoded += 1
                # Time going back: every frame is kept (the store refused the scene only once encoded, naming no
                # file), or more than one slot back when resampling (a restarted / concatenated stream: every frame
                # after it was dropped as belonging to a past slot, silently cutting the video)
                back = last_ts is not None and ts < last_ts - (1e6 / self.fps if self.fps else 0)
                if back:
                    raise FrameError(f"{path} (frame {i}): timestamp {ts} µs is before the previous frame's "
                                     f"{last_ts} µs: the video's timestamps go back (broken or concatenated video?)")
                last_ts = ts if last_ts is None else max(last_ts, ts)
                if self.fps:
                    if t0 is None:
                        t0 = ts
                    # first frame at/after each slot (up to SLOT_TOLERANCE of a slot early: timestamp jitter)
                    slot = int(np.floor((ts - t0) * self.fps / 1e6 + SLOT_TOLERANCE))
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                image = preprocess_frame(frame.to_ndarray(format="rgb24"), size, divisor, expected,
                                         where=f"{path} (frame {i})")
                if expected is None:
                    expected = tuple(image.shape[1:])
                yield Frame(kept, ts, image, f"{i}")
                kept += 1
            if decoded == 0:
                raise FrameError(f"{path}: video has no decodable frames (truncated or corrupt?)")
            if declared and decoded < declared:
                raise FrameError(f"{path} (frame {decoded}): video ends after {decoded} of {declared} "
                                 "declared frames (truncated?)")
        finally:
            container.close()


# ------------------------------------------------------------------------------ timestamps


def _timestamps_from_names(files: Sequence[Path]) -> np.ndarray | None:
    """µs from nuScenes-style ``..__<timestamp_us>.jpg`` names, when every name has one."""
    out = []
    for f in files:
        m = _NUSCENES_TS.search(f.stem)
        if not m:
            return None
        out.append(int(m.group(1)))
    return np.asarray(out, dtype=np.int64)


def _check_frame_order(name: str, files: Sequence[Path], ts: np.ndarray, timestamps_from: str) -> None:
    """Frames in file order must go forward in time: timestamps from the names must increase (as a sidecar's
    must), given ones must not decrease (the token store's rule). Else :class:`FrameError` naming the scene and the
    two frames, before any frame is decoded: a folder mixing nuScenes logs (``samples/CAM_FRONT``) or a list in
    the wrong order used to fail only when the scene was written, after encoding it, with no file named."""
    if ts.size < 2:
        return
    strict = timestamps_from == "names"
    bad = np.flatnonzero(np.diff(ts) <= 0 if strict else np.diff(ts) < 0)
    if not bad.size:
        return
    i = int(bad[0])
    origin = "their names" if strict else f"the timestamps given ({timestamps_from})"
    hint = (" (one folder holding several scenes or logs, e.g. a nuScenes samples/<CAMERA> folder: tokenize the "
            "scenes of `vavam data prepare` instead)" if strict else "")
    raise FrameError(f"scene {name!r}: frames do not go forward in time by {origin}: {files[i + 1]} is at "
                     f"{int(ts[i + 1])} µs and the frame before it, {files[i]}, at {int(ts[i])} µs{hint}")


def _read_sidecar(folder: Path, files: Sequence[Path]) -> np.ndarray | None:
    """Timestamps of ``files`` from ``folder/timestamps.{json,txt}``; None when there is no sidecar."""
    for name in TIMESTAMP_SIDECARS:
        path = folder / name
        if not path.is_file():
            continue
        try:
            if name.endswith(".json"):
                data = json.loads(path.read_text(encoding="utf-8"))
            else:
                data = _parse_txt_sidecar(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise FrameError(f"{path}: cannot parse timestamp sidecar: {exc}") from exc
        if isinstance(data, dict):
            missing = [f.name for f in files if f.name not in data]
            if missing:
                raise FrameError(f"{path}: no timestamp for {len(missing)} frame(s), e.g. {missing[0]}")
            values = [data[f.name] for f in files]
        elif isinstance(data, list):
            if len(data) != len(files):
                raise FrameError(f"{path}: {len(data)} timestamps for {len(files)} image files in {folder}")
            values = data
        else:
            raise FrameError(f"{path}: expected a list of µs or a {{file name: µs}} object")
        return _sidecar_stamps(path, files, values)
    return None


def _sidecar_stamps(path: Path, files: Sequence[Path], values: Sequence) -> np.ndarray:
    """The µs timestamps of a sidecar, one per frame in the frames' (natural) order; a value that is no number,
    or a frame not later than the one before it (frames and times disagree on the order), raises
    :class:`FrameError` naming the sidecar and the frames."""
    out = np.empty(len(values), dtype=np.int64)
    for i, (f, v) in enumerate(zip(files, values)):
        try:
            if isinstance(v, bool):  # JSON true / false
                raise ValueError
            out[i] = int(v) if isinstance(v, (int, str)) else int(float(v))
        except (TypeError, ValueError, OverflowError):
            raise FrameError(f"{path}: timestamp of {f.name} is {v!r}, not a number of µs") from None
    bad = np.flatnonzero(np.diff(out) <= 0)
    if bad.size:
        i = int(bad[0])
        raise FrameError(f"{path}: timestamps must increase with the frames' order, but {files[i + 1].name} is at "
                         f"{out[i + 1]} µs and the frame before it, {files[i].name}, at {out[i]} µs")
    return out


def _parse_txt_sidecar(text: str) -> list[int] | dict[str, int]:
    rows = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if all(re.fullmatch(r"-?\d+", r) for r in rows):
        return [int(r) for r in rows]
    out: dict[str, int] = {}
    for r in rows:
        parts = re.split(r"[,\s]+", r)
        if len(parts) != 2:
            raise ValueError(f"bad line {r!r} (expected 'µs' or 'name µs')")
        out[parts[0]] = int(parts[1])
    return out


# ------------------------------------------------------------------------------ discovery


def discover_sources(
    inputs: Sequence[str | Path],
    fps: float | None = None,
    name_depth: int = 1,
    recursive: bool = False,
) -> list[FrameSource]:
    """Frame sources from paths: image folders, video files, glob patterns, or ``.txt`` lists of those.

    Args:
        inputs: each an image folder, a video file, a glob pattern (``frames512/*/*``), or a ``.txt``
            file listing such paths one per line. With ``recursive`` a folder is searched for image
            folders (folders holding images) and video files at any depth.
        fps: image folders without sidecar/name timestamps get ``index / fps``; videos are resampled
            to ``fps``. None: keep every video frame, and image folders without timestamps have an
            unknown rate (``known_fps()`` None; ``index * 1e5`` placeholder timestamps).
        name_depth: a scene's name is its last ``name_depth`` path components joined with ``/``
            (file extension dropped), e.g. 2 -> ``channel/video_id``.

    Returns:
        Sources sorted by name. Duplicate names raise ``ValueError`` (raise ``name_depth``).
    """
    check_fps(fps, "--fps")
    paths: list[Path] = []
    for item in inputs:
        s = str(item)
        if any(c in s for c in "*?[") and not Path(s).exists():
            matches = sorted(_glob.glob(s, recursive=True), key=natural_key)
            if not matches:
                raise FileNotFoundError(f"{s}: glob pattern matches nothing")
            paths.extend(Path(m) for m in matches)
        elif s.endswith(".txt") and Path(s).is_file():
            lines = Path(s).read_text(encoding="utf-8").splitlines()
            paths.extend(Path(line.strip()) for line in lines if line.strip() and not line.startswith("#"))
        else:
            paths.append(Path(s))
    sources: list[FrameSource] = []
    for p in paths:
        if p.is_file() and p.suffix.lower() in VIDEO_EXTS:
            sources.append(FrameSource.from_video(p, _scene_name(p, name_depth, True), fps=fps))
        elif p.is_dir():
            has_images = any(c.suffix.lower() in IMAGE_EXTS for c in p.iterdir())
            if has_images and not recursive:
                sources.append(FrameSource.from_image_folder(p, _scene_name(p, name_depth, False), fps=fps))
            elif recursive:
                before = len(sources)
                for sub in sorted(p.rglob("*"), key=lambda q: natural_key(str(q))):
                    if sub.is_file() and sub.suffix.lower() in VIDEO_EXTS:
                        sources.append(FrameSource.from_video(sub, _scene_name(sub, name_depth, True), fps=fps))
                for folder in sorted({q.parent for q in p.rglob("*") if q.suffix.lower() in IMAGE_EXTS}, key=str):
                    sources.append(
                        FrameSource.from_image_folder(folder, _scene_name(folder, name_depth, False), fps=fps)
                    )
                if len(sources) == before:  # (it used to give no scene, and a store of nothing)
                    raise FrameError(f"{p}: no image folder nor video file ({'/'.join(VIDEO_EXTS)}) at any depth "
                                     "under this folder (--recursive)")
            else:
                raise FrameError(
                    f"{p}: folder holds no images (to search its sub-folders: recursive=True, on the command line "
                    "--recursive)"
                )
        elif p.exists():
            raise FrameError(f"{p}: not an image folder nor a video file ({'/'.join(VIDEO_EXTS)})")
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    names: dict[str, Path] = {}
    for src in sources:
        if src.name in names:
            raise ValueError(f"two sources have the scene name {src.name!r}: {names[src.name]} and {src.path} "
                             f"(use a larger name_depth)")
        names[src.name] = src.path
    return sorted(sources, key=lambda s: s.name)


def _scene_name(path: Path, depth: int, is_file: bool) -> str:
    parts = list(path.absolute().parts[-max(1, depth):]) if depth > 1 else [path.name]
    if is_file:
        parts[-1] = Path(parts[-1]).stem
    return "/".join(parts)


__all__ = [
    "IMAGE_EXTS",
    "VIDEO_EXTS",
    "DATASET_DIVISORS",
    "FrameError",
    "Frame",
    "FrameSource",
    "check_fps",
    "discover_sources",
    "natural_key",
    "preprocess_frame",
    "rate_from_timestamps",
    "read_image",
    "resized_shape",
]
