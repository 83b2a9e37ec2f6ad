"""muP optimiser groups and the Warmup-Stable-Drop learning-rate schedule.

muP (as in the released models, ``mup.optim.MuAdamW``): every parameter has a width multiplier
``m`` (``fan_in / base_fan_in`` for matrix-like weights, 1 for vector-like ones such as embeddings
and the tied readout); AdamW then uses ``lr / m`` for it. Weight decay is decoupled and not
rescaled (torch AdamW applies ``p <- p * (1 - lr_group * wd)``).

Models declare their multipliers with a ``mup_width_multipliers() -> {param name: m}`` method;
parameters not listed get 1.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Iterable

import torch
from torch import nn


def mup_param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Group the trainable parameters of ``model`` by muP width multiplier.

    Returns AdamW param groups ``{"params", "lr": lr / m, "weight_decay", "width_mult": m}``, one
    per distinct multiplier, in a deterministic order (ascending m). Frozen parameters are left out.
    """
    multipliers: dict[str, float] = {}
    if hasattr(model, "mup_width_multipliers"):
        multipliers = dict(model.mup_width_multipliers())
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    unknown = set(multipliers) - {n for n, _ in model.named_parameters()}
    if unknown:
        raise ValueError(f"mup_width_multipliers names parameters the model lacks: {sorted(unknown)[:5]}")
    by_mult: dict[float, list[nn.Parameter]] = defaultdict(list)
    for name, param in named:
        m = float(multipliers.get(name, 1.0))
        if m <= 0:
            raise ValueError(f"width multiplier of {name} must be positive, got {m}")
        by_mult[m].append(param)
    return [
        {"params": params, "lr": lr / m, "weight_decay": weight_decay, "width_mult": m}
        for m, params in sorted(by_mult.items())
    ]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 1e-7,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    """muP AdamW of the reference recipes (betas 0.9 / 0.95, eps 1e-8, decoupled weight decay)."""
    groups = mup_param_groups(model, lr, weight_decay)
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def wsd_factor(step: int, warmup_iter: int, end_iter: int, drop_iter: int) -> float:
    """Warmup-Stable-Drop multiplier of the base learning rate at optimiser step ``step``.

    - warmup (``warmup_iter > 0`` and ``step < warmup_iter``): ``step / warmup_iter`` (starts at 0);
    - drop (``drop_iter > 0`` and ``step > end_iter - drop_iter``):
      ``0.1 + max(0.9 * (end_iter - step) / drop_iter, 0)``, i.e. linear from 1 to 0.1, then 0.1;
    - otherwise 1.
    """
    if warmup_iter > 0 and step < warmup_iter:
        return step / warmup_iter
    if drop_iter > 0 and step > end_iter - drop_iter:
        return 0.1 + max(0.9 * (end_iter - step) / drop_iter, 0.0)
    return 1.0


def frac_steps(frac: float, steps: int) -> int:
    """``floor(frac x steps)`` with ``frac`` read as the decimal it was written as: the warmup / drop length of
    ``--warmup-frac`` / ``--drop-frac``. ``int(frac * steps)`` in binary floating point lost a step for some
    values (``0.7 x 90`` gave 62, ``0.29 x 100`` gave 28).

    Args:
        frac: a share of the steps in [0, 1] (Python or numpy float).
        steps: the run's optimiser steps.

    Returns:
        the whole number of steps, e.g. ``frac_steps(0.1, 155_293) == 15_529``.
    """
    from vavam.data.mix import exact_fraction

    return math.floor(exact_fraction(float(frac)) * int(steps))


def build_wsd_scheduler(
    optimizer: torch.optim.Optimizer, warmup_iter: int, end_iter: int, drop_iter: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step Warmup-Stable-Drop scheduler (state, including the step counter, is checkpointable)."""
    if end_iter <= 0 or warmup_iter < 0 or drop_iter < 0 or drop_iter > end_iter:
        raise ValueError(f"bad WSD schedule: warmup {warmup_iter}, end {end_iter}, drop {drop_iter}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: wsd_factor(step, warmup_iter, end_iter, drop_iter)
    )


def group_learning_rates(optimizer: torch.optim.Optimizer) -> Iterable[tuple[float, float]]:
    """(width multiplier, current lr) per param group, for logging."""
    return [(g.get("width_mult", 1.0), g["lr"]) for g in optimizer.param_groups]
