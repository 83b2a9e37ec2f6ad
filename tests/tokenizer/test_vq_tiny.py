"""VQModel with the vq_tiny preset: shapes, errors, straight-through gradients, losses."""

from __future__ import annotations

import pytest
import torch

import vavam
from vavam.tokenizer import QuantizeOutput, VQModel, VQOutput


@pytest.fixture
def model() -> VQModel:
    torch.manual_seed(0)
    return vavam.build_model(vavam.presets.vq_tiny()).eval()


def images(b: int = 2, h: int = 32, w: int = 48) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2 - 1


def test_encode_decode_shapes(model: VQModel) -> None:
    assert model.downsample == 8
    ids = model.encode(images())
    assert ids.dtype == torch.int64 and ids.shape == (2, 4, 6)
    assert int(ids.min()) >= 0 and int(ids.max()) < model.config.codebook_size
    out = model.decode(ids)
    assert out.shape == (2, 3, 32, 48) and out.dtype == torch.float32
    assert not out.requires_grad
    assert 0 < model.codebook_usage(ids) <= 48 / 1024


def test_encode_equals_quantize_of_latents(model: VQModel) -> None:
    x = images()
    q = model.quantize(model.encode_latents(x))
    assert isinstance(q, QuantizeOutput)
    assert torch.equal(q.indices, model.encode(x))
    assert torch.allclose(model.decode_latents(q.z_q), model.decode(q.indices), atol=1e-5)


def test_codes_are_unit_norm_and_decode_matches_codebook(model: VQModel) -> None:
    codebook = model.quantize.codebook()
    assert torch.allclose(codebook.norm(dim=-1), torch.ones(codebook.shape[0]), atol=1e-5)
    ids = torch.randint(0, 1024, (1, 2, 3))
    z = model.quantize.embed(ids)
    assert z.shape == (1, 8, 2, 3)
    assert torch.equal(z[0, :, 1, 2], codebook[ids[0, 1, 2]])


def test_straight_through_gradients_reach_encoder(model: VQModel) -> None:
    model.train()
    x = images()
    out = model(x)
    assert isinstance(out, VQOutput) and out.recon.shape == x.shape
    loss = (out.recon - x).pow(2).mean()  # reconstruction only: the encoder learns through the straight-through path
    loss.backward()
    enc_grads = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in enc_grads)
    assert sum(g.abs().sum() for g in enc_grads) > 0
    assert model.quant_conv.weight.grad.abs().sum() > 0
    assert model.quantize.embedding.weight.grad is None  # the codebook learns only through the codebook loss


def test_losses_follow_llamagen(model: VQModel) -> None:
    z = torch.randn(2, 8, 3, 4, requires_grad=True)
    q = model.quantize(z)
    zn = torch.nn.functional.normalize(z.detach().permute(0, 2, 3, 1), dim=-1)
    zq = model.quantize.codebook()[q.indices]
    expected = ((zq - zn) ** 2).mean()
    assert torch.allclose(q.codebook_loss, expected, atol=1e-6)
    assert torch.allclose(q.commit_loss, 0.25 * expected, atol=1e-6)
    assert q.entropy_loss.item() == 0.0
    # straight-through value is the normalised code, gradient flows to z
    assert torch.allclose(q.z_q.permute(0, 2, 3, 1), zq, atol=1e-6)
    (q.commit_loss + q.z_q.sum()).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    q.codebook_loss.backward()
    assert model.quantize.embedding.weight.grad.abs().sum() > 0


def test_entropy_loss_when_enabled() -> None:
    from dataclasses import replace

    model = vavam.build_model(replace(vavam.presets.vq_tiny(), entropy_loss_ratio=0.1))
    q = model.quantize(torch.randn(2, 8, 3, 4, requires_grad=True))
    assert torch.isfinite(q.entropy_loss) and q.entropy_loss.requires_grad


def test_bad_inputs_raise(model: VQModel) -> None:
    with pytest.raises(ValueError, match="30x48"):
        model.encode(images(h=30))
    with pytest.raises(ValueError, match="multiple of the downsampling factor 8"):
        model.encode(images(w=44))
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        model.encode(torch.zeros(1, 4, 32, 32))
    with pytest.raises(ValueError, match="\\[B,3,H,W\\]"):
        model.encode(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="out of range"):
        model.decode(torch.full((1, 2, 2), 1024))
    with pytest.raises(ValueError, match="out of range"):
        model.decode(torch.full((1, 2, 2), -1))
    with pytest.raises(TypeError, match="integer"):
        model.decode(torch.zeros(1, 2, 2))


def test_bf16_autocast_encode_runs(model: VQModel) -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ids = model.encode(images())
        out = model.decode(ids)
    assert ids.dtype == torch.int64 and ids.shape == (2, 4, 6) and out.shape == (2, 3, 32, 48)


def test_build_on_meta_device() -> None:
    with torch.device("meta"):
        model = vavam.build_model(vavam.presets.vq16())
    n = sum(p.numel() for p in model.parameters())
    assert n == 71_883_403  # LlamaGen VQ-16 without its 65,536-entry usage buffer


def test_encode_accepts_bf16_images_into_an_fp32_model():
    """bf16 frames are cast to the weights' dtype (found by the property test: conv2d refused the mix)."""
    from vavam import presets

    torch.manual_seed(0)
    tok = vavam.build_model(presets.get("vq_tiny")).eval()
    images = (torch.rand(2, 3, 16, 32) * 2 - 1).to(torch.bfloat16)
    assert torch.equal(tok.encode(images), tok.encode(images.float()))


def test_decode_accepts_uint16_ids_from_the_token_store(model: VQModel) -> None:
    """The token store keeps uint16 ids (DESIGN 8); decode's range check raised NotImplementedError on them."""
    import numpy as np

    ids = model.encode(images())
    stored = torch.from_numpy(ids.numpy().astype(np.uint16))
    assert torch.equal(model.decode(stored), model.decode(ids))
    assert torch.equal(model.decode(ids.to(torch.int32)), model.decode(ids))
    with pytest.raises(ValueError, match="out of range"):
        model.decode(torch.full((1, 2, 2), 1024, dtype=torch.uint16))
    with pytest.raises(TypeError, match="integer"):
        model.decode(torch.zeros(1, 2, 2, dtype=torch.bool))


def test_encode_names_a_non_tensor_input(model: VQModel) -> None:
    """A numpy array reached ``.to(device)`` before the input check: AttributeError instead of the named ValueError."""
    import numpy as np

    with pytest.raises(ValueError, match="\\[B,3,H,W\\], got ndarray"):
        model.encode(np.zeros((1, 3, 32, 32), dtype=np.float32))
