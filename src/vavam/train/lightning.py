"""Shared Lightning pieces of vavam's trainers: the muP/WSD optimiser hook and the Trainer settings."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from vavam.train.optim import build_optimizer, build_wsd_scheduler


class MupWsdMixin:
    """``configure_optimizers`` for a LightningModule with ``lr``, ``weight_decay`` and ``schedule``
    (warmup, end, drop): muP AdamW groups (``mup_width_multipliers``) + a per-step WSD schedule."""

    lr: float
    weight_decay: float
    schedule: tuple[int, int, int]

    def configure_optimizers(self):
        opt = build_optimizer(self, self.lr, self.weight_decay)
        sched = build_wsd_scheduler(opt, *self.schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def make_trainer(out: Path, steps: int, precision: str, progress: bool, batches_per_epoch: int,
                 val_every: int | None = None, deterministic: bool = True) -> L.Trainer:
    """A single-device Trainer: ``steps`` optimiser steps, clip 1.0, CSV logs in ``out/logs``,
    validation every ``val_every`` steps when given (else never)."""
    from lightning.pytorch.loggers import CSVLogger

    return L.Trainer(
        max_steps=steps, accelerator="auto", devices=1, precision=precision, gradient_clip_val=1.0,
        logger=CSVLogger(out, name="logs"), enable_checkpointing=False, enable_progress_bar=progress,
        enable_model_summary=False, val_check_interval=min(val_every, batches_per_epoch) if val_every else None,
        check_val_every_n_epoch=None if val_every else 1, num_sanity_val_steps=0, deterministic=deterministic,
        log_every_n_steps=10,
    )
