"""VaViM: the autoregressive video GPT over frames of VQ tokens, muP-parametrised (``VideoGPT``).

Architecture of the released models (``MupGPT2`` of the reference): summed token, learned spatial and
learned temporal embeddings; pre-LN blocks with fused bias-free QKV (rows Q, K, V), attention scale
``1 / head_dim``, exact-GELU MLP; a final non-affine LayerNorm; a readout tied to the token
embedding that divides its input by ``width / base_width``.

Token order: frame-major, then row-major inside a frame, ``index = t·h·w + r·w + c``; spatial
position ``r·w + c``, temporal position ``t`` (index inside the window).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vavam.checks import check_token_ids
from vavam.config import VideoConfig
from vavam.nn import Block, KVCache, layer_norm, mup_normal_, zero_query_rows_


class VideoGPT(nn.Module):
    """VaViM next-token model built from a :class:`~vavam.config.VideoConfig`.

    Parameters: ``token_emb [V, d]``, ``spatial_pos_emb [P, d]``, ``temporal_pos_emb [T, d]`` and
    ``blocks[i].attn.qkv_proj / out_proj``, ``blocks[i].mlp.fc_in / fc_out``. The readout has no
    parameter of its own (tied to ``token_emb``).
    """

    def __init__(self, config: VideoConfig) -> None:
        super().__init__()
        if config.width % config.head_dim:
            raise ValueError(f"width {config.width} is not a multiple of head_dim {config.head_dim}")
        self.config = config
        d = config.width
        self.token_emb = nn.Embedding(config.vocab_size, d)
        self.spatial_pos_emb = nn.Embedding(config.tokens_per_frame, d)
        self.temporal_pos_emb = nn.Embedding(config.num_frames, d)
        self.blocks = nn.ModuleList(
            [Block(d, config.head_dim, mlp_ratio=config.mlp_ratio) for _ in range(config.num_layers)]
        )
        self.final_norm = layer_norm(d)
        self.reset_parameters()

    # ------------------------------------------------------------------ init

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """muP init of the released VaViM.

        Embeddings N(0, σ²); every block linear N(0, σ²/m) with m = width / base_width (including
        both residual projections: the released VaViM never applied GPT-2 depth scaling); query
        rows of each fused QKV set to zero.
        """
        std, m = self.config.init_std, self.config.width_mult
        for emb in (self.token_emb, self.spatial_pos_emb, self.temporal_pos_emb):
            mup_normal_(emb.weight, std)
        for block in self.blocks:
            for lin in (block.attn.qkv_proj, block.attn.out_proj, block.mlp.fc_in, block.mlp.fc_out):
                mup_normal_(lin.weight, std, m)
            zero_query_rows_(block.attn.qkv_proj.weight)

    # ------------------------------------------------------------------ pieces

    def embed(self, tokens: torch.Tensor, start: int = 0, tokens_per_frame: int | None = None) -> torch.Tensor:
        """Embed a flat token sequence starting at flat window position ``start``.

        Args:
            tokens: long ``[B, n]`` in sequence order.
            start: flat position of ``tokens[:, 0]`` inside the window.
            tokens_per_frame: ``h·w`` of the grid (default: the config's).

        Returns:
            float ``[B, n, d]`` = token + spatial + temporal embedding.
        """
        p = tokens_per_frame or self.config.tokens_per_frame
        pos = torch.arange(start, start + tokens.shape[1], device=tokens.device)
        if (start + tokens.shape[1] - 1) // p >= self.config.num_frames:
            raise ValueError(f"position {start + tokens.shape[1] - 1} is beyond {self.config.num_frames} frames")
        temporal = pos // p
        return self.token_emb(tokens.long()) + self.spatial_pos_emb(pos % p) + self.temporal_pos_emb(temporal)

    def embed_frames(self, tokens: torch.Tensor) -> torch.Tensor:
        """long ``[B, T, h, w]`` -> embeddings ``[B, T·h·w, d]`` (sequence order)."""
        b, t, h, w = self._check_tokens(tokens)
        return self.embed(tokens.reshape(b, t * h * w), 0, h * w)  # [B, T·h·w]

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """Tied muP readout: normalised hidden ``[..., d]`` -> logits ``[..., V]`` = (h / m) · Eᵀ."""
        return F.linear(hidden / self.config.width_mult, self.token_emb.weight)

    def _check_tokens(self, tokens: torch.Tensor) -> tuple[int, int, int, int]:
        if tokens.dim() != 4:
            raise ValueError(f"tokens must be [B, T, h, w], got shape {tuple(tokens.shape)}")
        check_token_ids(tokens, self.config.vocab_size)
        b, t, h, w = tokens.shape
        if h * w > self.config.tokens_per_frame:
            raise ValueError(f"grid {h}x{w} has more than {self.config.tokens_per_frame} tokens per frame")
        if t > self.config.num_frames:
            raise ValueError(f"{t} frames exceed the model's {self.config.num_frames}")
        return b, t, h, w

    def run_blocks(
        self, x: torch.Tensor, last_layer: int | None = None, kv_cache: KVCache | None = None
    ) -> torch.Tensor:
        """Residual stream ``[B, n, d]`` through blocks ``0..last_layer`` (inclusive; default all).

        Without a cache the attention is causal over the ``n`` positions; with one, ``x`` continues
        the cached sequence.
        """
        last = len(self.blocks) - 1 if last_layer is None else last_layer
        if kv_cache is not None and (last != len(self.blocks) - 1 or kv_cache.num_layers != len(self.blocks)):
            # the cache advances its length when its last layer appends: a shallower pass (or a cache of another
            # depth) would leave it at the same length, and the next pass would overwrite these positions
            raise ValueError(f"run_blocks: a KV cache of {kv_cache.num_layers} layers needs all {len(self.blocks)} "
                             f"blocks of the model, got blocks 0..{last}")
        for i, block in enumerate(self.blocks[: last + 1]):
            x = block(x, is_causal=kv_cache is None, kv_cache=kv_cache, layer=i)
        return x

    # ------------------------------------------------------------------ public

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Next-token logits over a window.

        Args:
            tokens: long ``[B, T, h, w]``.

        Returns:
            float ``[B, T·h·w, V]``; position i predicts token i + 1.
        """
        x = self.run_blocks(self.embed_frames(tokens))
        return self.readout(self.final_norm(x))

    def features(self, tokens: torch.Tensor, layer: int) -> torch.Tensor:
        """Residual stream after block ``layer`` (0-based, inclusive).

        The final LayerNorm is applied only when ``layer`` is the last block (as the reference).

        Args:
            tokens: long ``[B, T, h, w]``.
            layer: block index in ``[0, num_layers)`` (negative counts from the end).

        Returns:
            float ``[B, T, h, w, d]``.
        """
        n = len(self.blocks)
        if layer < 0:
            layer += n
        if not 0 <= layer < n:
            raise ValueError(f"layer {layer} out of range for {n} blocks")
        b, t, h, w = self._check_tokens(tokens)
        x = self.run_blocks(self.embed_frames(tokens), last_layer=layer)
        if layer == n - 1:
            x = self.final_norm(x)
        return x.view(b, t, h, w, -1)  # [B, T·h·w, d] -> [B, T, h, w, d]

    def new_kv_cache(self, batch: int, max_len: int | None = None) -> KVCache:
        """Empty :class:`~vavam.nn.KVCache` for this model (default capacity: the whole window)."""
        c = self.config
        ref = self.token_emb.weight
        return KVCache(
            c.num_layers,
            batch,
            c.num_heads,
            max_len or c.num_frames * c.tokens_per_frame,
            c.head_dim,
            device=ref.device,
            dtype=ref.dtype,
        )

    def decode_step(
        self, tokens: torch.Tensor, kv_cache: KVCache, tokens_per_frame: int | None = None
    ) -> torch.Tensor:
        """Feed tokens continuing the cached sequence; return the logits of the last position.

        Args:
            tokens: long ``[B, n]`` at flat window positions ``kv_cache.length ..``.
            kv_cache: updated in place.
            tokens_per_frame: ``h·w`` (default: the config's).

        Returns:
            float ``[B, V]``.
        """
        x = self.embed(tokens, kv_cache.length, tokens_per_frame)
        x = self.run_blocks(x, kv_cache=kv_cache)
        return self.readout(self.final_norm(x[:, -1]))

    def visual_kv(self, tokens: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Keys and values of every layer over a window (for the action expert's joint attention).

        Args:
            tokens: long ``[B, T, h, w]``.

        Returns:
            ``num_layers`` pairs ``(k, v)``, each ``[B, H, T·h·w, Dh]``.
        """
        x = self.embed_frames(tokens)
        out = []
        for block in self.blocks:
            h = block.norm1(x)
            q, k, v = block.attn.qkv(h)
            # copies: views would keep each layer's whole fused q/k/v buffer alive (1.5x the memory of k and v)
            out.append((k.contiguous(), v.contiguous()))
            x = x + block.attn.out_proj(block.attn.attend(q, k, v, is_causal=True))
            x = x + block.mlp(block.norm2(x))
        return out
