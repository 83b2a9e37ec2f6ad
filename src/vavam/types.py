"""Conventions shared by every part of vavam, written once.

- Ego frame: x forward, y left, metres.
- Trajectories: ``NUM_WAYPOINTS`` waypoints at ``WAYPOINT_DT`` seconds (2 Hz), absolute offsets
  from the current pose (not deltas), shape ``[..., 6, 2]``.
- Commands: 0 = right, 1 = left, 2 = straight.
- Images: RGB, float in [-1, 1], ``[B, 3, H, W]``; uint8 -> float is ``x * (1 / 255) * 2 - 1`` (:func:`uint8_to_unit`).
- Tokens: frame-major, then row-major inside a frame: sequence index ``t*h*w + r*w + c``.
"""

from __future__ import annotations

import enum

import torch

NUM_WAYPOINTS = 6
WAYPOINT_DT = 0.5  # seconds between waypoints (2 Hz)
HORIZON_S = NUM_WAYPOINTS * WAYPOINT_DT  # 3 s
CONTEXT_FRAMES = 8
FRAME_RATE_HZ = 2.0
IMAGE_SIZE = (288, 512)  # (H, W) of the real pipeline
ACTION_SCALING = 70.0  # metres per model unit


class Command(enum.IntEnum):
    """High-level driving command, as stored in tensors."""

    RIGHT = 0
    LEFT = 1
    STRAIGHT = 2


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 RGB ``[..., 3, H, W]`` (0..255; or float holding those values) -> float32 in [-1, 1], same shape.

    The one conversion of vavam (training frames, tokenizer training, serving), in the reference's float32 ops:
    ``x * (1 / 255)`` (torchvision's ``to_dtype(scale=True)``), then ``2x - 1``; ``x / 127.5 - 1`` differs by
    one ulp on 111 of the 256 levels.
    """
    return images.float().mul(1.0 / 255).mul(2.0).sub(1.0)


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float ``[..., 3, H, W]`` in about [-1, 1] -> uint8 (clamped), same shape.

    Uses ``x * 127.5 + 127.5`` (the symmetric inverse of :func:`uint8_to_unit`), rounded.
    """
    return images.float().mul(127.5).add(127.5).round().clamp(0, 255).to(torch.uint8)


def constant_velocity_trajectory(speed: torch.Tensor, num_waypoints: int = NUM_WAYPOINTS) -> torch.Tensor:
    """Straight-ahead trajectory at constant speed: ``speed [...]`` m/s -> ``[..., num_waypoints, 2]``
    metres, waypoint ``i`` at ``speed · 0.5 s · (i + 1)`` forward (on ``speed``'s device)."""
    steps = torch.arange(1, num_waypoints + 1, dtype=torch.float64, device=speed.device) * WAYPOINT_DT  # [H]
    traj = torch.zeros(*speed.shape, num_waypoints, 2, dtype=torch.float64, device=speed.device)
    traj[..., 0] = speed.double()[..., None] * steps
    return traj.to(speed.dtype if speed.is_floating_point() else torch.float32)
