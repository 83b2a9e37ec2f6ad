"""VaVAM properties: frame causality of the action stream, the cached inference path against the literal joint
forward, the fast (split) attention against a hand-rolled dense-mask attention, and the masks against matrices
written out by hand.
"""

from __future__ import annotations

import pytest
import torch

from vavam import flow, presets
from vavam.action import (
    VideoActionModel,
    VisualKVCache,
    action_rows_samples,
    action_rows_training,
    action_stream,
    inference_mask,
    joint_forward,
    training_mask,
)
from vavam.action.convert import load_action_model
from vavam.io import safe_torch_load

T, H_, W_ = 4, 4, 6  # vavam_tiny: 4 frames of 4 x 6 tokens
P = H_ * W_
HORIZON = 6


def _noisy_tiny(seed: int = 0) -> VideoActionModel:
    """vavam_tiny with all weights perturbed (non-zero query rows and readout, so nothing is trivially constant)."""
    torch.manual_seed(seed)
    model = VideoActionModel(presets.vavam_tiny()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


def _inputs(seed: int = 0, frames: int = T):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 1024, (2, frames, H_, W_), generator=g)
    x = torch.randn(2, frames, HORIZON, 2, generator=g)
    t = torch.rand(2, frames, generator=g)
    command = torch.randint(0, 3, (2, frames), generator=g)
    return tokens, x, t, command


# ------------------------------------------------------------------------------ masks written out by hand

# 2 frames of 2 visual tokens (v0 v1 | v2 v3), horizon 2 (a0 a1 = frame 0, a2 a3 = frame 1).
# Columns in order v0 v1 v2 v3 a0 a1 a2 a3; 1 = the row may attend to the column.
TRAINING_2x2 = [
    # v0 v1 v2 v3 a0 a1 a2 a3
    [1, 0, 0, 0, 0, 0, 0, 0],  # v0: causal over video
    [1, 1, 0, 0, 0, 0, 0, 0],  # v1
    [1, 1, 1, 0, 0, 0, 0, 0],  # v2 (causal inside a frame too)
    [1, 1, 1, 1, 0, 0, 0, 0],  # v3: never an action column
    [1, 1, 0, 0, 1, 1, 0, 0],  # a0: frame 0's video + its own group
    [1, 1, 0, 0, 1, 1, 0, 0],  # a1
    [1, 1, 1, 1, 0, 0, 1, 1],  # a2: frames 0..1 + its own group, not frame 0's actions
    [1, 1, 1, 1, 0, 0, 1, 1],  # a3
]
# inference: the same 2 x 2 context, one action group of 2 tokens that sees everything
INFERENCE_2x2 = [
    # v0 v1 v2 v3 a0 a1
    [1, 0, 0, 0, 0, 0],
    [1, 1, 0, 0, 0, 0],
    [1, 1, 1, 0, 0, 0],
    [1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 1],
    [1, 1, 1, 1, 1, 1],
]
# K = 2 samples of one group each over 4 visual tokens (the batched-sample rows): own group only
SAMPLES_2 = [
    # v0 v1 v2 v3 a0 a1 b0 b1
    [1, 1, 1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 1, 1, 0, 0],
    [1, 1, 1, 1, 0, 0, 1, 1],
    [1, 1, 1, 1, 0, 0, 1, 1],
]


# The same with the real horizon of 6 (columns v0..v3, then frame 0's six action tokens, then frame 1's).
TRAINING_2x2_H6 = """
1000 000000 000000
1100 000000 000000
1110 000000 000000
1111 000000 000000
1100 111111 000000
1100 111111 000000
1100 111111 000000
1100 111111 000000
1100 111111 000000
1100 111111 000000
1111 000000 111111
1111 000000 111111
1111 000000 111111
1111 000000 111111
1111 000000 111111
1111 000000 111111
"""
INFERENCE_2x2_H6 = """
1000 000000
1100 000000
1110 000000
1111 000000
1111 111111
1111 111111
1111 111111
1111 111111
1111 111111
1111 111111
"""


def _b(rows) -> torch.Tensor:
    if isinstance(rows, str):
        rows = [[int(c) for c in line.replace(" ", "")] for line in rows.strip().splitlines()]
    return torch.tensor(rows, dtype=torch.bool)


def test_training_mask_equals_hand_written():
    assert torch.equal(training_mask(2, 2, 2), _b(TRAINING_2x2))
    assert torch.equal(action_rows_training(2, 2, 2), _b(TRAINING_2x2)[4:])


def test_masks_with_the_real_horizon_equal_hand_written():
    assert torch.equal(training_mask(2, 2, 6), _b(TRAINING_2x2_H6))
    assert torch.equal(inference_mask(2, 2, 6), _b(INFERENCE_2x2_H6))


def test_inference_mask_equals_hand_written():
    assert torch.equal(inference_mask(2, 2, 2), _b(INFERENCE_2x2))
    assert torch.equal(action_rows_samples(4, 1, 2), _b(INFERENCE_2x2)[4:])
    assert torch.equal(action_rows_samples(4, 2, 2), _b(SAMPLES_2))


# ------------------------------------------------------------------------------ frame causality


@pytest.mark.parametrize("frame", [0, 1, 2])
@torch.no_grad()
def test_action_at_frame_t_ignores_later_video_tokens(frame):
    model = _noisy_tiny()
    tokens, x, t, command = _inputs()
    later = tokens.clone()
    later[:, frame + 1 :] = torch.randint(0, 1024, later[:, frame + 1 :].shape)
    v, v_later = model.velocity(x, t, command, tokens), model.velocity(x, t, command, later)
    assert (v[:, : frame + 1] - v_later[:, : frame + 1]).abs().max().item() <= 1e-6
    assert (v[:, frame + 1 :] - v_later[:, frame + 1 :]).abs().max().item() > 1e-3
    # ... and the earlier frames' velocities ignore the later frames' noisy actions, times and commands
    other = x.clone()
    other[:, frame + 1 :] += 3.0
    t2, c2 = t.clone(), command.clone()
    t2[:, frame + 1 :] = 1 - t2[:, frame + 1 :]
    c2[:, frame + 1 :] = (c2[:, frame + 1 :] + 1) % 3
    v_other = model.velocity(other, t2, c2, tokens)
    assert (v[:, : frame + 1] - v_other[:, : frame + 1]).abs().max().item() <= 1e-6


@torch.no_grad()
def test_action_at_frame_t_reads_every_token_of_its_own_frame():
    """The action group of frame t sees ALL tokens of frame t (whole frames), including its last one."""
    model = _noisy_tiny(1)
    tokens, x, t, command = _inputs(1)
    last = tokens.clone()
    last[:, 1, -1, -1] = (last[:, 1, -1, -1] + 1) % 1024  # last token of frame 1
    v, v2 = model.velocity(x, t, command, tokens), model.velocity(x, t, command, last)
    assert (v[:, 0] - v2[:, 0]).abs().max().item() <= 1e-6
    assert (v[:, 1] - v2[:, 1]).abs().max().item() > 1e-4


# ------------------------------------------------------------------------------ cached inference == literal joint forward


def _literal_inference_velocity(model: VideoActionModel, tokens, x, t, command) -> torch.Tensor:
    """The reference's inference step: one action group, the dense inference mask, both streams as queries.

    x ``[B, 1, H, 2]``, t ``[B, 1]``, command ``[B, 1]`` -> velocity ``[B, 1, H, 2]``.
    """
    b, frames = tokens.shape[:2]
    action = model.expert.encoder(x, command, t).reshape(b, HORIZON, -1)
    mask = inference_mask(frames, tokens.shape[2] * tokens.shape[3], HORIZON)
    _, hidden = joint_forward(model.video, model.expert, tokens, action, mask)
    return model.expert.decode(hidden).view(b, 1, HORIZON, 2)


@pytest.mark.parametrize("frames", [1, 3, 4])
@torch.no_grad()
def test_prefill_then_cached_velocity_equals_joint_forward(frames):
    model = _noisy_tiny(2)
    tokens, _, _, _ = _inputs(2, frames)
    cache = VisualKVCache(model.visual_kv(tokens), HORIZON)  # prefill once
    mask = action_rows_samples(cache.num_visual, 1, HORIZON)
    command = torch.tensor([[0], [2]])
    for step in range(3):  # the same cache serves every Euler step
        x = torch.randn(2, 1, HORIZON, 2)
        t = torch.full((2, 1), 0.1 * step)
        action = model.expert.encoder(x, command, t).reshape(2, HORIZON, -1)
        cached = model.expert.decode(action_stream(model.expert, action, cache, mask)).view(2, 1, HORIZON, 2)
        literal = _literal_inference_velocity(model, tokens, x, t, command)
        assert (cached - literal).abs().max().item() < 1e-5


@pytest.mark.parametrize("num_samples", [1, 3])
@torch.no_grad()
def test_sample_trajectory_equals_euler_over_literal_joint_forward(num_samples):
    """sample_trajectory (one prefill, K samples batched) == K separate Euler integrations, each step a literal
    joint forward over [video; one action group] with the inference mask (the reference's computation)."""
    model = _noisy_tiny(3)
    tokens, _, _, _ = _inputs(3)
    command = torch.tensor([1, 2])
    noise = torch.randn(2, num_samples, HORIZON, 2)
    got = model.sample_trajectory(tokens, command, num_samples=num_samples, num_steps=4, noise=noise)
    for k in range(num_samples):
        def velocity(x, t):
            return _literal_inference_velocity(model, tokens, x, t, command[:, None])

        x = flow.euler_integrate(velocity, noise[:, k : k + 1], 4, time_shape=(2, 1))
        assert (got[:, k : k + 1] - x * model.config.action_scaling).abs().max().item() < 1e-3  # metres


# ------------------------------------------------------------------------------ fast attention == dense mask


def _dense_attention(q, k, v, mask, scale):
    """softmax(q kᵀ · scale, masked) v written out (no SDPA): q ``[B,H,N,D]``, mask bool ``[N, N]``."""
    logits = (q @ k.transpose(-1, -2)) * scale
    logits = logits.masked_fill(~mask, float("-inf"))
    return torch.softmax(logits, dim=-1) @ v


def _dense_joint(model: VideoActionModel, tokens, x, t, command, mask):
    """The joint model over the concatenated [video; action] sequence with a dense mask and explicit softmax."""
    video, expert = model.video, model.expert
    b = tokens.shape[0]
    xv = video.embed_frames(tokens)
    xa = expert.encoder(x, command, t).reshape(b, -1, expert.config.width)
    nv = xv.shape[1]
    for vb, ab in zip(video.blocks, expert.blocks):
        qv, kv, vv = vb.attn.qkv(vb.norm1(xv))
        qa, ka, va = ab.attn.qkv(ab.norm1(xa))
        y = _dense_attention(
            torch.cat([qv, qa], 2), torch.cat([kv, ka], 2), torch.cat([vv, va], 2), mask, 1.0 / qv.shape[-1]
        )  # [B, Hd, Nv + Na, Dh]
        y = y.transpose(1, 2).reshape(b, y.shape[2], -1)
        xv = xv + vb.attn.out_proj(y[:, :nv])
        xa = xa + ab.attn.out_proj(y[:, nv:])
        xv = xv + vb.mlp(vb.norm2(xv))
        xa = xa + ab.mlp(ab.norm2(xa))
    return video.final_norm(xv), expert.decode(expert.final_norm(xa)).view_as(x)


@torch.no_grad()
def test_fast_training_attention_equals_dense_mask():
    model = _noisy_tiny(4)
    tokens, x, t, command = _inputs(4)
    dense_visual, dense_v = _dense_joint(model, tokens, x, t, command, training_mask(T, P, HORIZON))
    fast_v = model.velocity(x, t, command, tokens)  # causal SDPA video stream + action rows only
    assert (fast_v - dense_v).abs().max().item() < 1e-5
    assert (model.video.features(tokens, -1).reshape_as(dense_visual) - dense_visual).abs().max().item() < 1e-5
    # the literal SDPA joint forward agrees too (dense boolean mask through SDPA)
    action = model.expert.encoder(x, command, t).reshape(2, T * HORIZON, -1)
    _, hidden = joint_forward(model.video, model.expert, tokens, action, training_mask(T, P, HORIZON))
    assert (model.expert.decode(hidden).view_as(x) - dense_v).abs().max().item() < 1e-5


@torch.no_grad()
def test_fast_inference_attention_equals_dense_mask():
    model = _noisy_tiny(5)
    tokens, _, _, _ = _inputs(5, 3)
    x, t, command = torch.randn(2, 1, HORIZON, 2), torch.tensor([[0.3], [0.7]]), torch.tensor([[2], [0]])
    _, dense_v = _dense_joint(model, tokens, x, t, command, inference_mask(3, P, HORIZON))
    cache = VisualKVCache(model.visual_kv(tokens), HORIZON)
    action = model.expert.encoder(x, command, t).reshape(2, HORIZON, -1)
    fast = action_stream(model.expert, action, cache, action_rows_samples(cache.num_visual, 1, HORIZON))
    assert (model.expert.decode(fast).view_as(x) - dense_v).abs().max().item() < 1e-5


# ------------------------------------------------------------------------------ DeepSpeed / wrapper layouts of VaVAM files


@pytest.mark.parametrize("layout", ["forward_module", "module", "deepspeed_dir"])
@torch.no_grad()
def test_wrapped_vavam_files_load(reference_dir, tmp_path, layout):
    ckpt = safe_torch_load(reference_dir / "vavam_small_ckpt.pt")
    io = torch.load(reference_dir / "vavam_small_io.pt", weights_only=True)
    prefix = "module." if layout == "module" else "_forward_module."
    state = {prefix + k: v for k, v in ckpt["state_dict"].items()}
    if layout == "deepspeed_dir":
        path = tmp_path / "last.ckpt"
        (path / "checkpoint").mkdir(parents=True)
        client = {k: v for k, v in ckpt.items() if k != "state_dict"}
        client["module"] = state
        torch.save(client, path / "checkpoint" / "mp_rank_00_model_states.pt")
    else:
        path = tmp_path / "vavam_fused.pt"
        torch.save(dict(ckpt, state_dict=state), path)
    model = load_action_model(path)
    v = model.velocity(io["noisy_actions"], io["t"], io["high_level_command"], io["visual_tokens"])
    assert (v - io["train_velocity"]).abs().max() < 1e-4
