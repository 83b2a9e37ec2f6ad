"""VaVAM against the authors' reference outputs (random weights, ../shared/fixtures/reference)."""

from __future__ import annotations

import pytest
import torch

import vavam
from vavam.action import inference_mask, joint_forward, load_action_model, training_mask

CKPTS = ["vavam_small_ckpt.pt", "vavam_small_release.pt"]


@pytest.fixture(scope="module")
def io(reference_dir):
    return torch.load(reference_dir / "vavam_small_io.pt", weights_only=True)


@pytest.fixture(scope="module", params=CKPTS)
def model(request, reference_dir):
    return load_action_model(reference_dir / request.param)


def test_config_from_checkpoint(model):
    c = model.config
    assert (c.width, c.base_width, c.base_attention_width, c.train_frames) == (64, 64, 256, 4)
    assert (c.action_scaling, c.flow_sig_min, c.num_inference_steps) == (70.0, 0.001, 10)
    assert c.video.width == 256 and c.video.base_width == 256
    assert not model.training and not any(p.requires_grad for p in model.video.parameters())


@torch.no_grad()
def test_train_velocity_embeds_and_loss(model, io):
    v, emb = model.velocity(io["noisy_actions"], io["t"], io["high_level_command"], io["visual_tokens"], return_embeds=True)
    assert v.shape == (2, 4, 6, 2)
    assert (v - io["train_velocity"]).abs().max() < 1e-4
    assert (emb - io["train_action_embeds"]).abs().max() < 1e-4
    loss = ((v - io["target_velocity"]) ** 2).mean()
    assert abs(loss.item() - io["train_loss"].item()) <= 1e-5 * io["train_loss"].item()
    loss2 = model.flow_loss(io["visual_tokens"], io["high_level_command"], io["actions"], t=io["t"], noise=io["x0"])
    assert abs(loss2.item() - io["train_loss"].item()) <= 1e-5 * io["train_loss"].item()


@pytest.mark.parametrize("ctx", ["ctx4", "ctx2"])
@torch.no_grad()
def test_inference_trajectory(model, io, ctx):
    inf = io["inference"][ctx]
    traj, inter = model.sample_trajectory(
        inf["visual_tokens"], inf["high_level_command"][:, -1], num_samples=1, num_steps=10, noise=inf["noise"],
        return_intermediate=True,
    )
    assert traj.shape == (2, 1, 6, 2)
    assert (traj - inf["trajectory"]).abs().max() < 1e-3
    assert (inter - inf["intermediate"]).abs().max() < 1e-3
    # the [B, 1] command of the fixture is accepted as is
    again = model.sample_trajectory(inf["visual_tokens"], inf["high_level_command"], noise=inf["noise"])
    assert torch.equal(again, traj)


def test_training_mask_equals_reference(io):
    assert torch.equal(training_mask(4, 24, 6), io["train_attn_mask"])
    m = inference_mask(2, 24, 6)
    assert m.shape == (54, 54) and m[48:].all() and torch.equal(m[:48, :48], torch.ones(48, 48, dtype=torch.bool).tril())
    assert not m[:48, 48:].any()


@torch.no_grad()
def test_literal_joint_forward_matches(model, io):
    """The reference's concatenated joint attention gives the same action stream as our split path, and
    its visual stream is plain VaViM's."""
    x = model.expert.encoder(io["noisy_actions"], io["high_level_command"], io["t"]).reshape(2, 24, 64)
    vis, act = joint_forward(model.video, model.expert, io["visual_tokens"], x, io["train_attn_mask"])
    assert (act.view(2, 4, 6, 64) - io["train_action_embeds"]).abs().max() < 1e-4
    assert (vis.view(2, 4, 4, 6, 256) - model.video.features(io["visual_tokens"], 1)).abs().max() < 1e-5


@torch.no_grad()
def test_base_shapes_from_checkpoint(reference_dir, io):
    model = load_action_model(reference_dir / "vavam_small_basehalf_ckpt.pt")
    assert (model.config.base_width, model.config.base_attention_width, model.config.video.base_width) == (32, 128, 128)
    v = model.velocity(io["noisy_actions"], io["t"], io["high_level_command"], io["visual_tokens"])
    assert (v - io["basewidth_half"]["train_velocity"]).abs().max() < 1e-4


@torch.no_grad()
def test_round_trip_through_our_folder(reference_dir, io, tmp_path):
    model = load_action_model(reference_dir / "vavam_small_ckpt.pt")
    vavam.action.save_action_model(model, tmp_path / "vam")
    again = vavam.load_action_model(tmp_path / "vam")
    assert again.config == model.config
    inf = io["inference"]["ctx4"]
    a = again.sample_trajectory(inf["visual_tokens"], inf["high_level_command"][:, -1], noise=inf["noise"])
    assert (a - inf["trajectory"]).abs().max() < 1e-3
