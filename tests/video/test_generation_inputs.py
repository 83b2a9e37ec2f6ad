"""generate_frames: a context that does not fit the model is refused naming it; a context on another device than the
model is generated on the model's device and returned on its own."""

from __future__ import annotations

import pytest
import torch

from vavam import presets
from vavam.video import VideoGPT, generate_frames


@pytest.fixture(scope="module")
def model() -> VideoGPT:
    torch.manual_seed(4)
    vim = VideoGPT(presets.vavim_tiny()).eval()
    with torch.no_grad():
        for p in vim.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return vim


def test_context_grid_larger_than_a_frame_is_refused_naming_the_context(model):
    context = torch.randint(0, 1024, (1, 2, 5, 6))  # 30 tokens per frame, the model holds 24
    with pytest.raises(ValueError, match=r"^context grid 5x6 .* 24 tokens per frame"):
        generate_frames(model, context, 1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_context_with_a_cuda_model(model):
    context = torch.randint(0, 1024, (2, 2, 4, 6), generator=torch.Generator().manual_seed(0))
    # greedy tokens may differ from the CPU run at near-ties of GPU arithmetic: only shape, device, range are pinned
    expected = generate_frames(model, context, 2)
    vim = VideoGPT(model.config).eval()
    vim.load_state_dict(model.state_dict())
    got = generate_frames(vim.cuda(), context, 2)
    assert got.device.type == "cpu" and got.shape == expected.shape == (2, 2, 4, 6)
    assert 0 <= int(got.min()) and int(got.max()) < model.config.vocab_size


@pytest.mark.parametrize("dtype", [torch.int16, torch.uint8, torch.int8])
def test_every_integer_dtype_the_checks_accept_gives_the_long_results(model, dtype):
    """The id check accepts any integer dtype; the embedding must not then fail on a non-long/int one."""
    context = torch.randint(0, 100, (2, 2, 4, 6), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(model(context.to(dtype)), model(context), rtol=0, atol=0)
    assert torch.equal(generate_frames(model, context.to(dtype), 1), generate_frames(model, context, 1))
