"""Codebook health while training a VQ tokenizer: usage counting and dead-code restarts.

A code is *dead* when no latent picked it during the last ``window`` training steps. A restart copies
a recent encoder output (pre-quantisation latent, unit-normalised when the codebook is) into each dead
row, so the code starts where the encoder actually puts its outputs. Rows of other codes are untouched,
and the optimiser's moment estimates of the restarted rows are zeroed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


@torch.no_grad()
def restart_dead_codes(
    weight: torch.Tensor,
    counts: torch.Tensor,
    latents: torch.Tensor,
    generator: torch.Generator | None = None,
    l2_norm: bool = True,
) -> torch.Tensor:
    """Overwrite the rows of ``weight`` [K,D] whose ``counts`` [K] are 0 with rows of ``latents`` [N,D].

    Latents are drawn without replacement while there are enough, else with replacement. Returns the
    long indices of the restarted codes (empty when none is dead or ``latents`` is empty).
    """
    dead = torch.nonzero(counts == 0, as_tuple=False).flatten()
    if dead.numel() == 0 or latents.shape[0] == 0:
        return dead[:0]
    n = latents.shape[0]
    if n >= dead.numel():
        pick = torch.randperm(n, generator=generator)[: dead.numel()]
    else:
        pick = torch.randint(0, n, (dead.numel(),), generator=generator)
    new = latents[pick].to(weight.dtype)
    if l2_norm:
        new = F.normalize(new, p=2, dim=-1)
    weight[dead] = new.to(weight.device)
    return dead


@torch.no_grad()
def reset_optimizer_rows(optimizer: torch.optim.Optimizer, param: torch.Tensor, rows: torch.Tensor) -> None:
    """Zero the Adam moments (``exp_avg``, ``exp_avg_sq``) of ``rows`` of ``param`` if the optimiser holds any."""
    state = optimizer.state.get(param, {})
    for key in ("exp_avg", "exp_avg_sq"):
        if key in state and state[key].shape == param.shape:
            state[key][rows] = 0


class CodebookMonitor:
    """Counts code usage over a window of steps and keeps a ring buffer of recent latents.

    Call :meth:`observe` every step with the indices and latents of the batch; :meth:`maybe_restart` at
    the end of every step restarts the codes unused during the window when the window is complete.
    """

    def __init__(self, codebook_size: int, dim: int, window: int, buffer_size: int = 4096, per_step: int = 256) -> None:
        self.codebook_size = codebook_size
        self.window = window
        self.per_step = per_step
        self.counts = torch.zeros(codebook_size, dtype=torch.long)
        self.buffer = torch.zeros(buffer_size, dim)
        self.filled = 0
        self.cursor = 0
        self.restarts = 0  # codes restarted so far
        self.steps_in_window = 0

    @torch.no_grad()
    def observe(self, indices: torch.Tensor, latents: torch.Tensor, generator: torch.Generator | None = None) -> None:
        """Add a batch: ``indices`` long (any shape), ``latents`` [B,D,h,w] (pre-quantisation)."""
        self.counts += torch.bincount(indices.flatten().cpu(), minlength=self.codebook_size)
        flat = latents.detach().float().permute(0, 2, 3, 1).reshape(-1, latents.shape[1]).cpu()  # [B*h*w, D]
        if flat.shape[0] > self.per_step:
            flat = flat[torch.randperm(flat.shape[0], generator=generator)[: self.per_step]]
        size = self.buffer.shape[0]
        for start in range(0, flat.shape[0], size):
            chunk = flat[start : start + size]
            end = self.cursor + chunk.shape[0]
            if end <= size:
                self.buffer[self.cursor : end] = chunk
            else:
                k = size - self.cursor
                self.buffer[self.cursor :] = chunk[:k]
                self.buffer[: end - size] = chunk[k:]
            self.cursor = end % size
            self.filled = min(size, self.filled + chunk.shape[0])
        self.steps_in_window += 1

    def maybe_restart(
        self,
        weight: torch.Tensor,
        optimizer: torch.optim.Optimizer | None = None,
        generator: torch.Generator | None = None,
        l2_norm: bool = True,
    ) -> int:
        """At the end of a window: restart dead codes, reset the counts; returns how many were restarted."""
        if self.window <= 0 or self.steps_in_window < self.window:
            return 0
        dead = restart_dead_codes(weight.data, self.counts, self.buffer[: self.filled], generator, l2_norm)
        if optimizer is not None and dead.numel():
            reset_optimizer_rows(optimizer, weight, dead)
        self.restarts += int(dead.numel())
        self.counts.zero_()
        self.steps_in_window = 0
        return int(dead.numel())

    def state_dict(self) -> dict:
        return {
            "counts": self.counts.clone(),
            "buffer": self.buffer.clone(),
            "filled": self.filled,
            "cursor": self.cursor,
            "restarts": self.restarts,
            "steps_in_window": self.steps_in_window,
        }

    def load_state_dict(self, state: dict) -> None:
        self.counts = state["counts"].clone()
        self.buffer = state["buffer"].clone()
        self.filled = int(state["filled"])
        self.cursor = int(state["cursor"])
        self.restarts = int(state["restarts"])
        self.steps_in_window = int(state["steps_in_window"])


__all__ = ["restart_dead_codes", "reset_optimizer_rows", "CodebookMonitor"]
