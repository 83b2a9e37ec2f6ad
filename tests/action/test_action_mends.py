"""Audit regressions (models): integer and float64 flow times in the time embedding, flow-loss inputs that used to
broadcast silently or fail in a matmul, KV-cache decoding with a batch other than the cache's, and expert widths the
sinusoidal time embedding cannot fill."""

from __future__ import annotations

import dataclasses
import math
import sys
from pathlib import Path

import pytest
import torch

from vavam import presets
from vavam.action import VideoActionModel
from vavam.action.expert import sinusoidal_embedding
from vavam.video.model import VideoGPT

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_action_inputs import _inputs as _shared_inputs  # noqa: E402


@pytest.fixture(scope="module")
def model() -> VideoActionModel:
    torch.manual_seed(31)
    vam = VideoActionModel(presets.vavam_tiny()).eval()
    with torch.no_grad():  # non-zero readout and query rows, so the outputs depend on every input
        for p in vam.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vam


def _inputs(b: int = 2, t: int = 3):
    return _shared_inputs(b, t)  # tokens [b, t, 4, 6], states [b, t, 6, 2], times [b, t], commands [b, t]


# ------------------------------------------------------------------------------ time embedding


def test_integer_flow_times_are_embedded_as_floats():
    """t = 1 as an integer tensor: ω_i = 10000^(-i/3) for dim 8, not ω truncated to integers (1, 0, 0, 0)."""
    omega = [10000.0 ** (-i / 3) for i in range(4)]
    expected = torch.tensor([[math.sin(w) for w in omega] + [math.cos(w) for w in omega]])
    got = sinusoidal_embedding(torch.tensor([1]), 8)
    assert got.is_floating_point()
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_velocity_with_integer_times_equals_float_times(model):
    tokens, x, _, command = _inputs()
    t_int = torch.tensor([[0, 1, 1], [1, 0, 1]])
    with torch.no_grad():
        torch.testing.assert_close(model.velocity(x, t_int, command, tokens),
                                   model.velocity(x, t_int.float(), command, tokens), rtol=0, atol=0)


def test_float64_times_get_float64_frequencies():
    t = torch.tensor([0.3, 0.77], dtype=torch.float64)
    omega = torch.tensor([10000.0 ** (-i / 15) for i in range(16)], dtype=torch.float64)
    angles = t[:, None] * omega
    expected = torch.cat([angles.sin(), angles.cos()], -1)
    got = sinusoidal_embedding(t, 32)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-13)  # float32 frequencies: errors ~1e-9


@pytest.mark.parametrize("width", [2, 15])
def test_expert_width_the_time_embedding_cannot_fill_is_refused_naming_it(width):
    with pytest.raises(ValueError, match=rf"action expert width .* got {width}"):
        VideoActionModel(dataclasses.replace(presets.vavam_tiny(), width=width))


# ------------------------------------------------------------------------------ flow-loss inputs


@pytest.mark.parametrize("shape", [(2, 3, 6, 1), (1, 3, 6, 2), (2, 3, 1, 2)])
def test_flow_loss_refuses_noise_that_would_broadcast(model, shape):
    tokens, x, _, command = _inputs()
    with pytest.raises(ValueError, match=r"^noise must be"):
        model.flow_loss(tokens, command, 10 * x, noise=torch.randn(shape))


@pytest.mark.parametrize("shape", [(2, 1), (3,), (1, 3)])
def test_flow_loss_names_misshapen_times(model, shape):
    tokens, x, _, command = _inputs()
    with pytest.raises(ValueError, match=r"^t must be"):
        model.flow_loss(tokens, command, 10 * x, t=torch.rand(shape))


def test_flow_loss_names_misshapen_actions(model):
    tokens, x, _, command = _inputs()
    with pytest.raises(ValueError, match=r"^actions must be"):
        model.flow_loss(tokens, command, 10 * x[:, :, :5])


def test_float64_actions_and_states_follow_the_model_dtype(model):
    """Trajectories from numpy are float64: the same metres, cast to the model's dtype, not a matmul dtype error."""
    tokens, x, times, command = _inputs()
    noise = torch.randn(2, 3, 6, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.flow_loss(tokens, command, 10 * x, t=times, noise=noise)
        got = model.flow_loss(tokens, command, (10 * x).double(), t=times.double(), noise=noise.double())
        torch.testing.assert_close(got, expected, rtol=0, atol=0)
        torch.testing.assert_close(model.velocity(x.double(), times, command, tokens),
                                   model.velocity(x, times, command, tokens), rtol=0, atol=0)
        vam64 = VideoActionModel(model.config).eval()
        vam64.load_state_dict(model.state_dict())
        vam64 = vam64.double()
        loss64 = vam64.flow_loss(tokens, command, 10 * x, t=times, noise=noise)  # float32 inputs, float64 model
    assert loss64.dtype == torch.float64
    torch.testing.assert_close(loss64.float(), expected, rtol=1e-4, atol=1e-6)


def test_sample_trajectory_names_noise_that_is_not_a_tensor(model):
    tokens, _, _, command = _inputs()
    with pytest.raises(ValueError, match=r"^noise must be"):
        model.sample_trajectory(tokens, command[:, -1], noise=[[0.0] * 2] * 6)


# ------------------------------------------------------------------------------ KV cache


def test_decode_step_refuses_a_batch_other_than_the_caches():
    """A batch of 1 fed to a cache of batch 2 used to broadcast into both rows and return [2, V] logits."""
    torch.manual_seed(0)
    vim = VideoGPT(presets.vavim_tiny()).eval()
    cache = vim.new_kv_cache(2)
    with torch.no_grad(), pytest.raises(ValueError, match=r"KV cache holds .*\[2, 2, n, 32\].* \(1, 2, 5, 32\)"):
        vim.decode_step(torch.randint(0, 1024, (1, 5)), cache, 24)
    assert cache.length == 0
