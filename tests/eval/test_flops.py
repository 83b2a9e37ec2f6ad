"""Analytic FLOPs of VaViM / VaVAM against a direct FlopCounterMode count (math SDPA: every pair counted)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vavam.action.masks import action_rows_training
from vavam.action.model import VideoActionModel
from vavam.eval.flops import (
    FlopCount,
    _action_attention_pairs,
    action_expert_params,
    action_flops,
    count_flops,
    measure_action_flops,
    measure_video_flops,
    video_flops,
    video_matmul_params,
    video_train_flops,
)
from vavam.presets import vavam_s, vavam_tiny, vavim_s, vavim_tiny
from vavam.video import VideoGPT


def test_video_matmul_params_hand_count():
    c = vavim_tiny()  # d 64, L 2, r 4, V 1025
    assert video_matmul_params(c) == 2 * 12 * 64 * 64 + 1025 * 64 == 163904
    assert video_matmul_params(c, readout=False) == 98304
    # = every parameter except the spatial / temporal embedding lookups (the token table is the readout)
    model = VideoGPT(c)
    lookups = model.spatial_pos_emb.weight.numel() + model.temporal_pos_emb.weight.numel()
    assert video_matmul_params(c) == sum(p.numel() for p in model.parameters()) - lookups


def test_action_expert_params_match_module():
    c = vavam_tiny()
    expert = VideoActionModel(c).expert
    embeddings = expert.encoder.command_emb.weight.numel() + expert.encoder.horizon_pos_emb.weight.numel()
    assert action_expert_params(c) == sum(p.numel() for p in expert.parameters()) - embeddings
    assert action_expert_params(vavam_s()) == 21_346_752 - 3 * 192 - 6 * 192  # preset docstring minus lookups


@pytest.mark.parametrize("frames", [4, 3])
def test_video_training_flops_equal_direct_count(frames):
    c = vavim_tiny()
    model = VideoGPT(c)
    tokens = torch.randint(0, c.vocab_size, (2, frames, 4, 6))
    n = frames * 24
    analytic = video_flops(c, 2 * n, seq_len=n, attention="full")
    assert measure_video_flops(model, tokens) == analytic.total
    # hand formula: 6·N·D + 12·L·n²·d per window
    assert analytic == FlopCount(6 * 163904 * 2 * n, 2 * 12 * 2 * n * n * 64)


def test_video_forward_flops_equal_direct_count():
    c = vavim_tiny()
    tokens = torch.randint(0, c.vocab_size, (1, 4, 4, 6))
    assert measure_video_flops(VideoGPT(c), tokens, backward=False) == video_flops(
        c, 96, backward=False, attention="full").total


def test_real_size_vavim_counted_on_meta_device():
    """VaViM-S over a full 8 x 576 window: the direct count runs on meta tensors (no arithmetic)."""
    c = vavim_s()
    with torch.device("meta"):
        model = VideoGPT(c)
        tokens = torch.zeros(1, 8, 24, 24, dtype=torch.long)
    assert measure_video_flops(model, tokens) == video_flops(c, 8 * 576, attention="full").total


def test_causal_convention_halves_attention_and_matches_benchmark_formula():
    c = dataclasses.replace(vavim_s(), num_layers=4)
    n = 8 * 576
    full, causal, none = (video_flops(c, n, attention=a) for a in ("full", "causal", "none"))
    assert causal.matmul == full.matmul == none.matmul == 6 * video_matmul_params(c) * n
    assert 2 * causal.attention == full.attention and none.attention == 0
    d, layers = c.width, c.num_layers
    bench = 6 * (12 * d * d * layers + c.vocab_size * d) * n + 6 * layers * n * n * d  # benchmarks' train_flops
    assert video_train_flops(c, n, seq_len=n) == bench
    # D tokens in windows of n: linear in D
    assert video_train_flops(c, 5 * n) == 5 * video_train_flops(c, n)


def test_action_training_flops_equal_direct_count():
    c = vavam_tiny()
    model = VideoActionModel(c)
    b, t = 2, c.train_frames
    tokens = torch.randint(0, c.video.vocab_size, (b, t, 4, 6))
    command = torch.randint(0, 3, (b, t))
    actions = torch.randn(b, t, c.horizon, 2)
    assert measure_action_flops(model, tokens, command, actions) == action_flops(c, batch=b, attention="full").total


def test_real_size_vavam_counted_on_meta_device():
    c = vavam_s()
    with torch.device("meta"):
        model = VideoActionModel(c)
        tokens = torch.zeros(1, 8, 24, 24, dtype=torch.long)
        command = torch.zeros(1, 8, dtype=torch.long)
        actions = torch.zeros(1, 8, 6, 2)
    assert measure_action_flops(model, tokens, command, actions) == action_flops(c, attention="full").total


def test_action_causal_convention_counts_mask_allowed_pairs():
    t, p, h = 4, 24, 6
    allowed = int(action_rows_training(t, p, h).sum())
    assert _action_attention_pairs(t, p, h, "causal") == allowed
    assert _action_attention_pairs(t, p, h, "full") == t * h * (t * p + t * h)
    c = vavam_tiny()
    full, causal = action_flops(c, attention="full"), action_flops(c, attention="causal")
    d, layers, nv = c.video.width, c.video.num_layers, t * p
    expected_gap = 2 * layers * d * nv * nv + 3 * 4 * layers * d * (t * h * (nv + t * h) - allowed)
    assert full.attention - causal.attention == expected_gap
    assert full.matmul == causal.matmul
    assert action_flops(c, batch=3).total == 3 * causal.total


def test_count_flops_of_a_plain_matmul():
    a, b = torch.randn(3, 5), torch.randn(5, 7)
    assert count_flops(lambda: a @ b) == 2 * 3 * 5 * 7


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tokens": 0}, "tokens"),
        ({"tokens": 10, "attention": "sparse"}, "attention"),
        ({"tokens": 10, "seq_len": 97}, "seq_len"),
        ({"tokens": 10, "seq_len": 0}, "seq_len"),
    ],
)
def test_video_flops_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        video_flops(vavim_tiny(), **kwargs)


def test_action_flops_bad_input():
    with pytest.raises(ValueError, match="frames"):
        action_flops(vavam_tiny(), frames=9)
    with pytest.raises(ValueError, match="batch"):
        action_flops(vavam_tiny(), batch=0)
