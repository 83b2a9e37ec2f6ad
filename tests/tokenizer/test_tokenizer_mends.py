"""Regression tests of the tokenizer audit (session 31): resume off the CPU, shape checks of the losses, LPIPS heads
that were dropped silently, training flags that were accepted silently, and frames of the wrong dtype."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import vavam.train.tokenizer as T
from vavam.tokenizer.losses import (
    LossConfig,
    TokenizerLoss,
    VGGPerceptualLoss,
    load_perceptual_loss,
    reconstruction_losses,
    vq_losses,
)
from vavam.train.tokenizer import to_model_images, train_tokenizer

TINY = dict(steps=1, batch_size=1, image_size=(16, 16), val_frames=1, progress=False)


# ------------------------------------------------------------------------------ resume on an accelerator


class _OnAccelerator(torch.Tensor):
    """Stands for a tensor that ``map_location`` put on an accelerator: any op mixing it with CPU tensors fails
    (as ``cuda_tensor += cpu_tensor`` does); only ``.cpu()`` / ``.to("cpu")`` bring it back as a CPU tensor."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        to_cpu = func is torch.Tensor.cpu or (func is torch.Tensor.to and "cpu" in [str(a) for a in args[1:]])
        with torch._C.DisableTorchFunctionSubclass():
            if to_cpu:
                return args[0].as_subclass(torch.Tensor).clone()
        raise RuntimeError(f"Expected all tensors to be on the same device (simulated accelerator tensor, {func})")


def test_resume_brings_the_codebook_monitor_back_to_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``read_checkpoint(map_location=--device)`` put the monitor's counts on the GPU; its first ``observe`` then
    added CPU counts into them in place and a CUDA resume failed at its first step. The monitor's state is now
    brought back to the CPU. (Simulated here: the accelerator is a tensor type that refuses to mix with CPU ones.)"""
    kw = dict(TINY, ckpt_every=1, dead_code_window=1)
    train_tokenizer(tmp_path / "run", **{**kw, "steps": 1})
    real = T.read_checkpoint

    def on_accelerator(path, map_location="cpu"):
        state = real(path, map_location=map_location)
        state["monitor"] = {k: v.as_subclass(_OnAccelerator) if isinstance(v, torch.Tensor) else v
                            for k, v in state["monitor"].items()}
        return state

    monkeypatch.setattr(T, "read_checkpoint", on_accelerator)
    summary = train_tokenizer(tmp_path / "run", resume=True, **{**kw, "steps": 2})
    assert summary["resumed_from"] == 1 and np.isfinite(summary["final_psnr"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_on_cuda(tmp_path: Path) -> None:
    """The real case of the test above: a tokenizer run resumed on a CUDA device trains on."""
    kw = dict(TINY, ckpt_every=1, dead_code_window=1, device="cuda")
    train_tokenizer(tmp_path / "run", **{**kw, "steps": 1})
    summary = train_tokenizer(tmp_path / "run", resume=True, **{**kw, "steps": 3})
    assert summary["resumed_from"] == 1 and np.isfinite(summary["final_psnr"])


# ------------------------------------------------------------------------------ losses of mismatched shapes


def test_losses_refuse_tensors_of_different_shapes_instead_of_broadcasting() -> None:
    """One reconstruction against a batch of two images broadcast silently to a finite, meaningless loss."""
    images = torch.zeros(2, 3, 8, 8)
    images[1] = 1.0
    recon = torch.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"recon \(1, 3, 8, 8\) and images \(2, 3, 8, 8\)"):
        TokenizerLoss(LossConfig()).generator_loss(images, recon, *[torch.tensor(0.0)] * 3, step=0)
    with pytest.raises(ValueError, match=r"recon \(1, 3, 8, 8\) and target \(2, 3, 8, 8\)"):
        reconstruction_losses(recon, images)
    with pytest.raises(ValueError, match=r"z \(4, 8\) and z_q \(1, 8\)"):
        vq_losses(torch.zeros(4, 8), torch.zeros(1, 8))
    l1, l2 = reconstruction_losses(torch.zeros(2, 3, 8, 8), images)  # same shapes: as before
    assert l1.item() == pytest.approx(0.5) and l2.item() == pytest.approx(0.5)


# ------------------------------------------------------------------------------ LPIPS heads


def _lpips_file(path: Path, heads: dict[str, torch.Tensor]) -> Path:
    g = torch.Generator().manual_seed(0)
    state = {f"features.{k}": torch.randn(v.shape, generator=g) * 0.05
             for k, v in VGGPerceptualLoss().features.state_dict().items()}
    torch.save({**state, **heads}, path)
    return path


def test_lpips_heads_saved_without_dropout_are_used(tmp_path: Path) -> None:
    """LPIPS built with ``use_dropout=False`` names its heads ``linK.model.0.weight``: they were dropped silently
    and the loss ran as the unweighted channel sum. Heads of 0.1 give 0.1 x that sum."""
    heads = {f"lin{k}.model.0.weight": torch.full((1, c, 1, 1), 0.1) for k, c in enumerate((64, 128, 256, 512, 512))}
    loss = load_perceptual_loss(_lpips_file(tmp_path / "lpips.pth", heads))
    assert len(loss.lins) == 5
    plain = VGGPerceptualLoss()
    plain.features.load_state_dict(loss.features.state_dict())
    g = torch.Generator().manual_seed(1)
    x, y = (torch.rand(1, 3, 32, 32, generator=g) * 2 - 1 for _ in range(2))
    assert loss(x, y).item() == pytest.approx(0.1 * plain(x, y).item(), rel=1e-4)


def test_incomplete_or_misshapen_lpips_heads_are_refused_naming_the_file(tmp_path: Path) -> None:
    """Fewer than five heads were dropped silently; a head of the wrong width failed (or broadcast) only in the
    loss's forward pass, without naming the file."""
    three = {f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), 0.1) for k, c in enumerate((64, 128, 256))}
    with pytest.raises(ValueError, match=r"three\.pth: LPIPS heads lin\[0, 1, 2\] found"):
        load_perceptual_loss(_lpips_file(tmp_path / "three.pth", three))
    wrong = {f"lin{k}.model.1.weight": torch.full((1, c, 1, 1), 0.1) for k, c in enumerate((64, 128, 256, 512, 1))}
    with pytest.raises(ValueError, match=r"wrong\.pth: LPIPS head lin4 has shape \(1, 1, 1, 1\), expected 512"):
        load_perceptual_loss(_lpips_file(tmp_path / "wrong.pth", wrong))


# ------------------------------------------------------------------------------ training flags


@pytest.mark.parametrize("kwargs, message", [
    (dict(final_lr_ratio=-0.5), r"--final-lr-ratio must be a number in \[0, 1\].*got -0.5"),  # lr < 0 at the end
    (dict(final_lr_ratio=float("nan")), r"--final-lr-ratio must be a number in \[0, 1\]"),
    (dict(warmup_steps=-2), "--warmup-steps must be a non-negative integer"),
    (dict(gan_start=-1), "--gan-start must be a non-negative integer"),
    (dict(dead_code_window=-5), "--dead-code-window must be a non-negative integer"),
    (dict(l1_weight=-1.0), "--l1-weight must be a finite number >= 0, got -1.0"),
    (dict(l2_weight=float("inf")), "--l2-weight must be a finite number >= 0, got inf"),
    (dict(perceptual_weight=-0.1), "--perceptual-weight must be a finite number >= 0"),
    (dict(gan_weight=-0.5), "--gan-weight must be a finite number >= 0"),
])
def test_train_tokenizer_refuses_bad_schedule_and_loss_flags_by_name(tmp_path: Path, kwargs, message) -> None:
    """These were accepted and trained on: a negative --final-lr-ratio decays the learning rate below zero (gradient
    ascent), a negative weight maximises its loss term, a negative count acted as 0."""
    with pytest.raises(ValueError, match=message):
        train_tokenizer(tmp_path / "run", **{**TINY, **kwargs})
    assert not (tmp_path / "run").exists()


def test_learning_rate_never_negative_within_the_accepted_ratios() -> None:
    for ratio in (0.0, 0.1, 1.0):
        rates = [T.learning_rate(k, 50, 1e-3, 5, ratio) for k in range(50)]
        assert min(rates) >= 0 and rates[-1] == pytest.approx(ratio * 1e-3)


# ------------------------------------------------------------------------------ frames


def test_to_model_images_refuses_float_or_channels_first_frames() -> None:
    """Float frames (e.g. already in [0, 1]) mapped silently to about -1 everywhere."""
    frames = np.full((1, 4, 4, 3), 255, dtype=np.uint8)
    assert torch.equal(to_model_images(frames), torch.ones(1, 3, 4, 4))
    with pytest.raises(TypeError, match="uint8.*got dtype torch.float32"):
        to_model_images(np.ones((1, 4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"\[N,H,W,3\].*got shape \(1, 3, 4, 4\)"):
        to_model_images(np.zeros((1, 3, 4, 4), dtype=np.uint8))


# ------------------------------------------------------------------------------ quantizer settings


@pytest.mark.parametrize("kwargs, message", [
    (dict(entropy_ratio=-0.1), "entropy_loss_ratio must be a finite number >= 0, got -0.1"),  # was: silently 0
    (dict(beta=float("nan")), "commit_loss_beta must be a finite number >= 0, got nan"),
    (dict(codebook_size=0), "codebook_size >= 1"),
])
def test_quantizer_refuses_negative_loss_settings_by_name(kwargs, message) -> None:
    from vavam.tokenizer.quantizer import VectorQuantizer

    with pytest.raises(ValueError, match=message):
        VectorQuantizer(**{"codebook_size": 16, "dim": 8, **kwargs})
    q = VectorQuantizer(16, 8, entropy_ratio=0.1)  # accepted settings: the entropy term is on, and finite
    assert torch.isfinite(q(torch.randn(1, 8, 2, 2)).entropy_loss) and q.entropy_ratio == 0.1
