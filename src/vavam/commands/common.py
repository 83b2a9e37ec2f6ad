"""Glue shared by the ``generate`` and ``plan`` commands: checkpoints, tokenizers, inputs, outputs.

Errors are :class:`CommandError` (a ``ValueError``), ``FileNotFoundError`` or ``PermissionError`` (a TorchScript
``--tokenizer`` without ``--trust-code``) whose message starts with the command-line argument at fault
(``CHECKPOINT``, ``--tokenizer``, ``--frames``, ...).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vavam.io import is_checkpoint_folder, recorded_tokenizer
from vavam.media import (  # noqa: F401  (re-exported for the commands)
    _font,
    caption,
    decode_tokens,
    encode_images,
    hstack,
    labelled,
    pad_even,
    to_uint8,
    upscale,
    vstack,
    write_mp4,
    write_npy,
    write_png,
)


class CommandError(ValueError):
    """A command's argument is wrong; the message names the argument."""


# ------------------------------------------------------------------------------ timing


class Timer:
    """Named wall-clock timings in seconds: ``with timer("load"): ...``; ``timer.seconds`` is the dict."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t0


# ------------------------------------------------------------------------------ checkpoints + tokenizer


def sampling_args(top_k: int | None, temperature: float) -> tuple[int | None, float]:
    """Check ``--top-k`` / ``--temperature`` -> ``(top_k, temperature to sample with)``: top-k 0 means no cut
    (None); greedy decoding (top-k 1) ignores the temperature, so any value >= 0 is accepted and 1.0 returned."""
    if top_k is not None and top_k < 0:
        raise CommandError(f"--top-k must be >= 1 (1 = greedy), or 0 / None for no cut, got {top_k}")
    top_k = None if top_k == 0 else top_k
    if not (math.isfinite(temperature) and temperature >= 0):
        raise CommandError(f"--temperature must be a finite number >= 0 (> 0 when sampling), got {temperature}")
    if top_k != 1 and temperature <= 0:
        raise CommandError(f"--temperature must be > 0 when sampling (--top-k {top_k or 0}; 0 is only for greedy "
                           f"decoding, --top-k 1), got {temperature}")
    return top_k, temperature if top_k != 1 else 1.0


def check_checkpoint(checkpoint: Path) -> str:
    """``"folder"`` (our checkpoint folder) or ``"released"`` (a ``.pt`` file or DeepSpeed folder)."""
    checkpoint = Path(checkpoint)
    if not checkpoint.exists():
        raise FileNotFoundError(f"checkpoint {checkpoint}: no such file or folder")
    return "folder" if is_checkpoint_folder(checkpoint) else "released"


def resolve_tokenizer(checkpoint: Path, tokenizer: str | None, required: bool) -> str | None:
    """The tokenizer path to use: ``tokenizer`` if given, else the one our checkpoint folder records
    in ``meta.json`` (``"tokenizer"``); a released ``.pt`` never records one.

    Raises:
        CommandError: none can be found and ``required``.
    """
    if tokenizer:
        return str(tokenizer)
    kind = check_checkpoint(checkpoint)
    if kind == "folder":
        recorded = recorded_tokenizer(checkpoint)  # its recorded path, else the same file relative to the folder
        if recorded is not None and recorded.exists():
            return str(recorded)
    if not required:
        return None
    if kind == "released":
        raise CommandError(
            f"--tokenizer is required: checkpoint {checkpoint} is a released checkpoint, which does not record "
            "its tokenizer (pass the LlamaGen VQ-16 .pt, our tokenizer folder, or the authors' "
            "VQ_ds16_16384_llamagen_encoder.jit/_decoder.jit pair with --trust-code)"
        )
    raise CommandError(
        f"--tokenizer is required: checkpoint {checkpoint} does not record a tokenizer that exists "
        "(meta.json has no usable 'tokenizer' entry)"
    )


def load_tokenizer_arg(tokenizer: str, trust_code: bool, device: str):
    """Load ``--tokenizer`` (errors re-raised with the argument named); ``preset:NAME`` is an untrained tokenizer
    of that preset, as ``vavam tokenize`` and ``vavam data prepare`` build it (random weights, for tests)."""
    from vavam.tokenizer import load_tokenizer

    if str(tokenizer).startswith("preset:"):
        from vavam.data.tokenize import _load_tokenizer

        try:
            return _load_tokenizer(tokenizer, device).to(device).eval()
        except ValueError as exc:  # an unknown or non-tokenizer preset: the message names --tokenizer already
            raise CommandError(str(exc)) from exc
    try:
        return load_tokenizer(tokenizer, trust_code=trust_code, device=device)
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"--tokenizer {tokenizer}: {exc}") from exc
    except PermissionError as exc:
        raise PermissionError(f"--tokenizer {tokenizer}: {exc} (pass --trust-code to allow TorchScript)") from exc
    except ValueError as exc:
        raise CommandError(f"--tokenizer {tokenizer}: {exc}") from exc


def check_codebook(tok, tokenizer: str, vocab_size: int) -> list[str]:
    """The tokenizer's codes must be model tokens: ``codebook_size <= vocab_size``. Returns warnings."""
    codebook = int(tok.codebook_size)
    if codebook > vocab_size:
        raise CommandError(
            f"--tokenizer {tokenizer}: its codebook has {codebook} codes but the model's vocabulary has "
            f"{vocab_size} tokens (expected {vocab_size - 1} codes + 1); this tokenizer does not belong to this model"
        )
    if vocab_size > codebook + 1:
        return [(f"the model's vocabulary ({vocab_size}) is larger than the tokenizer's codebook ({codebook}) + 1: "
                 "generated ids outside the codebook are clamped for decoding")]
    return []


def grid_candidates(tokens_per_frame: int) -> list[tuple[int, int]]:
    """Every ``(h, w)`` with ``h * w == tokens_per_frame``."""
    return [(h, tokens_per_frame // h) for h in range(1, tokens_per_frame + 1) if tokens_per_frame % h == 0]


def choose_frame_size(
    source_hw: tuple[int, int] | None,
    tokens_per_frame: int,
    downsample: int,
    size: tuple[int, int] | None = None,
    tokenizer: str = "",
    trained_size: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Model-input frame size ``(H, W)``: ``size`` if given (checked); else ``trained_size`` (the image size
    the tokenizer recorded at training, when it gives the model's tokens per frame); else the token grid
    ``h x w`` with ``h * w == tokens_per_frame`` nearest 16:9, the driving cameras' aspect (576 tokens:
    18 x 32 -> 288 x 512 pixels with a ds-16 tokenizer), times the downsampling factor.

    The model's spatial positions were learned on one grid, so the grid never follows the source: a source
    of another aspect ratio is stretched to it, with a warning.
    """
    if size is not None:
        hh, ww = int(size[0]), int(size[1])
        if hh < 1 or ww < 1:  # -32 -48 passed the checks below (a 4 x 6 grid) and failed later, naming --frames
            raise CommandError(f"--size {hh} {ww}: height and width must be positive")
        if hh % downsample or ww % downsample:
            raise CommandError(
                f"--size {hh} {ww}: not a multiple of the downsampling factor {downsample} of --tokenizer {tokenizer}"
            )
        gh, gw = hh // downsample, ww // downsample
        if gh * gw != tokens_per_frame:
            raise CommandError(
                f"--size {hh} {ww} with --tokenizer {tokenizer} (downsampling {downsample}) gives a {gh}x{gw} token "
                f"grid = {gh * gw} tokens per frame, but the model expects {tokens_per_frame}"
            )
        return hh, ww
    if trained_size is not None and \
            (trained_size[0] // downsample) * (trained_size[1] // downsample) == tokens_per_frame:
        hh, ww = int(trained_size[0]), int(trained_size[1])
    else:
        h, w = min(grid_candidates(tokens_per_frame), key=lambda g: (abs(math.log((g[1] / g[0]) / (16 / 9))), -g[0]))
        hh, ww = h * downsample, w * downsample
    if source_hw and abs(math.log((source_hw[1] / source_hw[0]) / (ww / hh))) > 0.1:
        import warnings

        warnings.warn(f"--frames are {source_hw[1]}x{source_hw[0]} (W x H) but the model's grid needs "
                      f"{ww}x{hh} frames: they are stretched to that aspect ratio (give --size to choose another "
                      "factorisation of the tokens per frame)", stacklevel=2)
    return hh, ww


def check_grid(
    grid: tuple[int, int], tokens_per_frame: int, what: str, model_grid: tuple[int, int] | None = None
) -> None:
    """A token grid ``h x w`` must hold the model's tokens per frame, and be the grid the model was trained on
    when that is known (``model_grid``, :func:`vavam.io.recorded_grid`): a transposed grid holds as many tokens,
    each at another token's position."""
    if grid[0] * grid[1] != tokens_per_frame:
        raise CommandError(
            f"{what}: token grid {grid[0]}x{grid[1]} = {grid[0] * grid[1]} tokens per frame, but the model "
            f"expects {tokens_per_frame} tokens per frame"
        )
    if model_grid is not None and tuple(grid) != tuple(model_grid):
        raise CommandError(
            f"{what}: token grid {grid[0]}x{grid[1]}, but the model was trained on {model_grid[0]}x{model_grid[1]} "
            "tokens (the same count, each token at another position of the frame)"
        )


def check_out_dir(out: Path) -> Path:
    """``--out`` must be a folder or a path where one can be created: refused by name, before any work, when it or
    one of its parents is a file (``mkdir`` raised ``FileExistsError`` / ``NotADirectoryError`` at the end, after
    the whole run, with a traceback)."""
    out = Path(out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise CommandError(f"--out {out}: {p} is a file, not a folder")
            break
    return out


def make_out_dir(out: Path) -> Path:
    """Create the ``--out`` folder (and its parents); an ``OSError`` becomes a :class:`CommandError` naming it."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--out {out}: cannot create the output folder: {exc.strerror or exc}") from exc
    return out


# ------------------------------------------------------------------------------ inputs


@dataclass
class ClipInput:
    """Frames (or tokens) read for a command.

    ``images``: float ``[N, 3, H, W]`` in [-1, 1] (None when read from a token store);
    ``tokens``: long ``[N, h, w]`` (None until encoded); ``names``: per-frame names;
    ``source``: a description for the JSON summary.
    """

    images: torch.Tensor | None
    tokens: torch.Tensor | None
    names: list[str]
    source: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.names)


def frame_source(frames: Sequence[str], fps: float | None):
    """``--frames``: one video file, one image folder, or image files (in the given order)."""
    from vavam.data.frames import IMAGE_EXTS, VIDEO_EXTS, FrameSource

    paths = [Path(f) for f in frames]
    if not paths:
        raise CommandError("--frames: no files given")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"--frames {p}: no such file or folder")
    if len(paths) == 1 and paths[0].is_dir():
        return FrameSource.from_image_folder(paths[0])
    if len(paths) == 1 and paths[0].suffix.lower() in VIDEO_EXTS:
        return FrameSource.from_video(paths[0], fps=fps)
    bad = [str(p) for p in paths if p.is_dir() or p.suffix.lower() not in IMAGE_EXTS]
    if bad:
        raise CommandError(
            f"--frames: give one video ({'/'.join(VIDEO_EXTS)}), one image folder, or image files "
            f"({'/'.join(IMAGE_EXTS)}); cannot use {bad[:3]}"
        )
    return FrameSource.from_files(paths[0].stem if len(paths) == 1 else paths[0].parent.name or "frames", paths)


def source_size(source) -> tuple[int, int]:
    """``(H, W)`` of a frame source's first frame, without decoding the whole source.

    Raises:
        FrameError: the first image (or the video) cannot be opened; the message names the file.
    """
    from vavam.data.frames import FrameError

    if source.kind == "images":
        from PIL import Image

        try:
            with Image.open(source.files[0]) as im:
                return im.size[1], im.size[0]
        except (OSError, ValueError) as exc:  # PIL's UnidentifiedImageError is an OSError
            raise FrameError(f"{source.files[0]}: cannot decode image (truncated or corrupt?): {exc}") from exc
    import av

    try:
        with av.open(str(source.path)) as container:
            if not container.streams.video:
                raise FrameError(f"{source.path}: no video stream")
            cc = container.streams.video[0].codec_context
            return int(cc.height), int(cc.width)
    except (OSError, av.error.FFmpegError) as exc:
        raise FrameError(f"{source.path}: cannot open video (truncated or corrupt?): {exc}") from exc


def read_frames(
    frames: Sequence[str],
    start: int,
    count: int,
    needed: int,
    tokens_per_frame: int,
    downsample: int,
    tokenizer: str,
    size: tuple[int, int] | None = None,
    fps: float | None = None,
    model_grid: tuple[int, int] | None = None,
) -> ClipInput:
    """Read frames ``start .. start+count-1`` of ``--frames`` (fewer when the source ends), resized for the model
    (to its trained token grid ``model_grid`` times the downsampling when that is known and ``size`` is not given).

    Raises:
        CommandError: fewer than ``needed`` frames from ``start``.
    """
    from vavam.data.frames import FrameError

    try:
        source = frame_source(frames, fps)
        from vavam.tokenizer.loading import recorded_image_size

        trained = recorded_image_size(tokenizer) if tokenizer else None
        if model_grid is not None and size is None:  # the model's own grid beats the tokenizer's training size
            trained = (model_grid[0] * downsample, model_grid[1] * downsample)
        hw = choose_frame_size(source_size(source), tokens_per_frame, downsample, size, tokenizer, trained)
        images, names = [], []
        for fr in source.frames(size=hw):
            if fr.index < start:
                continue
            if fr.index >= start + count:
                break
            images.append(fr.image)
            names.append(fr.name)
    except FrameError as exc:
        raise CommandError(f"--frames: {exc}") from exc
    if len(images) < needed:
        where = ", ".join(map(str, frames[:3])) + (" ..." if len(frames) > 3 else "")
        resampled = f", resampled to {fps} fps" if source.kind == "video" and fps else ""
        raise CommandError(
            f"--frames: {len(images)} frame(s) from --start {start} in {where}{resampled}, "
            f"but --context needs {needed}"
        )
    info = {"kind": source.kind, "path": str(source.path), "name": source.name, "start": start,
            "frames_read": len(images), "image_size": list(hw)}
    if source.kind == "video":
        info["fps"] = fps
    return ClipInput(torch.stack(images), None, names, info)


def read_store_window(
    tokens: Path, scene: str | None, start: int, count: int, needed: int, tokens_per_frame: int,
    model_grid: tuple[int, int] | None = None,
) -> tuple[ClipInput, Any]:
    """Frames ``start .. start+count-1`` (fewer when the scene ends) of ``scene`` in the token store ``tokens``,
    whose grid must hold ``tokens_per_frame`` tokens and be ``model_grid`` when given (:func:`check_grid`)."""
    from vavam.data.tokens import TokenStore, TokenStoreError

    try:
        store = TokenStore(tokens)
    except TokenStoreError as exc:
        raise CommandError(f"--tokens: {exc}") from exc
    check_grid(store.grid, tokens_per_frame, f"--tokens {tokens}", model_grid)
    if scene is None:
        if len(store.scenes) != 1:
            listed = ", ".join(store.scenes[:5]) + (" ..." if len(store.scenes) > 5 else "")
            raise CommandError(f"--scene is required: --tokens {tokens} holds {len(store.scenes)} scenes ({listed})")
        scene = store.scenes[0]
    if scene not in store:
        raise CommandError(f"--scene {scene!r}: not in --tokens {tokens} (scenes: {', '.join(store.scenes[:5])}"
                           f"{' ...' if len(store.scenes) > 5 else ''})")
    total = store.num_frames(scene)
    if start < 0 or total - start < needed:
        raise CommandError(
            f"--tokens {tokens} --scene {scene}: {max(0, total - max(start, 0))} frame(s) from --start {start} "
            f"(scene has {total}), but --context needs {needed}"
        )
    n = min(count, total - start)
    window = torch.from_numpy(store.window(scene, start, n).astype(np.int64))
    info = {"kind": "tokens", "path": str(tokens), "scene": scene, "start": start, "frames_read": n,
            "grid": list(store.grid), "image_size": list(store.image_size) if store.image_size else None}
    return ClipInput(None, window, [f"{scene}:{start + i}" for i in range(n)], info), store


def progress_bar(total: float, enabled: bool, desc: str, unit: str):
    """A tqdm bar on stderr (disabled when ``enabled`` is False)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit=unit, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n:.2f}/{total_fmt} " + unit + "s [{elapsed}<{remaining}]")
