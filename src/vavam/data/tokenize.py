"""Tokenize image folders and videos into a token store (``vavam tokenize``), and convert the
authors' one-``.npy``-per-frame layout (``vavam tokenize convert``).

Python use::

    from vavam.data.frames import discover_sources
    from vavam.data.tokenize import tokenize_sources
    store = tokenize_sources(discover_sources(["frames512/*/*"]), "tokens/", tok, batch_size=64)

Resumable: scenes already recorded in the manifest (with files of the right size, made from the
same frames: same fingerprint, see :meth:`FrameSource.fingerprint`) are skipped; a scene that was
interrupted, or whose frames changed since (an image restored or dropped, another video file or
cut), is redone. A scene whose frames are the same but whose timestamps or rate changed (another
``--fps`` for an image folder without timestamps, a timestamps sidecar added) keeps its tokens: its
timestamps file and rate are rewritten, saying what changed. A recorded rate is never replaced by an
unknown one: resumed without ``--fps``, an image folder without timestamps keeps the rate and
timestamps it was tokenized with. Scenes recorded by older versions (no fingerprint) are compared by
their timestamps and get their fingerprints recorded. ``shard="i/N"`` takes every N-th scene of the sorted names
starting at ``i`` and writes ``manifest.part-i-of-N.json``; after all shards finish,
``merge_manifests(root)`` (``vavam tokenize merge``) writes ``manifest.json``.

Several processes / machines (``torchrun`` or SLURM)::

    torchrun --nproc_per_node 8 -m vavam.cli tokenize --sources ... --out tokens/ --tokenizer vq.pt --device cuda
    srun -n 16 vavam tokenize --sources ... --out tokens/ --tokenizer vq.pt --device cuda --shard auto

Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` in the environment; with ``--shard
auto`` also SLURM's ``SLURM_PROCID`` / ``SLURM_NTASKS`` / ``SLURM_LOCALID``) each process takes the
shard ``RANK/WORLD_SIZE`` and runs on ``cuda:LOCAL_RANK`` (``--device cuda`` or ``auto``). When a
gloo process group can be formed (``MASTER_ADDR`` / ``MASTER_PORT`` set, as torchrun does), rank 0
first folds the manifest parts of an earlier, interrupted run into ``manifest.json`` (whatever its
process count), and after a barrier at the end merges this run's parts and checks that every scene
arrived (``out`` must be a folder every machine sees). Without a process group each process writes
its part and prints the ``vavam tokenize merge`` command to run once all have finished. Re-running
the same command after a failure skips the finished scenes of every rank and redoes the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vavam.data.frames import (
    DATASET_DIVISORS,
    FrameError,
    FrameSource,
    check_fps,
    discover_sources,
    natural_key,
    rate_from_timestamps,
)
from vavam.data.sources import SourceError
from vavam.data.tokens import (
    FPS_REL_TOL,
    MANIFEST,
    TokenStoreError,
    TokenStoreWriter,
    check_codebook_size,
    empty_part_name,
    manifest_parts,
    merge_manifests,
    part_manifest_name,
    read_manifest,
)
from vavam.io import atomic_write_text, sha256_json

#: how long a rank waits at a barrier for the slowest rank (a shard can take hours); torchrun ends
#: the job sooner when a rank dies
DIST_TIMEOUT = timedelta(hours=48)

__all__ = [
    "LaunchInfo",
    "convert_npy_layout",
    "launch_info",
    "merge_manifests",
    "parse_shard",
    "resolve_device",
    "select_shard",
    "tokenize",
    "tokenize_sources",
    "tokenizer_identity_of",
]


# ------------------------------------------------------------------------------ helpers


def parse_shard(shard: str | None) -> tuple[int, int] | None:
    """``"i/N"`` (0-based i < N) -> ``(i, N)``; None -> None."""
    if shard is None or shard == "":
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(shard))
    if not m:
        raise ValueError(f"shard must look like 'i/N' (e.g. 0/4), got {shard!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"shard {shard!r}: need 0 <= i < N")
    return i, n


def select_shard(names: Sequence[str], shard: tuple[int, int] | None) -> list[str]:
    """Deterministic split: sort the names, shard ``(i, N)`` takes positions ``i, i+N, i+2N, ...``."""
    names = sorted(names)
    if shard is None:
        return names
    i, n = shard
    return names[i::n]


def tokenizer_identity_of(tokenizer: Any) -> dict:
    """Identity of a tokenizer (config + weight hash) for the manifest.

    Uses ``vavam.tokenizer.tokenizer_identity`` when available; otherwise class name, config and a
    sha256 over the state dict.
    """
    with contextlib.suppress(ImportError, AttributeError):
        from vavam.tokenizer import tokenizer_identity

        return dict(tokenizer_identity(tokenizer))
    ident: dict[str, Any] = {"class": type(tokenizer).__name__}
    config = getattr(tokenizer, "config", None)
    if config is not None:
        try:
            from vavam.config import config_to_dict

            ident["config"] = config_to_dict(config)
        except Exception:  # noqa: BLE001 - any config object: fall back to its repr
            ident["config"] = repr(config)
    if isinstance(tokenizer, torch.nn.Module):
        digest = hashlib.sha256()
        for key, value in sorted(tokenizer.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        ident["weights_sha256"] = digest.hexdigest()
    return ident


def _codebook_size(tokenizer: Any) -> int | None:
    for obj in (getattr(tokenizer, "config", None), tokenizer):
        value = getattr(obj, "codebook_size", None)
        if value is not None:
            return int(value)
    return None


def _load_tokenizer(tokenizer: Any, device: str) -> Any:
    if not isinstance(tokenizer, (str, Path)):  # (str has an .encode method too)
        return tokenizer
    spec = str(tokenizer)
    if spec.startswith("preset:"):
        import vavam

        try:  # an unknown name or a video / action preset is bad input, named as typed
            config = vavam.presets.get(spec.split(":", 1)[1], kind="tokenizer")
        except ValueError as exc:
            raise ValueError(f"--tokenizer {spec!r}: {exc}") from None
        torch.manual_seed(0)
        model = vavam.build_model(config)
    else:
        import vavam

        model = vavam.load_tokenizer(spec, device=device)
    return model


def _resize_args(
    dataset: str | None, divisor: float | None, height: int | None, width: int | None
) -> tuple[tuple[int, int] | None, float | None]:
    """``(size, divisor)`` of the resize flags: ``--height/--width`` (positive integers, both or neither), else
    ``--divisor`` (a positive finite number), else ``--dataset``'s divisor. Bad values raise ``ValueError`` naming
    the flag (they used to fail at the first frame as a bad *scene*, which ``--skip-bad`` then skipped)."""
    if (height is None) != (width is None):
        raise ValueError("--height / --width: give both, or neither")
    size = None
    if height is not None:
        for flag, value in (("--height", height), ("--width", width)):
            if isinstance(value, bool) or not float(value).is_integer() or int(value) < 1:
                raise ValueError(f"{flag} {value!r}: must be a positive whole number of pixels")
        size = (int(height), int(width))
    if divisor is not None and (isinstance(divisor, bool) or not math.isfinite(float(divisor)) or float(divisor) <= 0):
        raise ValueError(f"--divisor {divisor!r}: must be a positive number (each side becomes int(side / divisor))")
    if divisor is None and dataset is not None:
        key = dataset.lower()
        if key not in DATASET_DIVISORS:
            raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASET_DIVISORS)} (or pass divisor=)")
        divisor = DATASET_DIVISORS[key]
    return size, divisor


def _batches(frames: Iterator, batch_size: int) -> Iterator[list]:
    batch: list = []
    for fr in frames:
        batch.append(fr)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _progress(total: int | None, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="frame", desc=desc, dynamic_ncols=True, smoothing=0.05)


_TIMING_LABELS = {
    "given": "given timestamps",
    "sidecar": "a timestamps.json/.txt sidecar",
    "names": "timestamps in the file names",
    "stand-in": "stand-in timestamps (index x 0.1 s, rate unknown)",
    "pts": "the video's timestamps",
    "records": "the --index records",
    "name-us": "µs timestamps in the file names",
}


def _timing_label(timestamps_from: str | None, fps: float | None) -> str:
    """Words for where a scene's timestamps come from (``timestamps_from`` as recorded, ``fps`` its rate)."""
    if timestamps_from in ("index", "name-number"):
        what = "frame index" if timestamps_from == "index" else "frame numbers"
        return f"{what} / {fps:g} fps" if fps else f"{what} (rate unknown)"
    return _TIMING_LABELS.get(timestamps_from or "", f"{timestamps_from or 'unrecorded'} timestamps")


def _fmt_rate(fps: float | None) -> str:
    return "unknown" if fps is None else f"{fps:g} fps"


@dataclass
class _Resume:
    """How a resumed run treats the scenes a store already records (shared by tokenize and convert).

    ``tool`` prefixes the messages (stderr); ``redo`` ends the message of a scene that is redone;
    ``kept`` collects the scenes whose recorded rate was kept because this run knows none (``kept_hint``
    says why a scene may have none).
    """

    writer: TokenStoreWriter
    tool: str
    redo: str
    kept_hint: str = ""
    kept: dict[str, float] = dataclass_field(default_factory=dict)

    def keep(self, name: str, where: str, *, fingerprint: str, frames_fingerprint: str,
             timestamps_us: np.ndarray | None, rate: float | None, timestamps_from: str | None,
             measure_recorded: bool = False) -> bool:
        """True when the recorded scene ``name`` stays (its timestamps / rate / fingerprints updated as needed);
        False when it is not recorded, or is stale (then discarded, to be redone).

        Args:
            where: the scene's source, for messages.
            fingerprint / frames_fingerprint: the source's, with and without its timing.
            timestamps_us: the source's timestamps when known before decoding (image scenes), else None.
            rate: the frame rate this run gives the scene (None: unknown before decoding or at all).
            timestamps_from: where the source's timestamps come from (``stand-in``: placeholders).
            measure_recorded: a video kept at its own rate: an entry of an older version gets the rate
                measured from its recorded timestamps.
        """
        writer = self.writer
        if not writer.is_done(name):
            return False
        check = writer.check_scene(name, fingerprint, frames_fingerprint, timestamps_us)
        entry = writer.entry(name) or {}
        old_rate = entry.get("fps")
        if check.state == "stale":
            print(f"{self.tool}: scene {name!r} ({where}): {check.reason}; {self.redo}", file=sys.stderr)
            writer.discard_scene(name)
            return False
        if check.state == "current":
            if rate is not None and rate != old_rate:  # e.g. another nominal rate given to tokenize_sources
                self._say(name, where, f"frame rate {_fmt_rate(old_rate)} -> {_fmt_rate(rate)}", "recorded")
                writer.update_scene(name, write=False, fps=rate)
            return True
        if rate is None and measure_recorded and check.state == "unverified":
            recorded = writer.recorded_timestamps(name) if timestamps_us is None else timestamps_us
            rate = None if recorded is None else rate_from_timestamps(recorded)
        frame_fields = {"fingerprint": fingerprint, "frames_fingerprint": frames_fingerprint}
        if rate is None and (old_rate is not None or timestamps_from == "stand-in"):
            # this run knows no rate: never replace a recorded rate (nor real timestamps) by an unknown one
            if old_rate is not None:
                self.kept[name] = old_rate
            if entry.get("frames_fingerprint") != frames_fingerprint:
                writer.update_scene(name, write=False, frames_fingerprint=frames_fingerprint)
            return True
        rate_change = f"frame rate {_fmt_rate(old_rate)} -> {_fmt_rate(rate)}" if rate != old_rate else ""
        if check.state == "retime" and timestamps_us is not None:
            want = np.asarray(timestamps_us, dtype=np.int64).reshape(-1)
            have = writer.recorded_timestamps(name)
            old_label = _timing_label(entry.get("timestamps_from"), old_rate)
            new_label = _timing_label(timestamps_from, rate)
            changes = [f"timestamps from {old_label} -> {new_label}"] if old_label != new_label else []
            if not changes and (have is None or have.shape != want.shape):
                changes.append("other timestamps")
            elif not changes and not np.array_equal(have, want):
                k = int(np.flatnonzero(have != want)[0])
                changes.append(f"other timestamps from frame {k} ({int(have[k])} -> {int(want[k])} µs)")
            changes += [rate_change] if rate_change else []
            if changes:  # else only the fingerprints differ (an entry of an older version): recorded below
                writer.retime_scene(name, want, rate, timestamps_from=timestamps_from, **frame_fields)
                self._say(name, where, "same frames, " + ", ".join(changes), "timestamps and rate rewritten")
                return True
        elif rate is not None and rate_change:
            self._say(name, where, rate_change, "recorded")
        writer.update_scene(name, write=False, **frame_fields, timestamps_from=timestamps_from,
                            **({"fps": rate} if rate is not None else {}))
        return True

    def _say(self, name: str, where: str, what: str, done: str) -> None:
        print(f"{self.tool}: scene {name!r} ({where}): {what}: {done}, tokens kept", file=sys.stderr)

    def report_kept(self) -> None:
        """Write the manifest once for the scenes :meth:`keep` updated, then one line about the scenes whose
        recorded rate was kept (this run knows none for them)."""
        self.writer.flush()
        if not self.kept:
            return
        rates = sorted({_fmt_rate(r) for r in self.kept.values()})
        first = next(iter(self.kept))
        print(f"{self.tool}: {len(self.kept)} scene(s) keep their recorded frame rate ({', '.join(rates)}) and "
              f"timestamps, e.g. {first!r}: this run knows no rate for them"
              + (f" ({self.kept_hint})" if self.kept_hint else ""), file=sys.stderr)
        self.kept.clear()


# ------------------------------------------------------------------------------ tokenize


def tokenize_sources(
    sources: Sequence[FrameSource],
    out: str | Path,
    tokenizer: Any,
    batch_size: int = 64,
    size: tuple[int, int] | None = None,
    divisor: float | None = None,
    device: str = "cpu",
    bf16: bool = False,
    shard: str | tuple[int, int] | None = None,
    resume: bool = True,
    num_workers: int = 0,
    progress: bool = True,
    fps: float | None = None,
    on_bad_scene: Callable[[str, Exception], None] | None = None,
    desc: str | None = None,
    resize_hint: str = "--height/--width, --divisor or --dataset",
) -> Path:
    """Encode frame sources into the token store at ``out``; returns the manifest (part) path.

    Args:
        sources: scenes (see :mod:`vavam.data.frames`); names must be unique.
        out: store folder.
        tokenizer: anything with ``encode(float [B,3,H,W] in [-1,1]) -> long [B,H/ds,W/ds]`` and ``downsample``.
        batch_size: frames per ``encode`` call (batches never mix scenes).
        size / divisor: resize rule (see :func:`vavam.data.frames.preprocess_frame`).
        device: where the tokenizer runs (the model is moved there when it is an ``nn.Module``).
        bf16: encode under ``torch.autocast(dtype=bfloat16)``.
        shard: ``"i/N"`` or ``(i, N)``: this process's share of the sorted scenes; writes a manifest part
            (nothing when the share is empty and no image size is known: more shards than scenes).
        resume: skip scenes recorded with complete files (False: start the manifest afresh).
        num_workers: image-decoding threads per scene (0: decode in the main thread).
        progress: show a tqdm bar (frames, rate, ETA).
        fps: the store's nominal frame rate (a dataset's known rate), recorded in the manifest for the
            store and every image scene. None: each scene records its true rate (:meth:`FrameSource.known_fps`,
            or for videos kept at their own rate the rate measured from the decoded timestamps; null when
            unknown) and the store the scenes' common rate (null when unknown or mixed). A video always records
            the rate its kept frames show when it is off its resampling rate by over 2 % (a video slower than
            the rate asked for keeps its own frames: no frame is repeated).
        on_bad_scene: when given, a scene whose frames cannot be decoded (:class:`FrameError` /
            :class:`SourceError`) is left out of the store and reported as ``on_bad_scene(name, error)``
            while the other scenes go on (``--skip-bad``); otherwise the error propagates. When every
            scene fails and no image size is known, no manifest is written (its path is returned).
        desc: progress-bar label.
        resize_hint: the options that resize frames, named when a frame size does not divide by the
            tokenizer's downsampling (``vavam data prepare`` passes its own).

    Raises:
        FrameError: a frame cannot be decoded or has the wrong size (names the file and frame).
        TokenStoreError: an existing store at ``out`` is incompatible or its manifest is unreadable.
        ValueError: codebook larger than 65,536 codes; duplicate scene names.
    """
    if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
        # 0 or a negative size made one batch of a whole scene (every frame of a video in memory at once)
        raise ValueError(f"--batch-size {batch_size!r}: must be a positive number of frames per encoder call")
    if isinstance(num_workers, bool) or int(num_workers) != num_workers or num_workers < 0:
        raise ValueError(f"--num-workers {num_workers!r}: must be 0 (decode in the main thread) or more threads")
    # a tuple is checked as "i/N" is: (2, 2) took no scene and wrote a part "2 of 2"; (0, 0) failed deep inside
    shard_t = parse_shard(shard if isinstance(shard, str) or shard is None else "/".join(str(int(v)) for v in shard))
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"duplicate scene names: {dup[:5]}")
    check_codebook_size(_codebook_size(tokenizer))
    downsample = int(tokenizer.downsample)
    by_name = {s.name: s for s in sources}
    mine = [by_name[n] for n in select_shard(names, shard_t)]
    dev = torch.device(device)
    if isinstance(tokenizer, torch.nn.Module):
        tokenizer = tokenizer.to(dev).eval()
    identity = tokenizer_identity_of(tokenizer)

    out = Path(out)
    writer: TokenStoreWriter | None = None
    image_size: tuple[int, int] | None = size
    # Header of an existing store fixes the image size (so scenes of a resumed run must match it).
    if image_size is None and resume:
        for existing in (out / MANIFEST, out / part_manifest_name(*shard_t) if shard_t else None):
            if existing is not None and existing.is_file():
                prev = read_manifest(existing)
                if prev.get("image_size"):
                    image_size = tuple(prev["image_size"])
                    break

    def make_writer(img_size: tuple[int, int], where: str = "") -> TokenStoreWriter:
        h, w = img_size
        if h % downsample or w % downsample:
            hint = f" (resize with {resize_hint})" if where else ""
            raise ValueError(f"{where}image size {w}x{h} (WxH) is not divisible by the tokenizer's downsampling "
                             f"{downsample}{hint}")
        return TokenStoreWriter(out, (h // downsample, w // downsample), image_size=img_size, downsample=downsample,
                                codebook_size=_codebook_size(tokenizer), tokenizer=identity, fps=fps,
                                shard=shard_t, resume=resume, fps_from_scenes=fps is None, complete=False)

    fingerprints = {s.name: s.fingerprints() for s in mine}
    resumed: _Resume | None = None

    def scene_rate(source: FrameSource) -> float | None:
        """The rate this run records for ``source`` (None for a video at its own rate: measured when decoded)."""
        return fps if fps is not None and source.kind != "video" else source.known_fps()

    def finished(source: FrameSource) -> bool:
        """Recorded with complete files and made from the same frames (its timestamps / rate rewritten when only
        they changed); a stale scene is discarded (redone)."""
        nonlocal resumed
        if writer is None:
            return False
        if resumed is None:
            resumed = _Resume(writer, "tokenize", "tokenizing it again",
                              kept_hint="an image folder without timestamps needs --fps")
        fp, frames_fp = fingerprints[source.name]
        video = source.kind == "video"
        # A video's rate is measured from its decoded frames (resampling can fall short of the rate asked for):
        # the fingerprint covers file and resampling rate, so the rate recorded with it stands, never replaced by
        # the rate asked for; an entry without fingerprints gets the rate measured from its recorded timestamps.
        return resumed.keep(source.name, str(source.path), fingerprint=fp, frames_fingerprint=frames_fp,
                            timestamps_us=source.timestamps_us, rate=None if video else scene_rate(source),
                            timestamps_from=source.timestamps_from or None, measure_recorded=video)

    if image_size is not None:
        writer = make_writer(image_size)
    todo = [s for s in mine if not finished(s)]
    if resumed is not None:
        resumed.report_kept()
    total = sum(s.num_frames_hint or 0 for s in todo) or None
    autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    bar = _progress(total, progress, desc or f"tokenize{f' {shard_t[0]}/{shard_t[1]}' if shard_t else ''}")
    failed = 0
    try:
        for source in todo:
            if finished(source):
                continue
            if writer is not None:
                writer.remove_stale_temporaries(source.name)
            chunks: list[np.ndarray] = []
            stamps: list[int] = []
            frames = source.frames(size=size, divisor=divisor, expected=image_size, num_workers=num_workers)
            skipped = False
            try:
                for batch in _batches(frames, batch_size):
                    images = torch.stack([f.image for f in batch]).to(dev)
                    if image_size is None:
                        image_size = tuple(images.shape[-2:])
                    if writer is None:
                        writer = make_writer(image_size, where=f"{source.path}: ")
                        if finished(source):  # resumed store whose image size we only now learnt
                            skipped = True
                            break
                    with torch.inference_mode(), autocast:
                        ids = tokenizer.encode(images)
                    ids = ids.detach().to("cpu", torch.int64).numpy()
                    if ids.size and (ids.min() < 0 or ids.max() > 65535):
                        raise ValueError(f"{source.path}: tokenizer returned ids outside [0, 65535] "
                                         f"(min {ids.min()}, max {ids.max()}); uint16 tokens cannot hold them")
                    chunks.append(ids.astype(np.uint16))
                    stamps.extend(f.timestamp_us for f in batch)
                    bar.update(len(batch))
            except (FrameError, SourceError) as exc:
                if on_bad_scene is None:
                    raise
                on_bad_scene(source.name, exc)
                failed += 1
                continue
            finally:
                frames.close()
            if not skipped:
                assert writer is not None
                grid = tuple(writer.header["grid"])
                tokens = np.concatenate(chunks) if chunks else np.zeros((0, *grid), np.uint16)
                scene_fps = scene_rate(source)  # true rate: known up front, or (video at its own rate) from the pts
                if source.kind == "video":  # what the frames kept show: a video slower than --fps keeps its own rate
                    measured = rate_from_timestamps(stamps)
                    off = scene_fps is not None and measured is not None
                    if scene_fps is None or (off and abs(measured - scene_fps) > FPS_REL_TOL * scene_fps):
                        scene_fps = measured
                writer.write_scene(source.name, tokens, stamps, source=str(source.path), fps=scene_fps,
                                   fingerprint=fingerprints[source.name][0],
                                   frames_fingerprint=fingerprints[source.name][1],
                                   timestamps_from=source.timestamps_from or None)
    finally:
        bar.close()
        if resumed is not None:
            resumed.writer.flush()  # a scene found finished inside the loop may have been updated in memory only
    if writer is None:  # nothing to do and no size known: still leave a valid (empty) manifest
        if (failed or not mine) and image_size is None and shard_t is not None:
            # an empty share (more shards than scenes) or one whose every scene failed (reported): no part (no
            # grid to write one with), a marker telling the merge that this shard finished
            Path(out).mkdir(parents=True, exist_ok=True)
            atomic_write_text(Path(out) / empty_part_name(*shard_t), "")
            return out / part_manifest_name(*shard_t)
        if failed and image_size is None:  # every scene failed: no store
            return out / MANIFEST
        if not mine and image_size is None:
            raise ValueError("no scenes to tokenize and no image size given (pass height/width)")
        writer = make_writer(image_size)  # type: ignore[arg-type]
    writer.finish()  # a shard's part is marked finished only now: a merge refuses the part of a killed shard
    return writer.manifest_path


# ------------------------------------------------------------------------------ launch under torchrun / SLURM


@dataclass(frozen=True)
class LaunchInfo:
    """This process's place in a multi-process launch: global ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int
    world_size: int
    local_rank: int
    source: str  # "torchrun" or "slurm"


def _env_int(env: Mapping[str, str], name: str) -> int:
    try:
        value = int(env[name])
    except ValueError:
        raise ValueError(f"environment variable {name}={env[name]!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"environment variable {name}={value} is negative")
    return value


def launch_info(shard: str | None = None, environ: Mapping[str, str] | None = None) -> LaunchInfo | None:
    """The multi-process launch this process belongs to, or None (a single process / manual shards).

    Args:
        shard: the ``shard`` argument of :func:`tokenize`: None reads torchrun's ``RANK`` /
            ``WORLD_SIZE`` / ``LOCAL_RANK``; ``"auto"`` reads those, else SLURM's ``SLURM_PROCID`` /
            ``SLURM_NTASKS`` / ``SLURM_LOCALID``; an explicit ``"i/N"`` -> None (manual shards).
        environ: environment to read (default ``os.environ``).

    Raises:
        ValueError: a variable is not a non-negative integer, or the rank is not below the world size.
    """
    env = os.environ if environ is None else environ
    if shard not in (None, "", "auto"):
        return None
    found = None
    if "RANK" in env and "WORLD_SIZE" in env:
        found = ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK")
    elif shard == "auto" and "SLURM_PROCID" in env and "SLURM_NTASKS" in env:
        found = ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")
    if found is None:
        return None
    source, rank_var, world_var, local_var = found
    rank, world = _env_int(env, rank_var), _env_int(env, world_var)
    if world < 1 or rank >= world:
        raise ValueError(f"{rank_var}={rank} is not below {world_var}={world}")
    local = _env_int(env, local_var) if local_var in env else 0
    return LaunchInfo(rank, world, local, source)


def resolve_device(device: str, local_rank: int | None = None) -> str:
    """The device this process encodes on.

    ``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``"cpu"``; ``"cuda"`` in a
    multi-process launch (``local_rank`` given) -> ``cuda:<local_rank>``; anything else unchanged.
    """
    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        device = "cuda"
    if device == "cuda" and local_rank is not None:
        count = torch.cuda.device_count()
        if count and local_rank >= count:
            raise ValueError(f"local rank {local_rank} has no GPU of its own ({count} visible): "
                             "launch at most one process per GPU")
        return f"cuda:{local_rank}"
    return device


class _Group:
    """Barriers and small collectives of a distributed tokenization over gloo.

    Uses the caller's process group when one is initialised (through a gloo sub-group when its
    backend is not gloo), else forms one from ``MASTER_ADDR`` / ``MASTER_PORT``; ``active`` is False
    when neither is possible (the ranks then run independently).
    """

    def __init__(self, info: LaunchInfo) -> None:
        import torch.distributed as dist

        self.dist = dist
        self.world_size = info.world_size
        self.group: Any = None
        self.created = False
        self.active = False
        if not dist.is_available() or info.world_size < 2:
            return
        if dist.is_initialized():
            if dist.get_world_size() != info.world_size:
                raise ValueError(f"the process group has {dist.get_world_size()} ranks, "
                                 f"the launch environment says {info.world_size}")
            if dist.get_backend() != "gloo":
                self.group = dist.new_group(backend="gloo")
            self.active = True
            return
        if not os.environ.get("MASTER_ADDR") or not os.environ.get("MASTER_PORT"):
            return
        try:
            dist.init_process_group("gloo", init_method="env://", rank=info.rank, world_size=info.world_size)
        except (RuntimeError, ValueError, OSError) as exc:
            print(f"tokenize: rank {info.rank}: cannot form a process group ({exc}); continuing without one",
                  file=sys.stderr)
            return
        self.created = self.active = True

    def barrier(self) -> None:
        """Wait for every rank (up to :data:`DIST_TIMEOUT`)."""
        self.dist.monitored_barrier(group=self.group, timeout=DIST_TIMEOUT, wait_all_ranks=True)

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj`` (picklable), in rank order."""
        out: list[Any] = [None] * self.world_size
        self.dist.all_gather_object(out, obj, group=self.group)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        self.dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def close(self) -> None:
        """Destroy the process group if this object formed it."""
        if self.created:
            self.dist.destroy_process_group()


def _fold_earlier_parts(out: Path, resume: bool) -> None:
    """Rank 0 before a distributed run: fold the parts of an earlier run into manifest.json (resume), or
    remove manifest and parts (``resume=False``)."""
    if not resume:
        for p in [out / MANIFEST, *manifest_parts(out, markers=True)]:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    elif manifest_parts(out):
        merge_manifests(out, remove_parts=True, allow_missing=True)  # an interrupted run: some never finished


def _merge_and_check(out: Path, names: Sequence[str]) -> str | None:
    """Rank 0 after a distributed run: merge the parts; an error message when scenes are missing."""
    has_manifest = (out / MANIFEST).is_file() or bool(manifest_parts(out))
    if not has_manifest:
        return f"{out}: no manifest written by any rank" if names else None
    merged = read_manifest(merge_manifests(out, remove_parts=True, allow_missing=True))  # scenes checked below
    missing = sorted(set(names) - set(merged["scenes"]))
    if missing:
        return (f"{out / MANIFEST}: {len(missing)} of {len(names)} scenes missing after the merge "
                f"(e.g. {missing[:3]}); is {out} a folder every machine sees? Re-run to finish them.")
    return None


def tokenize(
    sources: list[str],
    out: Path,
    tokenizer: str,
    dataset: str | None = None,
    divisor: float | None = None,
    height: int | None = None,
    width: int | None = None,
    fps: float | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    bf16: bool = False,
    shard: str | None = None,
    resume: bool = True,
    num_workers: int = 2,
    name_depth: int = 1,
    recursive: bool = False,
    progress: bool = True,
) -> Path:
    """Tokenize image folders and/or videos into a token store (one uint16 [T,h,w] array per scene).

    Args:
        sources: image folders, video files, glob patterns (quote them) or .txt lists of those.
        out: store folder (manifest.json + scenes/).
        tokenizer: a LlamaGen VQ .pt, our checkpoint folder, or "preset:vq_tiny" (random weights, for tests).
        dataset: opendv | nuplan | nuscenes: resize by the dataset's divisor (1.0 / 3.75 / 3.125).
        divisor: resize both sides by int(side / divisor) (overrides dataset).
        height: explicit output height (with width; overrides the divisor).
        width: explicit output width.
        fps: resample videos to this rate (default: keep every frame at the video's own rate; a video slower than
            this keeps its own frames and rate); image folders
            without timestamps (no timestamps.json/.txt sidecar, no "__<µs>" names) get index / fps. The store
            records each scene's true rate (video stream, frame timestamps, or this value) and the scenes'
            common rate; without --fps, an image folder without timestamps has an unknown rate (null). On a
            resume, another --fps for such folders rewrites their timestamps and rate (no re-encoding), and no
            --fps keeps the rate they were tokenized with.
        batch_size: frames per encoder call.
        device: cpu, cuda, cuda:1, ..., or auto (cuda when available); under torchrun "cuda"/"auto" mean cuda:LOCAL_RANK.
        bf16: encode under bf16 autocast.
        shard: "i/N": tokenize every N-th scene (sorted by name) from i and write a manifest part (merge
            afterwards); "auto": shard by torchrun's RANK/WORLD_SIZE or SLURM's SLURM_PROCID/SLURM_NTASKS;
            unset: automatic under torchrun, else all scenes.
        resume: skip scenes already in the manifest (False: restart the manifest).
        num_workers: image decoding threads.
        name_depth: scene name = last name_depth path components (2 -> channel/video_id).
        recursive: search the given folders for image folders and videos at any depth.
        progress: show a progress bar with ETA.

    Returns:
        Path of the manifest (or, for a shard without a process group, the manifest part) written.

    Raises:
        TokenStoreError: in a distributed run, scenes are missing after the final merge (e.g. ``out`` is not
            shared between machines); RuntimeError: another rank failed.
    """
    info = launch_info(shard)
    if info is not None and info.world_size > 1:
        shard = f"{info.rank}/{info.world_size}"
    elif shard == "auto" or (info is not None and info.world_size == 1):
        shard = None
    local_rank = info.local_rank if info is not None else None
    if local_rank is None and "LOCAL_RANK" in os.environ:  # explicit shards under a launcher
        local_rank = _env_int(os.environ, "LOCAL_RANK")
    device = resolve_device(device, local_rank)
    if local_rank is not None and device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    size, div = _resize_args(dataset, divisor, height, width)
    found = discover_sources(sources, fps=fps, name_depth=name_depth, recursive=recursive)
    model = _load_tokenizer(tokenizer, device)
    out = Path(out)

    def run() -> Path:
        return tokenize_sources(found, out, model, batch_size=batch_size, size=size, divisor=div, device=device,
                                bf16=bf16, shard=shard, resume=resume, num_workers=num_workers, progress=progress,
                                fps=None)  # each scene's true rate (fps only resamples videos / times indices)

    if info is None or info.world_size < 2:
        return run()
    group = _Group(info)
    if not group.active:
        path = run()
        print(f"tokenize: shard {info.rank}/{info.world_size} done ({path.name}); no process group "
              f"(MASTER_ADDR/MASTER_PORT unset): once every shard has finished, run "
              f"`vavam tokenize merge --root {out}`", file=sys.stderr)
        return path
    try:
        problem = None
        if info.rank == 0:
            try:
                _fold_earlier_parts(out, resume)
            except (TokenStoreError, OSError) as exc:
                problem = str(exc)
        problem = group.broadcast(problem)  # (also the start barrier)
        if problem is not None:
            raise TokenStoreError(f"cannot resume the store: {problem}")
        caught: Exception | None = None
        try:
            run()
        except Exception as exc:  # noqa: BLE001 - reported to every rank, then re-raised on this one
            caught = exc
        group.barrier()
        failed = [(r, e) for r, e in enumerate(group.gather(None if caught is None else
                                                            f"{type(caught).__name__}: {caught}")) if e]
        message = None
        if info.rank == 0:
            if failed:  # keep what is complete: a re-run resumes from the merged manifest
                with contextlib.suppress(TokenStoreError):
                    merge_manifests(out, remove_parts=True, allow_missing=True)
            else:
                message = _merge_and_check(out, [s.name for s in found])
        message = group.broadcast(message)
        if caught is not None:
            raise caught
        if failed:
            raise RuntimeError(f"tokenize: rank(s) {[r for r, _ in failed]} failed; first: {failed[0][1]}")
        if message is not None:
            raise TokenStoreError(message)
        return out / MANIFEST
    finally:
        group.close()


# ------------------------------------------------------------------------------ npy layout conversion

_NUSCENES_TS = re.compile(r"__(\d{10,})$")
_TRAILING_NUM = re.compile(r"(\d+)$")
_NUMBERED = re.compile(r"(.*?)(\d+)")
_HEX_TOKEN = re.compile(r"[0-9a-f]{16}")
_HEX_LETTER = re.compile(r"[a-f]")
#: a bare 16-digit name is a µs timestamp (1e15 µs: 2001-09, up to 2286), e.g. 1532402927000000.npy
_BARE_US = re.compile(r"\d{16}")
_TIMESTAMP_MODES = ("auto", "name-us", "name-number", "index")
_INDEX_HINT = ("pass --index: the scenes' records (OUT/<split>/records.npz of `vavam data prepare nuscenes|nuplan`) "
               "or the authors' pickle (nuscenes_*_data_cleaned.pkl / nuplan_*_data_cleaned.pkl)")


#: largest relative gap between ``--fps`` and the median rate of an index's scenes (``--fps 10`` on nuScenes' 2 Hz)
_INDEX_FPS_REL_TOL = 0.1


@dataclass
class _ConvertScene:
    """One scene to convert: token files in frame order, their timestamps (None: from the names), rate, origin,
    and where the timestamps come from (``records`` or a ``--timestamps`` mode)."""

    files: list[Path]
    timestamps: np.ndarray | None = None
    fps: float | None = None
    where: str = ""
    timestamps_from: str = ""


def _auto_timestamps_mode(files: Sequence[Path], where: str, one_folder_one_scene: bool) -> str:
    """The timestamps mode that the file names of one scene support; refuses names that give no frame order.

    nuScenes ``..__<µs>`` names and bare 16-digit names (µs timestamps) give ``name-us``; names numbered
    alike (``t_000001``, ``000000001``) ``name-number``.

    Raises:
        ValueError: names that are random tokens (nuPlan), a nuScenes ``samples/<CAMERA>`` folder taken as
            one scene, or names without a common numbering (naming ``where``).
    """
    stems = [f.stem for f in files]
    if all(_NUSCENES_TS.search(s) for s in stems):
        if not one_folder_one_scene:
            return "name-us"
        raise ValueError(
            f"{where}: nuScenes names (<log>__<CAMERA>__<µs>.npy): a samples/<CAMERA> folder holds every scene of "
            f"every log, so it cannot be taken as one scene; {_INDEX_HINT}. If this folder really is one scene, "
            "pass --timestamps name-us"
        )
    if all(_BARE_US.fullmatch(s) for s in stems):
        return "name-us"
    # random tokens: 16 hex digits, some with a letter (all-decimal names are numbers, handled above and below)
    if all(_HEX_TOKEN.fullmatch(s) for s in stems) and any(_HEX_LETTER.search(s) for s in stems):
        raise ValueError(
            f"{where}: file names are random 16-hex tokens (the nuPlan layout <log>/<CAMERA>/<token>.npy), not "
            f"frame numbers or times, so they give no frame order; {_INDEX_HINT}"
        )
    numbered = [_NUMBERED.fullmatch(s) for s in stems]
    if all(numbered) and len({m.group(1) for m in numbered if m}) == 1:
        return "name-number"
    raise ValueError(
        f"{where}: cannot tell the frame order from the file names (e.g. {stems[0]!r}; expected frames numbered "
        f"like t_000001, nuScenes __<µs> names or 16-digit µs names); {_INDEX_HINT}, or --timestamps index to take "
        "the natural name order at --fps"
    )


def _converted_timestamps(files: Sequence[Path], mode: str, fps: float, number_base: int, where: str) -> np.ndarray:
    """µs timestamps of one scene's token files from their names (``mode`` as in :func:`convert_npy_layout`)."""
    stems = [f.stem for f in files]
    if mode == "name-us":
        vals = []
        for f, s in zip(files, stems):
            m = _NUSCENES_TS.search(s) or _BARE_US.fullmatch(s)
            if not m:
                raise ValueError(f"{f}: name carries no '__<timestamp_us>' and is no 16-digit µs timestamp")
            vals.append(int(m.group(1) if m.re is _NUSCENES_TS else m.group(0)))
        return np.asarray(vals, dtype=np.int64)
    if mode == "name-number":
        nums = []
        for f, s in zip(files, stems):
            m = _TRAILING_NUM.search(s)
            if not m:
                raise ValueError(f"{f}: name has no trailing frame number")
            nums.append(int(m.group(1)))
        return ((np.asarray(nums, dtype=np.float64) - number_base) * 1e6 / fps).round().astype(np.int64)
    if mode == "index":
        return (np.arange(len(files), dtype=np.float64) * 1e6 / fps).round().astype(np.int64)
    raise ValueError(f"{where}: unknown timestamps mode {mode!r} ({' | '.join(_TIMESTAMP_MODES)})")


def _load_token_file(path: Path, grid: tuple[int, int] | None) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise TokenStoreError(f"{path}: cannot read token file (truncated or corrupt?): {exc}") from exc
    if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.integer):
        raise TokenStoreError(f"{path}: expected an integer [h, w] token array, got {arr.dtype} {arr.shape}")
    if grid is not None and tuple(arr.shape) != tuple(grid):
        raise TokenStoreError(f"{path}: token grid {arr.shape[0]}x{arr.shape[1]}, other frames are {grid[0]}x{grid[1]}")
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise TokenStoreError(f"{path}: token ids outside [0, 65535]")
    return arr


def _npy_folders(src: Path) -> dict[Path, list[Path]]:
    """Folders under ``src`` holding ``.npy`` files -> their files; follows symlinked folders (the authors'
    ``flat_tokens/<video_id>`` links), each real folder once (so link loops end)."""
    seen: set[tuple[int, int]] = set()
    found: dict[Path, list[Path]] = {}
    for dirpath, dirnames, filenames in os.walk(src, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:  # a dangling link
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # reached again through a link: already read (or a loop)
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files = [Path(dirpath) / f for f in filenames if f.endswith(".npy") and not f.startswith(".")]
        if files:
            found[Path(dirpath)] = files
    return found


def _index_scenes(
    src: Path, index: Path, camera: str | None, split: str | None, fps: float | None
) -> dict[str, _ConvertScene]:
    """Scenes from a scene index: records (``.npz``) or the authors' pickle (reference §4.4).

    Each record is a scene (its name), its frames in record order with the record timestamps and the
    rate measured from them; the token file of a frame is ``src / <image path with .npy>`` (the
    reference's lookup rule). ``fps`` (the store's nominal rate) is checked against the scenes' median rate.

    Raises:
        ValueError: ``--camera`` / ``--split`` with a records file, a bad pickle or record, an ``--fps`` far
            from the scenes' rate (naming the file and flag).
    """
    from vavam.data.records import (
        _NUMPY_GLOBALS,
        load_records,
        records_from_reference_pickle,
        reference_pickle_split,
    )
    from vavam.io import safe_pickle_load

    index = Path(index)
    where_index = f"--index {index}"
    if not index.is_file():
        raise FileNotFoundError(f"{where_index}: no such file")
    if index.suffix == ".npz":
        given = [flag for flag, value in (("--camera", camera), ("--split", split)) if value is not None]
        if given:
            raise ValueError(f"{' and '.join(given)}: {where_index} is a records file, which holds one split of one "
                             "camera (OUT/<split>/records.npz); --camera / --split pick them in the authors' pickle")
        records = load_records(index, check_files=False)
    else:
        data = safe_pickle_load(index, extra_globals=_NUMPY_GLOBALS)
        entries, split = reference_pickle_split(data, split, where_index, split_option="--split")
        where = where_index + (f" (split {split!r})" if split is not None else "")
        if camera is None:
            camera = _pickle_camera(entries, where)
        # grouped by scene and sorted by timestamp, as the reference's dataset sorts its list
        records = records_from_reference_pickle(entries, camera=camera, validate=False, where=where)
    scenes: dict[str, _ConvertScene] = {}
    for rec in records:
        where = f"{where_index}, scene {rec.name!r}"
        if not rec.image_paths:
            raise ValueError(f"{where}: no image paths (file_path), so no token files can be found")
        files = []
        for k, p in enumerate(rec.image_paths):
            rel = Path(p)
            if rel.is_absolute():
                raise ValueError(f"{where}, frame {k}: image path {p} is absolute; token files are looked up as "
                                 "<src>/<relative image path with .npy>")
            files.append(src / rel.with_suffix(".npy"))
        ts = np.asarray(rec.timestamps, dtype=np.int64)
        scenes[rec.name] = _ConvertScene(files, ts, rate_from_timestamps(ts), where, timestamps_from="records")
    rates = [sc.fps for sc in scenes.values() if sc.fps]
    if fps is not None and rates:
        median = float(np.median(rates))
        if abs(median - fps) > _INDEX_FPS_REL_TOL * fps:
            raise ValueError(f"--fps {fps:g}: the scenes of {where_index} run at {median:.3g} fps (median of "
                             f"{len(rates)} scenes); --fps names the store's nominal rate (e.g. 2 for nuScenes "
                             "keyframes, 10 for nuPlan): give that rate, or leave --fps out to record theirs")
    return scenes


def _pickle_camera(entries: Sequence[Any], where: str) -> str:
    """The camera key (``CAM_FRONT`` / ``CAM_F0``) of a reference pickle's entries (one split's list)."""
    first = entries[0] if entries and isinstance(entries[0], dict) else {}
    found = [c for c in ("CAM_FRONT", "CAM_F0") if c in first]
    if len(found) != 1:
        raise ValueError(f"{where}: cannot tell the camera key (CAM_FRONT for nuScenes, CAM_F0 for nuPlan) "
                         "from its first entry; pass --camera")
    return found[0]


def convert_npy_layout(
    src: Path,
    out: Path,
    index: Path | None = None,
    camera: str | None = None,
    split: str | None = None,
    fps: float | None = None,
    timestamps: str = "auto",
    number_base: int = 1,
    scenes_json: Path | None = None,
    downsample: int = 16,
    codebook_size: int = 16384,
    tokenizer: str | None = None,
    shard: str | None = None,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Convert the authors' one-.npy-per-frame token layout into a token store.

    Scenes, frame order and timestamps come from, in this order of preference:

    * ``index`` (nuScenes, nuPlan): one scene per record, frames in record order with the record
      timestamps; the token file of a frame is ``src / <image path, .jpg -> .npy>`` as in the reference
      (``samples/CAM_FRONT/<name>.npy``, ``<log>/CAM_F0/<token>.npy``). The index is our records file
      (``OUT/<split>/records.npz`` of ``vavam data prepare``, so store and records share scene names and
      frames) or the authors' pickle (``nuscenes_*_data_cleaned.pkl``; ``camera`` and ``split`` pick
      its camera key and split; with a records file they are refused, as is a ``timestamps`` mode).
    * ``scenes_json``: ``{scene name: [relative .npy or .jpg paths, ...]}``, timestamps from the names.
    * otherwise every folder under ``src`` holding ``.npy`` files (symlinked folders followed, as in the
      authors' ``flat_tokens/<video_id>``) is a scene named by its path relative to ``src`` (OpenDV
      ``tokens/{channel}/{video_id}/t_000001.npy`` -> ``channel/video_id``), its frames ordered by the
      numbers in their names. Folders whose names give no order are refused, naming the folder: the
      nuPlan layout (random 16-hex image tokens) and the nuScenes ``samples/<CAMERA>`` folders (every
      scene and log in one folder) need ``index``.

    Each scene records its frame rate (from its timestamps, or ``fps`` for numbered / indexed frames);
    the store records the scenes' common rate (null when they differ by more than 2 %), or with ``index``
    and ``fps`` that nominal rate (refused when far from the scenes' median rate): nuPlan / nuScenes
    timestamps jitter, and a store needs one rate for ``vavam train video --mix``.

    Args:
        src: root of the per-frame layout (e.g. ``tokens/`` or ``flat_tokens/``).
        out: store folder to write.
        index: scene index: a records ``.npz`` or the authors' reference ``.pkl`` (see above).
        camera: camera key of a reference pickle (``CAM_FRONT`` / ``CAM_F0``; default: the one the pickle has).
        split: split of a reference pickle holding ``{split: [...]}``.
        fps: frame rate of name-number / index timestamps (default 10: the authors' OpenDV frames); with
            ``index``, the store's nominal rate (default: the scenes' common rate).
        timestamps: without ``index``: auto (from the names; refuses names that give no order) |
            name-us (nuScenes ``..__<µs>``, or bare 16-digit µs names) | name-number ((n - number_base) / fps) |
            index (natural order, i / fps).
        number_base: frame number of the first frame (OpenDV ``t_000001`` -> 1).
        scenes_json: explicit scene -> files mapping (paths relative to src; .jpg is read as .npy).
        downsample: tokenizer downsampling (image size = grid * downsample); recorded in the manifest.
        codebook_size: recorded in the manifest (> 65,536 is refused).
        tokenizer: optional tokenizer (path or preset:NAME) whose identity is recorded.
        shard: "i/N" share of the sorted scenes (writes a manifest part; merge afterwards).
        resume: skip scenes already converted from the same files and timestamps (others are redone).
        progress: show a progress bar.

    Returns:
        Path of the manifest (or manifest part) written.

    Raises:
        ValueError: a folder whose names give no frame order, a bad index, a missing token file (naming it),
            options that do not apply (``--camera`` / ``--split`` without a pickle index, ``--timestamps`` or
            ``--number-base`` with one).
    """
    src = Path(src)
    check_codebook_size(codebook_size)
    check_fps(fps, "--fps")  # a negative rate reversed every scene's frames; 0 / NaN wrote INT64_MIN timestamps
    if not src.is_dir():
        raise FileNotFoundError(f"{src}: no such folder")
    if timestamps not in _TIMESTAMP_MODES:
        raise ValueError(f"--timestamps {timestamps!r}: expected one of {' | '.join(_TIMESTAMP_MODES)}")
    if index is not None and scenes_json is not None:
        raise ValueError("give --index or --scenes-json, not both")
    if index is None and (camera is not None or split is not None):
        raise ValueError("--camera / --split pick the camera and split of an --index pickle; there is no --index")
    if index is not None and timestamps != "auto":
        raise ValueError(f"--timestamps {timestamps}: with --index {index} the frame times are the index's; "
                         "--timestamps applies to folders ordered by their file names")
    if index is not None and number_base != 1:
        raise ValueError(f"--number-base {number_base}: with --index {index} the frame times are the index's; "
                         "--number-base applies to frames numbered in their file names")
    groups: dict[str, _ConvertScene] = {}
    if index is not None:
        groups = _index_scenes(src, Path(index), camera, split, fps)
    elif scenes_json is not None:
        from vavam.io import read_json

        spec = read_json(scenes_json)
        if not isinstance(spec, dict):
            raise ValueError(f"{scenes_json}: expected an object {{scene name: [files]}}")
        for name, files in spec.items():
            groups[str(name)] = _ConvertScene([src / Path(f).with_suffix(".npy") for f in files],
                                              where=f"{scenes_json}, scene {name!r}")
    else:
        for folder, files in _npy_folders(src).items():
            name = folder.relative_to(src).as_posix()
            groups[name if name != "." else src.name] = _ConvertScene(
                sorted(files, key=lambda p: natural_key(p.name)), where=str(folder))
    if not groups:
        raise FileNotFoundError(f"{src}: no .npy token files found" + (f" for --index {index}" if index else ""))
    for name, scene in groups.items():  # order and timestamps of name-ordered scenes, checked before writing
        if scene.timestamps is not None:
            continue
        mode = timestamps
        if mode == "auto":
            mode = _auto_timestamps_mode(scene.files, scene.where, one_folder_one_scene=scenes_json is None)
        rate = fps if fps is not None else 10.0
        ts = _converted_timestamps(scene.files, mode, rate, number_base, scene.where)
        order = np.argsort(ts, kind="stable")
        scene.files = [scene.files[k] for k in order]
        scene.timestamps = ts[order]
        scene.fps = rate_from_timestamps(scene.timestamps) if mode == "name-us" else rate
        scene.timestamps_from = mode
    shard_t = parse_shard(shard)
    mine = select_shard(list(groups), shard_t)
    identity: dict[str, Any] = {"name": "unknown", "converted_from": "per-frame npy layout"}
    if tokenizer is not None:
        identity = tokenizer_identity_of(_load_tokenizer(tokenizer, "cpu"))
    first_scene = groups[mine[0] if mine else next(iter(groups))]
    grid = tuple(_load_token_file(_existing(first_scene, 0), None).shape)
    nominal = index is not None and fps is not None  # --index --fps: the store's nominal rate
    writer = TokenStoreWriter(out, grid, image_size=(grid[0] * downsample, grid[1] * downsample), downsample=downsample,
                              codebook_size=codebook_size, tokenizer=identity, shard=shard_t, resume=resume,
                              fps=fps if nominal else None, fps_from_scenes=not nominal, complete=False)
    fingerprints = {n: _convert_fingerprints(src, groups[n]) for n in mine}
    resumed = _Resume(writer, "convert", "converting it again", kept_hint="a single-frame scene has none")

    def finished(name: str) -> bool:
        scene = groups[name]
        return resumed.keep(name, scene.where, fingerprint=fingerprints[name][0],
                            frames_fingerprint=fingerprints[name][1], timestamps_us=scene.timestamps,
                            rate=scene.fps, timestamps_from=scene.timestamps_from)

    todo = [n for n in mine if not finished(n)]
    resumed.report_kept()
    bar = _progress(sum(len(groups[n].files) for n in todo), progress, "convert")
    try:
        for name in todo:
            scene = groups[name]
            writer.remove_stale_temporaries(name)
            tokens = np.empty((len(scene.files), *grid), dtype=np.uint16)
            for i in range(len(scene.files)):
                tokens[i] = _load_token_file(_existing(scene, i), grid)
                bar.update(1)
            writer.write_scene(name, tokens, scene.timestamps, source=str(scene.files[0].parent), fps=scene.fps,
                               first_frame=scene.files[0].name, last_frame=scene.files[-1].name,
                               fingerprint=fingerprints[name][0], frames_fingerprint=fingerprints[name][1],
                               timestamps_from=scene.timestamps_from)
    finally:
        bar.close()
    writer.finish()  # a shard's part is marked finished only now (see merge_manifests)
    return writer.manifest_path


def _existing(scene: _ConvertScene, frame: int) -> Path:
    """Token file ``frame`` of ``scene``; a missing one raises naming the scene, frame and file."""
    path = scene.files[frame]
    if not path.is_file():
        raise FileNotFoundError(f"{scene.where}, frame {frame}: token file {path} is missing")
    return path


def _convert_fingerprints(src: Path, scene: _ConvertScene) -> tuple[str, str]:
    """sha256 of a converted scene's token files (relative to ``src``) with and without their timing
    (timestamps, where they come from, rate)."""
    files = {"files": [os.path.relpath(f, src).replace(os.sep, "/") for f in scene.files]}
    ts = [] if scene.timestamps is None else [int(t) for t in scene.timestamps]
    timing = {"timestamps_us": ts, "timing": [scene.timestamps_from, scene.fps]}
    return sha256_json({**files, **timing}), sha256_json(files)
