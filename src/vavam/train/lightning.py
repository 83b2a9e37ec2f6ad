"""Shared Lightning pieces of vavam's trainers: the muP/WSD optimiser hook, training-health checks
(non-finite losses, gradient norms, loss spikes) and a resumable ``fit`` (see :mod:`vavam.train.resume`)
on one device or many (DDP / FSDP / DeepSpeed, gradient accumulation; see :mod:`vavam.train.distributed`)."""

from __future__ import annotations

import logging
import math
import signal
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from vavam.train.consolidate import check_sharded_pickles
from vavam.train.distributed import ModuleTargets, ScaleOut, clean_name, is_sharded, make_strategy, prepare_module
from vavam.train.optim import build_optimizer, build_wsd_scheduler, wsd_factor
from vavam.train.resume import (
    RESUME_HINT,
    ResumeCallback,
    SafeCheckpointIO,
    StepBatchSampler,
    check_resume,
    check_resume_layout,
    checkpoint_layout,
    checkpoint_step,
    find_resume_checkpoint,
)

NanPolicy = Literal["stop", "skip"]


class _DropAdvertisement(logging.Filter):
    """Drops Lightning's tip, printed by every Trainer, to install its cloud logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in str(record.msg)


_RANK_ZERO_LOG = logging.getLogger("lightning.pytorch.utilities.rank_zero")
if not any(isinstance(f, _DropAdvertisement) for f in _RANK_ZERO_LOG.filters):
    _RANK_ZERO_LOG.addFilter(_DropAdvertisement())


#: RESUMABLE_CHANGES: settings a resume may change: data folders and how the global batch is laid out on
#: devices (per-device batch, world size, strategy; the global batch and the accumulation passes, which
#: the data position counts, must stay), and the step count while the learning rates of the steps
#: already taken stay the same (:func:`vavam.train.resume.check_past_rates`).
RESUMABLE_CHANGES = ("module.data.tokens", "module.data.batch_size", "module.data.world_size", "module.data.strategy",
                     "steps", "module.warmup_iter", "module.end_iter", "module.drop_iter")


def _wsd_rate(settings: dict[str, Any], step: int) -> float:
    """Learning-rate factor of ``step`` under the WSD schedule a run's settings record (module hparams)."""
    module = settings["module"]
    return wsd_factor(step, int(module["warmup_iter"]), int(module["end_iter"]), int(module["drop_iter"]))


class MupWsdMixin:
    """For a LightningModule with ``lr``, ``weight_decay`` and ``schedule`` (warmup, end, drop):

    - ``configure_optimizers``: muP AdamW groups (``mup_width_multipliers``) + a per-step WSD schedule;
    - :meth:`checked_loss`: a non-finite loss stops training with a clear message (``nan_policy="stop"``)
      or skips the step (``"skip"``: no backward, no optimiser step, counted in ``skipped_steps``);
    - gradient norm (before clipping) and loss spikes (loss > ``spike_factor`` x its running mean)
      are logged and kept in ``step_stats`` for the run's ``metrics.jsonl``.
    """

    lr: float
    weight_decay: float
    schedule: tuple[int, int, int]
    nan_policy: NanPolicy = "stop"
    spike_factor: float = 3.0

    def configure_optimizers(self):
        # parameter names without wrapper prefixes (FSDP units, activation checkpointing, compile), so that
        # the muP multipliers, declared with plain names, find their parameters however the model is wrapped
        opt = build_optimizer(_PlainNames(self), self.lr, self.weight_decay)
        sched = build_wsd_scheduler(opt, *self.schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _world_size(self) -> int:
        return int(self.trainer.world_size) if self._trainer is not None else 1

    # -- health
    @property
    def step_stats(self) -> dict[str, float]:
        if "_step_stats" not in self.__dict__:
            self.__dict__["_step_stats"] = {}
        return self.__dict__["_step_stats"]

    def checked_loss(self, loss: torch.Tensor, what: str = "training loss") -> torch.Tensor | None:
        """``loss`` if finite; else raise (policy "stop") or return None to skip the step (policy "skip")."""
        stats = self.step_stats
        accumulate = int(self.trainer.accumulate_grad_batches) if self._trainer is not None else 1
        if int(getattr(self, "data_step", 0)) % accumulate == 0:  # first batch of an optimiser step
            stats.clear()
        value = float(loss.detach())
        step = self.trainer.global_step if self._trainer is not None else -1
        finite = math.isfinite(value)
        if self._world_size() > 1:  # every rank takes the same decision (else the others wait forever)
            finite = bool(self.trainer.strategy.reduce_boolean_decision(finite, all=True))
        desc = f"{what} is {value}" if not math.isfinite(value) else f"{what} is non-finite on another rank"
        if not finite:
            if self.nan_policy == "skip":
                self.skipped_steps = getattr(self, "skipped_steps", 0) + 1
                warnings.warn(f"{desc} at step {step}: step skipped (nan_policy='skip')", stacklevel=2)
                stats["skipped"] = 1.0
                return None
            raise FloatingPointError(
                f"{desc} at step {step}: stopping before it corrupts the weights "
                "(use nan_policy='skip' to skip such steps; the last checkpoint is intact)")
        mean = getattr(self, "_loss_mean", None)
        count = getattr(self, "_loss_count", 0)
        if mean is not None and count >= 20 and value > self.spike_factor * mean:
            stats["loss_spike"] = 1.0
            warnings.warn(f"loss spike at step {step}: {value:.4g} vs running mean {mean:.4g}", stacklevel=2)
        self._loss_mean = value if mean is None else 0.98 * mean + 0.02 * value
        self._loss_count = count + 1
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Log the gradient norm before clipping (the global norm: FSDP shards are summed over ranks)."""
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        sharded = self._trainer is not None and is_sharded(self.trainer)
        if sharded:  # local shards: sum the squares over ranks
            squares = torch.stack([g.float().pow(2).sum() for g in grads]).sum() if grads else torch.zeros(())
            squares = squares.to(self.device)
            torch.distributed.all_reduce(squares)
            norm = float(squares.sqrt())
        elif grads:
            norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
        if grads or sharded:
            self.step_stats["grad_norm"] = norm
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)
            if not math.isfinite(norm):  # a finite loss can still back-propagate inf / nan (the same on every rank)
                self._non_finite_gradients(optimizer, norm)

    def _non_finite_gradients(self, optimizer: torch.optim.Optimizer, norm: float) -> None:
        """Policy "stop": raise before the optimiser step writes non-finite weights; "skip": drop every
        gradient, so that AdamW leaves the weights and moments of this step untouched."""
        step = self.trainer.global_step if self._trainer is not None else -1
        desc = f"gradient norm is {norm} at step {step} (the loss was finite)"
        if self.nan_policy != "skip":
            raise FloatingPointError(f"{desc}: stopping before it corrupts the weights (use nan_policy='skip' to "
                                     "skip such steps; the last checkpoint is intact)")
        for group in optimizer.param_groups:
            for p in group["params"]:
                p.grad = None
        self.skipped_steps = getattr(self, "skipped_steps", 0) + 1
        self.step_stats["skipped"] = 1.0
        warnings.warn(f"{desc}: step skipped (nan_policy='skip')", stacklevel=2)


class _PlainNames:
    """A module seen by the muP optimiser builder with wrapper prefixes removed from parameter names."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module

    def named_parameters(self):
        return ((clean_name(n), p) for n, p in self.module.named_parameters())

    def mup_width_multipliers(self) -> dict[str, float]:
        get = getattr(self.module, "mup_width_multipliers", None)
        return dict(get()) if get is not None else {}


def _step_progress_bar() -> L.Callback | None:
    """Lightning's rich progress bar without its two misleading items: "Epoch 0/-2" (a run is one epoch of
    step-addressed batches, and ``max_steps`` leaves ``max_epochs`` at -1) and the logger's version ``v_num``.
    None without rich (Lightning's default bar then)."""
    from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE, RichProgressBar

    if not _RICH_AVAILABLE:
        return None

    class StepProgressBar(RichProgressBar):
        def _get_train_description(self, current_epoch: int) -> str:
            return f"{'steps':{len(self.validation_description)}}"  # padded as Lightning's, against flicker

        def get_metrics(self, trainer, pl_module):
            items = super().get_metrics(trainer, pl_module)
            items.pop("v_num", None)
            return items

    return StepProgressBar()


def make_trainer(out: Path, steps: int, precision: str, progress: bool, batches_per_epoch: int,
                 val_every: int | None = None, deterministic: bool = True,
                 callbacks: Sequence[L.Callback] = (), strategy: Any = "auto", devices: int = 1, nodes: int = 1,
                 accumulate: int = 1) -> L.Trainer:
    """A Trainer: ``steps`` optimiser steps of ``accumulate`` batches each, clip 1.0, CSV logs in ``out/logs``,
    atomic hashed weights-only checkpoints, validation every ``val_every`` optimiser steps when given (else
    never), on ``devices`` x ``nodes`` devices with ``strategy`` (see :func:`vavam.train.distributed.make_strategy`).
    ``batches_per_epoch`` counts batches (``steps x accumulate`` for our step-addressed samplers)."""
    from lightning.pytorch.loggers import CSVLogger

    val_batches = val_every * accumulate if val_every else None
    bar = _step_progress_bar() if progress else None
    return L.Trainer(
        max_steps=steps, accelerator="auto", devices=devices, num_nodes=nodes, strategy=strategy,
        precision=precision, gradient_clip_val=1.0, accumulate_grad_batches=accumulate,
        logger=CSVLogger(out, name="logs"), enable_checkpointing=False, enable_progress_bar=progress,
        enable_model_summary=False, val_check_interval=min(val_batches, batches_per_epoch) if val_batches else None,
        check_val_every_n_epoch=None if val_every else 1, num_sanity_val_steps=0, deterministic=deterministic,
        log_every_n_steps=10, callbacks=[*callbacks, *([bar] if bar else [])], plugins=[SafeCheckpointIO()],
        use_distributed_sampler=False,
    )


class _DataPosition(L.Callback):
    """Counts training batches consumed (skipped steps included; with gradient accumulation, batches,
    not optimiser steps); saved in checkpoints, so the :class:`StepBatchSampler` restarts exactly after
    the last consumed batch, and exposes the count to the module as ``data_step`` (seed of per-step
    randomness). Tells the sampler its rank and world size once the processes exist (``setup``)."""

    def __init__(self, sampler: StepBatchSampler | None = None) -> None:
        self.consumed = 0
        self.sampler = sampler

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.sampler is not None:
            rank, world = int(trainer.global_rank), int(trainer.world_size)
            if not 0 <= rank < world:
                raise ValueError(f"rank {rank} outside world size {world}")
            self.sampler.rank, self.sampler.world_size = rank, world

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        pl_module.data_step = self.consumed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.consumed += 1

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.consumed = int(state["consumed"])


@dataclass
class FitResult:
    """What :func:`fit_resumable` did: the trainer, the step it resumed from (0: fresh), the
    checkpoint it resumed from and the last checkpoint it wrote (the final state)."""

    trainer: L.Trainer
    resumed_from: int
    checkpoint: Path | None
    last_checkpoint: Path | None = None


def fit_resumable(
    module: L.LightningModule,
    train_set: Dataset,
    *,
    out: Path,
    steps: int,
    batch_size: int,
    seed: int,
    precision: str = "32",
    progress: bool = True,
    collate_fn: Callable | None = None,
    val_loaders: DataLoader | list[DataLoader] | None = None,
    val_every: int = 100,
    ckpt_every: int = 0,
    keep: int = 3,
    resume: bool = False,
    num_workers: int = 0,
    deterministic: bool = True,
    extra_callbacks: Sequence[L.Callback] = (),
    scale: ScaleOut | None = None,
    settings: dict[str, Any] | None = None,
    resume_hint: str = RESUME_HINT,
    snapshots: Sequence[int] = (),
) -> FitResult:
    """Run ``steps`` optimiser steps of ``module`` on ``train_set`` with exact resume.

    ``batch_size`` is the batch of one device and pass; with ``scale`` (devices, nodes, strategy,
    accumulation, activation checkpointing, compile) an optimiser step consumes
    ``batch_size x devices x nodes x accumulate`` samples. The module may declare the modules to
    shard / checkpoint / compile with a ``distributed_targets() -> ModuleTargets`` method.

    Batches come from a :class:`StepBatchSampler` (batch ``k`` is a function of ``(seed, k)``, each rank
    takes its slice);
    checkpoints ``out/checkpoints/step-XXXXXXXX.ckpt`` are written every ``ckpt_every`` steps, at the
    end, and on SIGTERM / SIGUSR1 (then the process exits with status 128 + signal after saving); the newest
    ``keep`` are kept, plus those of the steps in ``snapshots``, which are written and never deleted.
    With ``resume`` the newest intact checkpoint of ``out`` is restored (weights, optimiser, schedule,
    loop counters, data position) and the per-step log ``out/metrics.jsonl`` is cut back to it.

    A fresh run records its settings (the module's hyper-parameters, steps, global batch, seed, number
    of samples and the caller's ``settings``) in ``out/run_settings.json``; a resume with different
    ones is refused by name (:func:`vavam.train.resume.check_run_settings`). Data paths, the number of
    devices (at the same global batch and accumulation) and the precision may change between a run and its
    resume, and so may the step count when the
    steps already taken keep their learning rates (:func:`vavam.train.resume.check_past_rates`). A run
    without ``resume`` refuses a folder that holds checkpoints. The strategy may change while it can load
    the checkpoint's layout: an FSDP sharded folder resumes only under FSDP, a DeepSpeed folder only under
    DeepSpeed, a single file under anything but DeepSpeed, and under FSDP only a file FSDP wrote
    (:func:`vavam.train.resume.check_resume_layout`).

    After a SIGTERM / SIGUSR1 checkpoint, rank 0 prints ``"<signal> received: checkpoint ... written at step N;
    <resume_hint>"`` (default :data:`RESUME_HINT`) to stderr before exiting.
    """
    from vavam.hardware import warn_if_slow_bf16

    out = Path(out)
    scale = scale or ScaleOut()
    warn_if_slow_bf16(precision, "cuda" if torch.cuda.is_available() else "cpu")
    ckpt = find_resume_checkpoint(out) if resume else None
    start = checkpoint_step(ckpt) if ckpt is not None else 0
    run_settings = {"module": dict(module.hparams), "steps": steps,
                    "global_batch": batch_size * scale.devices * scale.nodes * scale.accumulate, "seed": seed,
                    "samples": len(train_set), **(settings or {})}
    check_resume(out, run_settings, start if ckpt is not None else None, ignore=RESUMABLE_CHANGES,
                 rate=_wsd_rate if hasattr(module, "schedule") else None)
    if ckpt is not None:
        check_resume_layout(ckpt, scale.strategy)
        if checkpoint_layout(ckpt) == "fsdp-sharded":  # torch reads it with plain pickle: checked first
            check_sharded_pickles(ckpt)
        print(f"resuming from {ckpt} (step {start} of {steps})", file=sys.stderr)
    sampler = StepBatchSampler(len(train_set), batch_size, seed, total_steps=steps * scale.accumulate)
    position = _DataPosition(sampler)
    sampler.position = lambda: position.consumed
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                        persistent_workers=False)
    saver = ResumeCallback(out, every_n_steps=ckpt_every, keep=keep, resumed_step=start,
                           settings=run_settings if ckpt is None else None, strategy=scale.resolved_strategy,
                           snapshots=snapshots)
    if val_loaders is not None and not isinstance(val_loaders, list):
        val_loaders = [val_loaders]
    targets = module.distributed_targets() if hasattr(module, "distributed_targets") else ModuleTargets()
    strategy = make_strategy(scale, targets, precision)
    prepare_module(scale, module, targets)
    trainer = make_trainer(out, steps, precision, progress, steps * scale.accumulate,
                           val_every if val_loaders else None, deterministic=deterministic,
                           callbacks=[position, saver, *extra_callbacks], strategy=strategy, devices=scale.devices,
                           nodes=scale.nodes, accumulate=scale.accumulate)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        # Lightning's own noise, nothing the user can act on: its call of a pytree API that torch deprecated,
        # and the validation step that runs without validation data (the runs without --val-tokens)
        warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")
        warnings.filterwarnings("ignore", message=".*You defined a `validation_step` but have no `val_dataloader`.*")
        try:
            trainer.fit(module, loader, val_loaders or None, ckpt_path=ckpt, weights_only=True)
        except SystemExit as exc:
            if saver.preempted is None and trainer.interrupted:
                # Lightning turns Ctrl-C into sys.exit(1) after its own message; give callers the
                # KeyboardInterrupt back, so that e.g. the quickstart can say how to continue
                raise KeyboardInterrupt from exc
            if saver.preempted is None:
                raise
    if saver.preempted is not None:
        name = signal.Signals(saver.preempted).name
        if trainer.is_global_zero:
            print(f"{name} received: checkpoint {saver.last_saved} written at step {trainer.global_step}; "
                  f"{resume_hint}", file=sys.stderr)
        raise SystemExit(128 + int(saver.preempted))
    return FitResult(trainer, start, ckpt, saver.last_saved)
