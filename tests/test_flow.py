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
