"""Training VaViM by next-token prediction on a token store (Lightning).

Recipe of the released models (reference §2.6–2.9): cross-entropy over all positions of a window
but the last (position i predicts token i+1), muP AdamW (lr / m for matrix-like weights, betas
0.9 / 0.95, decoupled weight decay), Warmup-Stable-Drop schedule stepped per optimiser step,
gradient clipping at norm 1.0.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import time
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import tyro
from torch.utils.data import Dataset

from vavam import presets
from vavam.checks import check_fraction, check_nonnegative_int, check_optimizer_args, check_positive_int, check_seed
from vavam.config import VideoConfig
from vavam.data.mix import exact_fraction
from vavam.data.tokens import TokenStore, TokenStoreError, stride_step_warning
from vavam.io import as_token_grid, atomic_write_json
from vavam.train.distributed import (
    CheckpointFormat,
    ModuleTargets,
    ScaleOut,
    StrategyName,
    check_launch,
    finish_distributed,
    plan_batch,
    recipe_global_batch,
    scale_summary,
)
from vavam.train.lightning import RESUME_HINT, MupWsdMixin, NanPolicy, fit_resumable
from vavam.train.optim import frac_steps
from vavam.train.validation import ShardedValidation, sharded_loader


class VideoWindowDataset(Dataset):
    """Every window of ``num_frames`` frames (``stride`` apart) of a token store's scenes.

    With ``steady`` (what new runs use), windows whose frames are not evenly spaced in time are left out
    (:meth:`~vavam.data.tokens.TokenStore.steady_window_starts`: a frame missing from a scene would put a
    jump in time inside the window) and counted in ``left_out`` / a warning; ``steady=False`` keeps every
    window, as runs started before the check did (their resumes and cool-downs index windows that way).

    Items are long ``[num_frames, h, w]``.
    """

    def __init__(self, store: TokenStore, num_frames: int, stride: int = 1, scenes: list[str] | None = None,
                 steady: bool = True):
        self.store = store
        self.num_frames = num_frames
        self.stride = stride
        self.steady = steady
        self.index: list[tuple[str, int]] = []
        self.left_out = 0  # windows spanning a jump in time
        left_scenes, unchecked = 0, 0
        for scene in scenes if scenes is not None else store.scenes:
            every = store.window_starts(scene, num_frames, stride)
            kept = store.steady_window_starts(scene, num_frames, stride).tolist() if steady else list(every)
            self.index.extend((scene, s) for s in kept)
            self.left_out += len(every) - len(kept)
            left_scenes += len(every) > len(kept)
            unchecked += bool(steady and len(every) and num_frames > 1 and store.scene_fps(scene) is None)
        if self.left_out:
            warnings.warn(f"{store.root}: {self.left_out} windows of {num_frames} frames (stride {stride}) in "
                          f"{left_scenes} scene(s) span a jump in time (a missing frame) and are left out",
                          stacklevel=2)
        if unchecked:
            warnings.warn(f"{store.root}: {unchecked} scene(s) record no frame rate (nor does the store): their "
                          "windows cannot be checked for a jump in time (re-tokenize with --fps to record it)",
                          stacklevel=2)
        if not self.index:
            raise ValueError(f"{store.root}: no window of {num_frames} frames (stride {stride}) fits any scene"
                             + (" without a jump in time" if self.left_out else ""))

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> torch.Tensor:
        scene, start = self.index[i]
        window = self.store.window(scene, start, self.num_frames, self.stride)  # uint16 [T, h, w]
        return torch.from_numpy(window.astype(np.int64))


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor, per_window: bool = False) -> torch.Tensor:
    """Mean CE of positions ``0..L-2`` predicting tokens ``1..L-1``.

    Args:
        logits: ``[B, L, V]`` from the model over the whole window.
        tokens: long ``[B, T, h, w]`` with ``T*h*w == L``.
        per_window: the mean of each window ``[B]`` instead of the scalar mean over all.
    """
    b, length, vocab = logits.shape
    targets = tokens.reshape(b, length)[:, 1:]  # [B, L-1]
    if per_window:
        ce = F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), targets.reshape(-1), reduction="none")
        return ce.view(b, length - 1).mean(1)  # [B*(L-1)] -> [B]
    return F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), targets.reshape(-1))


def video_width_multipliers(model: torch.nn.Module) -> dict[str, float]:
    """muP multipliers of a VideoGPT: ``width / base_width`` for every block matrix, 1 for embeddings."""
    m = model.config.width_mult
    return {name: m for name, p in model.named_parameters() if name.startswith("blocks.") and p.ndim == 2}


class VideoLitModule(ShardedValidation, MupWsdMixin, L.LightningModule):
    """Thin Lightning wrapper around a :class:`vavam.video.VideoGPT`."""

    def __init__(
        self,
        config: VideoConfig,
        lr: float = 0.0041,
        weight_decay: float = 1e-7,
        warmup_iter: int = 0,
        end_iter: int = 1000,
        drop_iter: int = 0,
        nan_policy: NanPolicy = "stop",
        val_names: tuple[str, ...] = (),
        init_state: dict | None = None,
        data: dict | None = None,
        augment: dict | None = None,
    ) -> None:
        super().__init__()
        from vavam.config import config_to_dict
        from vavam.video import VideoGPT

        # ``augment`` is recorded only when a run uses it: the settings of runs without it stay as they were
        # (a resume compares them with the recorded ones)
        self.save_hyperparameters({"config": dataclasses.asdict(config), "vavam_config": config_to_dict(config),
                                   "lr": lr, "weight_decay": weight_decay,
                                   "warmup_iter": warmup_iter, "end_iter": end_iter, "drop_iter": drop_iter,
                                   "data": data or {}, **({"augment": dict(augment)} if augment else {})})
        self.model = VideoGPT(config)
        # muP multipliers read parameter shapes: taken now, before any sharding flattens them
        self._mup_multipliers = {f"model.{k}": v for k, v in video_width_multipliers(self.model).items()}
        self.lr, self.weight_decay = lr, weight_decay
        self.schedule = (warmup_iter, end_iter, drop_iter)
        self.nan_policy = nan_policy
        self.val_names = val_names
        self.init_state = init_state  # a pretraining checkpoint to continue from (cool-down), applied once
        # video_augment: {"permute_codes": share, "codes": K, "seed": s, "self_forcing": bool}
        self.augment = dict(augment or {})

    def on_train_start(self) -> None:
        """Cool-down start: weights and AdamW moments of the pretraining checkpoint; the schedule and
        data position start afresh. Not re-applied when this run itself resumes (global_step > 0)."""
        if self.init_state is None or self.trainer.global_step > 0:
            return
        self.load_state_dict(self.init_state["state_dict"])
        opt_states = self.init_state.get("optimizer_states")
        if opt_states:
            opt = self.trainer.optimizers[0]
            # AdamW's load_state_dict also replaces the groups' hyper-parameters with the pretraining run's:
            # only the moments come from there, this run's options own lr, initial_lr, weight decay, betas, eps
            hyper = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
            opt.load_state_dict(opt_states[0])
            for g, own in zip(opt.param_groups, hyper):
                g.update(own)
        self.init_state = None

    def mup_width_multipliers(self) -> dict[str, float]:
        return dict(self._mup_multipliers)

    def distributed_targets(self) -> ModuleTargets:
        """Scale-out targets: one FSDP unit, one activation checkpoint and one compiled region per block."""
        from vavam.nn import Block

        blocks = tuple(self.model.blocks)
        return ModuleTargets(fsdp_units=(Block,), checkpoint=blocks, compile=blocks)

    def training_inputs(self, batch: torch.Tensor) -> torch.Tensor:
        """The windows ``[B, T, h, w]`` of a training batch as the model reads and predicts them: with code
        permutation some are relabelled (:func:`~vavam.train.video_augment.permute_codes`), drawn from the seed
        and the optimiser step for the step's global batch, so a resume or another number of devices draws
        the same."""
        share = self.augment.get("permute_codes", 0.0)
        if not share:
            return batch
        from vavam.train.resume import step_generator
        from vavam.train.video_augment import permute_codes

        passes = int(self.trainer.accumulate_grad_batches) if self._trainer is not None else 1
        world = int(self.trainer.world_size) if self._trainer is not None else 1
        step, micro = divmod(int(getattr(self, "data_step", 0)), passes)
        b = batch.shape[0]
        return permute_codes(batch, share, int(self.augment["codes"]), step_generator(self.augment["seed"], step),
                             offset=(micro * world + self.global_rank) * b, total=b * world * passes)

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        batch = self.training_inputs(batch)  # the targets: true (if relabelled) tokens
        inputs = batch
        if self.augment.get("self_forcing"):
            from vavam.train.video_augment import own_last_frame

            inputs = own_last_frame(self.model, batch)  # last frame: the model's greedy generation
        loss = self.checked_loss(next_token_loss(self.model(inputs), batch))
        if loss is not None:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_losses(self, batch: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Next-token CE of each window ``[B]`` of a validation batch ``[B, T, h, w]`` (mean over its tokens)."""
        return next_token_loss(self.model(batch), batch, per_window=True)

    def validation_name(self, loader: int) -> str:
        """``val/loss`` (one validation set) or ``val/<name>/loss``."""
        return "val/loss" if len(self.val_names) <= 1 else f"val/{self.val_names[loader]}/loss"


# ------------------------------------------------------------------------------ checks of the arguments


def open_token_store(path: Path, flag: str) -> TokenStore:
    """The token store at ``path``; a missing or unreadable one is refused naming ``flag`` (``--tokens``)."""
    try:
        return TokenStore(path)
    except TokenStoreError as exc:
        raise TokenStoreError(f"{flag}: {exc}") from None


def check_store_fits(
    store: TokenStore, flag: str, tokens_per_frame: int, vocab_size: int, model: str,
    grid: tuple[int, int] | None = None,
) -> None:
    """A token store's grid and codebook (from its manifest) must fit a VaViM: ``h * w`` tokens per frame equal
    to the model's, the very grid ``h x w`` the model was trained on when that is known (a transposed grid has the
    same count, but every token would sit at another token's learned position), and ids that the model's
    vocabulary holds (codebook + 1 at least, as in the released models).

    Args:
        store: the token store.
        flag: the option that gave it (``--tokens``, ``--val-tokens``, ``--mix``), named in the error.
        tokens_per_frame, vocab_size: the model's.
        model: words for the model, e.g. ``"the VaViM of --video x"``.
        grid: the ``(h, w)`` grid the model was trained on (:func:`vavam.io.recorded_grid`), or None if unknown.

    Raises:
        ValueError: naming ``flag``, the store and both sizes.
    """
    h, w = store.grid
    problems = []
    if h * w != tokens_per_frame:
        problems.append(f"its token grid {h}x{w} = {h * w} tokens per frame, the model takes {tokens_per_frame}")
    elif grid is not None and (h, w) != tuple(grid):
        problems.append(f"its token grid is {h}x{w}, the model was trained on {grid[0]}x{grid[1]} tokens (the same "
                        "count, but each token would be read at another position of the frame)")
    codes = store.codebook_size
    if codes is not None and int(codes) >= vocab_size:
        problems.append(f"its codebook of {codes} codes needs a vocabulary of at least {int(codes) + 1} ids "
                        f"(codes + 1), the model's has {vocab_size}")
    if problems:
        raise ValueError(f"{flag} {store.root} does not fit {model}: " + "; ".join(problems))


def check_model_options(width: int | None, init_std: float | None, seed: int) -> None:
    """Refuse ``--width`` / ``--init-std`` / ``--seed`` values that would be ignored or fail deep inside, naming the
    option: a width of 0 used to fall back on the preset's width silently, a negative or NaN init std failed in
    ``torch.nn.init.normal_`` (and 0 zeroed every weight), a seed outside [0, 2^32) failed in Lightning.

    Raises:
        ValueError: naming the option and the value.
    """
    if width is not None:
        check_positive_int(width, "--width")
    if init_std is not None and (isinstance(init_std, (bool, np.bool_)) or not isinstance(init_std, numbers.Real)
                                 or not math.isfinite(init_std) or init_std <= 0):
        raise ValueError(f"--init-std must be a positive finite number (std of the weights' init), got {init_std!r}")
    check_seed(seed)


def check_schedule_fracs(warmup_frac: float, drop_frac: float) -> None:
    """Each of ``--warmup-frac`` / ``--drop-frac`` is a fraction in [0, 1], and together they fit in the run: a
    warmup that overlaps the drop never reaches the learning rate (the schedule jumped from the warmup's ramp to the
    drop's line), which used to be accepted silently.

    Raises:
        ValueError: naming the options and the values.
    """
    check_fraction(warmup_frac, "--warmup-frac")
    check_fraction(drop_frac, "--drop-frac")
    if exact_fraction(float(warmup_frac)) + exact_fraction(float(drop_frac)) > 1:
        raise ValueError(f"--warmup-frac {warmup_frac} and --drop-frac {drop_frac} overlap (their sum exceeds 1): "
                         "the warmup would end inside the drop and never reach --lr; make them sum to 1 at most")


def check_mix_ratios(ratios: list[float], stores: int) -> None:
    """``--mix-ratios``: one finite ratio >= 0 per token store (``--tokens`` first, then each ``--mix``), not all 0.

    Raises:
        ValueError: naming ``--mix-ratios`` and the values.
    """
    ratios = list(ratios)
    if len(ratios) != stores:
        raise ValueError(f"--mix-ratios: {len(ratios)} ratios for {stores} token stores (--tokens + --mix), got "
                         f"{ratios}")
    bad = [r for r in ratios if isinstance(r, (bool, np.bool_)) or not isinstance(r, numbers.Real)
           or not math.isfinite(r) or r < 0]
    if bad or not any(r > 0 for r in ratios):
        raise ValueError(f"--mix-ratios must be finite numbers >= 0, not all 0 (shares of the mix), got {ratios}")


#: what ``--init-from`` takes, said in its errors
INIT_FROM_EXPECTED = "give the .ckpt of a `vavam train video` run (OUT/checkpoints/step-XXXXXXXX.ckpt)"


def _is_safetensors(path: Path) -> bool:
    """True when the file starts like a safetensors file: a little-endian header length, then a JSON object."""
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = path.stat().st_size
    except OSError:
        return False
    return len(head) == 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def read_init_from(init_from: Path) -> dict[str, Any]:
    """The state of a pretraining checkpoint given as ``--init-from`` (weights, AdamW moments, hyper-parameters).

    Raises:
        FileNotFoundError: nothing at ``init_from``.
        ValueError: anything but the ``.ckpt`` of a ``vavam train video`` run, saying what it is: a model folder
            or its ``.safetensors`` (weights without optimiser state), a sharded checkpoint folder, an action
            checkpoint, or a file that is not a loadable checkpoint.
    """
    from vavam.io import CONFIG_FILE, is_checkpoint_folder, read_json
    from vavam.train.resume import CheckpointError, read_checkpoint

    path = Path(init_from)
    where = f"--init-from {path}"
    if not path.exists():
        raise FileNotFoundError(f"{where}: no such file or folder; {INIT_FROM_EXPECTED}")
    if path.is_dir():
        if is_checkpoint_folder(path):
            try:
                kind = read_json(path / CONFIG_FILE).get("kind")
            except (OSError, ValueError, AttributeError):
                kind = None
            what = {"video": "a VaViM model folder", "action": "a VaVAM model folder"}.get(kind, "a model folder")
            raise ValueError(f"{where}: {what} (weights only, no optimiser state), not a training checkpoint; "
                             f"{INIT_FROM_EXPECTED}")
        if path.name.endswith(".ckpt") or path.with_name(path.name + ".sha256").is_file():
            raise ValueError(f"{where}: a sharded checkpoint folder (DeepSpeed / FSDP) holds partitioned AdamW "
                             "moments that the cool-down cannot load; start from the .ckpt of a ddp or "
                             "single-device pretraining run (the folder's weights: vavam checkpoint consolidate)")
        raise ValueError(f"{where}: a folder that is neither a training checkpoint nor a model folder; "
                         f"{INIT_FROM_EXPECTED}")
    if path.suffix == ".safetensors" or _is_safetensors(path):
        raise ValueError(f"{where}: a safetensors weights file (of a model folder: weights only, no optimiser "
                         f"state), not a training checkpoint; {INIT_FROM_EXPECTED}")
    try:
        state = read_checkpoint(path)
    except CheckpointError as exc:
        reason = str(exc).splitlines()[0].strip()  # torch's advice on weights-only loading spans many lines
        reason = reason[len(f"{path}: "):] if reason.startswith(f"{path}: ") else reason
        reason = reason if len(reason) <= 160 else reason[:157] + "..."
        raise ValueError(f"{where}: not a loadable training checkpoint ({reason}); {INIT_FROM_EXPECTED}") from exc
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ValueError(f"{where}: not a vavam training checkpoint (no state_dict); {INIT_FROM_EXPECTED}")
    hparams = state.get("hyper_parameters") or {}
    if not isinstance(hparams.get("config"), dict):
        kind = (hparams.get("vavam_config") or {}).get("kind") if isinstance(hparams.get("vavam_config"), dict) \
            else None
        what = ("a `vavam train action` checkpoint (an action expert on a frozen VaViM)" if kind == "action"
                else "a checkpoint without a VaViM config in its hyper-parameters")
        raise ValueError(f"{where}: {what}, not a VaViM training checkpoint; {INIT_FROM_EXPECTED}")
    try:
        VideoConfig(**hparams["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: its VaViM config does not load ({exc}); {INIT_FROM_EXPECTED}") from exc
    return state


def train_video(
    out: Path,
    tokens: Path,
    preset: str = "vavim_tiny",
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 0.0041,
    weight_decay: float = 1e-7,
    init_std: float | None = None,
    width: int | None = None,
    warmup_frac: float = 0.1,
    drop_frac: float = 0.1,
    num_frames: int | None = None,
    stride: int = 1,
    val_tokens: list[Path] | None = None,
    val_every: int = 100,
    seed: int = 0,
    precision: Literal["32", "bf16-mixed"] = "32",
    num_workers: int = 0,
    ckpt_every: int = 0,
    keep: int = 3,
    resume: bool = False,
    nan_policy: NanPolicy = "stop",
    recipe: Literal["pretrain", "cooldown", "cpu"] | None = None,
    init_from: Path | None = None,
    mix: list[Path] | None = None,
    mix_ratios: list[float] | None = None,
    mix_seed: int = 42,
    progress: bool = True,
    devices: int = 1,
    nodes: int = 1,
    strategy: StrategyName = "auto",
    global_batch: int | None = None,
    accumulate: int = 1,
    activation_checkpointing: bool = False,
    compile: bool = False,
    checkpoint_format: CheckpointFormat = "full",
    permute_codes: float = 0.0,
    self_forcing: bool = False,
    ema: float = 0.0,
    resume_hint: Annotated[str, tyro.conf.Suppress] = RESUME_HINT,
) -> dict:
    """Train VaViM by next-token prediction on a token store; writes our checkpoint folder to OUT/model.

    Args:
        out: run folder (checkpoint in ``out/model``, CSV logs in ``out/logs``).
        tokens: token store folder (``vavam tokenize``) with training scenes.
        preset: a VideoConfig preset (vavim_tiny, vavim_s, ...); the grid and frame count adapt to the store.
        steps: optimiser steps.
        batch_size: windows per device and forward pass (the global batch of a step is
            ``batch_size x devices x nodes x accumulate``).
        lr: muP base learning rate (divided by width / base_width for matrices).
        weight_decay: decoupled weight decay.
        init_std: override of the preset's init std.
        width: override of the preset's width (its muP base width stays: hyper-parameters transfer).
        warmup_frac: share of steps of linear warmup (``floor(warmup_frac x steps)`` steps).
        drop_frac: share of steps of the final linear drop to 0.1 x lr; with ``warmup_frac`` at most 1.
        num_frames: frames per window (default: the preset's).
        stride: frames skipped between window frames (subsampling factor of the store's fps: 5 for 10 Hz
            tokens, 1 for 2 Hz; a stride whose step is not VaViM's 0.5 s is named in a warning).
        val_tokens: token stores with validation scenes (optional); CE is logged per store
            (``val/<folder name>/loss``) when there are several.
        val_every: validation interval in steps (the ``pretrain`` recipe: a quarter of the run, unless given).
        seed: seed of initialisation and data order (an integer in [0, 2^32)).
        precision: "32" or "bf16-mixed".
        num_workers: DataLoader workers.
        ckpt_every: also checkpoint every this many steps (0: only at the end and on SIGTERM / SIGUSR1).
        keep: periodic checkpoints kept in ``out/checkpoints`` (0: all).
        resume: continue from the newest intact checkpoint in ``out/checkpoints`` (exact: weights,
            optimiser, schedule and data position). Model, optimiser, global batch and accumulation, seed,
            data and cool-down mix must be those the run started with (``out/run_settings.json``; a
            difference is refused by name); data paths and the devices may change, and so may the step count
            while the steps taken keep their learning rates. Without ``resume``, a folder holding
            checkpoints is refused.
        nan_policy: "stop" on a non-finite loss (default) or "skip" the step.
        recipe: fill the arguments left at their defaults from a recipe (``pretrain``, ``cooldown``,
            ``cpu``; see :mod:`vavam.train.recipes`). ``steps`` None means one epoch. A recipe's batch is
            its global batch: without ``batch_size`` / ``global_batch`` it is split over the devices.
        init_from: a pretraining checkpoint (``.ckpt`` of a vavam run) to continue from: weights and
            optimiser moments are loaded, the schedule and data position start afresh (the cool-down).
        mix: more token stores to mix with ``tokens`` (cool-down: nuPlan, nuScenes after OpenDV); each
            store's window stride is its fps / 2 (10 Hz -> 5, 2 Hz -> 1). The mix has exactly
            ``steps x batch_size`` windows, split by ``mix_ratios``; when ``init_from`` was trained on
            ``tokens``, its windows come only from those the pretraining had not drawn yet.
        mix_ratios: one ratio per store (``tokens`` first); default the cool-down's 0.40 / 0.5872 / 0.0128.
        mix_seed: seed of the mix's subsampling and repeats (``mix_ratios`` and ``mix_seed`` need ``mix``).
        progress: show a progress bar.
        devices: devices (GPUs, or CPU processes) per node.
        nodes: machines (launch one process per device, e.g. with torchrun; see docs/scale-out.md).
        strategy: ``auto`` (one device: plain; several: ddp), ``ddp``, ``fsdp`` (sharded parameters, gradients
            and optimiser state; one unit per block) or ``deepspeed`` (ZeRO stage 2; needs the deepspeed package).
        global_batch: windows per optimiser step; derives ``accumulate`` from ``batch_size x devices x nodes``.
        accumulate: forward/backward passes per optimiser step (gradient accumulation).
        activation_checkpointing: recompute each block's activations in backward (less memory, ~1/3 more compute).
        compile: ``torch.compile`` each block (needs a working compiler toolchain).
        checkpoint_format: ``full`` (one file) or ``sharded`` (FSDP only: a folder of per-rank shards; turn it
            into a model folder with ``vavam checkpoint consolidate``).
        permute_codes: share of the training windows whose codes are relabelled by a random permutation (one per
            window; :mod:`vavam.train.video_augment`); 0 (the released recipe): none.
        self_forcing: feed the last frame of every training window as the model's own greedy generation from the
            frames before it (targets unchanged; :mod:`vavam.train.video_augment`); not with fsdp / deepspeed.
        ema: decay of an exponential moving average of the weights, saved as the model (:mod:`vavam.train.ema`;
            checkpoints keep the raw weights); 0 (the released recipe): the last weights. Not with fsdp / deepspeed.
        resume_hint: what the message after a SIGTERM / SIGUSR1 checkpoint tells the user to do (not a
            command-line option; a caller that re-runs the stage itself passes its own).

    Every token store (``tokens``, ``val_tokens``, ``mix``) is checked against the model before anything is
    written: its grid must give the model's tokens per frame and its codebook fit the model's vocabulary.
    Windows whose frames are not evenly spaced in time (a frame missing from a scene) are left out, with a
    warning, and counted in the summary's ``windows_left_out`` (:class:`VideoWindowDataset`); the resume or
    cool-down of a run started before that check indexes every window, as the run did.
    """
    given = dict(locals())
    import inspect

    from vavam.train.recipes import VIDEO_RECIPES, apply_recipe, typed

    if not mix:  # the mix options mean nothing without --mix: refused rather than ignored
        defaults = inspect.signature(train_video).parameters
        for name, flag in (("mix_ratios", "--mix-ratios"), ("mix_seed", "--mix-seed")):
            if name in typed() or given[name] != defaults[name].default:
                raise ValueError(f"{flag} {given[name]} was given without --mix: it sets the cool-down mix of --tokens "
                                 "and the --mix token stores; give --mix too, or leave it out")
    args, extras = apply_recipe(train_video, VIDEO_RECIPES, recipe, given)
    recipe_global_batch(train_video, args, given)
    args.pop("recipe")
    if args["mix_ratios"] is None and extras.get("mix_ratios") is not None:
        args["mix_ratios"] = list(extras["mix_ratios"])
    val_every_frac = extras.get("val_every_frac")  # the recipe's validation cadence, unless --val-every is given
    if "val_every" in typed() or given["val_every"] != inspect.signature(train_video).parameters["val_every"].default:
        val_every_frac = None
    return _train_video(**args, ckpt_every_frac=extras.get("ckpt_every_frac"), val_every_frac=val_every_frac,
                        snapshot_fracs=tuple(extras.get("snapshot_fracs", ())))


def _snapshot_steps(fracs: tuple[float, ...], steps: int, every_frac: float | None, every: int) -> list[int]:
    """Steps whose checkpoints a recipe keeps for good (the scaling grid's cool-down starts): ``int(f * steps)``,
    except that a share that is a multiple of the periodic share ``every_frac`` falls on that periodic
    checkpoint (``k * every``; with ``steps`` not a multiple of 4 the two differ, which wrote extra checkpoints).
    """
    out = set()
    for f in fracs:
        k = f / every_frac if every_frac else 0.0
        out.add(round(k) * every if every_frac and abs(k - round(k)) < 1e-9 else int(f * steps))
    return sorted(out - {0})


def _train_video(out: Path, tokens: Path, preset: str, steps: int | None, batch_size: int, lr: float,
                 weight_decay: float, init_std: float | None, width: int | None, warmup_frac: float,
                 drop_frac: float, num_frames: int | None, stride: int, val_tokens: list[Path] | None,
                 val_every: int, seed: int, precision: str, num_workers: int, ckpt_every: int, keep: int,
                 resume: bool, nan_policy: NanPolicy, init_from: Path | None, mix: list[Path] | None,
                 mix_ratios: list[float] | None, mix_seed: int, progress: bool, devices: int = 1, nodes: int = 1,
                 strategy: StrategyName = "auto", global_batch: int | None = None, accumulate: int = 1,
                 activation_checkpointing: bool = False, compile: bool = False,
                 checkpoint_format: CheckpointFormat = "full", ckpt_every_frac: float | None = None,
                 snapshot_fracs: tuple[float, ...] = (), val_every_frac: float | None = None,
                 permute_codes: float = 0.0, self_forcing: bool = False, ema: float = 0.0,
                 resume_hint: str = RESUME_HINT) -> dict:
    from vavam.train.ema import EMAWeights, check_ema_decay
    from vavam.video import save_video_model

    if steps is not None:  # None: one epoch
        check_positive_int(steps, "--steps")
    if num_frames is not None:  # None: the preset's
        check_positive_int(num_frames, "--num-frames")
    check_positive_int(stride, "--stride")
    check_optimizer_args(lr, weight_decay)
    check_positive_int(val_every, "--val-every")
    check_nonnegative_int(ckpt_every, "--ckpt-every", "only at the end and on SIGTERM / SIGUSR1")
    check_nonnegative_int(keep, "--keep", "keep every checkpoint")
    check_schedule_fracs(warmup_frac, drop_frac)
    check_model_options(width, init_std, seed)
    if isinstance(val_tokens, (str, Path)):
        val_tokens = [val_tokens]
    val_paths = [Path(v) for v in (val_tokens or [])]
    names = tuple(v.name for v in val_paths)
    if len(set(names)) != len(names):
        raise ValueError(f"--val-tokens: folder names must differ (they name the CE logs), got {list(names)}")
    preset_config = presets.get(preset, kind="video", flag="--preset") if init_from is None else None
    plan = plan_batch(batch_size, devices, nodes, global_batch, accumulate)
    scale = ScaleOut(devices=devices, nodes=nodes, strategy=strategy, accumulate=plan.accumulate,
                     activation_checkpointing=activation_checkpointing, compile=compile,
                     checkpoint_format=checkpoint_format)
    check_launch(scale, "vavam train video")
    check_fraction(permute_codes, "--permute-codes", "the windows")
    if not isinstance(self_forcing, (bool, np.bool_)):
        raise ValueError(f"--self-forcing must be true or false, got {self_forcing!r}")
    check_ema_decay(ema)
    for flag, used in (("--self-forcing", self_forcing), (f"--ema {ema}", ema)):
        if used and scale.resolved_strategy in ("fsdp", "deepspeed"):
            raise ValueError(f"{flag} is not supported with the {scale.resolved_strategy} strategy (sharded weights: "
                             "generation and the weight average need whole ones); use ddp")
    if init_from is not None and scale.resolved_strategy in ("fsdp", "deepspeed"):
        raise ValueError(f"--init-from (the cool-down start) loads full weights and AdamW moments into the optimiser, "
                         f"which strategy {strategy!r} shards; run the cool-down with --strategy ddp")
    L.seed_everything(seed, workers=True, verbose=False)
    store = open_token_store(tokens, "--tokens")
    val_sets = [open_token_store(v, "--val-tokens") for v in val_paths]
    mix_sets = [open_token_store(Path(m), "--mix") for m in (mix or [])]
    init_state = read_init_from(init_from) if init_from is not None else None
    init_strategy = ((init_state or {}).get("hyper_parameters") or {}).get("data", {}).get("strategy", "single")
    if init_strategy in ("fsdp", "deepspeed"):
        raise ValueError(f"--init-from {init_from}: written by strategy {init_strategy!r}, whose AdamW moments are "
                         "not in the layout of a plain optimiser; start the cool-down from a ddp or single-device run")
    h, w = store.grid
    if init_state is not None:  # the cool-down continues the pretrained model as it is (preset ignored)
        config = VideoConfig(**init_state["hyper_parameters"]["config"])
        frames = config.num_frames
        for flag, value, model_value in (("--num-frames", num_frames, frames), ("--width", width, config.width),
                                         ("--init-std", init_std, config.init_std)):
            if value is not None and value != model_value:
                raise ValueError(f"{flag} {value}: the cool-down continues the VaViM of --init-from {init_from} as "
                                 f"it is ({flag.lstrip('-').replace('-', ' ')} {model_value}); leave {flag} out")
        model_words = f"the VaViM of --init-from {init_from}"
        # runs recorded before the grid was: None
        grid = as_token_grid((init_state["hyper_parameters"].get("data") or {}).get("grid"))
        check_store_fits(store, "--tokens", config.tokens_per_frame, config.vocab_size, model_words, grid)
    else:
        config = preset_config
        frames = num_frames if num_frames is not None else config.num_frames
        vocab = max(config.vocab_size, int(store.codebook_size or 0) + 1)
        config = dataclasses.replace(config, tokens_per_frame=h * w, num_frames=frames, vocab_size=vocab,
                                     init_std=init_std if init_std is not None else config.init_std,
                                     width=width if width is not None else config.width)
        model_words = f"the VaViM (--preset {preset} on the {h}x{w} grid of --tokens, vocabulary {vocab})"
    for flag, stores in (("--val-tokens", val_sets), ("--mix", mix_sets)):
        for other in stores:
            check_store_fits(other, flag, config.tokens_per_frame, config.vocab_size, model_words, (h, w))
    if mix:
        from vavam.train.recipes import COOLDOWN_MIX

        check_mix_ratios(mix_ratios if mix_ratios is not None else COOLDOWN_MIX, 1 + len(mix))
    for flag, each in (("--tokens", [store]), ("--val-tokens", val_sets)):
        for one in each:
            if (why := stride_step_warning(one, stride)) is not None:
                warnings.warn(f"{flag} {why}", stacklevel=2)
    steady, steady_others = _window_rules(Path(out), resume, init_state, tokens)
    train_set = VideoWindowDataset(store, frames, stride, steady=steady)
    if steps is None:  # one epoch
        steps = -(-len(train_set) // plan.global_batch)
    periodic_from_frac = bool(ckpt_every_frac and not ckpt_every)
    if periodic_from_frac:
        ckpt_every = max(1, int(ckpt_every_frac * steps))
    if val_every_frac:  # the pretraining recipe validates every quarter epoch (reference §2.9)
        val_every = max(1, frac_steps(val_every_frac, steps))
    snapshots = _snapshot_steps(snapshot_fracs, steps, ckpt_every_frac if periodic_from_frac else None, ckpt_every)
    mix_info = None
    if mix:
        train_set, mix_info = _cooldown_mix(train_set, tokens, mix_sets, mix_ratios,
                                            steps * plan.global_batch, mix_seed, frames, init_state, steady_others)
    val_loaders = [sharded_loader(VideoWindowDataset(v, frames, stride, steady=steady_others), batch_size,
                                  num_workers=num_workers) for v in val_sets]
    augment = None
    if permute_codes or self_forcing:
        codes = max([int(s.codebook_size or 0) for s in (store, *mix_sets)]) or config.vocab_size - 1
        augment = {"permute_codes": float(permute_codes), "codes": codes, "seed": seed,
                   "self_forcing": bool(self_forcing)}
    module = VideoLitModule(config, lr, weight_decay, frac_steps(warmup_frac, steps), steps,
                            frac_steps(drop_frac, steps), augment=augment,
                            nan_policy=nan_policy, val_names=names, init_state=init_state,
                            data={"tokens": str(tokens), **_grid_setting(Path(out), resume, (h, w)), "seed": seed,
                                  "batch_size": batch_size, "stride": stride,
                                  "num_frames": frames, "windows": len(train_set), "world_size": plan.world_size,
                                  "accumulate": plan.accumulate, "global_batch": plan.global_batch,
                                  "strategy": scale.resolved_strategy,
                                  **_window_rule_setting(steady, steady_others)})
    out = Path(out)
    start = time.perf_counter()
    averager = [EMAWeights(ema, prefix="model")] if ema else []
    fit = fit_resumable(module, train_set, out=out, steps=steps, batch_size=batch_size, seed=seed,
                        precision=precision, progress=progress, val_loaders=val_loaders or None,
                        val_every=val_every, ckpt_every=ckpt_every, keep=keep, resume=resume,
                        num_workers=num_workers, deterministic=True, scale=scale, extra_callbacks=averager,
                        settings={"cooldown": init_from is not None, "mix": _mix_settings(mix_info),
                                  **({"ema": ema} if ema else {})},  # recorded when used: older runs resume
                        resume_hint=resume_hint, snapshots=snapshots)
    if averager:  # the saved model is the average; checkpoints keep the raw weights for resuming
        averager[0].copy_to(module)
    seconds = time.perf_counter() - start
    metrics = {k: float(v) for k, v in fit.trainer.callback_metrics.items()}
    summary = {"steps": steps, "seconds": round(seconds, 2), "windows": len(train_set),
               "windows_left_out": _left_out(train_set), "metrics": metrics,
               "mix": mix_info, "scale": scale_summary(scale, plan),
               "resumed_from": fit.resumed_from, "init_from": str(init_from) if init_from else None,
               "pretraining": _pretraining_summary(init_state), "config": dataclasses.asdict(config),
               "augment": augment, "ema": ema}
    if fit.trainer.is_global_zero:  # rank 0 writes the model and the summary
        meta = {"train": summary, "tokens": str(tokens), "token_grid": [h, w]}  # io.recorded_grid reads it
        if scale.resolved_strategy in ("fsdp", "deepspeed"):  # the module holds shards; the last checkpoint is whole
            from vavam.train.consolidate import consolidate_to

            consolidate_to(fit.last_checkpoint, out / "model", kind="video", meta=meta)
        else:
            save_video_model(module.model, out / "model", meta=meta)
        atomic_write_json(out / "summary.json", summary)
    finish_distributed()
    return summary


#: the window rule of runs that leave out windows spanning a jump in time (``window_rule`` in their ``data``); runs
#: recorded without it index every window (:class:`VideoWindowDataset` ``steady=False``). A cool-down on the store
#: of a pretraining recorded without it records ``{"tokens": "every", "others": "steady"}``.
STEADY_WINDOWS = "steady"
EVERY_WINDOW = "every"


def _window_rules(out: Path, resume: bool, init_state: dict | None, tokens: Path) -> tuple[bool, bool]:
    """Whether this run leaves out the windows that span a jump in time, for ``tokens`` and for the other stores
    (``--mix``, ``--val-tokens``): yes for a new run. A resume keeps the rules its run was started with (every
    window for a run recorded before they existed); a cool-down on its pretraining's own store indexes that store
    as the pretraining did (to tell which windows it has drawn), its other stores as a new run."""
    from vavam.train.resume import list_checkpoints, read_run_settings

    if resume and list_checkpoints(out):  # (which checkpoint is intact is fit_resumable's to find)
        return _read_window_rule(((read_run_settings(out) or {}).get("module") or {}).get("data") or {})
    data = ((init_state or {}).get("hyper_parameters") or {}).get("data") or {}
    if data and Path(data.get("tokens", "")).resolve() == Path(tokens).resolve():
        return _read_window_rule(data)[0], True
    return True, True


def _grid_setting(out: Path, resume: bool, grid: tuple[int, int]) -> dict[str, list[int]]:
    """The token grid for the run's recorded ``data`` (a cool-down from its checkpoint checks its store against
    it): ``{"grid": [h, w]}``, or nothing for a resume of a run recorded before runs recorded it (a resume
    compares its settings with the recorded ones)."""
    from vavam.train.resume import list_checkpoints, read_run_settings

    if resume and list_checkpoints(out):
        data = ((read_run_settings(out) or {}).get("module") or {}).get("data") or {}
        if data and "grid" not in data:
            return {}
    return {"grid": [int(grid[0]), int(grid[1])]}


def _read_window_rule(data: dict) -> tuple[bool, bool]:
    """(tokens, other stores) steady, from a run's recorded ``data``."""
    rule = data.get("window_rule")
    if isinstance(rule, dict):
        return rule.get("tokens") == STEADY_WINDOWS, rule.get("others") == STEADY_WINDOWS
    return rule == STEADY_WINDOWS, rule == STEADY_WINDOWS


def _window_rule_setting(steady: bool, steady_others: bool) -> dict:
    """What a run records of its window rules (nothing for the rule of runs recorded before them)."""
    if steady and steady_others:
        return {"window_rule": STEADY_WINDOWS}
    if not steady and not steady_others:
        return {}
    word = {True: STEADY_WINDOWS, False: EVERY_WINDOW}
    return {"window_rule": {"tokens": word[steady], "others": word[steady_others]}}


def _left_out(dataset: Dataset) -> int:
    """Windows a training set left out for a jump in time, over all its sources."""
    parts = getattr(dataset, "datasets", [dataset])
    return sum(getattr(d, "left_out", 0) for d in parts)


def _mix_settings(info: dict | None) -> dict | None:
    """What a resume of a cool-down must keep: the effective mix (ratios, per-source sizes, pools and
    targets, the pretraining windows left out), without the store paths, which may move."""
    if info is None:
        return None
    summary = info["sources"]
    return {"total": info["total"], "ratios": info["ratios"], "seed": summary["seed"],
            "pretraining_steps_seen": info["pretraining_steps_seen"],
            "pretraining_windows_available": info["pretraining_windows_available"],
            "sources": [{k: v for k, v in source.items() if k != "name"} for source in summary["sources"]]}


def _pretraining_summary(init_state: dict | None) -> dict | None:
    """What a cool-down's starting checkpoint was trained with (``steps``, ``global_batch``: windows per
    optimiser step), so that a scaling study can count the tokens behind a cool-down; None without one."""
    if init_state is None:
        return None
    data = (init_state.get("hyper_parameters") or {}).get("data") or {}
    batch = data.get("global_batch") or (int(data.get("batch_size", 0)) * int(data.get("world_size", 1))
                                         * int(data.get("accumulate", 1)))
    return {"steps": int(init_state.get("global_step", 0)), "global_batch": int(batch) or None}


def _store_stride(store: TokenStore) -> int:
    """Frames per 0.5 s of a store (10 Hz -> 5, 2 Hz -> 1); a store that records no single rate is refused."""
    if not store.fps:
        raise ValueError(f"{store.root}: the token store records no single frame rate (fps is null: a scene's rate "
                         "is unknown or the scenes' rates differ), so no 0.5 s window stride can be derived for "
                         "--mix; re-tokenize with `vavam tokenize --fps <rate>` or mix stores of one rate")
    return max(1, round(store.fps / 2))


def _cooldown_mix(first: VideoWindowDataset, tokens: Path, others: list[TokenStore], ratios: list[float] | None,
                  total: int, seed: int, frames: int, init_state: dict | None,
                  steady_others: bool = True) -> tuple[Dataset, dict]:
    """The cool-down's training set: ``total`` windows of ``[first, *others]`` split by ``ratios``,
    the first store's windows restricted to those a pretraining run (``init_state``) had not drawn."""
    from vavam.data.mix import MixedDataset, cooldown_mix
    from vavam.train.recipes import COOLDOWN_MIX
    from vavam.train.resume import StepBatchSampler

    ratios = list(ratios) if ratios is not None else list(COOLDOWN_MIX)
    if len(ratios) != 1 + len(others):
        raise ValueError(f"mix_ratios: {len(ratios)} ratios for {1 + len(others)} token stores (tokens + mix)")
    datasets = [first] + [VideoWindowDataset(store, frames, _store_stride(store), steady=steady_others)
                          for store in others]
    consumed_mask, unseen_from = None, None
    data = ((init_state or {}).get("hyper_parameters") or {}).get("data") or {}
    if data and Path(data.get("tokens", "")).resolve() == Path(tokens).resolve():
        if data.get("windows") != len(first) or data.get("stride") != first.stride:
            raise ValueError(f"--init-from was trained on {data.get('windows')} windows (stride {data.get('stride')}) "
                             f"of {tokens}, this run indexes {len(first)} (stride {first.stride}): cannot tell "
                             "which windows it has seen")
        consumed = int(init_state.get("callbacks", {}).get("_DataPosition", {}).get("consumed", 0))
        per_batch = int(data["batch_size"]) * int(data.get("world_size", 1))  # windows drawn per consumed batch
        sampler = StepBatchSampler(len(first), per_batch, int(data["seed"]), total_steps=consumed)
        consumed_mask = np.ones(len(first), dtype=bool)
        consumed_mask[sampler.unseen(consumed)] = False
        unseen_from = consumed
    names = [str(tokens)] + [str(store.root) for store in others]  # the paths (a store's repr lists its sizes)
    mixture = cooldown_mix({n: len(d) for n, d in zip(names, datasets)}, total=total, ratios=ratios, seed=seed,
                           pretraining=consumed_mask, pretraining_source=0)
    info = {"total": total, "ratios": ratios, "sources": mixture.summary(),
            "pretraining_steps_seen": unseen_from,
            "pretraining_windows_available": None if consumed_mask is None else int((~consumed_mask).sum())}
    return MixedDataset(datasets, mixture), info
