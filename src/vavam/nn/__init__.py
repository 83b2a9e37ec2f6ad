"""Shared transformer pieces: SDPA attention with the muP scale, MLP, norms, KV cache, muP helpers."""

from vavam.nn.kv_cache import KVCache
from vavam.nn.layers import MLP, Attention, Block, attention, layer_norm, merge_heads, split_heads
from vavam.nn.mup import depth_scaled_std, mup_normal_, width_mult, zero_query_rows_

__all__ = [
    "KVCache",
    "MLP",
    "Attention",
    "Block",
    "attention",
    "layer_norm",
    "merge_heads",
    "split_heads",
    "depth_scaled_std",
    "mup_normal_",
    "width_mult",
    "zero_query_rows_",
]
