"""Shared Lightning pieces of vavam's trainers: the muP/WSD optimiser hook, training-health checks
(non-finite losses, gradient norms, loss spikes) and a resumable ``fit`` (see :mod:`vavam.train.resume`)."""

from __future__ import annotations

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

from vavam.train.optim import build_optimizer, build_wsd_scheduler
from vavam.train.resume import (
    ResumeCallback,
    SafeCheckpointIO,
    StepBatchSampler,
    checkpoint_step,
    find_resume_checkpoint,
)

NanPolicy = Literal["stop", "skip"]


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
        opt = build_optimizer(self, self.lr, self.weight_decay)
        sched = build_wsd_scheduler(opt, *self.schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- health
    @property
    def step_stats(self) -> dict[str, float]:
        if "_step_stats" not in self.__dict__:
            self.__dict__["_step_stats"] = {}
        return self.__dict__["_step_stats"]

    def checked_loss(self, loss: torch.Tensor, what: str = "training loss") -> torch.Tensor | None:
        """``loss`` if finite; else raise (policy "stop") or return None to skip the step (policy "skip")."""
        stats = self.step_stats
        stats.clear()
        value = float(loss.detach())
        step = self.trainer.global_step if self._trainer is not None else -1
        if not math.isfinite(value):
            if self.nan_policy == "skip":
                self.skipped_steps = getattr(self, "skipped_steps", 0) + 1
                warnings.warn(f"{what} is {value} at step {step}: step skipped (nan_policy='skip')", stacklevel=2)
                stats["skipped"] = 1.0
                return None
            raise FloatingPointError(
                f"{what} is {value} at step {step}: stopping before it corrupts the weights "
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
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        if grads:
            norm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])))
            self.step_stats["grad_norm"] = norm
            self.log("train/grad_norm", norm, on_step=True, on_epoch=False)


def make_trainer(out: Path, steps: int, precision: str, progress: bool, batches_per_epoch: int,
                 val_every: int | None = None, deterministic: bool = True,
                 callbacks: Sequence[L.Callback] = ()) -> L.Trainer:
    """A single-device Trainer: ``steps`` optimiser steps, clip 1.0, CSV logs in ``out/logs``, atomic
    hashed weights-only checkpoints, validation every ``val_every`` steps when given (else never)."""
    from lightning.pytorch.loggers import CSVLogger

    return L.Trainer(
        max_steps=steps, accelerator="auto", devices=1, precision=precision, gradient_clip_val=1.0,
        logger=CSVLogger(out, name="logs"), enable_checkpointing=False, enable_progress_bar=progress,
        enable_model_summary=False, val_check_interval=min(val_every, batches_per_epoch) if val_every else None,
        check_val_every_n_epoch=None if val_every else 1, num_sanity_val_steps=0, deterministic=deterministic,
        log_every_n_steps=10, callbacks=list(callbacks), plugins=[SafeCheckpointIO()],
        use_distributed_sampler=False,
    )


class _DataPosition(L.Callback):
    """Counts training batches consumed (skipped steps included); saved in checkpoints, so the
    :class:`StepBatchSampler` restarts exactly after the last consumed batch, and exposes the
    count to the module as ``data_step`` (seed of per-step randomness)."""

    def __init__(self) -> None:
        self.consumed = 0

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
    """What :func:`fit_resumable` did: the trainer, the step it resumed from (0: fresh) and the
    checkpoint it resumed from."""

    trainer: L.Trainer
    resumed_from: int
    checkpoint: Path | None


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
) -> FitResult:
    """Run ``steps`` optimiser steps of ``module`` on ``train_set`` with exact resume.

    Batches come from a :class:`StepBatchSampler` (step ``k``'s batch is a function of ``(seed, k)``);
    checkpoints ``out/checkpoints/step-XXXXXXXX.ckpt`` are written every ``ckpt_every`` steps, at the
    end, and on SIGTERM / SIGUSR1 (then the process exits with status 128 + signal after saving).
    With ``resume`` the newest intact checkpoint of ``out`` is restored (weights, optimiser, schedule,
    loop counters, data position) and the per-step log ``out/metrics.jsonl`` is cut back to it.
    """
    out = Path(out)
    ckpt = find_resume_checkpoint(out) if resume else None
    start = checkpoint_step(ckpt) if ckpt is not None else 0
    if ckpt is not None:
        print(f"resuming from {ckpt} (step {start} of {steps})", file=sys.stderr)
    sampler = StepBatchSampler(len(train_set), batch_size, seed, total_steps=steps)
    position = _DataPosition()
    sampler.position = lambda: position.consumed
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_fn, num_workers=num_workers,
                        persistent_workers=False)
    saver = ResumeCallback(out, every_n_steps=ckpt_every, keep=keep, resumed_step=start)
    if val_loaders is not None and not isinstance(val_loaders, list):
        val_loaders = [val_loaders]
    trainer = make_trainer(out, steps, precision, progress, steps, val_every if val_loaders else None,
                           deterministic=deterministic, callbacks=[position, saver, *extra_callbacks])
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch.*")
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        try:
            trainer.fit(module, loader, val_loaders or None, ckpt_path=ckpt, weights_only=True)
        except SystemExit:
            if saver.preempted is None:
                raise
    if saver.preempted is not None:
        name = signal.Signals(saver.preempted).name
        print(f"{name} received: checkpoint {saver.last_saved} written at step {trainer.global_step}; "
              f"rerun with --resume to continue", file=sys.stderr)
        raise SystemExit(128 + int(saver.preempted))
    return FitResult(trainer, start, ckpt)
