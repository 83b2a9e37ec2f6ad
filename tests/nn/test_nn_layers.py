"""Shared transformer pieces: attention scale, QKV layout, KV cache, muP helpers."""

from __future__ import annotations

import math

import pytest
import torch

from vavam.nn import Attention, Block, KVCache, mup_normal_, width_mult, zero_query_rows_


def test_attention_scale_is_one_over_head_dim():
    torch.manual_seed(0)
    attn = Attention(32, head_dim=16)
    x = torch.randn(2, 5, 32)
    q, k, v = attn.qkv(x)
    assert q.shape == (2, 2, 5, 16)
    w = attn.qkv_proj.weight  # rows Q, K, V, each (heads, head_dim)
    assert torch.allclose(q, (x @ w[:32].T).view(2, 5, 2, 16).transpose(1, 2), atol=1e-6)
    assert torch.allclose(v, (x @ w[64:].T).view(2, 5, 2, 16).transpose(1, 2), atol=1e-6)
    scores = (q @ k.transpose(-1, -2)) / 16
    mask = torch.ones(5, 5, dtype=torch.bool).tril()
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    manual = attn.out_proj((probs @ v).transpose(1, 2).reshape(2, 5, 32))
    assert torch.allclose(attn(x, is_causal=True), manual, atol=1e-5)


def test_attention_width_differs_from_model_width():
    attn = Attention(16, head_dim=8, attn_width=64)
    assert attn.qkv_proj.weight.shape == (192, 16) and attn.out_proj.weight.shape == (16, 64)
    assert attn.num_heads == 8
    assert attn(torch.randn(1, 3, 16)).shape == (1, 3, 16)


def test_kv_cache_block_equals_full():
    torch.manual_seed(0)
    block = Block(32, head_dim=16)
    x = torch.randn(2, 7, 32)
    full = block(x, is_causal=True)
    cache = KVCache(1, 2, 2, 8, 16)
    out = torch.cat([block(x[:, :3], kv_cache=cache), block(x[:, 3:4], kv_cache=cache), block(x[:, 4:], kv_cache=cache)], 1)
    assert cache.length == 7
    assert torch.allclose(out, full, atol=1e-5)


def test_mup_helpers():
    assert width_mult(768, 256) == 3.0
    w = torch.empty(3000, 300)
    mup_normal_(w, 0.02, 4.0)
    assert math.isclose(w.std().item(), 0.01, rel_tol=0.02)
    zero_query_rows_(w)
    assert torch.count_nonzero(w[:1000]) == 0 and torch.count_nonzero(w[1000:]) > 0


def test_kv_cache_refuses_keys_of_another_layout():
    """Keys of another batch, head count or head dim would broadcast into the buffers (or fail deep inside)."""
    cache = KVCache(2, batch=2, num_heads=2, max_len=8, head_dim=16)
    good = torch.randn(2, 2, 3, 16)
    for bad in (torch.randn(1, 2, 3, 16), torch.randn(2, 1, 3, 16), torch.randn(2, 2, 3, 8), torch.randn(2, 3, 16)):
        with pytest.raises(ValueError, match="KV cache holds"):
            cache.append(0, bad, good)
        with pytest.raises(ValueError, match="KV cache holds"):
            cache.append(0, good, bad)
    with pytest.raises(ValueError, match="keys and values disagree"):
        cache.append(0, good, torch.randn(2, 2, 4, 16))
    k, v = cache.append(0, good, good)
    assert k.shape == (2, 2, 3, 16) and torch.equal(v, good) and cache.length == 0
