"""Regression tests of the memory planner / FLOPs / trajectory-picture audit: VaVAM's activation checkpointing
(expert MLPs only), DDP's bucket-view gradients, FSDP's single VaVAM unit, non-finite waypoints in the pictures,
bad inputs named, numpy integers in the FLOPs counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

import vavam
from vavam.train.memory import activation_bytes, count_parameters, estimate_memory
from vavam.train.memory_probe import action_loss_fn, measure_training_step
from vavam.train.optim import build_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")


def _action(layers: int = 8, frames: int = 4) -> vavam.config.ActionConfig:
    video = dataclasses.replace(vavam.presets.vavim_tiny(), num_layers=layers)
    return dataclasses.replace(vavam.presets.vavam_tiny(), video=video, train_frames=frames)


# ------------------------------------------------------------------------------ VaVAM activation checkpointing


def test_vavam_checkpointing_saves_only_the_expert_mlp_hidden_tensors():
    """vavam checkpoints the expert's MLPs only (ActionModule.distributed_targets): the joint keys/values stay
    saved, so checkpointing saves 2 x 4e values per action token and layer, not the whole block."""
    cfg = _action(layers=8)
    mb, t, e, layers = 8, cfg.train_frames, cfg.width, 8
    na = mb * t * cfg.horizon
    for precision, b in (("32", 4), ("bf16-mixed", 2)):
        plain = activation_bytes(cfg, mb, precision, activation_checkpointing=False)
        ckpt = activation_bytes(cfg, mb, precision, activation_checkpointing=True)
        # per layer: fc_in and GELU outputs (4e each) dropped; under autocast the MLP input is kept in fp32
        # (4e) instead of its bf16 copy (2e)
        per_layer = na * 2 * 4 * e * b - (na * 2 * e if precision == "bf16-mixed" else 0)
        assert plain.forward - ckpt.forward == layers * per_layer


@pytest.mark.parametrize("precision", ["32", "bf16-mixed"])
def test_vavam_checkpointing_estimate_matches_measured_peak(precision):
    """Measured with the expert's MLPs checkpointed as in training: the planner assumed per-block checkpoints
    (0.70 / 0.78 of the measured peak); it is within 5 % now."""
    from vavam.train.distributed import apply_activation_checkpointing

    cfg, mb = _action(layers=8), 8
    torch.manual_seed(0)
    model = vavam.build_model(cfg)
    assert apply_activation_checkpointing(model, [blk.mlp for blk in model.expert.blocks]) == 8
    tokens = torch.randint(0, cfg.video.vocab_size - 1, (mb, cfg.train_frames, 1, cfg.video.tokens_per_frame))
    measured = measure_training_step(model, action_loss_fn(model, tokens), build_optimizer(model.expert, 1e-3),
                                     precision, [tokens])["peak"]
    est = estimate_memory(cfg, micro_batch=mb, precision=precision, activation_checkpointing=True, device_type="cpu")
    assert 0.95 <= est["total"] / measured <= 1.05


def test_probe_checkpoints_the_expert_mlps_like_training():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointWrapper

    model = vavam.build_model(vavam.presets.vavam_tiny())
    tokens = torch.zeros(1, 4, 1, 24, dtype=torch.long)
    loss = action_loss_fn(model, tokens, activation_checkpointing=True)
    wrapped = [m for m in model.modules() if isinstance(m, CheckpointWrapper)]
    assert len(wrapped) == len(model.expert.blocks) == 2
    assert all(isinstance(blk.mlp, CheckpointWrapper) for blk in model.expert.blocks)
    assert torch.isfinite(loss())


# ------------------------------------------------------------------------------ DDP and FSDP state


def test_ddp_gradients_live_in_the_buckets_not_besides_them():
    """vavam's DDPStrategy sets gradient_as_bucket_view=True: the gradients are the buckets (4P_t once, live in
    every phase), not 4P_t of buckets plus 4P_t of gradients."""
    p = 165_696  # vavim_tiny
    one = estimate_memory("vavim_tiny", devices=1, strategy="ddp", precision="32", device_type="cpu")
    two = estimate_memory("vavim_tiny", devices=2, strategy="ddp", precision="32", device_type="cpu")
    act = activation_bytes(vavam.presets.vavim_tiny(), 1, "32")
    assert two["bytes"]["buffers"] == 0 and two["bytes"]["gradients"] == 4 * p
    assert two["phases"]["optimizer_step"] == one["phases"]["optimizer_step"] == 16 * p + 2 * 4 * 1025 * 64
    assert two["phases"]["forward"] == 16 * p + act.forward  # the buckets exist before the backward
    assert two["phases"]["backward_bottom"] == 16 * p + act.backward_bottom
    assert two["sum_of_rows"] == 16 * p + max(act.forward, act.backward_top, act.backward_bottom) + 2 * 4 * 1025 * 64


def test_fsdp_gathers_vavam_as_one_unit():
    """ActionModule declares no FSDP unit type: the whole VaVAM (frozen VaViM included) is gathered in bf16, and
    its unsharded gradient spans all parameters (mixed freezing in one flat parameter) + an fp32 copy for the
    float32 reduce-scatter; VaViM gathers 2 blocks + the root and reduces one block's gradient at a time."""
    counts = count_parameters(vavam.presets.vavam_tiny())
    p, pt = counts.total, counts.trainable
    est = estimate_memory("vavam_tiny", devices=4, strategy="fsdp", precision="bf16-mixed")
    assert est["bytes"]["buffers"] == 2 * p and est["bytes"]["unit_gradients"] == (2 + 4) * p
    assert est["bytes"]["gradients"] == -(-4 * p // 4) and est["bytes"]["moments"] == -(-8 * pt // 4)
    static = -(-4 * p // 4) + -(-8 * pt // 4) + 2 * p
    act = est["activation_phases"]
    assert est["phases"]["forward"] == static + act["forward"]  # no gradient yet
    assert est["phases"]["backward_bottom"] == static + act["backward_bottom"] + est["bytes"]["gradients"] - (
        est["bytes"]["gradients"] * counts.layer_trainable // pt) + 6 * p
    vim = count_parameters(vavam.presets.vavim_tiny())
    video = estimate_memory("vavim_tiny", devices=4, strategy="fsdp", precision="bf16-mixed")
    assert video["bytes"]["buffers"] == 2 * (2 * vim.block + vim.non_block)
    assert video["bytes"]["unit_gradients"] == 6 * vim.layer_trainable
    fp32 = estimate_memory("vavim_tiny", devices=4, strategy="fsdp", precision="32")
    assert fp32["bytes"]["unit_gradients"] == 4 * vim.layer_trainable  # no reduce cast in fp32


# ------------------------------------------------------------------------------ pictures with non-finite waypoints


def _drawn(img: np.ndarray, background: np.ndarray) -> np.ndarray:
    return (img != background).any(axis=2)


def test_bev_plot_leaves_non_finite_waypoints_out():
    """A NaN waypoint used to be drawn as a line to the picture's edge; now it is a gap in the line."""
    from vavam.viz import bev_plot

    clean = np.array([[2.0, 0.0], [6.0, 1.0], [8.0, 2.0], [10.0, 3.0], [12.0, 4.0]])
    kw = {"forward_range": (-2.0, 20.0), "label": False}
    background = bev_plot(np.zeros((1, 0, 2)), **kw)
    full = _drawn(bev_plot(clean, **kw), background)
    for bad in (np.nan, np.inf, -np.inf):
        with_gap = np.insert(clean, 1, [bad, 0.0], axis=0)
        drawn = _drawn(bev_plot(with_gap, **kw), background)
        # every pixel drawn is one the clean trajectory draws too (the segments around the gap are left out)
        assert drawn.any() and not (drawn & ~full).any()
        assert drawn.sum() < full.sum()


def test_draw_trajectories_leaves_non_finite_waypoints_out():
    from vavam.viz import draw_trajectories

    image = np.full((72, 128, 3), 50, np.uint8)
    clean = np.array([[5.0, 0.0], [10.0, 0.0], [20.0, 0.0], [25.0, 0.0], [30.0, 0.0]])
    full = _drawn(draw_trajectories(image, clean, inset=False, start_at_origin=False), image)
    for bad in (np.nan, np.inf):
        with_gap = np.insert(clean, 2, [bad, 0.0], axis=0)
        drawn = _drawn(draw_trajectories(image, with_gap, inset=False, start_at_origin=False), image)
        assert drawn.any() and not (drawn & ~full).any()


def test_viz_bad_sizes_are_named():
    from vavam.viz import bev_plot, draw_trajectories

    with pytest.raises(ValueError, match=r"size must be \(H, W\) of at least 1 x 1 pixels, got \(0, 5\)"):
        bev_plot(np.ones((6, 2)), size=(0, 5))
    with pytest.raises(ValueError, match="upscale must be an integer >= 1, got 2.5"):
        draw_trajectories(np.zeros((8, 8, 3), np.uint8), np.ones((6, 2)), upscale=2.5)
    assert draw_trajectories(np.zeros((8, 8, 3), np.uint8), np.ones((6, 2)), upscale=np.int64(2)).shape == (16, 16, 3)


def test_plan_refuses_a_non_positive_display_width(tmp_path):
    from vavam.commands import common as C
    from vavam.commands.plan import plan

    for width in (0, -512):
        with pytest.raises(C.CommandError, match=rf"^--display-width must be a positive width in pixels, got {width}"):
            plan(tmp_path / "no-checkpoint", "left", tokens=tmp_path / "store", display_width=width, out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ FLOPs


def test_flops_accept_numpy_integers_without_overflow():
    """Token counts computed with numpy (steps x batch x positions) were refused as 'not a positive integer,
    got 96'; they are counted with Python ints (6·N·D of VaViM-L over an epoch exceeds int64)."""
    from vavam.eval.flops import action_flops, video_flops, video_train_flops

    tiny = vavam.presets.vavim_tiny()
    assert video_flops(tiny, np.int64(96), seq_len=np.int32(96)) == video_flops(tiny, 96, seq_len=96)
    assert action_flops(vavam.presets.vavam_tiny(), batch=np.int64(2), frames=np.int64(3)) == action_flops(
        vavam.presets.vavam_tiny(), batch=2, frames=3)
    epoch = np.int64(155_293) * np.int64(384) * np.int64(4608)
    flops = video_train_flops(vavam.presets.vavim_l(), epoch)
    assert flops == video_train_flops(vavam.presets.vavim_l(), int(epoch)) > 2**63
    for bad in (np.float64(96.0), 0, True):
        with pytest.raises(ValueError, match="tokens must be a positive integer"):
            video_flops(tiny, bad)
