"""Exponential moving average (EMA) of the trainable weights, as a resumable Lightning callback.

Flow-matching samplers are sensitive to the step-to-step jitter of the last weights: with a large
learning rate the final weights of a short run sit anywhere in a noisy neighbourhood. Averaging
the last ~``1 / (1 - decay)`` optimiser steps smooths that out (openpi, diffusion models).

After optimiser step ``n`` (1-based) every trainable parameter's average moves towards it by
``1 - d_n`` with ``d_n = min(decay, (1 + n) / (10 + n))``: the warm-up keeps the average from
remembering the random initialisation (``d_1 = 2/11``), later steps use ``decay``.

The average lives in float32 beside the model and is saved in (and restored from) the Lightning
checkpoint, so a resumed run ends with the same average as an uninterrupted one. It is *not*
swapped into the module by the callback: call :meth:`EMAWeights.copy_to` after ``fit`` returns
(checkpoints keep the raw weights, which is what a resume must continue from).
"""

from __future__ import annotations

import numbers
import re
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn


def check_ema_decay(ema: float) -> None:
    """``--ema``: a decay in (0, 1), or 0 for no average (bools refused).

    Raises:
        ValueError: naming ``--ema`` and the value.
    """
    if isinstance(ema, (bool, np.bool_)) or not isinstance(ema, numbers.Real) or not (ema == 0 or 0 < ema < 1):
        raise ValueError(f"--ema must be a decay in (0, 1), or 0 for none, got {ema!r}")


def ema_decay_at(step: int, decay: float) -> float:
    """Decay used after optimiser step ``step`` (1-based): ``min(decay, (1 + step) / (10 + step))``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class EMAWeights(L.Callback):
    """Keeps an EMA of ``module.<prefix>``'s trainable parameters (all trainable ones when ``prefix`` is "").

    Args:
        decay: the long-run decay in (0, 1); 0.99 averages about the last 100 steps.
        prefix: dotted name of the submodule of the LightningModule to average ("" = the whole module).
    """

    def __init__(self, decay: float, prefix: str = "") -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.prefix = prefix
        self.average: dict[str, torch.Tensor] = {}
        self.updates = 0
        self._hooks: list = []

    def _params(self, module: nn.Module) -> dict[str, nn.Parameter]:
        root = module.get_submodule(self.prefix) if self.prefix else module
        return {name: p for name, p in root.named_parameters() if p.requires_grad}

    @property
    def state_key(self) -> str:
        return f"EMAWeights[prefix={self.prefix!r}]"

    @staticmethod
    def prefix_of(state_key: str) -> str | None:
        """The ``prefix`` of a checkpoint's callback-state key written by :attr:`state_key` (None: another
        callback's key)."""
        match = re.fullmatch(r"EMAWeights\[prefix='([\w.]*)'\]", str(state_key))
        return None if match is None else match.group(1)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = self._params(pl_module)
        if self.updates == 0 and not self.average:  # fresh run; a resume restored the average already
            self.average = {k: p.detach().float().clone() for k, p in params.items()}
        else:  # restored from a checkpoint, which is read onto the CPU: back beside the weights it averages
            if set(self.average) != set(params):
                raise ValueError("the checkpoint's EMA average and the module disagree on parameters: "
                                 f"{sorted(set(self.average) ^ set(params))[:5]}")
            self.average = {k: v.to(params[k].device) for k, v in self.average.items()}
        # update right after each optimiser step, before any callback checkpoints that step; the passes of
        # an accumulated step before its last run no optimiser step and so no update
        self._hooks = [opt.register_step_post_hook(lambda *_: self._update(params)) for opt in trainer.optimizers]

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    @torch.no_grad()
    def _update(self, params: dict[str, nn.Parameter]) -> None:
        self.updates += 1
        weight = 1.0 - ema_decay_at(self.updates, self.decay)
        for name, p in params.items():
            self.average[name].lerp_(p.detach().float(), weight)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates,
                "average": {k: v.clone() for k, v in self.average.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if float(state["decay"]) != self.decay:
            raise ValueError(f"checkpoint's EMA decay {state['decay']} differs from this run's {self.decay}")
        self.updates = int(state["updates"])
        self.average = {k: v.float().clone() for k, v in state["average"].items()}

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averages into ``module`` (the LightningModule the callback watched)."""
        params = self._params(module)
        missing = set(params) ^ set(self.average)
        if missing:
            raise ValueError(f"EMA average and module disagree on parameters: {sorted(missing)[:5]}")
        for name, p in params.items():
            p.copy_(self.average[name].to(p.dtype))
