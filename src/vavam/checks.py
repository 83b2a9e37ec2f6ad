"""Argument checks shared by the public entry points: bad input fails fast with an error that names
the argument, instead of an ``IndexError`` deep inside an embedding kernel or a silently wrong result.

Each check costs at most one reduction over its tensor (a few microseconds next to a model call).
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

__all__ = ["check_token_ids", "check_finite", "check_commands", "check_positive_int"]

_INT_DTYPES = (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8)


def check_token_ids(tokens: torch.Tensor, vocab_size: int, name: str = "tokens") -> None:
    """Integer dtype, at least one element, every id in ``[0, vocab_size)``."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(tokens).__name__}")
    if tokens.dtype not in _INT_DTYPES:
        raise TypeError(f"{name} must hold integer token ids (long), got dtype {tokens.dtype}")
    if tokens.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tokens.shape)})")
    if tokens.device.type == "meta":  # shape-only runs (parameter counting) have no values
        return
    lo, hi = int(tokens.min()), int(tokens.max())
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} ids must lie in [0, {vocab_size}), got min {lo} and max {hi}")


def check_finite(x: torch.Tensor, name: str) -> None:
    """No NaN or infinity in ``x``."""
    if x.is_floating_point() and x.device.type != "meta" and not bool(torch.isfinite(x).all()):
        bad = int((~torch.isfinite(x)).sum())
        raise ValueError(f"{name} holds {bad} NaN or infinite value(s) (shape {tuple(x.shape)})")


def check_commands(command: torch.Tensor, shape: tuple[int, ...], name: str = "command") -> None:
    """Integer commands of the given shape with values 0 (right), 1 (left) or 2 (straight)."""
    if not isinstance(command, torch.Tensor) or command.dtype not in _INT_DTYPES:
        what = command.dtype if isinstance(command, torch.Tensor) else type(command).__name__
        raise TypeError(f"{name} must be an integer tensor (0 right, 1 left, 2 straight), got {what}")
    if tuple(command.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(command.shape)}")
    if command.numel() and command.device.type != "meta" and (int(command.min()) < 0 or int(command.max()) > 2):
        raise ValueError(f"{name} values must be 0 (right), 1 (left) or 2 (straight), got {command.unique().tolist()}")


def check_positive_int(value: int, name: str) -> None:
    """``value`` is an integer >= 1 (a Python or numpy integer; not a bool)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_seed(value: int, name: str = "--seed") -> None:
    """``value`` is an integer in [0, 2^32 - 1], the seeds numpy's generators take (a Python or numpy integer)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or not 0 <= value < 2**32:
        raise ValueError(f"{name} must be an integer in [0, 2^32 - 1], got {value!r}")


def image_size_arg(height: int | None, width: int | None) -> tuple[int, int] | None:
    """``(height, width)`` from ``--image-height`` / ``--image-width``: both or neither (None: neither given)."""
    if (height is None) != (width is None):
        raise ValueError("--image-height and --image-width go together: give both or neither "
                         f"(got height {height}, width {width})")
    if height is None:
        return None
    if height < 1 or width < 1:
        raise ValueError(f"--image-height and --image-width must be positive, got {height} x {width}")
    return int(height), int(width)


def check_nonnegative_int(value: int, name: str, zero: str) -> None:
    """``value`` is an integer >= 0 (Python or numpy); ``zero`` says what 0 means (named in the error)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer (0: {zero}), got {value!r}")


def check_fraction(value: float, name: str, of: str = "the steps") -> None:
    """``value`` is a finite number in [0, 1] (Python or numpy); the error names ``name`` and what it is a
    fraction ``of``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction of {of} in [0, 1], got {value!r}")


def check_optimizer_args(lr: float, weight_decay: float) -> None:
    """Refuse a learning rate that is not a positive finite number or a negative / non-finite weight decay,
    naming the option (``--lr``, ``--weight-decay``), before a run writes anything.

    Raises:
        ValueError: naming the option and the value.
    """
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"--lr must be a positive finite number, got {lr}")
    if not (isinstance(weight_decay, (int, float)) and math.isfinite(weight_decay) and weight_decay >= 0):
        raise ValueError(f"--weight-decay must be a finite number >= 0, got {weight_decay}")
