"""Tokenizer losses against values computed by hand on tiny tensors; the perceptual loss from local weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import vavam
from vavam.tokenizer.losses import (
    LossConfig,
    PatchDiscriminator,
    TokenizerLoss,
    VGGPerceptualLoss,
    adaptive_gan_weight,
    hinge_d_loss,
    hinge_g_loss,
    load_perceptual_loss,
    reconstruction_losses,
    vq_losses,
)


def test_reconstruction_losses_by_hand():
    recon = torch.tensor([[0.0, 1.0], [-2.0, 3.0]])
    l1, l2 = reconstruction_losses(recon, torch.zeros(2, 2))
    assert l1.item() == pytest.approx((0 + 1 + 2 + 3) / 4)
    assert l2.item() == pytest.approx((0 + 1 + 4 + 9) / 4)


def test_vq_losses_by_hand_and_gradients():
    z = torch.tensor([[1.0, 2.0]], requires_grad=True)
    z_q = torch.tensor([[0.0, 4.0]], requires_grad=True)
    codebook, commit = vq_losses(z, z_q, beta=0.25)
    assert codebook.item() == pytest.approx((1 + 4) / 2)
    assert commit.item() == pytest.approx(0.25 * (1 + 4) / 2)
    codebook.backward()
    assert z.grad is None and z_q.grad is not None  # the codebook loss moves only the codes
    z_q.grad = None
    vq_losses(z, z_q, beta=0.25)[1].backward()
    assert z_q.grad is None and torch.allclose(z.grad, 0.25 * 2 * (z - z_q).detach() / 2)


def test_vq_losses_match_the_quantizer():
    torch.manual_seed(0)
    model = vavam.build_model(vavam.presets.vq_tiny())
    z = torch.randn(2, model.config.codebook_embed_dim, 3, 4)
    q = model.quantize(z)
    zn = F.normalize(z.permute(0, 2, 3, 1), dim=-1)  # the quantizer compares unit vectors
    codes = F.normalize(model.quantize.embedding.weight, dim=-1)[q.indices]
    codebook, commit = vq_losses(zn, codes, beta=model.config.commit_loss_beta)
    assert q.codebook_loss.item() == pytest.approx(codebook.item(), rel=1e-5)
    assert q.commit_loss.item() == pytest.approx(commit.item(), rel=1e-5)


def test_hinge_losses_by_hand():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    # real: relu(1-2)=0, relu(1-0)=1 -> 0.5; fake: relu(1-2)=0, relu(1.5)=1.5 -> 0.75
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.5 + 0.75))
    assert hinge_g_loss(fake).item() == pytest.approx(0.75)


def test_adaptive_weight_is_gradient_norm_ratio():
    w = torch.randn(4, 3, requires_grad=True)
    nll = 3.0 * w.sum()  # gradient 3 everywhere, norm 3 * sqrt(12)
    g = w.sum()  # norm sqrt(12)
    weight = adaptive_gan_weight(nll, g, w)
    assert weight.item() == pytest.approx(3 * math.sqrt(12) / (math.sqrt(12) + 1e-4), rel=1e-6)
    assert not weight.requires_grad


def test_patch_discriminator_shapes():
    d = PatchDiscriminator(3, channels=8, num_layers=3)
    assert d(torch.randn(2, 3, 32, 64)).shape == (2, 1, 2, 6)


def test_generator_loss_combines_terms_and_lists_them():
    torch.manual_seed(0)
    x, recon = torch.rand(2, 3, 8, 8) * 2 - 1, torch.rand(2, 3, 8, 8) * 2 - 1
    cb, cm, ent = torch.tensor(0.3), torch.tensor(0.05), torch.tensor(0.01)
    loss = TokenizerLoss(LossConfig(l1_weight=2.0, l2_weight=0.5, codebook_weight=1.0, commit_weight=2.0))
    total, parts = loss.generator_loss(x, recon, cb, cm, ent, step=0)
    l1, l2 = (recon - x).abs().mean(), ((recon - x) ** 2).mean()
    assert total.item() == pytest.approx((2 * l1 + 0.5 * l2 + 0.3 + 2 * 0.05 + 0.01).item(), rel=1e-6)
    assert parts["l1"] == pytest.approx(l1.item())
    active = " ".join(loss.active())
    assert "l1" in active and "l2" in active and "gan" not in active and "perceptual" not in active


def test_gan_terms_switch_on_at_start_step():
    torch.manual_seed(0)
    loss = TokenizerLoss(LossConfig(gan=True, gan_start=3, gan_adaptive=False, gan_weight=0.5, disc_channels=8))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    recon = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    zero = torch.tensor(0.0)
    before, parts0 = loss.generator_loss(x, recon, zero, zero, zero, step=2)
    after, parts1 = loss.generator_loss(x, recon, zero, zero, zero, step=3)
    assert "g_loss" not in parts0 and "g_loss" in parts1
    assert after.item() == pytest.approx(before.item() + 0.5 * parts1["g_loss"], rel=1e-5)
    d_loss, d_parts = loss.discriminator_loss(x, recon)
    assert d_loss.requires_grad and recon.grad is None and set(d_parts) >= {"d_loss", "logits_real", "logits_fake"}
    assert any("gan(hinge, fixed" in a for a in loss.active())


def _vgg_state(prefix: str = "features.") -> dict[str, torch.Tensor]:
    ref = VGGPerceptualLoss().features.state_dict()
    g = torch.Generator().manual_seed(0)
    return {prefix + k: torch.randn(v.shape, generator=g) * 0.05 for k, v in ref.items()}


def test_perceptual_loss_from_local_torchvision_layout(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "vgg16_features.safetensors"
    save_file(_vgg_state(), str(path))
    loss = load_perceptual_loss(path)
    assert not any(p.requires_grad for p in loss.parameters())
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(loss(x, x), torch.zeros(2), atol=1e-6)
    y = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    d = loss(x, y)
    assert d.shape == (2,) and (d > 0).all()
    d.sum().backward()  # gradients reach the reconstruction
    assert y.grad is not None and y.grad.abs().sum() > 0


def test_perceptual_loss_lpips_layout_with_heads(tmp_path):
    state = {}
    for k, v in _vgg_state("").items():  # LPIPS keeps torchvision's indices inside its five slices
        index = int(k.split(".")[0])
        slice_ = 1 + sum(index > t for t in (3, 8, 15, 22))
        state[f"net.slice{slice_}.{k}"] = v
    for i, c in enumerate((64, 128, 256, 512, 512)):
        state[f"lin{i}.model.1.weight"] = torch.full((1, c, 1, 1), 0.1)
    torch.save(state, tmp_path / "lpips.pth")
    loss = load_perceptual_loss(tmp_path / "lpips.pth")
    assert len(loss.lins) == 5
    x, y = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    plain = VGGPerceptualLoss()
    plain.features.load_state_dict(loss.features.state_dict())
    assert loss(x, y).item() == pytest.approx(0.1 * plain(x, y).item(), rel=1e-4)  # heads of 0.1 = 0.1 x channel sum
    assert "lpips" in " ".join(TokenizerLoss(LossConfig(), loss).active())


def test_perceptual_weights_missing_or_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="downloads no weights"):
        load_perceptual_loss(tmp_path / "nope.safetensors")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="VGG16"):
        load_perceptual_loss(tmp_path / "bad.pt")
