"""VaVAM entry points: misshapen or non-finite inputs are refused naming the argument; inputs and generators that
live on another device or dtype than the model are handled."""

from __future__ import annotations

import pytest
import torch

from vavam import presets
from vavam.action import VideoActionModel

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def model() -> VideoActionModel:
    torch.manual_seed(3)
    vam = VideoActionModel(presets.vavam_tiny()).eval()
    with torch.no_grad():  # non-zero readout and distinct weights, so the outputs depend on the inputs
        for p in vam.expert.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return vam


def _inputs(b: int = 2, t: int = 2):
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 1024, (b, t, 4, 6), generator=g)
    x = torch.randn(b, t, 6, 2, generator=g)
    times = torch.rand(b, t, generator=g)
    command = torch.randint(0, 3, (b, t), generator=g)
    return tokens, x, times, command


@pytest.mark.parametrize("shape", [(2,), (2, 1), (1, 2), (2, 2, 1)])
def test_velocity_refuses_flow_times_that_are_not_one_per_sample_and_frame(model, shape):
    tokens, x, _, command = _inputs()
    with pytest.raises(ValueError, match=r"^t must .*\[B, T\]"):
        model.velocity(x, torch.rand(shape), command, tokens)


def test_velocity_refuses_tokens_without_a_grid(model):
    tokens, x, times, command = _inputs()
    with pytest.raises(ValueError, match=r"^tokens must be \[B, T, h, w\]"):
        model.velocity(x, times, command, tokens[:, :, 0])  # [B, T, w]


def test_flow_loss_names_the_non_finite_noise_or_times(model):
    tokens, x, times, command = _inputs()
    actions = 10 * x
    with pytest.raises(ValueError, match=r"^noise holds"):
        model.flow_loss(tokens, command, actions, noise=torch.full_like(x, float("nan")))
    with pytest.raises(ValueError, match=r"^t holds"):
        model.flow_loss(tokens, command, actions, t=times.masked_fill(times > -1, float("inf")))


@pytest.mark.parametrize("model_dtype, noise_dtype", [(torch.float32, torch.float64), (torch.bfloat16, torch.float32)])
def test_given_noise_follows_the_model_dtype(model, model_dtype, noise_dtype):
    """A caller's noise in another float dtype than the model is the same state: cast, not a matmul dtype error."""
    vam = VideoActionModel(model.config).eval()
    vam.load_state_dict(model.state_dict())
    vam = vam.to(model_dtype)
    tokens, _, _, command = _inputs()
    noise = torch.randn(2, 3, 6, 2, generator=torch.Generator().manual_seed(1))
    expected = vam.sample_trajectory(tokens, command[:, -1], num_samples=3, noise=noise.to(model_dtype))
    got = vam.sample_trajectory(tokens, command[:, -1], num_samples=3, noise=noise.to(noise_dtype))
    assert got.dtype == model_dtype
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@needs_cuda
def test_sample_trajectory_takes_a_generator_on_the_model_device(model):
    """The training callback seeds a generator on the module's device (train/action.py); the noise must be drawn
    there instead of failing with "Expected a 'cpu' device type for generator"."""
    vam = VideoActionModel(model.config).eval()
    vam.load_state_dict(model.state_dict())
    vam = vam.cuda()
    tokens, _, _, command = _inputs()
    tokens, command = tokens.cuda(), command[:, -1].cuda()
    a = vam.sample_trajectory(tokens, command, num_samples=2, generator=torch.Generator("cuda").manual_seed(5))
    b = vam.sample_trajectory(tokens, command, num_samples=2, generator=torch.Generator("cuda").manual_seed(5))
    assert a.device.type == "cuda" and a.shape == (2, 2, 6, 2)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@needs_cuda
def test_sample_trajectory_with_cpu_inputs_and_a_cuda_model(model):
    """CPU tokens / command / noise with a CUDA model (open-loop evaluation's batches): computed on the model's
    device, returned on the inputs' device, equal to the all-CPU run."""
    vam = VideoActionModel(model.config).eval()
    vam.load_state_dict(model.state_dict())
    tokens, _, _, command = _inputs()
    noise = torch.randn(2, 1, 6, 2, generator=torch.Generator().manual_seed(1))
    expected = vam.sample_trajectory(tokens, command[:, -1], noise=noise)
    got = vam.cuda().sample_trajectory(tokens, command[:, -1], noise=noise)
    assert got.device.type == "cpu"
    torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-3)
    gen = torch.Generator().manual_seed(7)  # a CPU generator still works with a CUDA model (the serving agent's)
    assert vam.sample_trajectory(tokens, command[:, -1], generator=gen).device.type == "cpu"


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8])
def test_every_integer_dtype_the_checks_accept_gives_the_long_results(model, dtype):
    """Tokens and commands in any integer dtype the argument checks accept work as long ones do."""
    tokens, x, times, command = _inputs()
    torch.testing.assert_close(model.velocity(x, times, command.to(dtype), tokens.clamp(max=100).to(dtype)),
                               model.velocity(x, times, command, tokens.clamp(max=100)), rtol=0, atol=0)
    noise = torch.randn(2, 1, 6, 2)
    torch.testing.assert_close(model.sample_trajectory(tokens.to(torch.int16), command[:, -1].to(dtype), noise=noise),
                               model.sample_trajectory(tokens, command[:, -1], noise=noise), rtol=0, atol=0)
