"""Flow-matching math of VaVAM (rectified flow with a small σ_min, π0-style time sampling).

Convention of the reference: t = 0 is noise, t = 1 is data, σ_min = 0.001. With noise x0 and data x1
(actions / action_scaling):

- interpolant ``x_t = (1 − (1 − σ_min)·t)·x0 + t·x1``
- target velocity ``u = x1 − (1 − σ_min)·x0``
- training times ``t = (1 − σ_min)·(1 − z)``, ``z ~ Beta(1.5, 1)`` (more weight on noisy times)
- sampling: forward Euler from t = 0 to 1, ``x ← x + Δt·v(x, t)``.

Times have a shape that is a prefix of the data's shape (e.g. ``t [B, T]`` for ``x [B, T, 6, 2]``).
"""

from __future__ import annotations

from typing import Callable

import torch

SIG_MIN = 0.001


def _expand_time(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``t [*P]`` -> ``[*P, 1, ..., 1]`` broadcastable against ``like [*P, *rest]``."""
    if like.shape[: t.dim()] != t.shape:
        raise ValueError(f"time shape {tuple(t.shape)} is not a prefix of data shape {tuple(like.shape)}")
    return t.reshape(*t.shape, *([1] * (like.dim() - t.dim()))).to(like.dtype)


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, sig_min: float = SIG_MIN) -> torch.Tensor:
    """Point of the conditional path: ``x0, x1 [*P, *D]``, ``t [*P]`` -> ``x_t [*P, *D]``."""
    tt = _expand_time(t, x0)
    return (1 - (1 - sig_min) * tt) * x0 + tt * x1


def target_velocity(x0: torch.Tensor, x1: torch.Tensor, sig_min: float = SIG_MIN) -> torch.Tensor:
    """Velocity of the conditional path (independent of t): ``x1 − (1 − σ_min)·x0``, same shape."""
    return x1 - (1 - sig_min) * x0


def sample_time(
    shape: tuple[int, ...],
    alpha: float = 1.5,
    beta: float = 1.0,
    sig_min: float = SIG_MIN,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Training flow times ``t = (1 − σ_min)·(1 − z)``, ``z ~ Beta(alpha, beta)``; float ``[*shape]`` in [0, 1 − σ_min].

    For ``beta == 1`` (the released recipe) or ``alpha == 1`` the Beta draw is exact inverse-CDF
    sampling of a uniform, so ``generator`` is honoured; other shapes use
    :class:`torch.distributions.Beta` (global RNG; ``generator`` must then be None).
    """
    if beta == 1.0:
        z = torch.rand(shape, generator=generator, device=device).pow(1.0 / alpha)
    elif alpha == 1.0:
        z = 1 - torch.rand(shape, generator=generator, device=device).pow(1.0 / beta)
    else:
        if generator is not None:
            raise ValueError("a generator is supported only for Beta(alpha, 1) or Beta(1, beta)")
        z = torch.distributions.Beta(alpha, beta).sample(shape).to(device)
    return (1 - sig_min) * (1 - z)


def sample_time_uniform(
    shape: tuple[int, ...], generator: torch.Generator | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """Stratified uniform times over the N = prod(shape) draws: ``(U + k/N) mod (1 − 1e-5)``; ``[*shape]``."""
    n = 1
    for s in shape:
        n *= s
    u = torch.rand((), generator=generator, device=device)
    t = (u + torch.arange(n, device=device) / n) % (1 - 1e-5)
    return t.reshape(shape)


def euler_integrate(
    velocity: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    x0: torch.Tensor,
    num_steps: int = 10,
    time_shape: tuple[int, ...] | None = None,
    return_intermediate: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Forward Euler from t = 0 (noise ``x0``) to t = 1 (data) in ``num_steps`` steps of 1/num_steps.

    Args:
        velocity: ``v(x [*P, *D], t [*P]) -> [*P, *D]``.
        x0: the state at t = 0.
        time_shape: shape ``P`` of the time tensor (default: ``x0.shape[:2]``).
        return_intermediate: also return the state after every step.

    Returns:
        the state at t = 1, ``x0``'s shape; with ``return_intermediate`` also ``[num_steps, *x0.shape]``.

    As the reference, t accumulates ``t ← t + Δt`` in the state's dtype.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    dt = 1.0 / num_steps
    shape = tuple(x0.shape[:2]) if time_shape is None else time_shape
    t = torch.zeros(shape, dtype=x0.dtype, device=x0.device)
    x = x0.clone()
    states = []
    for _ in range(num_steps):
        x = x + dt * velocity(x, t)
        t = t + dt
        if return_intermediate:
            states.append(x)
    if return_intermediate:
        return x, torch.stack(states)
    return x
