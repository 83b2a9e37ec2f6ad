"""VideoGPT structure, muP init, parameter counts, KV-cached generation, rolling context."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import vavam
from vavam import presets
from vavam.video import VideoGPT, generate_frames


@pytest.mark.parametrize(
    "preset, count",
    [(presets.vavim_s, 182_901_504), (presets.vavim_b, 319_366_144), (presets.vavim_l, 1_242_712_064)],
)
def test_parameter_counts_on_meta(preset, count):
    with torch.device("meta"):
        model = vavam.build_model(preset())
    assert isinstance(model, VideoGPT)
    assert sum(p.numel() for p in model.parameters()) == count  # tied readout counted once


def test_meta_forward_shapes():
    with torch.device("meta"):
        model = VideoGPT(presets.vavim_s())
        tokens = torch.zeros(1, 2, 18, 32, dtype=torch.long)
        assert model(tokens).shape == (1, 2 * 576, 16385)
        assert model.features(tokens, 12).shape == (1, 2, 18, 32, 768)


def test_mup_init_statistics():
    config = dataclasses.replace(presets.vavim_tiny(), width=512, head_dim=64, init_std=0.02, base_width=128)
    torch.manual_seed(1)
    model = VideoGPT(config)
    m = config.width / config.base_width
    for block in model.blocks:
        w = block.attn.qkv_proj.weight
        assert torch.count_nonzero(w[: config.width]) == 0  # query rows
        assert w[config.width :].std().item() == pytest.approx(0.02 / math.sqrt(m), rel=0.03)
        for lin in (block.attn.out_proj, block.mlp.fc_in, block.mlp.fc_out):  # c_proj NOT depth scaled
            assert lin.weight.std().item() == pytest.approx(0.02 / math.sqrt(m), rel=0.03)
    assert model.token_emb.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.spatial_pos_emb.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_readout_divides_by_width_multiplier():
    config = presets.vavim_tiny()
    model = VideoGPT(config).eval()
    h = torch.randn(3, config.width)
    expected = (h / (config.width / config.base_width)) @ model.token_emb.weight.T
    assert torch.allclose(model.readout(h), expected, atol=1e-6)
    assert not any("readout" in n or "lm_head" in n for n, _ in model.named_parameters())


def _noisy_tiny(seed: int = 0) -> VideoGPT:
    torch.manual_seed(seed)
    model = VideoGPT(presets.vavim_tiny()).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    return model


@torch.no_grad()
def test_cached_equals_uncached():
    model = _noisy_tiny()
    context = torch.randint(0, 1024, (2, 2, 4, 6))
    a, la = generate_frames(model, context, 3, return_step_logits=True)  # crosses the 4-frame window
    b, lb = generate_frames(model, context, 3, use_cache=False, return_step_logits=True)
    assert torch.equal(a, b)
    assert (la - lb).abs().max() < 1e-4
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1 = generate_frames(model, context, 2, temperature=1.5, top_k=50, generator=g1)
    s2 = generate_frames(model, context, 2, temperature=1.5, top_k=50, generator=g2, use_cache=False)
    assert torch.equal(s1, s2)


@torch.no_grad()
def test_decode_step_matches_forward():
    model = _noisy_tiny(3)
    tokens = torch.randint(0, 1024, (2, 4, 4, 6))
    full = model(tokens)  # [B, 96, V]
    cache = model.new_kv_cache(2)
    flat = tokens.reshape(2, -1)
    model.decode_step(flat[:, :30], cache, 24)
    chunk = model.decode_step(flat[:, 30:50], cache, 24)  # chunk after a non-empty cache
    assert (chunk - full[:, 49]).abs().max() < 1e-4
    one = model.decode_step(flat[:, 50:51], cache, 24)
    assert (one - full[:, 50]).abs().max() < 1e-4


@torch.no_grad()
def test_rolling_context_keeps_the_last_frames():
    """Past the 4-frame window, each new frame is generated from the LAST 3 frames (reference bug fixed)."""
    model = _noisy_tiny(7)
    context = torch.randint(0, 1024, (2, 3, 4, 6))
    frames = generate_frames(model, context, 3)  # frames 2 and 3 need a slide
    f1, f2, f3 = frames[:, :1], frames[:, 1:2], frames[:, 2:3]
    assert torch.equal(f2, generate_frames(model, torch.cat([context[:, 1:], f1], 1), 1))
    assert torch.equal(f3, generate_frames(model, torch.cat([context[:, 2:], f1, f2], 1), 1))
    # the reference's behaviour (keep the FIRST 3 frames) would regenerate f1 from the same context
    assert not torch.equal(f2, f1)
    # a context longer than the window is trimmed to its last frames
    long = torch.randint(0, 1024, (2, 6, 4, 6))
    assert torch.equal(generate_frames(model, long, 1), generate_frames(model, long[:, -3:], 1))


def test_input_validation():
    model = VideoGPT(presets.vavim_tiny())
    with pytest.raises(ValueError):
        model(torch.zeros(1, 5, 4, 6, dtype=torch.long))  # too many frames
    with pytest.raises(ValueError):
        model(torch.zeros(1, 2, 5, 6, dtype=torch.long))  # grid too large
    with pytest.raises(ValueError):
        model.features(torch.zeros(1, 2, 4, 6, dtype=torch.long), 2)


def test_visual_kv_holds_only_keys_and_values():
    """Each layer's keys and values own their memory: as views of the fused q/k/v projection they kept every
    layer's queries alive while the expert used them (1.5x the memory; vavam_s at micro-batch 16 in bf16:
    13.9 -> 11.4 GiB by the memory planner)."""
    torch.manual_seed(0)
    model = vavam.build_model(presets.vavim_tiny()).eval()
    tokens = torch.randint(0, 1024, (2, 3, 4, 6))
    with torch.no_grad():
        pairs = model.visual_kv(tokens)
        x = model.embed_frames(tokens)
        for block, (k, v) in zip(model.blocks, pairs):
            _, k_ref, v_ref = block.attn.qkv(block.norm1(x))
            torch.testing.assert_close(k, k_ref, rtol=0, atol=0)
            torch.testing.assert_close(v, v_ref, rtol=0, atol=0)
            x = block(x, is_causal=True)
    for k, v in pairs:
        for t in (k, v):
            assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
