"""``vavam data prepare {opendv,nuscenes,nuplan}``: a dataset's raw layout -> records and a token store.

Outputs under ``OUT`` (one folder per split)::

    OUT/<split>/records.npz          # nuScenes / nuPlan: scene records (vavam.data.records format)
    OUT/<split>/tokens/              # with --tokenizer: the token store (manifest.json + scenes/)
    OUT/<split>.json                 # OpenDV: the split's video ids (VaViM split-file format)
    OUT/frames512/<channel>/<id>/    # OpenDV with --frames: f_000001.jpg ... (authors' layout)
    OUT/prepare_summary.json         # what was read, written and skipped

``<split>`` is the split's name, lower-cased for OpenDV (``--splits Train`` -> ``OUT/train.json``), and
for a nuScenes scene-list file (``--splits lists/my_split.txt``) the file's stem (``OUT/my_split/``).

nuScenes / nuPlan frames are read from the records' image files (``FrameSource.from_files``, the
record timestamps) and resized by the dataset's divisor (3.125 / 3.75 -> 512x288) unless
``--height/--width`` or ``--divisor`` say otherwise. OpenDV frames are decoded from the videos
straight into the tokenizer (no JPEGs), trimmed and resampled to 10 fps, resized to 288x512.

Token stores are written scene by scene and resumable (``--resume``, default on), optionally
sharded (``--shard i/N``: the shard that finds every shard finished merges the parts and writes the records
(nuScenes / nuPlan, below) or the split list (OpenDV)). With ``--skip-bad``, bad input found by
the readers (missing / corrupt files, bad rows, non-monotonic timestamps, NaN poses, ...) and
scenes that fail to decode during tokenization are skipped, counted and printed; without it the
first problem raises an error naming the scene and frame. Records never keep a scene whose
tokenization failed.

Sharded nuScenes / nuPlan runs: each shard records the scenes that failed in its share in
``OUT/<split>/tokenize_failed.part-<i>-of-<N>.json`` (rewritten from scratch by each run of the shard, before
its manifest part is marked finished) and writes ``records.npz`` without the failures known so far. The
shard that finds every shard of the ``N`` finished merges the token store (as ``vavam tokenize merge``
does) and writes the final ``records.npz`` without the scenes that failed in any shard, printing them
(count, names, reasons): the records and the store are then those of the unsharded run.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal

from vavam.data.frames import FrameSource
from vavam.data.sources import SkipLog, SourceError, SourceResult
from vavam.data.tokenize import _progress, _resize_args, parse_shard, select_shard

if TYPE_CHECKING:
    from vavam.data.records import SceneRecord

__all__ = ["encode_sources", "prepare_nuplan", "prepare_nuscenes", "prepare_opendv", "record_sources"]

SUMMARY_FILE = "prepare_summary.json"
#: a shard's tokenization failures, in OUT/<split>/ (see the module docstring)
FAILED_PART = "tokenize_failed.part-{i:03d}-of-{n:03d}.json"
FAILED_FORMAT = "vavam-prepare-failures"


# ------------------------------------------------------------------------------ helpers


def record_sources(result: SourceResult, fps: float) -> list[FrameSource]:
    """One image-list :class:`FrameSource` per record (record name, image files, record timestamps).

    Relative image paths are resolved against ``result.image_root``.
    """
    sources = []
    for rec in result.records:
        if rec.image_paths is None:
            raise SourceError(f"scene '{rec.name}': record has no image paths to tokenize")
        files = [
            Path(p) if Path(p).is_absolute() or result.image_root is None else Path(result.image_root) / p
            for p in rec.image_paths
        ]
        sources.append(FrameSource.from_files(rec.name, files, timestamps_us=rec.timestamps, fps=fps))
    return sources




def encode_sources(
    sources: Sequence[FrameSource],
    out: str | os.PathLike,
    tokenizer: Any,
    *,
    size: tuple[int, int] | None = None,
    divisor: float | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    bf16: bool = False,
    shard: str | None = None,
    resume: bool = True,
    num_workers: int = 0,
    fps: float | None = None,
    progress: bool = True,
    skip_bad: bool = False,
    skipped: SkipLog | None = None,
    desc: str = "tokenize",
    resize_hint: str = "--height/--width or --divisor",
    on_failed: Callable[[str, str], None] | None = None,
) -> tuple[Path, list[str]]:
    """Tokenize frame sources into a token store, scene by scene, skipping scenes that fail to decode.

    The store format, resume and shard rules are those of :func:`vavam.data.tokenize.tokenize_sources`
    (same writer, same manifest); in addition a scene whose frames cannot be decoded
    (:class:`FrameError` / :class:`SourceError`) is, with ``skip_bad``, left out of the store and
    added to ``skipped`` (``(scene, None, reason)``) while the other scenes go on. Without
    ``skip_bad`` the error propagates. ``on_failed(scene, reason)`` is called for each such scene as it fails
    (before a shard's manifest part is marked finished).

    Returns:
        (path of the manifest or manifest part, names of the scenes that failed). The manifest does
        not exist when no scene could be written and no image size was known.
    """
    from vavam.data.tokenize import tokenize_sources

    skipped = skipped if skipped is not None else SkipLog()
    failed: list[str] = []

    def on_bad_scene(name: str, exc: Exception) -> None:
        reason = f"cannot tokenize: {exc}"
        skipped.add(name, None, reason)
        failed.append(name)
        if on_failed is not None:
            on_failed(name, reason)

    path = tokenize_sources(sources, out, tokenizer, batch_size=batch_size, size=size, divisor=divisor,
                            device=device, bf16=bf16, shard=shard, resume=resume, num_workers=num_workers,
                            progress=progress, fps=fps, on_bad_scene=on_bad_scene if skip_bad else None,
                            desc=desc, resize_hint=resize_hint)
    return path, failed



def _load_tokenizer(tokenizer: str | None, device: str) -> Any:
    if tokenizer is None:
        return None
    from vavam.data.tokenize import _load_tokenizer as load

    return load(tokenizer, device)


def _check_size_fits(model: Any, size: tuple[int, int] | None) -> None:
    """Refuse an explicit ``--height/--width`` the tokenizer cannot cut into tokens, before anything is written
    (it was found at the first frame, after the output folders were made)."""
    if model is None or size is None:
        return
    h, w = size
    down = int(model.downsample)
    if h < 1 or w < 1 or h % down or w % down:
        raise ValueError(f"--height {h} --width {w}: not positive multiples of the tokenizer's downsampling {down}")


def _write_summary(out: Path, dataset: str, summary: dict[str, Any]) -> None:
    from vavam.io import atomic_write_json, read_json

    path = out / SUMMARY_FILE
    old: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(Exception):
            old = read_json(path) or {}
    old = old if isinstance(old, dict) and old.get("dataset") == dataset else {"dataset": dataset, "splits": {}}
    old.setdefault("splits", {}).update(summary["splits"])
    old["dataset"] = dataset
    atomic_write_json(path, old)


def _skip_rows(log: SkipLog) -> list[dict[str, Any]]:
    return [{"scene": s, "frame": f, "reason": r} for s, f, r in log.rows]


def _report(split: str, log: SkipLog, say) -> None:
    say(f"[{split}] {log.summary()}")
    for scene, frame, reason in log.rows[:20]:
        where = scene if frame is None else f"{scene} frame {frame}"
        say(f"  - {where}: {reason}")
    if len(log.rows) > 20:
        say(f"  ... and {len(log.rows) - 20} more (see {SUMMARY_FILE})")


class _ShardFailures:
    """One shard's tokenization failures (scene -> reason), rewritten to its file as each scene fails."""

    def __init__(self, folder: Path, shard: tuple[int, int]) -> None:
        self.path = folder / FAILED_PART.format(i=shard[0], n=shard[1])
        self.shard = shard
        self.failed: dict[str, str] = {}
        self._write()  # a re-run starts afresh: a scene that failed before and now succeeds is no longer listed

    def add(self, scene: str, reason: str) -> None:
        """Record that ``scene`` failed to tokenize, and why."""
        self.failed[scene] = reason
        self._write()

    def _write(self) -> None:
        from vavam.io import atomic_write_json

        atomic_write_json(self.path, {"format": FAILED_FORMAT, "shard": list(self.shard), "failed": self.failed})


def _read_failures(folder: Path, num_shards: int) -> dict[str, str]:
    """Scenes that failed to tokenize in any shard of ``num_shards`` (scene -> reason), from the shards' files.

    Raises:
        ValueError: a shard's file cannot be read or is not one, named with the shard to re-run.
    """
    from vavam.io import read_json

    failed: dict[str, str] = {}
    for i in range(num_shards):
        path = folder / FAILED_PART.format(i=i, n=num_shards)
        if not path.is_file():
            continue
        try:
            data = read_json(path)
        except Exception as exc:
            raise ValueError(f"{path}: cannot read the scenes that failed in shard {i}/{num_shards} ({exc}); "
                             "re-run that shard") from exc
        ok = isinstance(data, dict) and data.get("format") == FAILED_FORMAT and isinstance(data.get("failed"), dict)
        if not ok:
            raise ValueError(f"{path}: not a list of failed scenes written by `vavam data prepare`; re-run shard "
                             f"{i}/{num_shards}")
        failed.update({str(k): str(v) for k, v in data["failed"].items()})
    return failed


def _pending_shards(tokens: Path, num_shards: int) -> list[str]:
    """The shards ``i/N`` of the store at ``tokens`` not finished yet: without a manifest part or an empty shard's
    marker (:func:`~vavam.data.tokens.missing_shards`), or with a part marked unfinished
    (:func:`~vavam.data.tokens.unfinished_shards`). The caller's own shard has left its file, so ``N`` is seen."""
    from vavam.data.tokens import manifest_parts, missing_shards, read_manifest, unfinished_shards

    parts = [(p, read_manifest(p)) for p in manifest_parts(tokens)]
    pending = set(missing_shards(tokens)) | set(unfinished_shards(parts))
    return [f"{i}/{n}" for i, n in sorted(pending) if n == num_shards]


def _save_shard_records(
    dataset: str,
    folder: Path,
    split: str,
    result: SourceResult,
    loader_rows: list[tuple[str, int | None, str]],
    num_shards: int,
) -> tuple[Path, list[SceneRecord], SkipLog, list[str], dict[str, str]]:
    """Write a sharded split's ``records.npz`` without the scenes that failed to tokenize in any shard.

    While shards of ``num_shards`` are still pending the records are provisional (the failures known so far);
    once all have finished the token store is merged (``manifest.json``, as ``vavam tokenize merge``) and the
    records are the unsharded run's: the scenes of the merged store, with the same skip log. Written, then checked
    again: a shard that finished meanwhile is reflected, so the last write is the final one.

    Returns:
        (records path, kept records, skip log (reader rows, then the failures by name), pending shards,
        dropped scenes -> reason).

    Raises:
        ValueError: after the merge, a kept scene is missing from the store with no failure recorded for it.
    """
    from vavam.data.records import save_records
    from vavam.data.tokens import MANIFEST, merge_manifests, read_manifest

    tokens = folder / "tokens"
    names = {r.name for r in result.records}
    while True:
        pending = _pending_shards(tokens, num_shards)
        failed = {k: v for k, v in sorted(_read_failures(folder, num_shards).items()) if k in names}
        kept = [r for r in result.records if r.name not in failed]
        log = SkipLog([*loader_rows, *((name, None, reason) for name, reason in failed.items())])
        if not pending:
            merged = read_manifest(merge_manifests(tokens))["scenes"]
            absent = [r.name for r in kept if r.name not in merged]
            if absent:
                raise ValueError(f"{tokens / MANIFEST}: {len(absent)} scene(s) of the records are missing from the "
                                 f"merged token store with no tokenization failure recorded by any of the {num_shards} "
                                 f"shards (first {absent[0]!r}): re-run the shards (finished scenes are kept)")
        path = save_records(folder / "records.npz", kept, dataset=dataset, image_root=result.image_root,
                            metadata={"split": split, "skipped": log.summary()})
        if not pending or _pending_shards(tokens, num_shards):
            return path, kept, log, pending, failed


def _prepare_records(
    dataset: str,
    results: list[SourceResult],
    out: Path,
    *,
    fps: float,
    tokenizer: str | None,
    divisor: float | None,
    height: int | None,
    width: int | None,
    batch_size: int,
    device: str,
    bf16: bool,
    shard: str | None,
    resume: bool,
    num_workers: int,
    skip_bad: bool,
    progress: bool,
    say,
) -> dict[str, Any]:
    """Shared tail of nuScenes / nuPlan: records file, optional token store, summary."""
    from vavam.data.records import save_records

    shard_t = parse_shard(shard)  # refused before any split folder is made
    model = _load_tokenizer(tokenizer, device)
    size, div = _resize_args(dataset, divisor, height, width)
    _check_size_fits(model, size)
    summary: dict[str, Any] = {"splits": {}}
    for result in results:
        split = result.split or "all"
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        records = list(result.records)
        entry: dict[str, Any] = {"scenes": len(records), "frames": int(sum(len(r) for r in records))}
        failed: list[str] = []
        loader_rows = list(result.skipped.rows)  # the readers' rows (encode_sources adds the failures after them)
        failures = _ShardFailures(folder, shard_t) if model is not None and records and shard_t is not None else None
        if model is not None and records:
            manifest, failed = encode_sources(
                record_sources(result, fps),
                folder / "tokens",
                model,
                size=size,
                divisor=div,
                batch_size=batch_size,
                device=device,
                bf16=bf16,
                shard=shard,
                resume=resume,
                num_workers=num_workers,
                fps=fps,
                progress=progress,
                skip_bad=skip_bad,
                skipped=result.skipped,
                desc=f"{dataset} {split}",
                on_failed=failures.add if failures is not None else None,
            )
            entry["tokens"] = str(manifest)
        log = result.skipped
        if failures is not None and shard_t is not None:
            path, records, log, pending, dropped = _save_shard_records(dataset, folder, split, result, loader_rows,
                                                                       shard_t[1])
            entry.update(shards_pending=pending, dropped_scenes=sorted(dropped))
            if not pending:
                entry["tokens"] = str(folder / "tokens" / "manifest.json")
        else:
            if failed:
                bad = set(failed)
                records = [r for r in records if r.name not in bad]
            path = save_records(
                folder / "records.npz",
                records,
                dataset=dataset,
                image_root=result.image_root,
                metadata={"split": split, "skipped": log.summary()},
            )
        entry.update(
            records=str(path),
            kept_scenes=len(records),
            skipped=_skip_rows(log),
            skipped_summary=log.summary(),
        )
        summary["splits"][split] = entry
        if failures is not None and shard_t is not None:
            if entry["shards_pending"]:
                say(f"[{split}] shard {shard_t[0]}/{shard_t[1]} done; records are provisional until shard(s) "
                    f"{', '.join(entry['shards_pending'])} finish (the last one merges the token store and drops "
                    "the scenes that failed in any shard)")
            else:
                names = entry["dropped_scenes"]
                say(f"[{split}] all {shard_t[1]} shard(s) finished: token store merged -> {entry['tokens']}; dropped "
                    f"{len(names)} scene(s) whose tokenization failed in a shard"
                    + (f": {', '.join(names[:20])}{' ...' if len(names) > 20 else ''}" if names else ""))
        say(f"[{split}] {len(records)} scene(s), {sum(len(r) for r in records)} frame(s) -> {path}")
        _report(split, log, say)
    _write_summary(out, dataset, summary)
    return summary


# ------------------------------------------------------------------------------ commands


def prepare_opendv(
    meta: Path,
    videos: Path,
    out: Path,
    splits: tuple[str, ...] = ("train", "val"),
    tokenizer: str | None = None,
    frames: bool = False,
    height: int = 288,
    width: int = 512,
    fps: float = 10.0,
    trim: Literal["exact", "reference"] = "exact",
    subset: str | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    bf16: bool = False,
    shard: str | None = None,
    resume: bool = True,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict:
    """Prepare OpenDV-YouTube: metadata + videos -> split lists, token stores (and optional 512x288 JPEGs).

    Args:
        meta: metadata file: the official OpenDV-YouTube.json / sheet CSV, or the VaViM metadata.csv (tab-separated).
            Rows without discard values get the official extractor's 90 s (start) / 60 s (end), with a log line.
        videos: the videos folder (<channel>/<youtube id>.mp4|webm|mkv).
        out: output folder (<split>.json video lists, <split>/tokens/, frames512/, prepare_summary.json).
        splits: splits to prepare (train, val; case-insensitive, outputs use the lower-cased name).
        tokenizer: a LlamaGen VQ .pt, our checkpoint folder, or "preset:vq_tiny"; omitted: no token store.
        frames: also write JPEG frames in the authors' layout (out/frames512/<channel>/<video id>/f_000001.jpg);
            with ``shard``, of the shard's share of the videos only.
        height: frame height fed to the tokenizer / written as JPEG (288).
        width: frame width (512).
        fps: frame rate after resampling (10).
        trim: exact keeps [discard_start, duration - discard_end); reference reproduces the authors' ffmpeg span.
        subset: keep only this subset of the official sheet (e.g. Mini).
        batch_size: frames per tokenizer call.
        device: cpu, cuda, cuda:1, ...
        bf16: encode under bf16 autocast.
        shard: "i/N": tokenize every N-th video (sorted by id) from i; the last shard to finish merges the token
            store (as `vavam tokenize merge`) and writes the split list of the videos in it (unsharded runs write
            it at once; a shard wrote none, so a sharded split had no list).
        resume: skip videos already in the token store.
        skip_bad: skip (and count) bad metadata rows and missing, corrupt or truncated videos instead of failing.
        progress: show progress bars.

    Returns:
        the summary written to out/prepare_summary.json.
    """
    from vavam.data.sources.opendv import DEFAULT_DISCARD_S, load_opendv, write_opendv_frames, write_split_lists

    out = Path(out)
    parse_shard(shard)  # the flags, the tokenizer and every split are refused before OUT is created
    model = _load_tokenizer(tokenizer, device)
    _check_size_fits(model, (height, width))
    # Splits are matched case-insensitively (the official sheet says "Train"); outputs use the lower-cased
    # name, as the VaViM split files do: OUT/train.json, OUT/train/tokens/.
    loaded_splits = [(split, load_opendv(meta, videos, split=split, skip_bad=skip_bad, fps=fps, trim=trim,
                                         subset=subset))
                     for split in dict.fromkeys(s.strip().lower() for s in splits)]
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"splits": {}}
    for split, sources in loaded_splits:
        log = sources.skipped
        entry: dict[str, Any] = {"videos": len(sources.videos), "loaded": len(sources)}
        defaulted = {v.video_id: list(v.defaulted) for v in sources.videos if v.defaulted}
        if defaulted:
            entry["discard_defaults"] = defaulted
            print(f"[{split}] {len(defaulted)} video(s) without discard values in {Path(meta).name} "
                  f"(e.g. {next(iter(defaulted))!r}): using the official extractor's defaults "
                  f"{DEFAULT_DISCARD_S['discard_start']:g} s (start) / {DEFAULT_DISCARD_S['discard_end']:g} s (end)")
        bad: set[str] = set()
        if frames:
            # a shard extracts its own share (the one it tokenizes): each extraction first deletes the video's old
            # frames, so shards that all extracted every video replaced each other's frames as they wrote them
            share = set(select_shard([s.name for s in sources], parse_shard(shard))) if shard is not None else None
            chosen = [s for s in sources if share is None or s.name in share]
            bar = _progress(sum(s.num_frames_hint or 0 for s in chosen) or None, progress, f"opendv {split} frames")
            try:
                for src in chosen:
                    try:
                        folder = write_opendv_frames(src, out / "frames512", size=(height, width))
                        bar.update(len(list(folder.glob("f_*.jpg"))))
                    except SourceError as exc:
                        if not skip_bad:
                            raise
                        log.add(src.name, None, f"cannot extract frames: {exc}")
                        bad.add(src.name)
            finally:
                bar.close()
        if model is not None:
            # sharded, every video goes on: the tokenizer picks the shard's share by position among the names, and
            # leaving out this shard's frame failures would shift the others' shares (such a video fails again)
            todo = [s for s in sources if shard is not None or s.name not in bad]
            if todo:
                manifest, failed = encode_sources(
                    todo,
                    out / split / "tokens",
                    model,
                    size=(height, width),
                    resize_hint="--height/--width",
                    batch_size=batch_size,
                    device=device,
                    bf16=bf16,
                    shard=shard,
                    resume=resume,
                    fps=fps,
                    progress=progress,
                    skip_bad=skip_bad,
                    skipped=log,
                    desc=f"opendv {split}",
                )
                bad.update(failed)
                entry["tokens"] = str(manifest)
        loaded = {s.name for s in sources}
        kept = [v for v in sources.videos if v.video_id in loaded and v.video_id not in bad]
        lists = {}
        if shard is None:
            lists = write_split_lists(kept, out, splits=[split])
        elif model is not None:  # the shard that finds every shard finished merges the store and writes the list
            tokens_dir = out / split / "tokens"
            entry["shards_pending"] = pending = _pending_shards(tokens_dir, parse_shard(shard)[1]) if todo else []
            if todo and not pending:
                from vavam.data.tokens import merge_manifests, read_manifest

                merged = read_manifest(merge_manifests(tokens_dir))["scenes"]
                kept = [v for v in kept if v.video_id in merged]  # the scenes that failed in any shard are not
                lists = write_split_lists(kept, out, splits=[split])
                entry["tokens"] = str(tokens_dir / "manifest.json")
                print(f"[{split}] all shards finished: token store merged -> {entry['tokens']}")
            elif pending:
                print(f"[{split}] the split list is written by the last shard to finish (waiting for "
                      f"{', '.join(pending)})")
        entry.update(
            kept=len(kept),
            split_list=str(lists[split]) if split in lists else None,
            trims={s.name: [s.trim_start_s, s.trim_end_s] for s in sources if s.name not in bad},
            skipped=_skip_rows(log),
            skipped_summary=log.summary(),
        )
        summary["splits"][split] = entry
        print(f"[{split}] {len(kept)} of {len(sources.videos)} video(s) prepared")
        _report(split, log, print)
    _write_summary(out, "opendv", summary)
    return summary


def prepare_nuscenes(
    dataroot: Path,
    out: Path,
    version: str = "v1.0-trainval",
    splits: tuple[str, ...] = ("train", "val"),
    camera: str = "CAM_FRONT",
    tokenizer: str | None = None,
    divisor: float | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    bf16: bool = False,
    shard: str | None = None,
    resume: bool = True,
    num_workers: int = 2,
    skip_bad: bool = False,
    check_images: bool = True,
    progress: bool = True,
) -> dict:
    """Prepare nuScenes: a v1.0 dataroot -> CAM_FRONT keyframe records per split (and token stores).

    Args:
        dataroot: folder with <version>/*.json tables and samples/.
        out: output folder (<split>/records.npz, <split>/tokens/, prepare_summary.json).
        version: table folder (v1.0-trainval, v1.0-mini, v1.0-test).
        splits: official splits to prepare (train, val, mini_train, mini_val, ...) and/or scene-list files
            (.txt one name per line, or a .json list), each written to out/<file stem>/.
        camera: camera channel.
        tokenizer: a LlamaGen VQ .pt, our checkpoint folder, or "preset:vq_tiny"; omitted: records only.
        divisor: resize both sides by int(side / divisor) (default 3.125: 1600x900 -> 512x288).
        height: explicit frame height (with width; overrides the divisor).
        width: explicit frame width.
        batch_size: frames per tokenizer call.
        device: cpu, cuda, cuda:1, ...
        bf16: encode under bf16 autocast.
        shard: "i/N": tokenize every N-th scene (sorted by name) from i; the last shard to finish merges the
            token store (as `vavam tokenize merge`) and writes the final records, without the scenes that failed.
        resume: skip scenes already in the token store.
        num_workers: image decoding threads.
        skip_bad: skip (and count) bad frames and scenes instead of failing.
        check_images: check every image file while reading the tables.
        progress: show progress bars.

    Returns:
        the summary written to out/prepare_summary.json.
    """
    from vavam.data.sources.nuscenes import load_nuscenes

    out = Path(out)
    results = [
        load_nuscenes(
            dataroot, version=version, split=split, camera=camera, skip_bad=skip_bad, check_images=check_images
        )
        for split in splits
    ]
    # Output folders are named by the split label: the split itself, or a scene-list file's stem
    # (--splits lists/my_split.txt -> OUT/my_split/), never the raw path.
    given: dict[str, str] = {}
    for split, result in zip(splits, results):
        if result.split in given:
            raise ValueError(f"--splits {given[result.split]!r} and {split!r} would both be written to "
                             f"{out / result.split}; rename one scene-list file")
        given[result.split] = split
    return _prepare_records(
        "nuscenes",
        results,
        out,
        fps=2.0,
        tokenizer=tokenizer,
        divisor=divisor,
        height=height,
        width=width,
        batch_size=batch_size,
        device=device,
        bf16=bf16,
        shard=shard,
        resume=resume,
        num_workers=num_workers,
        skip_bad=skip_bad,
        progress=progress,
        say=print,
    )


def prepare_nuplan(
    db: list[Path],
    sensor_root: Path,
    out: Path,
    split: str = "train",
    camera: str = "CAM_F0",
    tokenizer: str | None = None,
    divisor: float | None = None,
    height: int | None = None,
    width: int | None = None,
    batch_size: int = 64,
    device: str = "cpu",
    bf16: bool = False,
    shard: str | None = None,
    resume: bool = True,
    num_workers: int = 2,
    skip_bad: bool = False,
    check_images: bool = True,
    progress: bool = True,
) -> dict:
    """Prepare nuPlan: log databases + sensor blobs -> CAM_F0 records at 10 Hz (and a token store).

    Args:
        db: .db log files and/or folders of them (e.g. nuplan-v1.1/splits/mini).
        sensor_root: the sensor_blobs folder (images at sensor_root/<image.filename_jpg>).
        out: output folder (<split>/records.npz, <split>/tokens/, prepare_summary.json).
        split: name of this split in the outputs (the databases given make the split).
        camera: camera channel.
        tokenizer: a LlamaGen VQ .pt, our checkpoint folder, or "preset:vq_tiny"; omitted: records only.
        divisor: resize both sides by int(side / divisor) (default 3.75: 1920x1080 -> 512x288).
        height: explicit frame height (with width; overrides the divisor).
        width: explicit frame width.
        batch_size: frames per tokenizer call.
        device: cpu, cuda, cuda:1, ...
        bf16: encode under bf16 autocast.
        shard: "i/N": tokenize every N-th scene (sorted by name) from i; the last shard to finish merges the
            token store (as `vavam tokenize merge`) and writes the final records, without the scenes that failed.
        resume: skip scenes already in the token store.
        num_workers: image decoding threads.
        skip_bad: skip (and count) bad frames, scenes and logs instead of failing.
        check_images: check every image file while reading the databases.
        progress: show progress bars.

    Returns:
        the summary written to out/prepare_summary.json.
    """
    from vavam.data.sources.nuplan import load_nuplan

    out = Path(out)
    if check_images and not Path(sensor_root).is_dir():  # else every frame is reported missing (or skipped)
        raise FileNotFoundError(f"--sensor-root {sensor_root}: no such folder (nuPlan's sensor_blobs, holding "
                                "<log>/CAM_F0/<token>.jpg)")
    given: Any = [Path(p) for p in db]
    result = load_nuplan(
        given if len(given) != 1 else given[0], sensor_root, camera=camera, skip_bad=skip_bad, check_images=check_images
    )
    result.split = split
    return _prepare_records(
        "nuplan",
        [result],
        out,
        fps=10.0,
        tokenizer=tokenizer,
        divisor=divisor,
        height=height,
        width=width,
        batch_size=batch_size,
        device=device,
        bf16=bf16,
        shard=shard,
        resume=resume,
        num_workers=num_workers,
        skip_bad=skip_bad,
        progress=progress,
        say=print,
    )
