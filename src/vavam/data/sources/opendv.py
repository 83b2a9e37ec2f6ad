"""OpenDV-YouTube: per-video metadata + downloaded videos -> trimmed 10 fps frame sources.

Inputs (layouts in ``shared/reference/datasets.md`` §3):

* **metadata**, one row per video, in any of three forms (detected from the content):

  - the official ``OpenDV-YouTube.json`` (a JSON list of objects; keys ``videoid``, ``youtuber``,
    ``split`` ("Train" / "Val"), ``start_discard``, ``end_discard``, optional ``subset`` ("Mini"),
    ``duration`` "HH:MM:SS" / ``length`` seconds, ...);
    a row without a discard value gets the official extractor's default (90 s at the start, 60 s at
    the end; :data:`DEFAULT_DISCARD_S`, listed in ``OpenDVVideo.defaulted``);
  - the official Google-sheet CSV export (comma separated; headers ``VideoID``, ``Youtuber``,
    ``Train / Val``, ``Discarded Length at the Begininning (second)``, ``Discarded Length at the
    Ending (second)``, ``Mini / Full Set``, ``Duration``, ...; matched case-insensitively and mapped
    to the JSON keys as the official converter does);
  - the VaViM ``metadata.csv`` (tab separated; columns ``video_id``, ``discard_start``,
    ``discard_end``, ``split``, optional ``container``, ``duration`` (seconds), ``channel``).

* **videos**: ``<video_root>/<youtuber, spaces -> _>/<youtube id>.<mp4|webm|mkv>`` (the official
  download layout). Rows without a channel are found by file name anywhere under ``video_root``.

Video ids: a YouTube id starting with ``-`` is written with ``@`` in its place (the VaViM
convention, so that ids are safe as folder and command-line names); :func:`opendv_video_id` and
:func:`youtube_id` convert. Scene names (token store, split lists) are these ``@`` ids.

Frames: decoded with PyAV, resampled to ``fps`` (10) and **trimmed exactly**: a video of duration
``D`` seconds (the stream's duration probed from the file) keeps the frames whose presentation time
``t`` (seconds from the stream start) satisfies ``discard_start <= t < D - discard_end``; inside
that span the first decoded frame of every ``1/fps`` slot (``floor(t * fps)``) is kept, so a
30 fps video yields every third frame and a 10 fps one every frame. Timestamps in the token store
are the kept frames' presentation times in microseconds.

The authors' frames differ at the end (``trim="reference"`` reproduces them): their ffmpeg call
put ``-to D - discard_end`` after an input seek ``-ss discard_start``, where ``-to`` acts as a
length, so they kept ``[discard_start, min(D, D - discard_end + discard_start))``.

Frames go straight into the tokenizer (:func:`vavam.data.tokenize.tokenize_sources` over the
sources returned by :func:`load_opendv`), or to 512x288 JPEGs in the authors' layout
``frames512/<channel>/<video id>/f_000001.jpg`` (:func:`write_opendv_frames`).

Bad input (a missing or unreadable video, a bad metadata row, nothing left after trimming, a
video truncated mid-stream) raises :class:`~vavam.data.sources.SourceError` naming the video, or
with ``skip_bad=True`` is skipped and counted in the result's ``skipped`` log. A truncated video
is only noticed while decoding; :func:`vavam.data.prepare.prepare_opendv` then skips it whole.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vavam.data.frames import VIDEO_EXTS, Frame, FrameError, FrameSource, preprocess_frame
from vavam.data.sources import SkipLog, SourceError

__all__ = [
    "DEFAULT_DISCARD_S",
    "OPENDV_FPS",
    "OPENDV_SIZE",
    "OpenDVSources",
    "OpenDVVideo",
    "OpenDVVideoSource",
    "find_opendv_videos",
    "load_opendv",
    "opendv_video_id",
    "read_opendv_metadata",
    "write_opendv_frames",
    "write_split_lists",
    "youtube_id",
]

#: frame rate of the extracted frames (official and VaViM).
OPENDV_FPS = 10.0
#: frame size (H, W) of the VaViM frames (ffmpeg ``scale=512:288``, aspect forced).
OPENDV_SIZE = (288, 512)
#: seconds cut when a metadata row has no discard value: the official extractor's defaults (datasets.md §3.2).
DEFAULT_DISCARD_S: dict[str, float] = {"discard_start": 90.0, "discard_end": 60.0}
#: file extensions tried, in order, for a video (official downloader formats first).
PREFERRED_EXTS = (".mp4", ".webm", ".mkv")

# Official sheet headers (lower-cased) -> JSON keys, as the official converter maps them.
_OFFICIAL_KEYS = {
    "train / val": "split",
    "mini / full set": "subset",
    "nation or area (inferred by gpt)": "area",
    "state, province, or city (inferred by gpt and refined by human)": "state",
    "discarded length at the begininning (second)": "start_discard",
    "discarded length at the beginning (second)": "start_discard",
    "discarded length at the ending (second)": "end_discard",
}
_MISSING = {"", "nan", "n/a", "na", "none", "null"}


def opendv_video_id(yt_id: str) -> str:
    """VaViM video id of a YouTube id: a leading ``-`` becomes ``@`` (inner hyphens stay)."""
    return "@" + yt_id[1:] if yt_id.startswith("-") else yt_id


def youtube_id(video_id: str) -> str:
    """YouTube id (file stem) of a VaViM video id: a leading ``@`` becomes ``-``."""
    return "-" + video_id[1:] if video_id.startswith("@") else video_id


def _channel_folder(channel: str) -> str:
    """Folder name of a YouTube channel in the official layout (spaces -> ``_``)."""
    return channel.replace(" ", "_")


@dataclass(frozen=True)
class OpenDVVideo:
    """One metadata row.

    Attributes:
        video_id: VaViM id (leading ``-`` written ``@``); the scene name.
        channel: the YouTube channel folder (spaces replaced by ``_``), "" when the metadata has none.
        split: ``train`` or ``val`` (lower-cased).
        discard_start: seconds cut at the start.
        discard_end: seconds cut at the end.
        duration: seconds according to the metadata (None when absent); the file's own duration wins.
        container: file extension hint (``mp4``, ``webm``, ...) or "".
        subset: ``Mini`` for the OpenDV-mini subset in the official sheet, else "".
        row: 1-based row of the metadata file (for messages).
        defaulted: the discard values the row lacked, set to :data:`DEFAULT_DISCARD_S` (``discard_start``,
            ``discard_end``).
    """

    video_id: str
    channel: str
    split: str
    discard_start: float
    discard_end: float
    duration: float | None = None
    container: str = ""
    subset: str = ""
    row: int = 0
    defaulted: tuple[str, ...] = ()

    @property
    def youtube_id(self) -> str:
        """The YouTube id (the video's file stem)."""
        return youtube_id(self.video_id)


# ------------------------------------------------------------------------------ metadata


def _parse_seconds(value: Any) -> float | None:
    """Seconds from a number, a numeric string, or ``[HH:]MM:SS``; None for missing values."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return None if isinstance(value, float) and math.isnan(value) else float(value)
    text = str(value).strip()
    if text.lower() in _MISSING:
        return None
    if ":" in text:
        parts = text.split(":")
        if len(parts) not in (2, 3) or not all(re.fullmatch(r"\d+(\.\d*)?", p.strip()) for p in parts):
            raise ValueError(f"bad duration {text!r} (expected HH:MM:SS or MM:SS)")
        secs = 0.0
        for p in parts:
            secs = secs * 60 + float(p)
        return secs
    out = float(text)
    return None if math.isnan(out) else out


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], str]:
    """Rows (key -> value, keys lower-cased and stripped) and the detected format name."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise SourceError(f"{path}: OpenDV metadata file is missing") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise SourceError(f"{path}: cannot read OpenDV metadata: {exc}") from exc
    stripped = text.lstrip()
    if stripped.startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{path}: OpenDV metadata is not valid JSON: {exc}") from exc
        if isinstance(data, dict):  # {"videos": [...]} or {id: {...}}
            data = data.get("videos", [dict(v, videoid=k) if isinstance(v, dict) else v for k, v in data.items()])
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise SourceError(f"{path}: OpenDV JSON metadata must be a list of objects, one per video")
        return [{str(k).strip().lower(): v for k, v in r.items()} for r in data], "json"
    first = text.splitlines()[0] if text.strip() else ""
    if not first:
        raise SourceError(f"{path}: OpenDV metadata file is empty")
    delimiter = "\t" if "\t" in first else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    rows = []
    for r in reader:
        rows.append({str(k).strip().lower(): (v.strip() if isinstance(v, str) else v) for k, v in r.items() if k})
    return rows, "tsv" if delimiter == "\t" else "csv"


def _row_to_video(raw: dict[str, Any], row: int) -> OpenDVVideo:
    r = {_OFFICIAL_KEYS.get(k, k): v for k, v in raw.items()}
    vid = r.get("video_id") or r.get("videoid")
    if vid is None or str(vid).strip() == "" or str(vid).strip().lower() in _MISSING:
        raise ValueError("no video id (column 'video_id' or 'videoid')")
    vid = opendv_video_id(str(vid).strip())
    if "/" in vid or "\\" in vid or vid in (".", ".."):
        raise ValueError(f"video id {vid!r} is not a plain name")
    split = str(r.get("split") or "").strip().lower()
    if not split or split in _MISSING:
        raise ValueError(f"video {vid!r}: no split (column 'split' or 'Train / Val')")
    values = {}
    defaulted = []
    for key, alt in (("discard_start", "start_discard"), ("discard_end", "end_discard")):
        raw_value = r.get(key, r.get(alt))
        try:
            sec = _parse_seconds(raw_value)
        except ValueError as exc:
            raise ValueError(f"video {vid!r}: bad {key} {raw_value!r}") from exc
        if sec is None:  # the official extractor's defaults (datasets.md §3.2)
            sec = DEFAULT_DISCARD_S[key]
            defaulted.append(key)
        if not math.isfinite(sec) or sec < 0:
            raise ValueError(f"video {vid!r}: {key} must be a finite number of seconds >= 0, got {raw_value!r}")
        values[key] = sec
    duration = None
    for key in ("duration", "length"):
        if key in r:
            try:
                duration = _parse_seconds(r[key])
            except ValueError:
                duration = None  # informative only: the file's own duration is used
            if duration is not None:
                break
    channel = r.get("channel") or r.get("youtuber") or ""
    channel = "" if str(channel).strip().lower() in _MISSING else _channel_folder(str(channel).strip())
    container = str(r.get("container") or "").strip().lstrip(".").lower()
    subset = str(r.get("subset") or "").strip()
    return OpenDVVideo(
        video_id=vid,
        channel=channel,
        split=split,
        discard_start=values["discard_start"],
        discard_end=values["discard_end"],
        duration=duration,
        container="" if container in _MISSING else container,
        subset="" if subset.lower() in _MISSING else subset,
        row=row,
        defaulted=tuple(defaulted),
    )


def read_opendv_metadata(path: str | os.PathLike, skipped: SkipLog | None = None) -> list[OpenDVVideo]:
    """Parse OpenDV metadata (official JSON / CSV or VaViM tab-separated CSV; see the module docstring).

    Args:
        path: the metadata file.
        skipped: when given, bad rows are recorded there (``(video id or "row N", None, reason)``)
            and skipped; otherwise the first bad row raises.

    Returns:
        one :class:`OpenDVVideo` per good row, in file order.

    Raises:
        SourceError: unreadable file, or a bad row (no id / split, malformed or negative discard
            seconds, duplicate video id) naming the file, row and video. Missing discard values are
            not an error: they get :data:`DEFAULT_DISCARD_S`.
    """
    path = Path(path)
    rows, _ = _read_rows(path)
    out: list[OpenDVVideo] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(rows, start=1):
        try:
            video = _row_to_video(raw, i)
            if video.video_id in seen:
                raise ValueError(f"video {video.video_id!r} is listed twice (rows {seen[video.video_id]} and {i})")
        except ValueError as exc:
            if skipped is None:
                raise SourceError(f"{path}, row {i}: {exc}") from exc
            vid = raw.get("video_id") or raw.get("videoid")
            skipped.add(opendv_video_id(str(vid)) if vid else f"row {i}", None, f"bad metadata row: {exc}")
            continue
        seen[video.video_id] = i
        out.append(video)
    return out


# ------------------------------------------------------------------------------ finding videos


def find_opendv_videos(video_root: str | os.PathLike) -> dict[str, Path]:
    """Every video file under ``video_root`` by VaViM video id (file stem, leading ``-`` -> ``@``).

    When one id has several files, the first of ``.mp4``, ``.webm``, ``.mkv`` (then other video
    extensions) wins; partial downloads (``.part``) are not videos.
    """
    root = Path(video_root)
    found: dict[str, Path] = {}
    rank = {ext: i for i, ext in enumerate(PREFERRED_EXTS)}
    for p in sorted(root.rglob("*")):
        ext = p.suffix.lower()
        if ext not in VIDEO_EXTS or not p.is_file():
            continue
        vid = opendv_video_id(p.stem)
        old = found.get(vid)
        if old is None or rank.get(ext, len(rank)) < rank.get(old.suffix.lower(), len(rank)):
            found[vid] = p
    return found


class _VideoFinder:
    """Locate a row's file: ``<root>/<channel>/<youtube id>.<ext>``, else by id anywhere under root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._all: dict[str, Path] | None = None

    def __call__(self, video: OpenDVVideo) -> Path | None:
        exts = ([f".{video.container}"] if video.container else []) + [e for e in PREFERRED_EXTS]
        if video.channel:
            for ext in exts:
                p = self.root / video.channel / f"{video.youtube_id}{ext}"
                if p.is_file():
                    return p
        for ext in exts:  # flat layout
            p = self.root / f"{video.youtube_id}{ext}"
            if p.is_file():
                return p
        if self._all is None:
            self._all = find_opendv_videos(self.root)
        return self._all.get(video.video_id)


# ------------------------------------------------------------------------------ frame source


@dataclass
class OpenDVVideoSource(FrameSource):
    """A video frame source that keeps only ``[trim_start_s, trim_end_s)`` (stream seconds).

    Resampled to ``fps`` as described in the module docstring. ``video`` is the metadata row.
    """

    trim_start_s: float = 0.0
    trim_end_s: float | None = None
    video: OpenDVVideo | None = None
    duration_s: float | None = None

    def fingerprint_fields(self) -> dict:
        """The video's identity (:meth:`FrameSource.fingerprint_fields`) plus the kept span."""
        return {**super().fingerprint_fields(), "trim": [self.trim_start_s, self.trim_end_s]}

    def frames(
        self,
        size: tuple[int, int] | None = None,
        divisor: float | None = None,
        expected: tuple[int, int] | None = None,
        num_workers: int = 0,
    ) -> Iterator[Frame]:
        """Decoded, trimmed, resampled, resized frames (see :meth:`FrameSource.frames`).

        Raises:
            SourceError: the video cannot be opened or decoded, or ends before ``trim_end_s``
                (truncated); the message names the video and the frame.
        """
        try:
            yield from self._trimmed_frames(size, divisor, expected)
        except FrameError as exc:
            raise SourceError(f"OpenDV video '{self.name}': {exc}") from exc

    def _trimmed_frames(self, size, divisor, expected) -> Iterator[Frame]:
        import av

        path = self.path
        fps = float(self.fps or OPENDV_FPS)
        start, end = float(self.trim_start_s), self.trim_end_s
        eps = 1e-6
        try:
            container = av.open(str(path))
        except Exception as exc:
            raise FrameError(f"{path}: cannot open video (truncated or corrupt?): {exc}") from exc
        try:
            if not container.streams.video:
                raise FrameError(f"{path}: no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            tb = float(stream.time_base)
            s0 = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            rate = float(stream.average_rate) if stream.average_rate else None
            kept = decoded = 0
            last_t: float | None = None
            reached_end = False
            # First try: jump to a keyframe at or before (start - 1 s) and decode forward. Should the
            # seek overshoot the start (a bad index), decode again from the beginning.
            for attempt in ("seek", "scan") if start > 1.0 else ("scan",):
                if attempt == "seek":
                    try:
                        container.seek(int((s0 + start - 1.0) / tb), stream=stream, backward=True, any_frame=False)
                    except Exception:  # noqa: BLE001, S112 - unseekable: decode from the beginning
                        continue
                elif decoded:  # after an overshooting seek
                    container.seek(0, stream=stream, backward=True, any_frame=False)
                decoded = 0
                last_slot = -1
                last_t = None
                overshot = False
                for frame in self._decode(container, stream, path):
                    decoded += 1
                    if frame.pts is None:
                        raise FrameError(f"{path} (frame {decoded - 1}): decoded frame has no timestamp")
                    t = float(frame.pts) * tb - s0
                    if attempt == "seek" and decoded == 1 and t > start + eps:
                        overshot = True
                        break
                    last_t = t
                    if t < start - eps:
                        continue
                    if end is not None and t >= end - eps:
                        reached_end = True
                        break
                    slot = math.floor(t * fps + eps)
                    if slot <= last_slot:
                        continue
                    last_slot = slot
                    image = preprocess_frame(
                        frame.to_ndarray(format="rgb24"), size, divisor, expected, where=f"{path} (t={t:.3f} s)"
                    )
                    if expected is None:
                        expected = tuple(image.shape[1:])
                    yield Frame(kept, round((t + s0) * 1e6), image, f"{t:.6f}")
                    kept += 1
                if not overshot:
                    break
            if decoded == 0:
                raise FrameError(f"{path}: video has no decodable frames (truncated or corrupt?)")
            if end is not None and not reached_end:
                frame_dt = 1.0 / min(fps, rate) if rate else 1.0 / fps
                if last_t is None or last_t < end - 1.5 * frame_dt:
                    raise FrameError(
                        f"{path}: video ends at {max(last_t or 0.0, 0.0):.3f} s, before the end of the kept span "
                        f"({end:.3f} s; duration {self.duration_s} s): truncated?"
                    )
            if kept == 0:
                raise FrameError(f"{path}: no frame in the kept span [{start:.3f}, {end}) s")
        finally:
            container.close()

    @staticmethod
    def _decode(container, stream, path: Path) -> Iterator[Any]:
        """Frames of ``stream`` (restarting cleanly after a seek); decoding errors name the file."""
        it = container.decode(stream)
        n = 0
        while True:
            try:
                frame = next(it)
            except StopIteration:
                return
            except Exception as exc:
                raise FrameError(
                    f"{path} (frame {n}): cannot decode video frame (truncated or corrupt?): {exc}"
                ) from exc
            n += 1
            yield frame


#: seconds before the container's end from which :func:`_video_stream_end` reads the video packets.
_END_PROBE_S = 30.0


def _video_stream_end(container: Any, stream: Any, rate: float | None) -> float | None:
    """Duration of the video stream (s from its start) for files whose video stream declares none (WebM / MKV).

    Read from the packets (nothing is decoded) of the last :data:`_END_PROBE_S` seconds, or of the
    whole file when seeking fails: the end of the video is its last packet's pts + duration. The
    container's duration covers every stream, and an audio track may run past the video, so it is
    not the video's end. It is returned only when the packets of *all* streams stop more than 1.5
    frames before it (the decoder's tolerance for the end of the kept span: the file is cut short):
    the decoder then reports the video as truncated, naming it.

    Where the container's declared end lies depends on the format: Matroska / WebM declare the
    segment's end timestamp (FFmpeg reports it as the duration as is, even when the timestamps start
    later than 0, e.g. a file cut with stream copy), other formats a length counted from the start time.
    """
    s0 = float((stream.start_time or 0) * stream.time_base)
    c_end = None
    if container.duration is not None:
        matroska = "matroska" in str(getattr(container.format, "name", "") or "")
        c_end = (container.duration + (0 if matroska else (container.start_time or 0))) / 1e6
    video_end = data_end = None
    # From near the end first; from the start when that fails or finds no video packet (the video ends
    # more than _END_PROBE_S before the other streams).
    for start in ([c_end - _END_PROBE_S] if c_end is not None and c_end > _END_PROBE_S else []) + [0.0]:
        try:
            container.seek(int(start * 1e6), backward=True, any_frame=False)
        except Exception:  # noqa: BLE001, S112 - unseekable: try the next start
            if start > 0:
                continue
        for packet in container.demux():
            if packet.pts is None or packet.stream.time_base is None:
                continue
            tb = float(packet.stream.time_base)
            length = float(packet.duration or 0) * tb
            if packet.stream.index == stream.index and not length and rate:
                length = 1.0 / rate
            t = float(packet.pts) * tb + length
            data_end = t if data_end is None else max(data_end, t)
            if packet.stream.index == stream.index:
                video_end = t if video_end is None else max(video_end, t)
        if video_end is not None:
            break
    # 1.5 frames, as the decoder allows at the end of the kept span: a file cut 0.2 s short at 10 fps is truncated
    if c_end is not None and (data_end is None or data_end < c_end - 1.5 / (rate or OPENDV_FPS)):
        return c_end - s0  # the data stops early: truncated (reported while decoding)
    return None if video_end is None else video_end - s0


def _probe(path: Path) -> tuple[float | None, float | None, int, int]:
    """Duration of the video stream (s), average frame rate, width, height; raises FrameError when unreadable."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise FrameError(f"{path}: no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate) if stream.average_rate else None
            duration = None
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif stream.time_base is not None:
                duration = _video_stream_end(container, stream, rate)
            return duration, rate, int(stream.codec_context.width or 0), int(stream.codec_context.height or 0)
    except FrameError:
        raise
    except Exception as exc:
        raise FrameError(f"{path}: cannot open video (truncated or corrupt?): {exc}") from exc


class OpenDVSources(list):
    """``list[OpenDVVideoSource]`` (sorted by video id) with what was skipped.

    Attributes:
        split: the split these sources belong to.
        skipped: what ``skip_bad`` dropped (``(video id, None, reason)`` rows).
        videos: the metadata rows of the split (before skipping).
    """

    def __init__(
        self,
        sources: Sequence[FrameSource] = (),
        split: str = "",
        skipped: SkipLog | None = None,
        videos: Sequence[OpenDVVideo] = (),
    ) -> None:
        super().__init__(sources)
        self.split = split
        self.skipped = skipped if skipped is not None else SkipLog()
        self.videos = list(videos)


def load_opendv(
    meta_path: str | os.PathLike,
    video_root: str | os.PathLike,
    split: str | None = "train",
    skip_bad: bool = False,
    fps: float = OPENDV_FPS,
    trim: Literal["exact", "reference"] = "exact",
    subset: str | None = None,
    video_ids: Sequence[str] | None = None,
    check_videos: bool = True,
) -> OpenDVSources:
    """Frame sources of one OpenDV split, trimmed and resampled, ready for ``tokenize_sources``.

    Args:
        meta_path: metadata file (official JSON / CSV, or VaViM tab-separated CSV).
        video_root: the ``videos`` folder (``<channel>/<youtube id>.<ext>``).
        split: ``train`` / ``val`` (case-insensitive); None takes every row.
        skip_bad: skip (and count) bad metadata rows and missing / unreadable / too short videos
            instead of raising.
        fps: output frame rate (10 as in OpenDV and VaViM).
        trim: ``exact`` keeps ``[discard_start, duration - discard_end)``; ``reference`` reproduces
            the authors' ffmpeg span ``[discard_start, min(duration, duration - discard_end + discard_start))``.
        subset: keep only rows of this subset (e.g. ``Mini`` in the official sheet).
        video_ids: keep only these videos (VaViM ids or YouTube ids); each must be in the metadata.
        check_videos: open each video to read its duration now (needed to place the end cut; when
            False the metadata duration is used and a missing duration raises).

    Returns:
        :class:`OpenDVSources`: one :class:`OpenDVVideoSource` per video (name = video id), sorted
        by name, plus ``skipped`` and ``videos``.

    Raises:
        SourceError: naming the video (and the metadata row) when anything is wrong and not ``skip_bad``.
    """
    if trim not in ("exact", "reference"):
        raise ValueError(f"trim must be 'exact' or 'reference', got {trim!r}")
    meta_path, video_root = Path(meta_path), Path(video_root)
    skipped = SkipLog()
    videos = read_opendv_metadata(meta_path, skipped if skip_bad else None)
    if video_ids is not None:
        wanted = {opendv_video_id(str(v).strip()) for v in ([video_ids] if isinstance(video_ids, str) else video_ids)}
        # an id the metadata does not list is a mistake (a typo would otherwise silently select nothing);
        # ids of rows that skip_bad dropped are already in the skip log.
        unknown = sorted(wanted - {v.video_id for v in videos} - {row[0] for row in skipped.rows})
        if unknown:
            raise SourceError(
                f"{meta_path}: {len(unknown)} requested OpenDV video(s) not in the metadata, e.g. {unknown[:5]}"
            )
    if split is not None:
        videos = [v for v in videos if v.split == split.strip().lower()]
    if subset is not None:
        videos = [v for v in videos if v.subset == subset]
    if video_ids is not None:
        videos = [v for v in videos if v.video_id in wanted]
    if not video_root.is_dir():
        raise SourceError(f"{video_root}: OpenDV video folder does not exist")
    finder = _VideoFinder(video_root)
    sources: list[FrameSource] = []
    for video in videos:
        try:
            sources.append(_make_source(video, finder, fps, trim, check_videos, meta_path))
        except SourceError as exc:
            if not skip_bad:
                raise
            skipped.add(video.video_id, None, str(exc))
    sources.sort(key=lambda s: s.name)
    return OpenDVSources(sources, split=split or "", skipped=skipped, videos=videos)


def _make_source(
    video: OpenDVVideo, finder: _VideoFinder, fps: float, trim: str, check: bool, meta_path: Path
) -> OpenDVVideoSource:
    where = f"OpenDV video '{video.video_id}' ({meta_path.name} row {video.row})"
    path = finder(video)
    if path is None:
        expected = finder.root / (video.channel or "<channel>") / f"{video.youtube_id}.{video.container or 'mp4'}"
        raise SourceError(
            f"{where}: video file is missing (looked for {expected} and '{video.youtube_id}.*' under {finder.root})"
        )
    duration = video.duration
    rate = None
    if check:
        try:
            probed, rate, _, _ = _probe(path)
        except FrameError as exc:
            raise SourceError(f"{where}: {exc}") from exc
        if probed is not None:
            duration = probed
    if duration is None:
        raise SourceError(f"{where}: {path}: cannot tell the video's duration (needed for the end cut)")
    start = video.discard_start
    if trim == "exact":
        end = duration - video.discard_end
    else:
        end = min(duration, duration - video.discard_end + video.discard_start)
    if end <= start:
        raise SourceError(
            f"{where}: nothing left after trimming: duration {duration:.3f} s, discard_start "
            f"{video.discard_start:g} s, discard_end {video.discard_end:g} s"
        )
    hint = max(1, math.ceil((end - start) * fps))
    # The channel is the folder the video lies in (videos/<channel>/<id>.<ext>) when the metadata has none
    # (the VaViM metadata.csv), as the authors' frame extraction takes it from the video's path.
    channel = video.channel
    if not channel and path.parent != finder.root:
        try:
            channel = path.parent.relative_to(finder.root).as_posix()
        except ValueError:
            channel = ""
    return OpenDVVideoSource(
        name=video.video_id,
        path=path,
        kind="video",
        fps=fps,
        num_frames_hint=hint,
        timestamps_from="pts",
        extra={"channel": channel, "split": video.split, "source_fps": rate},
        trim_start_s=start,
        trim_end_s=end,
        video=video,
        duration_s=duration,
    )


# ------------------------------------------------------------------------------ outputs


def write_split_lists(
    videos: Sequence[OpenDVVideo], out_dir: str | os.PathLike, splits: Sequence[str] | None = None
) -> dict[str, Path]:
    """Write ``<out_dir>/<split lower-cased>.json`` (sorted JSON lists of video ids), as the VaViM split files.

    Args:
        videos: metadata rows (e.g. :func:`read_opendv_metadata`).
        out_dir: destination folder.
        splits: splits to write (default: every split present), case-insensitive (``Train`` -> ``train.json``);
            an absent split gets an empty list.

    Returns:
        ``{split (lower-cased): path}``.
    """
    from vavam.io import atomic_write_json

    out_dir = Path(out_dir)
    by_split: dict[str, list[str]] = {}
    for v in videos:
        by_split.setdefault(v.split.strip().lower(), []).append(v.video_id)
    wanted = sorted(by_split) if splits is None else list(dict.fromkeys(s.strip().lower() for s in splits))
    paths = {}
    for split in wanted:
        path = out_dir / f"{split}.json"
        atomic_write_json(path, sorted(by_split.get(split, [])))
        paths[split] = path
    return paths


def write_opendv_frames(
    source: OpenDVVideoSource,
    out_root: str | os.PathLike,
    size: tuple[int, int] = OPENDV_SIZE,
    quality: int = 95,
    timestamps: bool = True,
) -> Path:
    """Write one video's kept frames as JPEGs in the authors' layout; returns the frame folder.

    Layout: ``<out_root>/<channel>/<video id>/f_000001.jpg, f_000002.jpg, ...`` (numbered from 1;
    ``<out_root>/<video id>/`` when the channel is unknown: neither in the metadata nor a folder of the
    video file under the video root), resized to ``size`` (H, W) = 288x512 by
    default (aspect forced, like ffmpeg ``scale=512:288``). With ``timestamps`` a
    ``timestamps.json`` sidecar (µs per frame, read by :meth:`FrameSource.from_image_folder`)
    keeps the exact frame times. Existing frames of that video are replaced.
    """
    from PIL import Image

    channel = (source.video.channel if source.video is not None else "") or source.extra.get("channel", "")
    folder = Path(out_root) / channel / source.name if channel else Path(out_root) / source.name
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("f_*.jpg"):
        old.unlink()
    stamps: list[int] = []
    try:
        for frame in source.frames(size=size):
            pixels = ((frame.image + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
            tmp = folder / f".f_{frame.index + 1:06d}.jpg.tmp"
            Image.fromarray(np.ascontiguousarray(pixels)).save(tmp, format="JPEG", quality=quality)
            os.replace(tmp, folder / f"f_{frame.index + 1:06d}.jpg")
            stamps.append(frame.timestamp_us)
    except BaseException:
        for partial in [*folder.glob("f_*.jpg"), *folder.glob(".f_*.tmp")]:  # never leave half a video
            partial.unlink(missing_ok=True)
        raise
    if timestamps:
        from vavam.io import atomic_write_json

        atomic_write_json(folder / "timestamps.json", stamps)
    return folder
