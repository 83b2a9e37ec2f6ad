"""Train a VQ tokenizer on procedural driving frames (default) or a folder of images.

A plain training loop rather than a Lightning ``Trainer``: on the 2-core CPU of our tests Lightning
added about 20 ms a step to a 90 ms ``vq_tiny`` step (+24 %), and its manual-optimisation
``global_step`` counts optimiser steps (two per batch with a GAN), which complicates exact resumes.
Here the batch of step ``k`` is a pure function of ``(seed, k)``, so a resumed run continues with
exactly the batches an uninterrupted run would have seen.

Outputs in ``out``::

    tokenizer/            our checkpoint folder (model.safetensors, config.json, meta.json with metrics)
    checkpoints/          step-XXXXXXXX.ckpt (+ .sha256): model, discriminator, optimisers, codebook
                          monitor, step, log rows; the newest ``keep`` kept; resume=True takes the newest
                          intact one (a truncated or corrupt newer one is skipped with a warning)
    metrics.csv           one row per log (train losses) and per evaluation (val PSNR, codebook usage)
    reconstructions.png   validation frames (top) and their reconstructions (bottom)
    summary.json          the returned summary
    tb/                   TensorBoard events, when tensorboard=True

Several devices (``--devices N --nodes M``, launched by ``torchrun``; see docs/scale-out.md): plain data
parallelism. Step ``k``'s global batch of ``batch_size x devices x nodes x accumulate`` images is the
one a single process with that batch would draw; each rank takes its slices, gradients are averaged
by one all-reduce, code usage and latents of the whole global batch are gathered on every rank so
that dead-code restarts are identical everywhere, and rank 0 writes all files. Terms computed over a
batch rather than per image (the codebook entropy loss, the adaptive GAN weight) use each micro batch.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import numbers
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import numpy as np
import torch
import torch.nn.functional as F
import tyro

from vavam.checks import check_nonnegative_int, check_optimizer_args, check_positive_int
from vavam.config import config_to_dict
from vavam.io import atomic_write, atomic_write_bytes, atomic_write_text, sha256_json
from vavam.tokenizer.losses import LossConfig, PatchDiscriminator, TokenizerLoss, load_perceptual_loss
from vavam.train.codebook import CodebookMonitor
from vavam.train.distributed import LoopParallel, ScaleOut, apply_activation_checkpointing, plan_batch
from vavam.train.resume import (
    RESUME_HINT,
    PreemptionSignals,
    check_resume,
    checkpoint_step,
    find_resume_checkpoint,
    prune_checkpoints,
    read_checkpoint,
    write_checkpoint,
    write_run_settings,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


# ------------------------------------------------------------------------------ data


def _derive_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0])


class SyntheticImages:
    """Procedural frames (:mod:`vavam.data.synthetic`): a fresh batch per step, held-out frames from other seeds."""

    def __init__(self, height: int, width: int, seed: int) -> None:
        self.height, self.width, self.seed = height, width, seed
        self.description = f"synthetic {height}x{width}"

    def batch(self, step: int, batch_size: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """Step ``step``'s batch of ``batch_size`` frames uint8 ``[N, H, W, 3]``, or only its ``rows`` (in order)."""
        from vavam.data.synthetic import make_frames

        frames = make_frames(batch_size, self.height, self.width, seed=_derive_seed(self.seed, step, 1))
        return frames if rows is None else frames[list(rows)]

    def validation(self, n: int) -> np.ndarray:
        from vavam.data.synthetic import make_frames

        return make_frames(n, self.height, self.width, seed=_derive_seed(self.seed, 2**31 - 1, 2))


class FolderImages:
    """Images of a folder (recursive, sorted), centre-cropped to the aspect and resized.

    The last ``val`` images (fewer for small folders) are held out for validation.

    Memory stays bounded however large the folder. At start-up every file is listed and checked cheaply, so that
    a truncated or corrupt file is refused up front, naming ``--data`` and the file: a PNG's chunks and their
    checksums up to its end (PIL's ``verify``, no inflating), a JPEG decoded at 1/8 scale (which still reads and
    entropy-decodes all its data), other formats decoded; about 0.1 ms a PNG and 0.5 ms a JPEG of 288x512 on one
    core, on ``workers`` threads (default: up to 4). The held-out images are decoded once, at start-up.

    A training image is decoded, cropped and resized when a batch first draws it. Processed frames are kept in
    memory in the order first drawn until they fill ``cache_bytes`` (default 2 GiB: all of a folder of up to
    ~4,800 frames of 288x512, or ~87,000 of 64x128); the frames not kept are decoded again each time a batch
    draws them. Nothing is evicted: with frames drawn uniformly at random every policy of that size keeps the
    same share of hits, and this one never decodes a kept frame twice. The held-out frames are not counted in
    ``cache_bytes``. A batch is the one of loading every image up front (same draws, same pixels). A file that
    fails to decode when a batch draws it (changed on disk, or damaged in a way the start-up check misses)
    raises a ValueError naming ``--data`` and the file.
    """

    def __init__(self, folder: Path, height: int, width: int, seed: int, val: int,
                 cache_bytes: int = 2 * 1024**3, workers: int | None = None) -> None:
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"--data {folder}: no such folder")
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ValueError(f"{folder}: need at least 2 images ({', '.join(IMAGE_SUFFIXES)}), found {len(files)}")
        val = min(val, len(files) // 5) if len(files) < 5 * val else val
        val = max(val, 1)
        self.folder, self.height, self.width, self.seed = Path(folder), height, width, seed
        self.workers = max(1, int(workers if workers is not None else min(4, os.cpu_count() or 1)))
        self.train_files, val_files = files[:-val], files[-val:]
        self._parallel(self._check, self.train_files)  # cheap: header, (PNG) checksums, (JPEG) 1/8-scale decode
        self.val = np.stack(self._parallel(self._load, val_files))
        self.cache_capacity = max(int(cache_bytes), 0) // (height * width * 3)  # processed frames kept in memory
        self._cache: dict[int, np.ndarray] = {}
        # which images (relative names and sizes): a resume must train on the same ones, wherever the folder is
        self.fingerprint = sha256_json([[f.relative_to(folder).as_posix(), f.stat().st_size] for f in files])
        counts = f"{len(self.train_files)} train / {len(self.val)} held-out images"
        self.description = f"folder {folder} ({counts}, {height}x{width})"

    def batch(self, step: int, batch_size: int, rows: Sequence[int] | None = None) -> np.ndarray:
        """Step ``step``'s batch of ``batch_size`` frames uint8 ``[N, H, W, 3]``, or only its ``rows`` (in order):
        a rank reads only the images of its slices of the global batch."""
        rng = np.random.default_rng([self.seed, step, 1])
        indices = rng.integers(0, len(self.train_files), batch_size)
        if rows is not None:
            indices = indices[list(rows)]
        batch_size = len(indices)
        missing = [i for i in dict.fromkeys(indices.tolist()) if i not in self._cache]  # each once, as drawn
        loaded = dict(zip(missing, self._parallel(self._load, [self.train_files[i] for i in missing])))
        for i in missing:  # kept in the order first drawn, until the cache is full (then never evicted)
            if len(self._cache) >= self.cache_capacity:
                break
            self._cache[i] = loaded[i]
        out = np.empty((batch_size, self.height, self.width, 3), dtype=np.uint8)
        for row, i in enumerate(indices.tolist()):
            out[row] = self._cache[i] if i in self._cache else loaded[i]
        return out

    def validation(self, n: int) -> np.ndarray:
        return self.val[:n]

    def _parallel(self, fn, paths: list[Path]) -> list:
        """``fn`` over ``paths`` (in order; the first failure in order raises), on a few threads: PIL decodes and
        resizes without the GIL."""
        if self.workers == 1 or len(paths) < 2:
            return [fn(p) for p in paths]
        with ThreadPoolExecutor(min(self.workers, len(paths))) as pool:
            return list(pool.map(fn, paths))

    def _check(self, path: Path) -> None:
        """Refuse ``path`` (naming ``--data`` and the file) unless it looks whole (:func:`check_image`)."""
        from vavam.data.frames import FrameError, check_image

        try:
            check_image(path)
        except FrameError as exc:  # the message names the file
            raise ValueError(f"--data {self.folder}: {exc}") from exc

    def _load(self, path: Path) -> np.ndarray:
        """Decode, centre-crop and resize ``path`` -> uint8 ``[height, width, 3]``; errors name ``--data`` and it."""
        from PIL import Image

        from vavam.data.frames import FrameError, read_image

        try:
            rgb = read_image(path)  # [H, W, 3] uint8
        except FrameError as exc:  # unreadable, truncated or corrupt (the message names the file)
            raise ValueError(f"--data {self.folder}: {exc}") from exc
        return np.asarray(_crop_resize(Image.fromarray(rgb), self.height, self.width))


def _crop_resize(im, height: int, width: int):
    from PIL import Image

    w, h = im.size
    target = width / height
    if w / h > target:  # too wide: crop the sides
        new_w = round(h * target)
        im = im.crop(((w - new_w) // 2, 0, (w - new_w) // 2 + new_w, h))
    else:
        new_h = round(w / target)
        im = im.crop((0, (h - new_h) // 2, w, (h - new_h) // 2 + new_h))
    return im.resize((width, height), Image.BICUBIC)


def to_model_images(frames: np.ndarray | torch.Tensor, device: str | torch.device = "cpu") -> torch.Tensor:
    """uint8 ``[N,H,W,3]`` -> float ``[N,3,H,W]`` in [-1, 1].

    Raises TypeError for another dtype (float frames in [0, 1] or [-1, 1] would map silently to about -1) and
    ValueError for another layout (e.g. channels first).
    """
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8:
        raise TypeError(f"frames must be uint8 [N,H,W,3] (0..255), got dtype {x.dtype}")
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 [N,H,W,3] (RGB last), got shape {tuple(x.shape)}")
    x = x.to(device)
    from vavam.types import uint8_to_unit

    return uint8_to_unit(x.permute(0, 3, 1, 2))  # [N,H,W,3] -> [N,3,H,W], as the frames of vavam tokenize


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float ``[N,3,H,W]`` in about [-1, 1] -> uint8 ``[N,H,W,3]``."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


# ------------------------------------------------------------------------------ metrics


def psnr(images: torch.Tensor, recon: torch.Tensor) -> float:
    """PSNR in dB of reconstructions (clamped to [-1,1]) over a set of images in [-1,1], on the [0,1] scale."""
    mse = F.mse_loss((recon.float().clamp(-1, 1) + 1) / 2, (images.float() + 1) / 2).item()
    return 10 * math.log10(1.0 / max(mse, 1e-12))


@torch.no_grad()
def evaluate(model, frames: np.ndarray, batch_size: int = 64, device: str | torch.device = "cpu") -> dict[str, float]:
    """PSNR (dB) of ``model``'s reconstructions of uint8 ``frames`` [N,H,W,3] and its codebook usage (% of codes)."""
    was_training = model.training
    model.eval()
    mse_sum, count, indices = 0.0, 0, []
    for start in range(0, len(frames), batch_size):
        x = to_model_images(frames[start : start + batch_size], device)
        out = model(x)
        mse_sum += F.mse_loss((out.recon.float().clamp(-1, 1) + 1) / 2, (x + 1) / 2, reduction="sum").item()
        count += x.numel()
        indices.append(out.indices.flatten().cpu())
    model.train(was_training)
    used = torch.unique(torch.cat(indices)).numel()
    return {
        "psnr": 10 * math.log10(1.0 / max(mse_sum / count, 1e-12)),
        "codebook_usage": 100.0 * used / model.config.codebook_size,
        "codes_used": used,
    }


@torch.no_grad()
def save_reconstruction_grid(model, images: np.ndarray, path: str | Path, max_columns: int = 8) -> Path:
    """Write a PNG: ``images`` uint8 [N,H,W,3] in the top row(s), their reconstructions below (atomically)."""
    from PIL import Image

    images = np.asarray(images)[:max_columns]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    recon = to_uint8(model(to_model_images(images, device)).recon)
    model.train(was_training)
    top = np.concatenate(list(images), axis=1)  # [H, N*W, 3]
    bottom = np.concatenate(list(recon), axis=1)
    grid = np.concatenate([top, bottom], axis=0)  # [2H, N*W, 3]
    buf = io.BytesIO()
    Image.fromarray(grid).save(buf, format="PNG")
    path = Path(path)
    atomic_write_bytes(path, buf.getvalue())
    return path


# ------------------------------------------------------------------------------ logging


class _MetricsLog:
    """Rows of metrics kept in memory and rewritten (atomically) to a CSV; optional TensorBoard mirror."""

    def __init__(self, path: Path, rows: list[dict] | None = None, tensorboard: Path | None = None) -> None:
        self.path = path
        self.rows = list(rows or [])
        self.writer = None
        if tensorboard is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(tensorboard))

    def log(self, step: int, values: dict[str, float]) -> None:
        self.rows.append({"step": step, **values})
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(k, v, step)

    def flush(self) -> None:
        keys: list[str] = []
        for row in self.rows:
            keys += [k for k in row if k not in keys]
        with atomic_write(self.path, "w") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.rows)
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()


# ------------------------------------------------------------------------------ training


def _steps_since_train_row(rows: list[dict], step: int) -> int:
    """Updated (not skipped) steps after the last training-loss row, up to ``step``: the number of steps in the
    running sums of a checkpoint written by an older version (which did not store it)."""
    last = max((int(r["step"]) for r in rows if any(str(k).startswith("train_") for k in r)), default=0)
    skipped = sum(1 for r in rows if r.get("skipped") and last < int(r["step"]) <= step)
    return max(step - last - skipped, 0)


def _last_evaluation(rows: list[dict], initial: dict[str, float]) -> dict[str, float]:
    """The held-out metrics of the last evaluation in the log ``rows`` (with its ``step``), else ``initial`` (step
    0): what a resumed run's checkpoints report until it evaluates again."""
    for row in reversed(rows):
        if "val_psnr" in row and "codebook_usage" in row:
            return {**initial, "psnr": float(row["val_psnr"]), "codebook_usage": float(row["codebook_usage"]),
                    "step": int(row["step"])}
    return {**initial, "step": 0}


def learning_rate(step: int, steps: int, lr: float, warmup_steps: int, final_lr_ratio: float) -> float:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``final_lr_ratio * lr`` at step ``steps - 1``."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    progress = min(1.0, max(0.0, (step - warmup_steps) / max(1, steps - 1 - warmup_steps)))
    return lr * warm * (final_lr_ratio + (1 - final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def train_tokenizer(
    out: Path,
    preset: str = "vq_tiny",
    steps: int = 1000,
    batch_size: int = 8,
    lr: float = 2e-3,
    warmup_steps: int = 20,
    final_lr_ratio: float = 0.1,
    image_size: tuple[int, int] = (64, 128),
    data: str = "synthetic",
    gan: bool = False,
    gan_start: int = 0,
    gan_weight: float = 0.5,
    perceptual_weights: Optional[Path] = None,
    perceptual_weight: float = 1.0,
    l1_weight: float = 1.0,
    l2_weight: float = 1.0,
    dead_code_window: int = 50,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "32",
    val_frames: int = 64,
    log_every: int = 50,
    eval_every: int = 0,
    ckpt_every: int = 500,
    keep: int = 2,
    resume: bool = False,
    nan_policy: str = "stop",
    tensorboard: bool = False,
    progress: bool = True,
    devices: int = 1,
    nodes: int = 1,
    strategy: Literal["auto", "ddp"] = "auto",
    global_batch: Optional[int] = None,
    accumulate: int = 1,
    activation_checkpointing: bool = False,
    compile: bool = False,
    resume_hint: Annotated[str, tyro.conf.Suppress] = RESUME_HINT,
) -> dict[str, Any]:
    """Train a VQ tokenizer and write it to ``out/tokenizer`` (our checkpoint folder).

    Args:
        out: output folder (checkpoint, resume state, metrics.csv, reconstructions.png).
        preset: tokenizer preset name (``vq_tiny``, ``vq16``).
        steps: training steps (generator updates).
        batch_size: images per device and forward pass (a step uses ``batch_size x devices x nodes x accumulate``).
        lr: peak AdamW learning rate (betas 0.9/0.95, no weight decay).
        warmup_steps: steps of linear learning-rate warmup.
        final_lr_ratio: cosine decay from ``lr`` to ``final_lr_ratio * lr`` at the last step (1: constant).
        image_size: (height, width), multiples of the downsampling factor.
        data: ``synthetic`` (procedural driving frames) or a folder of images.
        gan: add the patch-GAN hinge loss (adaptive weight) from step ``gan_start``.
        gan_start: first step with the GAN terms.
        gan_weight: GAN weight (multiplies the adaptive ratio).
        perceptual_weights: local VGG16 ``features`` weights file enabling the perceptual loss (never downloaded).
        perceptual_weight: weight of the perceptual loss.
        l1_weight: weight of the L1 reconstruction loss.
        l2_weight: weight of the L2 reconstruction loss.
        dead_code_window: restart codes unused over this many steps (0: never).
        seed: seed of the initialisation, the data and the restarts.
        device: torch device.
        precision: ``32`` or ``bf16-mixed`` (autocast of the encoder, decoder, VGG features and discriminator, as
            in LlamaGen; quantizer, pixel and VQ losses in float32).
        val_frames: held-out frames for PSNR and codebook usage.
        log_every: steps between training-loss rows in metrics.csv.
        eval_every: steps between validations (0: at each checkpoint and at the end).
        ckpt_every: steps between checkpoints (tokenizer folder + ``checkpoints/step-*.ckpt``); SIGTERM and
            SIGUSR1 also checkpoint, then exit with status 128 + signal.
        keep: step checkpoints kept.
        resume: continue exactly from the newest intact checkpoint in ``out/checkpoints``; the model, losses,
            learning rate, batch, image size and seed must be those the run started with (recorded in
            ``out/run_settings.json``; a difference is refused by name); the step count may change while the
            steps taken keep their learning rates (e.g. all within the warmup). Without ``resume``, a folder
            holding checkpoints is refused.
        nan_policy: "stop" on a non-finite loss (default) or "skip" the step (no update; a non-finite
            discriminator loss skips the discriminator's step only).
        tensorboard: also write TensorBoard events to ``out/tb``.
        progress: show a progress bar with ETA.
        devices: processes (GPUs) per node; with more than one, launch with ``torchrun --nproc_per_node``.
        nodes: machines.
        strategy: ``auto`` or ``ddp`` (data parallelism; the tokenizer is not sharded).
        global_batch: images per step; derives ``accumulate`` from ``batch_size x devices x nodes``.
        accumulate: forward/backward passes per step (gradient accumulation).
        activation_checkpointing: recompute the encoder's and decoder's block activations in backward.
        compile: ``torch.compile`` the encoder and the decoder.
        resume_hint: what the message after a SIGTERM / SIGUSR1 checkpoint tells the user to do (not a
            command-line option; a caller that re-runs the stage itself passes its own).

    Returns:
        summary dict: initial/final held-out PSNR, codebook usage, dead-code restarts, seconds per step, paths.
    """
    import vavam
    from vavam.tokenizer import save_tokenizer

    out = Path(out)
    check_positive_int(steps, "--steps")
    check_positive_int(log_every, "--log-every")
    check_positive_int(ckpt_every, "--ckpt-every")
    check_positive_int(val_frames, "--val-frames")
    check_nonnegative_int(eval_every, "--eval-every", "at each checkpoint")
    check_nonnegative_int(keep, "--keep", "keep every checkpoint")
    check_optimizer_args(lr, 0.0)  # the tokenizer has no weight decay
    # refused by name rather than trained on silently: a negative ratio ends in a negative learning rate (gradient
    # ascent), a negative loss weight maximises its term, a negative count acts as 0
    check_nonnegative_int(warmup_steps, "--warmup-steps", "no warmup")
    check_nonnegative_int(gan_start, "--gan-start", "from the first step")
    check_nonnegative_int(dead_code_window, "--dead-code-window", "never restart dead codes")
    if isinstance(final_lr_ratio, bool) or not isinstance(final_lr_ratio, numbers.Real) \
            or not (math.isfinite(final_lr_ratio) and 0.0 <= final_lr_ratio <= 1.0):
        raise ValueError(f"--final-lr-ratio must be a number in [0, 1] (1: constant learning rate), "
                         f"got {final_lr_ratio!r}")
    for flag, weight in (("--l1-weight", l1_weight), ("--l2-weight", l2_weight),
                         ("--perceptual-weight", perceptual_weight), ("--gan-weight", gan_weight)):
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) \
                or not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"{flag} must be a finite number >= 0, got {weight!r}")
    if precision not in ("32", "bf16-mixed"):
        raise ValueError(f"--precision must be '32' or 'bf16-mixed', got {precision!r}")
    if nan_policy not in ("stop", "skip"):
        raise ValueError(f"--nan-policy must be 'stop' or 'skip', got {nan_policy!r}")
    config = vavam.presets.get(preset, kind="tokenizer", flag="--preset")
    height, width = (int(v) for v in image_size)
    if height < 1 or width < 1 or height % config.downsample or width % config.downsample:
        raise ValueError(f"--image-size {height} {width} is not a positive multiple of the downsampling factor "
                         f"{config.downsample} of --preset {preset}")
    if gan:  # refused now rather than with a convolution error at step --gan-start
        with torch.device("meta"):  # shapes only: no memory, no draw from the seeded generator
            disc = PatchDiscriminator(3, LossConfig.disc_channels, LossConfig.disc_layers)
        if min(disc.output_size(height, width)) < 1:
            raise ValueError(f"--gan: --image-size {height} {width} is too small for the patch discriminator (it "
                             f"needs at least {disc.min_side()} pixels a side)")
    plan = plan_batch(batch_size, devices, nodes, global_batch, accumulate)
    par = LoopParallel(ScaleOut(devices=devices, nodes=nodes, strategy=strategy, accumulate=plan.accumulate),
                       device=device)
    device = str(par.device)

    torch.manual_seed(seed)
    model = vavam.build_model(config).to(device).train()
    if activation_checkpointing:
        from vavam.tokenizer.vq import AttnBlock, ResnetBlock

        apply_activation_checkpointing(model, [m for m in model.modules() if isinstance(m, (ResnetBlock, AttnBlock))])
    if compile:
        model.encoder.compile()
        model.decoder.compile()
    perceptual = load_perceptual_loss(perceptual_weights).to(device) if perceptual_weights is not None else None
    loss_config = LossConfig(
        l1_weight=l1_weight, l2_weight=l2_weight, perceptual_weight=perceptual_weight,
        gan=gan, gan_weight=gan_weight, gan_start=gan_start,
    )
    criterion = TokenizerLoss(loss_config, perceptual).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    opt_d = (
        torch.optim.AdamW(criterion.discriminator.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
        if criterion.discriminator is not None
        else None
    )
    if data == "synthetic":
        source: SyntheticImages | FolderImages = SyntheticImages(height, width, seed)
    else:
        source = FolderImages(Path(data), height, width, seed, val_frames)
    val = source.validation(val_frames)
    monitor = CodebookMonitor(config.codebook_size, config.codebook_embed_dim, dead_code_window)
    embedding = model.quantize.embedding.weight
    autocast = precision == "bf16-mixed"
    dev_type = torch.device(device).type
    from vavam.hardware import warn_if_slow_bf16

    warn_if_slow_bf16(precision, device, "tokenizer training")

    # running: sums of the train losses since the last train row, over running_steps updated (not skipped) steps;
    # running_counts: the steps behind each sum (fewer for the discriminator's terms when its step was skipped)
    start, rows, initial, running, running_steps, running_counts = 0, [], None, {}, 0, {}
    resume_path = find_resume_checkpoint(out) if resume else None
    # what a resume must keep; the step count may change while the steps taken keep their rates (the batch
    # of step k does not depend on it)
    settings = {"preset": preset, "config": config_to_dict(config), "steps": steps,
                "global_batch": plan.global_batch, "lr": lr, "warmup_steps": warmup_steps,
                "final_lr_ratio": final_lr_ratio, "image_size": [height, width],
                "data": "synthetic" if data == "synthetic" else "folder", "loss": dataclasses.asdict(loss_config),
                "perceptual": perceptual is not None, "dead_code_window": dead_code_window, "seed": seed,
                "val_frames": val_frames}
    images = getattr(source, "fingerprint", None)
    if images is not None:
        settings["data_images"] = images
    # data_images is checked apart: runs recorded before it existed resume without it
    recorded = check_resume(out, settings, checkpoint_step(resume_path) if resume_path is not None else None,
                            ignore=("steps", "data_images"),
                            rate=lambda s, k: learning_rate(k, int(s["steps"]), lr, warmup_steps, final_lr_ratio))
    recorded_images = (recorded or {}).get("data_images")
    if recorded_images is not None and recorded_images != images:
        raise ValueError(f"--data {data}: not the images this run started with (their names or sizes differ); "
                         "resume with the same images, or start a new run in another folder")
    # made only now: a missing --data folder or --perceptual-weights file, or a refused resume, leaves no empty
    # folder behind
    out.mkdir(parents=True, exist_ok=True)
    if resume_path is None and par.is_main:
        write_run_settings(out, settings)
    if resume_path is not None:
        state = read_checkpoint(resume_path, map_location=device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if opt_d is not None and state.get("opt_d") is not None:
            criterion.discriminator.load_state_dict(state["discriminator"])
            opt_d.load_state_dict(state["opt_d"])
        # the monitor counts and keeps latents on the CPU (observe() adds CPU counts in place): its tensors come
        # back there, not on --device where map_location put them (a CUDA resume failed at its first step)
        monitor.load_state_dict({k: v.cpu() if isinstance(v, torch.Tensor) else v for k, v in state["monitor"].items()})
        start, rows, initial = int(state["step"]), json.loads(state["rows"]), json.loads(state["initial"])
        running = json.loads(state.get("running", "{}"))
        running_steps = int(state.get("running_steps", _steps_since_train_row(rows, start)))
        running_counts = json.loads(state.get("running_counts", "null")) or {k: running_steps for k in running}
    log = _MetricsLog(out / "metrics.csv", rows, out / "tb" if tensorboard and par.is_main else None)
    if initial is None:
        initial = evaluate(model, val, device=device)
        log.log(0, {"val_psnr": initial["psnr"], "codebook_usage": initial["codebook_usage"]})

    active = criterion.active()
    say = _say if par.is_main else (lambda message: None)
    if plan.world_size > 1 or plan.accumulate > 1:
        say(f"global batch {plan.global_batch} = {plan.micro_batch} per device x {plan.world_size} device(s) x "
            f"{plan.accumulate} accumulation pass(es)")
    say(
        f"training {preset} on {source.description}, {steps} steps x {plan.global_batch}, lr {lr:g}, "
        f"precision {precision}; "
        f"active losses: {', '.join(active)}; dead-code restarts every {dead_code_window or 'never'} steps; "
        f"initial held-out PSNR {initial['psnr']:.2f} dB"
        + (f" (resuming at step {start})" if start else "")
    )

    def save(step: int, metrics: dict[str, float]) -> None:
        meta = {
            "step": step,
            "metrics": {"val_psnr": metrics["psnr"], "codebook_usage": metrics["codebook_usage"],
                        "evaluated_at_step": metrics["step"],
                        "initial_val_psnr": initial["psnr"], "dead_code_restarts": monitor.restarts},
            "training": {"preset": preset, "steps": steps, "batch_size": batch_size, "lr": lr,
                         "global_batch": plan.global_batch, "world_size": plan.world_size,
                         "accumulate": plan.accumulate,
                         "warmup_steps": warmup_steps, "final_lr_ratio": final_lr_ratio,
                         "image_size": [height, width], "data": data, "seed": seed, "precision": precision,
                         "losses": active},
        }
        if not par.is_main:
            return
        save_tokenizer(model, out / "tokenizer", meta)
        state = {
            "step": step,
            "config": config_to_dict(config),
            "model": model.state_dict(),
            "opt": opt.state_dict(),
            "discriminator": criterion.discriminator.state_dict() if criterion.discriminator is not None else None,
            "opt_d": opt_d.state_dict() if opt_d is not None else None,
            "monitor": monitor.state_dict(),
            "rows": json.dumps(log.rows),
            "initial": json.dumps(initial),
            "running": json.dumps(running),
            "running_steps": running_steps,
            "running_counts": json.dumps(running_counts),
        }
        write_checkpoint(out / "checkpoints" / f"step-{step:08d}.ckpt", state)
        prune_checkpoints(out, keep)
        log.flush()

    bar = None
    if progress and par.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=start, desc="tokenizer", unit="step", dynamic_ncols=True)
    step_time, timed_steps = 0.0, 0
    metrics = _last_evaluation(log.rows, initial)  # a resumed run's, until it evaluates again
    eval_every = eval_every or ckpt_every
    g_params = [p for p in model.parameters() if p.requires_grad]
    d_params = list(criterion.discriminator.parameters()) if criterion.discriminator is not None else []
    micro, world, passes = plan.micro_batch, plan.world_size, plan.accumulate
    with PreemptionSignals() as signals:
        for step in range(start, steps):
            t0 = time.perf_counter()
            for group in opt.param_groups:
                group["lr"] = learning_rate(step, steps, lr, warmup_steps, final_lr_ratio)
            # this rank's slices of the step's global batch: pass j's micro batch at [j*micro, (j+1)*micro)
            rows = [j * micro * world + par.rank * micro + i for j in range(passes) for i in range(micro)]
            images = source.batch(step, plan.global_batch, rows)
            gen = torch.Generator().manual_seed(_derive_seed(seed, step, 3))
            opt.zero_grad(set_to_none=True)
            # the discriminator (train mode) updates its batch-norm running statistics in every forward: in the
            # generator loss's and in the discriminator loss's. A skipped step puts back the statistics from
            # before its forwards (a NaN there would stay for good), a skipped discriminator step those from
            # before its own (the generator loss's forwards belong to the generator's step, which stands)
            disc_stats = _buffer_copies(criterion.discriminator) if criterion.gan_on(step) else None
            finite, parts, kept, all_indices, all_latents = True, {}, [], [], []
            for j in range(passes):
                x = to_model_images(images[j * micro : (j + 1) * micro], device)
                with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=autocast):
                    z = model.encode_latents(x)
                    q = model.quantize(z)
                    recon = model.decode_latents(q.z_q)
                    loss, micro_parts = criterion.generator_loss(
                        x, recon, q.codebook_loss, q.commit_loss, q.entropy_loss, step,
                        last_layer=model.decoder.last_layer
                    )
                finite = finite and bool(torch.isfinite(loss))
                if finite:
                    (loss / passes).backward()
                for k, v in micro_parts.items():
                    parts[k] = parts.get(k, 0.0) + v / passes
                kept.append((x, recon.detach()))
                all_indices.append(par.gather(q.indices))
                all_latents.append(par.gather(z.detach().float()))
            skipped = not par.all_true(finite)
            restarted = 0
            if skipped:  # no update; the step still evaluates / checkpoints on schedule (the last one included)
                opt.zero_grad(set_to_none=True)
                if disc_stats is not None:
                    _restore_buffers(criterion.discriminator, disc_stats)
                if nan_policy == "stop":
                    raise FloatingPointError(f"tokenizer training loss is non-finite at step {step} (on this rank or "
                                             "another): stopping before it corrupts the weights (nan_policy='skip' "
                                             "skips such steps)")
                say(f"warning: tokenizer training loss is non-finite at step {step}: step skipped")
                log.log(step + 1, {"skipped": 1.0})
            else:
                par.average_gradients(g_params)
                opt.step()
                if opt_d is not None and criterion.gan_on(step):
                    opt_d.zero_grad(set_to_none=True)
                    disc_stats = _buffer_copies(criterion.discriminator)
                    d_finite, d_sums = True, {}
                    for x, recon in kept:
                        with torch.autocast(dev_type, dtype=torch.bfloat16, enabled=autocast):
                            d_loss, d_parts = criterion.discriminator_loss(x, recon)
                        d_finite = d_finite and bool(torch.isfinite(d_loss))
                        if d_finite:
                            (d_loss / passes).backward()
                        for k, v in d_parts.items():
                            d_sums[k] = d_sums.get(k, 0.0) + v / passes
                    if par.all_true(d_finite):
                        par.average_gradients(d_params)
                        opt_d.step()
                        parts.update(d_sums)
                    else:  # the generator's step stands; the discriminator's is not taken
                        opt_d.zero_grad(set_to_none=True)
                        _restore_buffers(criterion.discriminator, disc_stats)
                        if nan_policy == "stop":
                            raise FloatingPointError(
                                f"tokenizer discriminator loss is non-finite at step {step} (on this rank or another): "
                                "stopping before it corrupts the discriminator (nan_policy='skip' skips its step)")
                        say(f"warning: tokenizer discriminator loss is non-finite at step {step}: its step skipped")
                        log.log(step + 1, {"skipped_discriminator": 1.0})
                parts = par.mean(parts)
                # usage and latents of the whole global batch, in stream order: identical restarts on every rank
                # (pass j's gathered tensors hold stream positions [j*micro*world, (j+1)*micro*world) in order)
                monitor.observe(torch.cat(all_indices), torch.cat(all_latents), gen)
                restarted = monitor.maybe_restart(embedding, opt, gen, l2_norm=config.codebook_l2_norm)
                step_time += time.perf_counter() - t0
                timed_steps += 1
                for k, v in parts.items():
                    running[k] = running.get(k, 0.0) + v
                    running_counts[k] = running_counts.get(k, 0) + 1
                running_steps += 1
            done = step + 1
            if restarted:
                log.log(done, {"restarted_codes": restarted})
            if (done % log_every == 0 or done == steps) and running_steps:
                values = {f"train_{k}": v / running_counts[k] for k, v in running.items()}
                values["train_psnr"] = -10 * math.log10(max(values.get("train_l2", 1.0) / 4, 1e-12))
                log.log(done, {**values, "lr": opt.param_groups[0]["lr"], "dead_code_restarts": monitor.restarts})
                running, running_steps, running_counts = {}, 0, {}
            if done % eval_every == 0 or done == steps:
                if par.is_main:  # evaluation needs no other rank; the others wait at the next collective
                    metrics = {**evaluate(model, val, device=device), "step": done}
                    log.log(done, {"val_psnr": metrics["psnr"], "codebook_usage": metrics["codebook_usage"]})
                    if bar is not None:
                        bar.set_postfix(val_psnr=f"{metrics['psnr']:.2f}", usage=f"{metrics['codebook_usage']:.1f}%")
            received = par.max_int(signals.received or 0)
            if received and signals.received is None:
                signals.received = received
            if done % ckpt_every == 0 or done == steps or signals.received is not None:
                save(done, metrics)
                par.barrier()
            if bar is not None:
                bar.update(1)
                if done % 10 == 0:
                    bar.set_postfix(loss=f"{parts['loss']:.4f}", val_psnr=f"{metrics['psnr']:.2f}")
            if signals.received is not None:
                if par.is_main:
                    log.close()
                say(f"signal {signals.received} received: checkpoint written at step {done}; {resume_hint}")
                raise SystemExit(128 + signals.received)
    if bar is not None:
        bar.close()
    if start >= steps:  # nothing left to train: report the stored state
        metrics = {**evaluate(model, val, device=device), "step": start}
    grid = out / "reconstructions.png"
    if par.is_main:
        save_reconstruction_grid(model, val[:8], grid)
        log.close()
    summary = {
        "out": str(out),
        "checkpoint": str(out / "tokenizer"),
        "reconstructions": str(grid),
        "steps": steps,
        "resumed_from": start,
        "initial_psnr": initial["psnr"],
        "final_psnr": metrics["psnr"],
        "initial_codebook_usage": initial["codebook_usage"],
        "codebook_usage": metrics["codebook_usage"],
        "codes_used": metrics["codes_used"],
        "dead_code_restarts": monitor.restarts,
        "seconds_per_step": step_time / max(1, timed_steps),
        "active_losses": active,
        "data": source.description,
        "precision": precision,
        "global_batch": plan.global_batch,
        "world_size": plan.world_size,
        "accumulate": plan.accumulate,
    }
    if par.is_main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    par.close()
    say(
        f"done: held-out PSNR {initial['psnr']:.2f} -> {metrics['psnr']:.2f} dB, codebook usage "
        f"{metrics['codebook_usage']:.1f}%, {monitor.restarts} dead-code restarts, "
        f"{summary['seconds_per_step'] * 1e3:.0f} ms/step"
    )
    return summary


def _buffer_copies(module: torch.nn.Module) -> list[torch.Tensor]:
    """Copies of ``module``'s buffers (the discriminator's: batch-norm running statistics, a few KB)."""
    return [b.detach().clone() for b in module.buffers()]


def _restore_buffers(module: torch.nn.Module, copies: list[torch.Tensor]) -> None:
    """Put back the buffers :func:`_buffer_copies` copied (in place: the tensors stay those the module holds)."""
    with torch.no_grad():
        for buffer, copy in zip(module.buffers(), copies, strict=True):
            buffer.copy_(copy)


def _say(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(f"[vavam] {message}")


__all__ = [
    "train_tokenizer",
    "evaluate",
    "psnr",
    "save_reconstruction_grid",
    "SyntheticImages",
    "FolderImages",
    "to_model_images",
    "to_uint8",
]
