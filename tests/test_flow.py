"""Flow-matching math: interpolant, target velocity, time sampler, Euler integrator."""

from __future__ import annotations

import pytest
import torch

from vavam import flow


def test_interpolant_endpoints_and_velocity():
    x0, x1 = torch.randn(2, 3, 6, 2), torch.randn(2, 3, 6, 2)
    assert torch.allclose(flow.interpolate(x0, x1, torch.zeros(2, 3)), x0)
    assert torch.allclose(flow.interpolate(x0, x1, torch.ones(2, 3)), x1 + 0.001 * x0)
    t = torch.rand(2, 3)
    # the path is linear in t with slope = target velocity
    dx = flow.interpolate(x0, x1, t + 0.1) - flow.interpolate(x0, x1, t)
    assert torch.allclose(dx / 0.1, flow.target_velocity(x0, x1), atol=1e-4)
    with pytest.raises(ValueError):
        flow.interpolate(x0, x1, torch.zeros(3, 2))


def test_reference_fixture_interpolant(reference_dir):
    io = torch.load(reference_dir / "vavam_small_io.pt", weights_only=True)
    x1 = io["actions"] / 70.0
    assert torch.allclose(flow.interpolate(io["x0"], x1, io["t"]), io["noisy_actions"], atol=1e-6)
    assert torch.allclose(flow.target_velocity(io["x0"], x1), io["target_velocity"], atol=1e-6)


def test_beta_time_sampler():
    g = torch.Generator().manual_seed(0)
    t = flow.sample_time((200_000,), generator=g)
    assert t.min() >= 0 and t.max() <= 0.999
    # z ~ Beta(1.5, 1): E[z] = 0.6 -> E[t] = 0.999 * 0.4
    assert t.mean().item() == pytest.approx(0.999 * 0.4, abs=3e-3)
    # density of t decreasing: more noisy (small t) samples
    assert (t < 0.5).float().mean() > 0.6
    g2 = torch.Generator().manual_seed(0)
    assert torch.equal(t, flow.sample_time((200_000,), generator=g2))
    u = flow.sample_time_uniform((4, 8), generator=g)
    assert u.shape == (4, 8) and u.min() >= 0 and u.max() < 1


def test_euler_integrator():
    # dx/dt = 2 -> x(1) = x0 + 2; t seen by v goes 0, 0.1, ...
    seen = []

    def v(x, t):
        seen.append(t[0, 0].item())
        return torch.full_like(x, 2.0)

    x, inter = flow.euler_integrate(v, torch.zeros(1, 1, 6, 2), 10, return_intermediate=True)
    assert torch.allclose(x, torch.full_like(x, 2.0))
    assert inter.shape == (10, 1, 1, 6, 2) and torch.allclose(inter[-1], x)
    assert seen[0] == 0.0 and seen[-1] == pytest.approx(0.9)


def test_endpoints_exactly_and_velocity_is_time_independent():
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(3, 8, 6, 2, generator=g), torch.randn(3, 8, 6, 2, generator=g)
    # t = 0: pure noise; t = 1: data plus the σ_min share of the noise, exactly as the formula
    assert torch.equal(flow.interpolate(x0, x1, torch.zeros(3, 8)), x0)
    sig = 0.001
    assert (flow.interpolate(x0, x1, torch.ones(3, 8)) - (x1 + sig * x0)).abs().max() < 1e-6
    u = flow.target_velocity(x0, x1)
    assert (u - (x1 - (1 - sig) * x0)).abs().max() < 1e-6
    # per-sample times broadcast over the trailing axes
    t = torch.rand(3, 8, generator=g)
    xt = flow.interpolate(x0, x1, t)
    assert (xt - ((1 - (1 - sig) * t[..., None, None]) * x0 + t[..., None, None] * x1)).abs().max() < 1e-6


def test_euler_with_the_conditional_velocity_lands_on_the_path():
    """The conditional velocity is constant along the path, so Euler is exact: after k of N steps the state is
    interpolate(x0, x1, k/N), and at the end the t = 1 point x1 + σ_min·x0."""
    g = torch.Generator().manual_seed(2)
    x0, x1 = torch.randn(2, 5, 6, 2, dtype=torch.float64, generator=g), torch.randn(2, 5, 6, 2, dtype=torch.float64, generator=g)
    u = flow.target_velocity(x0, x1)
    x, inter = flow.euler_integrate(lambda x, t: u, x0, 10, return_intermediate=True)
    assert torch.allclose(x, flow.interpolate(x0, x1, torch.ones(2, 5, dtype=torch.float64)), atol=1e-12)
    for k in range(10):
        tk = torch.full((2, 5), (k + 1) / 10, dtype=torch.float64)
        assert torch.allclose(inter[k], flow.interpolate(x0, x1, tk), atol=1e-12)
    # a constant field integrates exactly for any step count, including one step
    for steps in (1, 3, 7):
        assert torch.allclose(flow.euler_integrate(lambda x, t: u, x0, steps), x0 + u, atol=1e-12)
    with pytest.raises(ValueError):
        flow.euler_integrate(lambda x, t: u, x0, 0)


def test_beta_time_sampler_distribution():
    """t = 0.999·(1 − z), z ~ Beta(1.5, 1): P(t ≤ s) = 1 − (1 − s/0.999)^1.5, E[t] = 0.999·0.4,
    Var[t] = 0.999²·Var[z] with Var[z] = αβ / ((α+β)²(α+β+1)) = 1.5 / (6.25·3.5)."""
    n = 200_000
    t = flow.sample_time((n,), generator=torch.Generator().manual_seed(7)).double()
    assert t.min() >= 0 and t.max() <= 0.999 and t.dtype == torch.float64
    assert t.mean().item() == pytest.approx(0.999 * 0.4, abs=3e-3)
    assert t.var().item() == pytest.approx(0.999**2 * 1.5 / (6.25 * 3.5), rel=0.02)
    s = torch.linspace(0.0, 0.999, 101, dtype=torch.float64)
    empirical = (t[None, :] <= s[:, None]).double().mean(1)
    exact = 1 - (1 - s / 0.999).clamp(min=0) ** 1.5
    assert (empirical - exact).abs().max().item() < 0.01  # Kolmogorov-Smirnov distance (≈ 0.003 expected)
    # shape [B, T]: one independent time per (sample, frame)
    tb = flow.sample_time((4, 8), generator=torch.Generator().manual_seed(0))
    assert tb.shape == (4, 8) and tb.unique().numel() == 32


def test_general_beta_time_sampler_mean():
    torch.manual_seed(0)
    t = flow.sample_time((100_000,), alpha=2.0, beta=2.0)  # torch.distributions path, E[z] = 0.5
    assert t.mean().item() == pytest.approx(0.999 * 0.5, abs=5e-3)
    with pytest.raises(ValueError):
        flow.sample_time((4,), alpha=2.0, beta=2.0, generator=torch.Generator())
