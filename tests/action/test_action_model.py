"""VideoActionModel structure: parameter counts, init, batched sampling, frozen visual stream."""

from __future__ import annotations

import math

import pytest
import torch

import vavam
from vavam import presets
from vavam.action import VideoActionModel, joint_forward, training_mask


@pytest.mark.parametrize(
    "preset, count",
    # L: 579·512² + 13·512 (the reference architecture; S and B follow the same formula)
    [(presets.vavam_s, 21_346_752), (presets.vavam_b, 37_948_672), (presets.vavam_l, 151_788_032)],
)
def test_expert_parameter_counts_on_meta(preset, count):
    with torch.device("meta"):
        model = vavam.build_model(preset())
    assert isinstance(model, VideoActionModel)
    e = model.config.width
    assert sum(p.numel() for p in model.expert.parameters()) == count == 579 * e * e + 13 * e


def test_expert_init():
    config = presets.vavam_tiny()
    torch.manual_seed(0)
    model = VideoActionModel(config)
    ex = model.expert
    assert torch.count_nonzero(ex.readout.weight) == 0
    std, layers = config.init_std, config.video.num_layers
    m_e = config.width / config.base_width
    m_a = config.video.width / config.base_attention_width
    w_attn = torch.cat([b.attn.out_proj.weight.flatten() for b in ex.blocks])
    w_mlp = torch.cat([b.mlp.fc_out.weight.flatten() for b in ex.blocks])
    w_fc = torch.cat([b.mlp.fc_in.weight.flatten() for b in ex.blocks])
    assert w_attn.std().item() == pytest.approx(std / math.sqrt(2 * layers) / math.sqrt(m_a), rel=0.1)
    assert w_mlp.std().item() == pytest.approx(std / math.sqrt(2 * layers) / math.sqrt(m_e), rel=0.1)
    assert w_fc.std().item() == pytest.approx(std / math.sqrt(m_e), rel=0.1)
    for b in ex.blocks:
        assert torch.count_nonzero(b.attn.qkv_proj.weight[: config.video.width]) == 0
    assert not any(p.requires_grad for p in model.video.parameters())


def _noisy_tiny(seed: int = 0) -> VideoActionModel:
    torch.manual_seed(seed)
    model = VideoActionModel(presets.vavam_tiny()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@torch.no_grad()
def test_batched_samples_equal_separate_calls():
    model = _noisy_tiny()
    tokens = torch.randint(0, 1024, (2, 3, 4, 6))
    command = torch.tensor([0, 2])
    noise = torch.randn(2, 5, 6, 2)
    batched = model.sample_trajectory(tokens, command, num_samples=5, noise=noise)
    assert batched.shape == (2, 5, 6, 2)
    separate = torch.cat([model.sample_trajectory(tokens, command, noise=noise[:, i : i + 1]) for i in range(5)], 1)
    assert (batched - separate).abs().max() < 1e-4
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(model.sample_trajectory(tokens, command, 2, generator=g1), model.sample_trajectory(tokens, command, 2, generator=g2))


@torch.no_grad()
@pytest.mark.parametrize("batch", [1, 2])
def test_more_samples_keep_the_first_ones(batch):
    """Asking for more samples from the same seed adds samples: the first ones stay (``vavam plan --num-samples 1``
    and ``5`` draw the same sample 0; one [B, K, 6, 2] draw had CPU randn switch method at 16 values)."""
    model = _noisy_tiny()
    tokens = torch.randint(0, 1024, (batch, 3, 4, 6))
    command = torch.tensor([0, 2][:batch])
    one = model.sample_trajectory(tokens, command, 1, generator=torch.Generator().manual_seed(4))
    five = model.sample_trajectory(tokens, command, 5, generator=torch.Generator().manual_seed(4))
    two = model.sample_trajectory(tokens, command, 2, generator=torch.Generator().manual_seed(4))
    # equal up to the float sums of a wider batch (other noise moves them by metres)
    assert (five[:, :1] - one).abs().max() < 1e-4 and (five[:, :2] - two).abs().max() < 1e-4
    assert not torch.equal(five[:, 0], five[:, 1])


def test_flow_loss_repeats_equal_separate_windows_and_share_gradients():
    """``repeats=R``: the loss equals the mean of the losses of R copies of each window with their own
    noise and times (rows window-major), and so do the expert's gradients."""
    model = _noisy_tiny()
    tokens = torch.randint(0, 1024, (2, 3, 4, 6))
    command = torch.tensor([[0, 1, 2], [2, 2, 1]])
    actions = torch.randn(2, 3, 6, 2) * 10
    r = 3
    noise, t = torch.randn(2 * r, 3, 6, 2), torch.rand(2 * r, 3)
    shared = model.flow_loss(tokens, command, actions, t=t, noise=noise, repeats=r)
    shared.backward()
    grads = {n: p.grad.clone() for n, p in model.expert.named_parameters()}
    model.zero_grad()
    copies = model.flow_loss(tokens.repeat_interleave(r, 0), command.repeat_interleave(r, 0),
                             actions.repeat_interleave(r, 0), t=t, noise=noise)
    copies.backward()
    assert torch.allclose(shared, copies, rtol=1e-5, atol=1e-6)
    for n, p in model.expert.named_parameters():
        assert torch.allclose(grads[n], p.grad, rtol=1e-4, atol=1e-6), n
    with pytest.raises(ValueError, match="repeats"):
        model.flow_loss(tokens, command, actions, repeats=0)


@torch.no_grad()
def test_visual_stream_unchanged_by_actions():
    model = _noisy_tiny(1)
    tokens = torch.randint(0, 1024, (2, 4, 4, 6))
    mask = training_mask(4, 24, 6)
    a1, a2 = torch.randn(2, 24, 16), torch.randn(2, 24, 16) * 5
    vis1, act1 = joint_forward(model.video, model.expert, tokens, a1, mask)
    vis2, act2 = joint_forward(model.video, model.expert, tokens, a2, mask)
    assert torch.equal(vis1, vis2)
    assert not torch.allclose(act1, act2)
    assert (vis1.view(2, 4, 4, 6, -1) - model.video.features(tokens, -1)).abs().max() < 1e-5


def test_velocity_frame_prefix_and_gradients():
    """Frame τ's velocity depends only on frames 0..τ; gradients reach the expert, not VaViM."""
    model = _noisy_tiny(2)
    tokens = torch.randint(0, 1024, (1, 4, 4, 6))
    x, t, c = torch.randn(1, 4, 6, 2), torch.rand(1, 4), torch.randint(0, 3, (1, 4))
    with torch.no_grad():
        v = model.velocity(x, t, c, tokens)
        v_prefix = model.velocity(x[:, :2], t[:, :2], c[:, :2], tokens[:, :2])
    assert (v[:, :2] - v_prefix).abs().max() < 1e-4
    model.train()
    loss = model.flow_loss(tokens, c, torch.randn(1, 4, 6, 2) * 10, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert model.expert.readout.weight.grad is not None
    assert all(p.grad is None for p in model.video.parameters())


def test_ego_speed_conditioning():
    """``ego_speed``: the speed changes the velocity field (and gradients reach its projection); the
    batched samples read the last frame's speed; a missing or misshapen speed is refused by name;
    a model without the option ignores a speed it is given."""
    import dataclasses

    torch.manual_seed(0)
    model = VideoActionModel(dataclasses.replace(presets.vavam_tiny(), ego_speed=True))
    assert model.expert.encoder.speed_proj.weight.shape == (16, 1)
    with torch.no_grad():
        for p in model.expert.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    tokens = torch.randint(0, 1024, (2, 3, 4, 6))
    command = torch.tensor([[0, 1, 2], [2, 2, 1]])
    actions, noise, t = torch.randn(2, 3, 6, 2) * 10, torch.randn(2, 3, 6, 2), torch.rand(2, 3)
    speed = torch.tensor([[3.0, 4.0, 5.0], [10.0, 11.0, 12.0]])
    loss = model.flow_loss(tokens, command, actions, t=t, noise=noise, speed=speed)
    loss.backward()
    assert model.expert.encoder.speed_proj.weight.grad.abs().sum() > 0
    with torch.no_grad():
        assert model.flow_loss(tokens, command, actions, t=t, noise=noise, speed=speed * 2) != loss
        # speeds are per frame: changing frame 2's speed leaves frames 0-1's velocities alone
        x = torch.randn(2, 3, 6, 2)
        v1 = model.velocity(x, t, command, tokens, speed=speed)
        v2 = model.velocity(x, t, command, tokens, speed=speed.index_fill(1, torch.tensor([2]), 30.0))
        assert torch.equal(v1[:, :2], v2[:, :2]) and not torch.allclose(v1[:, 2], v2[:, 2])
        n = torch.randn(2, 4, 6, 2)
        last = model.sample_trajectory(tokens, command[:, -1], 4, noise=n, speed=speed[:, -1])
        assert torch.equal(last, model.sample_trajectory(tokens, command, 4, noise=n, speed=speed))
        assert not torch.allclose(last, model.sample_trajectory(tokens, command[:, -1], 4, noise=n, speed=speed[:, 0]))
    with pytest.raises(ValueError, match="speed"):
        model.sample_trajectory(tokens, command[:, -1], 2)
    with pytest.raises(ValueError, match="speed"):
        model.flow_loss(tokens, command, actions, speed=speed[:, :2])
    with pytest.raises(ValueError, match="speed"):
        model.sample_trajectory(tokens, command[:, -1], 2, speed=torch.tensor([1.0, float("nan")]))
    plain = _noisy_tiny()
    assert plain.expert.encoder.speed_proj is None
    with torch.no_grad():
        n = torch.randn(2, 2, 6, 2)
        assert torch.equal(plain.sample_trajectory(tokens, command[:, -1], 2, noise=n),
                           plain.sample_trajectory(tokens, command[:, -1], 2, noise=n, speed=speed[:, -1]))


def test_speed_prior_generates_the_deviation_from_constant_velocity():
    """``speed_prior``: the flow's target is the trajectory minus the constant-velocity one (straight
    ahead, waypoint k at speed · 0.5 s · k), and a sample is the same flow's output plus it: the model
    equals, weight for weight, a prior-less model trained on and sampled around that trajectory."""
    import dataclasses

    base = dataclasses.replace(presets.vavam_tiny(), ego_speed=True, action_scaling=10.0)
    torch.manual_seed(0)
    model = VideoActionModel(dataclasses.replace(base, speed_prior=True))
    with torch.no_grad():
        for p in model.expert.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    plain = VideoActionModel(base)
    plain.load_state_dict(model.state_dict())
    tokens = torch.randint(0, 1024, (2, 3, 4, 6))
    command = torch.tensor([[0, 1, 2], [2, 2, 1]])
    actions, noise, t = torch.randn(2, 3, 6, 2) * 10, torch.randn(2, 3, 6, 2), torch.rand(2, 3)
    speed = torch.tensor([[3.0, 4.0, 5.0], [10.0, 11.0, 12.0]])
    cv = torch.zeros(2, 3, 6, 2)
    cv[..., 0] = speed[..., None] * torch.tensor([0.5, 1.0, 1.5, 2.0, 2.5, 3.0])  # by hand: 10 m/s -> 30 m at 3 s
    assert cv[1, 0, -1, 0] == 30.0
    with torch.no_grad():
        loss = model.flow_loss(tokens, command, actions, t=t, noise=noise, speed=speed)
        assert torch.allclose(loss, plain.flow_loss(tokens, command, actions - cv, t=t, noise=noise, speed=speed))
        assert not torch.allclose(loss, plain.flow_loss(tokens, command, actions, t=t, noise=noise, speed=speed))
        n = torch.randn(2, 4, 6, 2)
        traj, states = model.sample_trajectory(tokens, command[:, -1], 4, noise=n, speed=speed[:, -1],
                                               return_intermediate=True)
        expected = plain.sample_trajectory(tokens, command[:, -1], 4, noise=n, speed=speed[:, -1])
        assert torch.allclose(traj, expected + cv[:, -1, None], atol=1e-5)
        assert torch.allclose(states[-1], traj)  # the intermediate states are in metres too
    with pytest.raises(ValueError, match="speed_prior needs ego_speed"):
        VideoActionModel(dataclasses.replace(presets.vavam_tiny(), speed_prior=True))
    with pytest.raises(ValueError, match="action_scaling"):
        VideoActionModel(dataclasses.replace(base, action_scaling=float("nan")))
