"""VaViM against the authors' reference outputs (random weights, ../shared/fixtures/reference)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vavam
from vavam.video import generate_frames, load_video_model

CKPTS = ["vavim_small_ckpt.pt", "vavim_small_release.pt"]


@pytest.fixture(scope="module")
def io(reference_dir):
    return torch.load(reference_dir / "vavim_small_io.pt", weights_only=True)


@pytest.fixture(scope="module", params=CKPTS)
def model(request, reference_dir):
    return load_video_model(reference_dir / request.param)


def _feat_tol(stored: torch.Tensor) -> float:
    return 1e-5 * max(1.0, stored.abs().max().item())


@torch.no_grad()
def test_config_and_eval_mode(model):
    c = model.config
    assert (c.width, c.num_layers, c.head_dim, c.vocab_size, c.num_frames, c.tokens_per_frame) == (256, 2, 128, 1025, 4, 24)
    assert c.base_width == 256 and not model.training


@torch.no_grad()
def test_logits_and_loss(model, io):
    tokens = io["tokens"]
    logits = model(tokens)
    assert logits.shape == (2, 96, 1025)
    assert (logits[:, :95] - io["train_logits"]).abs().max() < 1e-4
    assert (logits[:, 95] - io["last_position_logits"]).abs().max() < 1e-4
    loss = F.cross_entropy(logits[:, :95].reshape(-1, 1025), tokens.reshape(2, -1)[:, 1:].reshape(-1))
    assert abs(loss.item() - io["train_loss"].item()) <= 1e-5 * io["train_loss"].item()


@torch.no_grad()
def test_features(model, io):
    tokens = io["tokens"]
    for layer, key in ((0, "intermediate_layer0"), (1, "intermediate_layer1_last"), (-1, "intermediate_layer1_last")):
        feats = model.features(tokens, layer)
        assert feats.shape == (2, 4, 4, 6, 256)
        assert (feats - io[key]).abs().max() < _feat_tol(io[key])


@torch.no_grad()
def test_greedy_generation_and_step_logits(model, io):
    frames, step_logits = generate_frames(model, io["tokens"][:, :3], 1, temperature=1.0, top_k=1, return_step_logits=True)
    assert torch.equal(frames, io["gen1_from3_kv"])
    assert (step_logits - io["gen1_from3_kv_step_logits"]).abs().max() < 1e-4
    assert torch.equal(vavam.generate_frames(model, io["tokens"][:, :3], 1), io["gen1_from3_kv"])
    assert torch.equal(generate_frames(model, io["tokens"][:, :3], 1, use_cache=False), io["gen1_from3_kv"])


@torch.no_grad()
def test_base_width_from_stored_shapes(reference_dir, io):
    model = load_video_model(reference_dir / "vavim_small_base128_ckpt.pt")
    assert model.config.base_width == 128
    tokens = io["tokens"]
    logits = model(tokens)[:, :95]
    ref = io["basewidth128"]
    assert (logits - ref["train_logits"]).abs().max() < 1e-4
    loss = F.cross_entropy(logits.reshape(-1, 1025), tokens.reshape(2, -1)[:, 1:].reshape(-1))
    assert abs(loss.item() - ref["train_loss"].item()) <= 1e-5 * ref["train_loss"].item()


@torch.no_grad()
def test_round_trip_through_our_folder(reference_dir, io, tmp_path):
    model = load_video_model(reference_dir / "vavim_small_ckpt.pt")
    vavam.video.save_video_model(model, tmp_path / "vim", meta={"source": "vavim_small_ckpt.pt"})
    again = vavam.load_video_model(tmp_path / "vim")
    assert again.config == model.config
    assert torch.equal(again(io["tokens"]), model(io["tokens"]))
