"""Training VaVAM's action expert by flow matching on trajectory windows, VaViM frozen (Lightning).

Recipe of the released models (reference §3.5, §3.8): for every context frame of a window, the
expert denoises that frame's 6-waypoint future (metres / 70) with the training mask; flow times
t = 0.999 (1 - Beta(1.5, 1)); MSE to the target velocity; muP AdamW on the expert only;
Warmup-Stable-Drop; gradient clipping at 1.0.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Literal

import lightning as L
import numpy as np
import torch
import tyro

from vavam import flow, presets
from vavam.checks import check_nonnegative_int, check_optimizer_args, check_positive_int
from vavam.config import ActionConfig
from vavam.data.records import SceneRecord, load_records
from vavam.data.tokens import TokenStore
from vavam.data.windows import (
    DEFAULT_STEP_TOLERANCE_US,
    TokenWindowDataset,
    WindowConfig,
    WindowIndex,
    infer_subsampling,
)
from vavam.io import atomic_write_json, recorded_grid, tokenizer_record
from vavam.train.distributed import (
    CheckpointFormat,
    ModuleTargets,
    ScaleOut,
    StrategyName,
    check_launch,
    finish_distributed,
    gathered_parameters,
    plan_batch,
    recipe_global_batch,
    scale_summary,
)
from vavam.train.ema import EMAWeights, check_ema_decay
from vavam.train.lightning import RESUME_HINT, MupWsdMixin, NanPolicy, fit_resumable
from vavam.train.resume import step_generator
from vavam.train.validation import ShardedValidation, sharded_loader
from vavam.train.optim import frac_steps
from vavam.train.video import (
    _snapshot_steps,
    check_model_options,
    check_schedule_fracs,
    check_store_fits,
    open_token_store,
)


def expert_width_multipliers(expert: torch.nn.Module) -> dict[str, float]:
    """muP multipliers of an ActionExpert's matrix-like weights (fan-in multiplier); others get 1.

    Encoder fuse/out projections, QKV, MLP in/out: ``e / base_width``; attention output projection
    (fan-in = attention width): ``video width / base_attention_width``.
    """
    c = expert.config
    m_e, m_a = c.width_mult, c.video.width / c.base_attention_width
    out = {"encoder.fuse_proj.weight": m_e, "encoder.out_proj.weight": m_e}
    for i in range(len(expert.blocks)):
        out[f"blocks.{i}.attn.qkv_proj.weight"] = m_e
        out[f"blocks.{i}.attn.out_proj.weight"] = m_a
        out[f"blocks.{i}.mlp.fc_in.weight"] = m_e
        out[f"blocks.{i}.mlp.fc_out.weight"] = m_e
    return out


class ActionLitModule(ShardedValidation, MupWsdMixin, L.LightningModule):
    """Thin Lightning wrapper around :class:`vavam.action.VideoActionModel`; only the expert trains."""

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float = 0.0194,
        weight_decay: float = 1e-7,
        warmup_iter: int = 0,
        end_iter: int = 1000,
        drop_iter: int = 0,
        seed: int = 0,
        nan_policy: NanPolicy = "stop",
        accumulate: int = 1,
        noise_repeats: int = 1,
    ) -> None:
        super().__init__()
        from vavam.config import config_to_dict

        self.save_hyperparameters({"vavam_config": config_to_dict(model.config), "lr": lr, "weight_decay": weight_decay,
                                   "warmup_iter": warmup_iter, "end_iter": end_iter, "drop_iter": drop_iter,
                                   "seed": seed, "accumulate": accumulate, "noise_repeats": noise_repeats})
        self.model = model
        self.model.video.requires_grad_(False)
        self.lr, self.weight_decay = lr, weight_decay
        self.schedule = (warmup_iter, end_iter, drop_iter)
        self.seed, self.nan_policy = seed, nan_policy
        self.accumulate = accumulate
        self.noise_repeats = int(noise_repeats)
        if self.noise_repeats < 1:
            raise ValueError(f"noise_repeats must be >= 1, got {noise_repeats}")
        self.data_step = 0  # set per batch by the trainer (batches consumed so far)

    def mup_width_multipliers(self) -> dict[str, float]:
        return {f"model.expert.{k}": v for k, v in expert_width_multipliers(self.model.expert).items()}

    def distributed_targets(self) -> ModuleTargets:
        """Scale-out targets. The joint attention calls the blocks' pieces, not their ``forward``, so FSDP
        keeps one unit for the whole model; the expert's MLPs are checkpointed (VaViM runs without
        gradients and keeps no activations); the MLPs of both streams are compiled."""
        expert_mlps = tuple(b.mlp for b in self.model.expert.blocks)
        video_mlps = tuple(b.mlp for b in self.model.video.blocks)
        return ModuleTargets(fsdp_units=(), checkpoint=expert_mlps, compile=video_mlps + expert_mlps)

    def train(self, mode: bool = True):
        super().train(mode)
        self.model.video.eval()  # frozen (no dropout exists, but keep it explicit)
        return self

    def _actions_dtype(self) -> torch.dtype:
        """Float dtype of actions and noise: float32, or float64 when the module runs in double precision."""
        return torch.float64 if self.model.expert.readout.weight.dtype == torch.float64 else torch.float32


    def step_noise(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Flow noise ``[b·R, T, H, 2]`` and times ``[b·R, T]`` of this rank's batch (R = ``noise_repeats``
        draws per window, rows window-major).

        They are drawn for the whole global batch of the optimiser step from a generator seeded by
        ``(seed, step)`` and this batch takes the rows of its samples' positions in that global batch:
        every sample gets the same noise however the global batch is split over ranks and accumulation
        passes (a run on N devices equals a run on one), and a resume needs no RNG state.
        """
        positions = batch["positions"]
        b, frames = positions.shape[:2]
        world = self.trainer.world_size if self._trainer is not None else 1
        rank = self.global_rank
        step, micro = divmod(int(self.data_step), self.accumulate)
        offset = micro * b * world + rank * b
        c = self.model.config
        r = self.noise_repeats
        gen = step_generator(self.seed, step, 0, device=positions.device)
        noise = torch.randn((b * world * self.accumulate, r, *positions.shape[1:]), generator=gen,
                            device=positions.device, dtype=self._actions_dtype())
        t = flow.sample_time((b * world * self.accumulate, r, frames), sig_min=c.flow_sig_min, generator=gen,
                             device=positions.device)
        return noise[offset:offset + b].flatten(0, 1), t[offset:offset + b].flatten(0, 1)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor | None:
        noise, t = self.step_noise(batch)
        actions = batch["positions"].to(self._actions_dtype())
        loss = self.checked_loss(self.model.flow_loss(batch["tokens"], batch["commands"], actions, t=t, noise=noise,
                                                      repeats=self.noise_repeats, speed=batch.get("speeds")))
        if loss is not None:
            self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False,
                     batch_size=len(batch["tokens"]))
        return loss

    def validation_losses(self, batch: dict, indices: torch.Tensor) -> torch.Tensor:
        """Flow-matching loss of each window ``[B]`` of a validation batch.

        A window's noise and flow times come from a generator seeded by ``(seed + 1, its index in the validation
        set)``: the same at every validation and however the set is split over ranks and batches.
        """
        actions = batch["positions"].to(self._actions_dtype())  # [B, T, H, 2]
        device, c = actions.device, self.model.config
        noise, times = [], []
        for index in indices.tolist():  # padding (-1) draws too, and is not counted
            gen = step_generator(self.seed + 1, max(index, 0), device=device)
            noise.append(torch.randn((1, *actions.shape[1:]), generator=gen, device=device, dtype=actions.dtype))
            times.append(flow.sample_time((1, actions.shape[1]), sig_min=c.flow_sig_min, generator=gen, device=device))
        return self.model.flow_loss(batch["tokens"], batch["commands"], actions, t=torch.cat(times),
                                    noise=torch.cat(noise), speed=batch.get("speeds"), per_window=True)

    def validation_name(self, loader: int) -> str:
        return "val/loss"


class TrajectoryImages(L.Callback):
    """Every ``every_n_steps`` steps (and at the end) draw predicted vs ground-truth trajectories of a
    few fixed windows (last context frame, K samples each, seeded) in bird's-eye view to
    ``out/trajectories/step-XXXXXXXX.png``; ADE of the sample mean is logged as ``train/plot_ade``."""

    def __init__(self, out: Path, items: list[dict], every_n_steps: int = 150, num_samples: int = 4,
                 seed: int = 0) -> None:
        self.folder = Path(out) / "trajectories"
        self.batch = _collate(items)
        self.every, self.k, self.seed = every_n_steps, num_samples, seed

    @torch.no_grad()
    def draw(self, pl_module: L.LightningModule, step: int, log: bool = True) -> Path:
        import numpy as np
        from PIL import Image

        from vavam.io import atomic_write_bytes
        from vavam.viz import bev_plot

        model = pl_module.model
        was_training = model.training
        model.eval()
        device = pl_module.device
        tokens = self.batch["tokens"].to(device)
        gt = self.batch["positions"][:, -1].float()  # [N, 6, 2] future of the last context frame
        command = self.batch["commands"][:, -1].to(device)
        gen = torch.Generator(device=device).manual_seed(self.seed)
        speed = self.batch["speeds"][:, -1].to(device) if "speeds" in self.batch else None
        pred = model.sample_trajectory(tokens, command, num_samples=self.k, generator=gen, speed=speed).float().cpu()
        model.train(was_training)
        ade = float((pred.mean(1) - gt).norm(dim=-1).mean())
        if log:
            pl_module.log("train/plot_ade", ade)
        tiles = [bev_plot(pred[i].numpy(), gt[i].numpy(), size=(240, 180)) for i in range(len(gt))]
        picture = np.concatenate(tiles, axis=1)  # [240, N*180, 3]
        import io

        buf = io.BytesIO()
        Image.fromarray(picture).save(buf, format="PNG")
        path = self.folder / f"step-{step:08d}.png"
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, buf.getvalue())
        return path

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (batch_idx + 1) % max(1, int(trainer.accumulate_grad_batches)):  # inside an accumulated step
            return
        if self.every and trainer.global_step % self.every == 0:
            with gathered_parameters(trainer):  # FSDP: every rank takes part in gathering the weights
                if trainer.is_global_zero:
                    self.draw(pl_module, trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if not (self.every and trainer.global_step % self.every == 0):
            with gathered_parameters(trainer):
                if trainer.is_global_zero:
                    self.draw(pl_module, trainer.global_step, log=False)


def _collate(items: list[dict]) -> dict:
    keys = [k for k in ("tokens", "positions", "commands", "speeds") if k in items[0]]
    return {k: torch.stack([torch.as_tensor(it[k]) for it in items]) for k in keys}


def make_window_dataset(records: Path, tokens: Path | TokenStore, context_frames: int, subsampling: int = 1,
                        flags: tuple[str, str] = ("--records", "--tokens")) -> TokenWindowDataset:
    """Trajectory windows of a records file joined (by timestamp) to a token store.

    Args:
        records: scene records (``.npz``).
        tokens: token store of the same scenes (its folder, or the store opened).
        context_frames: frames per window (0.5 s apart).
        subsampling: record frames per 0.5 s (1 for 2 Hz records, 5 for 10 Hz).
        flags: how the caller's user gave ``records`` and ``tokens`` (named in errors).

    Raises:
        ValueError: no window fits any scene (the message says what the records' frame rate needs), or the
            token store lacks a scene that has windows (named, with both options), or has no tokens for a
            frame a window reads (a store made at another frame rate; named likewise).
    """
    config = WindowConfig(context_frames=context_frames, subsampling=subsampling,
                          max_step_error_us=DEFAULT_STEP_TOLERANCE_US)  # never across a dropped frame
    scenes = load_records(records, check_files=False)
    index = WindowIndex(scenes, config)
    if len(index) == 0:
        raise ValueError(f"{records}: no window of {context_frames} frames + 3 s future fits any scene"
                         + _rate_hint(scenes, subsampling))
    store = tokens if isinstance(tokens, TokenStore) else open_token_store(tokens, flags[1])
    used = [index.scene_names[int(s)] for s in np.unique(index.window_scenes)]  # scenes with windows, in order
    missing = [name for name in used if name not in store]
    if missing:
        raise ValueError(f"{flags[1]} {store.root} lacks {len(missing)} of the {len(used)} scenes with windows in "
                         f"{flags[0]} {records}, first {missing[0]!r}: tokenize every scene of the records into "
                         "the store (vavam tokenize), or give the store made from them")
    dataset = TokenWindowDataset(index, store)
    unjoined = dataset.first_unjoined()
    if unjoined is not None:
        scene, stamp, tol = unjoined
        raise ValueError(f"{flags[1]} {store.root} has no tokens within {tol} µs of frame {stamp} µs of scene "
                         f"{scene!r} in {flags[0]} {records}, which a window reads: tokenize the records' frames "
                         "at their own rate (a store made at a lower frame rate would pair frames with other "
                         "frames' tokens)")
    return dataset


def _rate_hint(scenes: list[SceneRecord], subsampling: int) -> str:
    """Why no window fits, when the records' frame rate explains it (else ""): the subsampling that steps
    0.5 s, or that none does."""
    if not scenes:
        return " (the file holds no scene)"
    longest = np.asarray(max(scenes, key=len).timestamps, dtype=np.int64)  # [F] µs
    if len(longest) < 2:
        return " (no scene has 2 frames)"
    try:
        wanted = infer_subsampling(longest)
    except ValueError:
        return " (the frames' timestamps do not increase)"
    dt_us = float(np.median(np.diff(longest)))
    rate = f"its frames are {dt_us / 1e6:.3g} s apart ({1e6 / dt_us:.3g} Hz)"
    if abs(wanted * dt_us - 500_000) > DEFAULT_STEP_TOLERANCE_US:
        return f" ({rate}: no subsampling steps 0.5 s; resample the records to 2 Hz or a multiple of it)"
    if wanted == subsampling:
        return ""
    return (f" ({rate}: windows step 0.5 s, so use subsampling {wanted} (--subsampling {wanted} on the command "
            f"line), not {subsampling})")


RELEASED_EXPERTS = {768: "vavam_s", 1024: "vavam_b", 2048: "vavam_l"}  # VaViM width -> the released VaVAM preset


def _check_released_expert_width(preset: str, config: ActionConfig, video_width: int, width: int | None) -> None:
    """A released VaVAM preset (expert width = VaViM width / 4) must sit on the VaViM it was made for, unless
    ``width`` overrides the expert's width: refuse, naming the preset to use, rather than train e.g. a
    width-192 expert on VaViM-B."""
    if width is not None or preset not in RELEASED_EXPERTS.values() or config.video.width == video_width:
        return
    hint = (f"use --preset {RELEASED_EXPERTS[video_width]}" if video_width in RELEASED_EXPERTS
            else "give the expert's width with --width (the released ratio is VaViM width / 4)")
    raise ValueError(f"preset {preset!r} is the released expert for a width-{config.video.width} VaViM, but --video "
                     f"has width {video_width}: {hint}")


def train_action(
    out: Path,
    video: Path,
    records: Path,
    tokens: Path,
    preset: str = "vavam_tiny",
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 0.0194,
    weight_decay: float = 1e-7,
    init_std: float | None = None,
    width: int | None = None,
    warmup_frac: float = 0.01,
    drop_frac: float = 0.1,
    subsampling: int = 1,
    val_records: Path | None = None,
    val_tokens: Path | None = None,
    val_every: int = 100,
    tokenizer: Path | None = None,
    seed: int = 0,
    precision: Literal["32", "bf16-mixed"] = "32",
    num_workers: int = 0,
    ckpt_every: int = 0,
    keep: int = 3,
    resume: bool = False,
    nan_policy: NanPolicy = "stop",
    plot_every: int = 150,
    recipe: Literal["release", "cpu"] | None = None,
    progress: bool = True,
    devices: int = 1,
    nodes: int = 1,
    strategy: StrategyName = "auto",
    global_batch: int | None = None,
    accumulate: int = 1,
    activation_checkpointing: bool = False,
    compile: bool = False,
    checkpoint_format: CheckpointFormat = "full",
    noise_repeats: int = 1,
    ema: float = 0.0,
    ego_speed: bool | None = None,
    speed_prior: bool | None = None,
    action_scaling: float | None = None,
    resume_hint: Annotated[str, tyro.conf.Suppress] = RESUME_HINT,
) -> dict:
    """Train VaVAM's action expert on a frozen VaViM; writes our checkpoint folder to OUT/model.

    Args:
        out: run folder (checkpoint in ``out/model``, CSV logs in ``out/logs``).
        video: the VaViM (our checkpoint folder or a released ``.pt``); frozen.
        records: scene records (``.npz``) with ego poses of the training scenes.
        tokens: token store of the same scenes (joined to the records by timestamp).
        preset: an ActionConfig preset for the expert (its ``video`` part is replaced by the loaded VaViM's).
        steps: optimiser steps.
        batch_size: windows per device and forward pass (the global batch of a step is
            ``batch_size x devices x nodes x accumulate``).
        lr: muP base learning rate.
        weight_decay: decoupled weight decay.
        init_std: override of the preset's expert init std.
        width: override of the expert's width (its muP base width stays).
        warmup_frac: share of steps of linear warmup (``floor(warmup_frac x steps)`` steps).
        drop_frac: share of steps of the final drop to 0.1 x lr; with ``warmup_frac`` at most 1.
        subsampling: record frames per 0.5 s (1 for 2 Hz data, 5 for 10 Hz).
        val_records: validation records (with ``val_tokens``).
        val_tokens: validation token store.
        val_every: validation interval in steps.
        tokenizer: the tokenizer these tokens came from, recorded in the checkpoint for serving.
        seed: seed of initialisation, noise and data order.
        precision: "32" or "bf16-mixed".
        num_workers: DataLoader workers.
        ckpt_every: also checkpoint every this many steps (0: only at the end and on SIGTERM / SIGUSR1).
        keep: periodic checkpoints kept in ``out/checkpoints`` (0: all).
        resume: continue from the newest intact checkpoint in ``out/checkpoints`` (exact: weights,
            optimiser, schedule, data position; flow noise is a function of the step). Model options
            (``speed_prior``, ``action_scaling``, ...), optimiser, global batch and accumulation, seed, EMA
            and data must be those the run started with (``out/run_settings.json``; a difference is refused
            by name); data paths and the devices may change, and so may the step count while the steps taken
            keep their learning rates. Without ``resume``, a folder holding checkpoints is refused.
        nan_policy: "stop" on a non-finite loss (default) or "skip" the step.
        plot_every: draw predicted vs ground-truth trajectories of 4 fixed windows every this many
            steps (and at the end) to ``out/trajectories/`` (0: only at the end).
        recipe: fill the arguments left at their defaults from a recipe (``release``, ``cpu``; see
            :mod:`vavam.train.recipes`); ``steps`` None means one epoch. A recipe's batch is its global
            batch: without ``batch_size`` / ``global_batch`` it is split over the devices.
        progress: show a progress bar.
        devices: devices (GPUs, or CPU processes) per node.
        nodes: machines (launch one process per device, e.g. with torchrun; see docs/scale-out.md).
        strategy: ``auto`` (one device: plain; several: ddp), ``ddp`` (the released recipe), ``fsdp`` or
            ``deepspeed`` (ZeRO stage 2; needs the deepspeed package).
        global_batch: windows per optimiser step; derives ``accumulate`` from ``batch_size x devices x nodes``.
        accumulate: forward/backward passes per optimiser step (gradient accumulation).
        activation_checkpointing: recompute the expert's MLP activations in backward.
        compile: ``torch.compile`` the MLPs of VaViM and of the expert.
        checkpoint_format: ``full`` (one file) or ``sharded`` (FSDP only; see ``vavam checkpoint consolidate``).
        noise_repeats: flow samples (noise, time) per window and step; VaViM's stream is computed once per
            window and shared (see :meth:`VideoActionModel.flow_loss`). 1 is the released recipe.
        ema: decay of an exponential moving average of the expert's weights (see :mod:`vavam.train.ema`);
            the saved model holds the average (checkpoints keep the raw weights). 0 (the released
            recipe): no average, the saved model holds the last weights.
        ego_speed: condition the expert on the ego speed of each frame (``ActionConfig.ego_speed``);
            None keeps the preset's choice (off in the released presets, as in the released models).
        speed_prior: with ``ego_speed``, the flow generates the deviation from the constant-velocity
            trajectory (``ActionConfig.speed_prior``); None keeps the preset's choice (off).
        action_scaling: override of the preset's metres per model unit (``ActionConfig.action_scaling``);
            with ``speed_prior`` the deviations to cover are a few metres, not whole trajectories.
        resume_hint: what the message after a SIGTERM / SIGUSR1 checkpoint tells the user to do (not a
            command-line option; a caller that re-runs the stage itself passes its own).

    The token stores (``tokens``, ``val_tokens``) are checked against the VaViM before anything is written:
    their grid must give its tokens per frame, their codebook fit its vocabulary, and they must hold every
    scene of their records that has windows.
    """
    given = dict(locals())
    from vavam.train.recipes import ACTION_RECIPES, apply_recipe

    args, extras = apply_recipe(train_action, ACTION_RECIPES, recipe, given)
    recipe_global_batch(train_action, args, given)
    args.pop("recipe")
    return _train_action(**args, snapshot_fracs=tuple(extras.get("snapshot_fracs", ())))


def _train_action(out: Path, video: Path, records: Path, tokens: Path, preset: str, steps: int | None,
                  batch_size: int, lr: float, weight_decay: float, init_std: float | None, width: int | None,
                  warmup_frac: float, drop_frac: float, subsampling: int, val_records: Path | None,
                  val_tokens: Path | None, val_every: int, tokenizer: Path | None, seed: int, precision: str,
                  num_workers: int, ckpt_every: int, keep: int, resume: bool, nan_policy: NanPolicy,
                  plot_every: int, progress: bool, devices: int = 1, nodes: int = 1, strategy: StrategyName = "auto",
                  global_batch: int | None = None, accumulate: int = 1, activation_checkpointing: bool = False,
                  compile: bool = False, checkpoint_format: CheckpointFormat = "full",
                  noise_repeats: int = 1, ema: float = 0.0, ego_speed: bool | None = None,
                  speed_prior: bool | None = None, action_scaling: float | None = None,
                  snapshot_fracs: tuple[float, ...] = (),
                  resume_hint: str = RESUME_HINT) -> dict:
    import vavam
    from vavam.action import VideoActionModel, save_action_model

    if steps is not None:  # None: one epoch
        check_positive_int(steps, "--steps")
    check_positive_int(subsampling, "--subsampling")
    check_optimizer_args(lr, weight_decay)
    check_positive_int(val_every, "--val-every")
    check_positive_int(noise_repeats, "--noise-repeats")
    check_nonnegative_int(ckpt_every, "--ckpt-every", "only at the end and on SIGTERM / SIGUSR1")
    check_nonnegative_int(keep, "--keep", "keep every checkpoint")
    check_nonnegative_int(plot_every, "--plot-every", "only at the end")
    check_ema_decay(ema)
    check_schedule_fracs(warmup_frac, drop_frac)
    check_model_options(width, init_std, seed)
    if (val_records is None) != (val_tokens is None):
        given_flag, other = ("--val-records", "--val-tokens") if val_tokens is None else \
            ("--val-tokens", "--val-records")
        raise ValueError(f"--val-records and --val-tokens go together (validation windows join the records to the "
                         f"tokens): {given_flag} was given without {other}")
    config = presets.get(preset, kind="action", flag="--preset")
    store = open_token_store(tokens, "--tokens")
    val_store = open_token_store(val_tokens, "--val-tokens") if val_tokens is not None else None
    plan = plan_batch(batch_size, devices, nodes, global_batch, accumulate)
    scale = ScaleOut(devices=devices, nodes=nodes, strategy=strategy, accumulate=plan.accumulate,
                     activation_checkpointing=activation_checkpointing, compile=compile,
                     checkpoint_format=checkpoint_format)
    check_launch(scale, "vavam train action")
    if ema and scale.resolved_strategy in ("fsdp", "deepspeed"):
        raise ValueError(f"ema={ema} is not supported with the {scale.resolved_strategy} strategy (sharded weights); "
                         "use ddp or a single device")
    L.seed_everything(seed, workers=True, verbose=False)
    vim = vavam.load_video_model(video)
    for flag, checked in (("--tokens", store), ("--val-tokens", val_store)):
        if checked is not None:
            check_store_fits(checked, flag, vim.config.tokens_per_frame, vim.config.vocab_size,
                             f"the VaViM of --video {video}", recorded_grid(video))
    _check_released_expert_width(preset, config, vim.config.width, width)
    frames = min(config.train_frames, vim.config.num_frames)
    config = dataclasses.replace(config, video=vim.config, train_frames=frames,
                                 init_std=init_std if init_std is not None else config.init_std,
                                 width=width if width is not None else config.width,
                                 ego_speed=config.ego_speed if ego_speed is None else bool(ego_speed),
                                 speed_prior=config.speed_prior if speed_prior is None else bool(speed_prior),
                                 action_scaling=config.action_scaling if action_scaling is None else float(action_scaling))
    train_set = make_window_dataset(records, store, frames, subsampling)
    val_set = (make_window_dataset(val_records, val_store, frames, subsampling, ("--val-records", "--val-tokens"))
               if val_store is not None else None)
    model = VideoActionModel(config)
    model.video.load_state_dict(vim.state_dict())
    model.video.requires_grad_(False)
    if steps is None:  # one epoch
        steps = -(-len(train_set) // plan.global_batch)
    val_loader = None
    if val_set is not None:
        val_loader = sharded_loader(val_set, batch_size, collate_fn=_collate, num_workers=num_workers)
    module = ActionLitModule(model, lr, weight_decay, frac_steps(warmup_frac, steps), steps,
                             frac_steps(drop_frac, steps), seed=seed, nan_policy=nan_policy, accumulate=plan.accumulate,
                             noise_repeats=noise_repeats)
    out = Path(out)
    start = time.perf_counter()
    plot_set = val_set if val_set is not None else train_set
    plot_items = [plot_set[int(i)] for i in torch.linspace(0, len(plot_set) - 1, min(4, len(plot_set))).long()]
    plots = TrajectoryImages(out, plot_items, every_n_steps=plot_every, seed=seed)
    averager = [EMAWeights(ema, prefix="model.expert")] if ema else []
    fit = fit_resumable(module, train_set, out=out, steps=steps, batch_size=batch_size, seed=seed,
                        precision=precision, progress=progress, collate_fn=_collate, val_loaders=val_loader,
                        val_every=val_every, ckpt_every=ckpt_every, keep=keep, resume=resume,
                        num_workers=num_workers, deterministic=False, extra_callbacks=[plots, *averager], scale=scale,
                        settings={"ema": ema, "subsampling": subsampling}, resume_hint=resume_hint,
                        snapshots=_snapshot_steps(snapshot_fracs, steps, None, ckpt_every))
    if averager:  # the saved model is the average; checkpoints keep the raw weights for resuming
        averager[0].copy_to(module)
    summary = {"steps": steps, "seconds": round(time.perf_counter() - start, 2), "windows": len(train_set),
               "resumed_from": fit.resumed_from, "scale": scale_summary(scale, plan), "ema": ema,
               "metrics": {k: float(v) for k, v in fit.trainer.callback_metrics.items()}}
    if fit.trainer.is_global_zero:  # rank 0 writes the model and the summary
        meta = {"train": summary, "video": str(video), "records": str(records), "tokens": str(tokens),
                "token_grid": [int(v) for v in store.grid]}  # io.recorded_grid reads it
        if tokenizer is not None:
            meta.update(tokenizer_record(tokenizer, out / "model"))  # absolute, and relative to the model folder
        if scale.resolved_strategy in ("fsdp", "deepspeed"):  # the module holds shards; the last checkpoint is whole
            from vavam.train.consolidate import consolidate_to

            consolidate_to(fit.last_checkpoint, out / "model", kind="action", meta=meta)
        else:
            save_action_model(model, out / "model", meta=meta)
        atomic_write_json(out / "summary.json", summary)
    finish_distributed()
    return summary
