"""muP helpers, explicit: width multipliers and the initialisations of the released models.

No global base-shape state: each module receives its multipliers from its config. Conventions (as
in Microsoft's ``mup`` package, which the released models used):

- a *matrix-like* weight (both axes grow with width) has width multiplier
  ``m = fan_in / base_fan_in`` and is initialised N(0, std² / m);
- a *vector-like* weight (one axis grows: embeddings, the action encoder's first linear) is
  initialised N(0, std²) with no width scaling;
- a readout divides its input by its width multiplier.
"""

from __future__ import annotations

import math

import torch


def width_mult(width: int | float, base_width: int | float) -> float:
    """Width multiplier ``width / base_width`` of a muP axis (1.0 at the base width)."""
    if base_width <= 0:
        raise ValueError(f"muP base width must be positive, got {base_width}")
    return float(width) / float(base_width)


@torch.no_grad()
def mup_normal_(weight: torch.Tensor, std: float, mult: float = 1.0) -> torch.Tensor:
    """In place: ``weight ~ N(0, std² / mult)`` (mup's ``normal_`` for a matrix-like weight).

    ``mult`` is the weight's fan-in width multiplier; pass 1.0 for vector-like weights.
    Works on meta tensors (no-op numerically).
    """
    return weight.normal_(mean=0.0, std=std / math.sqrt(mult))


@torch.no_grad()
def zero_query_rows_(qkv_weight: torch.Tensor) -> torch.Tensor:
    """In place: zero the query rows (first third of the output rows) of a fused QKV weight ``[3a, d]``.

    Gives uniform attention at initialisation (the muP query zero-init).
    """
    rows = qkv_weight.shape[0]
    if rows % 3:
        raise ValueError(f"fused QKV weight must have 3·a rows, got {rows}")
    qkv_weight[: rows // 3].zero_()
    return qkv_weight


def depth_scaled_std(std: float, num_layers: int) -> float:
    """GPT-2 residual-projection std ``std / sqrt(2 · num_layers)`` (two residual branches per block)."""
    return std / math.sqrt(2 * num_layers)
