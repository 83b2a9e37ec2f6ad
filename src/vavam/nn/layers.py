"""Transformer pieces shared by VaViM, the action expert and their joint model.

All linears are bias-free, LayerNorms have no affine parameters (eps 1e-5), the MLP uses the exact
(erf) GELU, and attention uses the muP scale ``1 / head_dim`` through
:func:`torch.nn.functional.scaled_dot_product_attention`.

:class:`Attention` exposes its two halves, :meth:`Attention.qkv` and :meth:`Attention.attend`, so
that a joint model can take the query/key/value heads of one stream, concatenate them with those of
another, attend once, and project each stream's part with its own :attr:`Attention.out_proj`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vavam.nn.kv_cache import KVCache


def layer_norm(width: int) -> nn.LayerNorm:
    """Non-affine LayerNorm over the last axis (no parameters), eps 1e-5."""
    return nn.LayerNorm(width, elementwise_affine=False)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``[B, N, H·Dh]`` -> ``[B, H, N, Dh]``."""
    b, n, _ = x.shape
    return x.view(b, n, num_heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[B, H, N, Dh]`` -> ``[B, N, H·Dh]``."""
    b, h, n, dh = x.shape
    return x.transpose(1, 2).reshape(b, n, h * dh)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None = None,
    is_causal: bool = False,
    scale: float | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention with the muP scale ``1 / head_dim`` by default.

    Args:
        q: ``[B, H, Nq, Dh]``; k, v: ``[B, H, Nk, Dh]``.
        mask: bool ``[Nq, Nk]`` (or broadcastable), True = may attend; exclusive with ``is_causal``.
        is_causal: plain causal mask (``Nq == Nk``).
        scale: attention-logit scale; default ``1 / Dh``.

    Returns:
        ``[B, H, Nq, Dh]``.
    """
    if scale is None:
        scale = 1.0 / q.shape[-1]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal, scale=scale)


class Attention(nn.Module):
    """Multi-head self-attention: fused bias-free QKV ``width -> 3·attn_width`` (rows Q, K, V), output
    projection ``attn_width -> width``. ``attn_width`` defaults to ``width``; the action expert uses the
    video width so that both streams share heads.
    """

    def __init__(self, width: int, head_dim: int, attn_width: int | None = None, attn_scale: float = 1.0) -> None:
        super().__init__()
        attn_width = width if attn_width is None else attn_width
        if attn_width % head_dim:
            raise ValueError(f"attention width {attn_width} is not a multiple of head dim {head_dim}")
        self.width = width
        self.attn_width = attn_width
        self.head_dim = head_dim
        self.num_heads = attn_width // head_dim
        self.scale = attn_scale / head_dim  # muP: 1/head_dim, not 1/sqrt(head_dim)
        self.qkv_proj = nn.Linear(width, 3 * attn_width, bias=False)
        self.out_proj = nn.Linear(attn_width, width, bias=False)

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x [B, N, width]`` -> ``q, k, v``, each ``[B, H, N, Dh]``."""
        b, n, _ = x.shape
        # [B, N, 3·a] -> [B, N, 3, H, Dh] -> [3, B, H, N, Dh]
        qkv = self.qkv_proj(x).view(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def attend(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
    ) -> torch.Tensor:
        """Heads ``q [B,H,Nq,Dh]``, ``k, v [B,H,Nk,Dh]`` -> merged, un-projected output ``[B, Nq, attn_width]``."""
        return merge_heads(attention(q, k, v, mask=mask, is_causal=is_causal, scale=self.scale))

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """Self-attention ``x [B, N, width] -> [B, N, width]``.

        With ``kv_cache``, the new keys/values are appended at the cache's current length (for
        ``layer``) and the queries attend to everything cached; causality over the new tokens is
        handled here (``mask`` / ``is_causal`` are then ignored).
        """
        q, k, v = self.qkv(x)
        if kv_cache is not None:
            past = kv_cache.length
            k, v = kv_cache.append(layer, k, v)
            n = q.shape[2]
            if n == 1:
                mask, is_causal = None, False
            elif past == 0:
                mask, is_causal = None, True
            else:  # chunk after a non-empty cache: query i sees keys 0 .. past + i
                mask = torch.ones(n, past + n, dtype=torch.bool, device=x.device).tril(diagonal=past)
                is_causal = False
        return self.out_proj(self.attend(q, k, v, mask=mask, is_causal=is_causal))


class MLP(nn.Module):
    """``width -> ratio·width`` (bias-free), exact GELU, ``ratio·width -> width`` (bias-free)."""

    def __init__(self, width: int, ratio: int = 4) -> None:
        super().__init__()
        self.fc_in = nn.Linear(width, ratio * width, bias=False)
        self.fc_out = nn.Linear(ratio * width, width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., width] -> [..., width]``."""
        return self.fc_out(F.gelu(self.fc_in(x)))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(
        self, width: int, head_dim: int, mlp_ratio: int = 4, attn_width: int | None = None, attn_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.norm1 = layer_norm(width)
        self.attn = Attention(width, head_dim, attn_width=attn_width, attn_scale=attn_scale)
        self.norm2 = layer_norm(width)
        self.mlp = MLP(width, mlp_ratio)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        is_causal: bool = False,
        kv_cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """``[B, N, width] -> [B, N, width]`` (see :meth:`Attention.forward` for the cache)."""
        x = x + self.attn(self.norm1(x), mask=mask, is_causal=is_causal, kv_cache=kv_cache, layer=layer)
        return x + self.mlp(self.norm2(x))
