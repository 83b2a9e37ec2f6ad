"""A preallocated per-layer key/value cache for autoregressive decoding."""

from __future__ import annotations

import torch


class KVCache:
    """Keys and values of every layer, preallocated to ``max_len`` positions.

    Layers append in order during one forward; :attr:`length` (the number of cached positions)
    advances when the last layer has appended, so every layer of one forward sees the same offset.

    Args:
        num_layers: number of attention layers.
        batch, num_heads, head_dim: head layout of the keys/values.
        max_len: capacity in positions.
    """

    def __init__(
        self,
        num_layers: int,
        batch: int,
        num_heads: int,
        max_len: int,
        head_dim: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.num_layers = num_layers
        self.max_len = max_len
        shape = (batch, num_heads, max_len, head_dim)
        self.keys = [torch.empty(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.values = [torch.empty(shape, device=device, dtype=dtype) for _ in range(num_layers)]
        self.length = 0

    def reset(self) -> None:
        """Forget every cached position (buffers are kept)."""
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v [B, H, n, Dh]`` of ``layer`` after the cached positions.

        Returns:
            All keys and values of ``layer`` so far, ``[B, H, length + n, Dh]`` (views of the buffers).
        """
        buf = self.keys[layer]
        for name, x in (("keys", k), ("values", v)):  # a mismatched batch or head layout would broadcast silently
            if x.dim() != 4 or (x.shape[0], x.shape[1], x.shape[3]) != (buf.shape[0], buf.shape[1], buf.shape[3]):
                raise ValueError(
                    f"KV cache holds [B, H, n, Dh] = [{buf.shape[0]}, {buf.shape[1]}, n, {buf.shape[3]}]; "
                    f"layer {layer} {name} have shape {tuple(x.shape)}"
                )
        n = k.shape[2]
        if v.shape[2] != n:
            raise ValueError(f"layer {layer} keys and values disagree on positions: {k.shape[2]} vs {v.shape[2]}")
        end = self.length + n
        if end > self.max_len:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.max_len}")
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        if layer == self.num_layers - 1:
            self.length = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]
