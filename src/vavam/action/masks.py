"""Attention masks of the joint (visual + action) sequence. True = the row (query) may attend to the column (key).

Token order: the visual tokens of frames 0..T−1 (``P`` per frame, sequence order), then the action
groups (``H`` tokens each), group-major then horizon-minor.
"""

from __future__ import annotations

import torch


def training_mask(num_frames: int, tokens_per_frame: int, horizon: int, device=None) -> torch.Tensor:
    """Training mask, bool ``[T·P + T·H, T·P + T·H]``.

    Visual rows: causal over the visual columns, no action column. Action group of frame τ: every
    visual token of frames 0..τ and the H tokens of its own group (bidirectional).
    """
    nv, na = num_frames * tokens_per_frame, num_frames * horizon
    mask = torch.zeros(nv + na, nv + na, dtype=torch.bool, device=device)
    mask[:nv, :nv] = torch.ones(nv, nv, dtype=torch.bool, device=device).tril()
    mask[nv:] = action_rows_training(num_frames, tokens_per_frame, horizon, device)
    return mask


def inference_mask(num_frames: int, tokens_per_frame: int, horizon: int, device=None) -> torch.Tensor:
    """Inference mask for one action group, bool ``[T·P + H, T·P + H]``: visual rows causal over the visual
    columns; the H action rows see everything."""
    nv = num_frames * tokens_per_frame
    mask = torch.zeros(nv + horizon, nv + horizon, dtype=torch.bool, device=device)
    mask[:nv, :nv] = torch.ones(nv, nv, dtype=torch.bool, device=device).tril()
    mask[nv:] = True
    return mask


def action_rows_training(num_frames: int, tokens_per_frame: int, horizon: int, device=None) -> torch.Tensor:
    """The action rows of :func:`training_mask`, bool ``[T·H, T·P + T·H]``."""
    nv, na = num_frames * tokens_per_frame, num_frames * horizon
    group = torch.arange(na, device=device) // horizon  # frame of each action row: [T·H]
    visual_frame = torch.arange(nv, device=device) // tokens_per_frame  # [T·P]
    sees_visual = visual_frame[None, :] <= group[:, None]  # [T·H, T·P]
    sees_action = group[None, :] == group[:, None]  # [T·H, T·H]
    return torch.cat([sees_visual, sees_action], dim=1)


def action_rows_samples(num_visual: int, num_groups: int, horizon: int, device=None) -> torch.Tensor:
    """Action rows for ``num_groups`` independent samples sharing one visual context, bool
    ``[G·H, Nv + G·H]``: every visual column, and the tokens of the row's own group.

    With one group this is the action part of :func:`inference_mask`.
    """
    group = torch.arange(num_groups * horizon, device=device) // horizon  # [G·H]
    sees_visual = torch.ones(group.numel(), num_visual, dtype=torch.bool, device=device)
    return torch.cat([sees_visual, group[None, :] == group[:, None]], dim=1)
