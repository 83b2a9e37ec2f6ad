"""Convolutional encoder and decoder of the LlamaGen-style VQ tokenizer.

The module tree and attribute names follow LlamaGen's ``tokenizer_image/vq_model.py`` so that a
LlamaGen state dict loads unchanged: ``conv_in``, ``conv_blocks.{i}.res.{j}``,
``conv_blocks.{i}.attn.{j}``, ``conv_blocks.{i}.downsample|upsample``, ``mid.{0,1,2}``,
``norm_out``, ``conv_out``; residual blocks hold ``norm1 conv1 norm2 conv2 [nin_shortcut]`` and
attention blocks ``norm q k v proj_out``.

Layout of the encoder for ``ch_mult = (m_0, ..., m_{L-1})`` and base channels ``C``:
level ``i`` runs ``num_res_blocks`` residual blocks ``C*m_{i-1} -> C*m_i`` (``m_{-1} = 1``); the last
level follows every residual block with a self-attention block; every level but the last ends with a
stride-2 convolution. Then a middle stage (residual, attention, residual), GroupNorm, swish and a
3x3 convolution to ``z_channels``. The decoder mirrors it with ``num_res_blocks + 1`` residual blocks
per level, from the coarsest level (index 0 of ``decoder.conv_blocks``) to the finest, with
nearest-neighbour x2 upsampling followed by a 3x3 convolution between levels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def swish(x: torch.Tensor) -> torch.Tensor:
    """x * sigmoid(x) (SiLU), elementwise; any shape."""
    return F.silu(x)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with LlamaGen's settings (eps 1e-6, affine)."""
    return nn.GroupNorm(num_groups=groups, num_channels=channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """Pre-activation residual block: (GroupNorm, swish, conv3x3) twice, plus a 1x1 shortcut when
    the channel count changes. ``[B,C_in,H,W] -> [B,C_out,H,W]``."""

    def __init__(self, in_channels: int, out_channels: int, groups: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = group_norm(in_channels, groups)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        self.norm2 = group_norm(out_channels, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,C_in,H,W] -> [B,C_out,H,W]."""
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all spatial positions, with 1x1-conv projections and a
    residual connection; scale 1/sqrt(C). ``[B,C,H,W] -> [B,C,H,W]``."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.norm = group_norm(channels, groups)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,C,H,W] -> [B,C,H,W]."""
        b, c, h, w = x.shape
        y = self.norm(x)

        def tokens(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, 1, c, h * w).transpose(2, 3)  # [B,C,H,W] -> [B,1,HW,C] (one head)

        out = F.scaled_dot_product_attention(tokens(self.q(y)), tokens(self.k(y)), tokens(self.v(y)))
        out = out.transpose(2, 3).reshape(b, c, h, w)  # [B,1,HW,C] -> [B,C,H,W]
        return x + self.proj_out(out)


class Downsample(nn.Module):
    """Halve H and W: zero-pad one row/column at the bottom/right, then a stride-2 3x3 convolution.
    ``[B,C,H,W] -> [B,C,H/2,W/2]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,C,H,W] -> [B,C,H/2,W/2]."""
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour interpolation, then a 3x3 convolution.
    ``[B,C,H,W] -> [B,C,2H,2W]``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,C,H,W] -> [B,C,2H,2W]."""
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _middle(channels: int, groups: int, dropout: float) -> nn.ModuleList:
    """Middle stage at the lowest resolution: residual, attention, residual (``mid.0``, ``mid.1``, ``mid.2``)."""
    res = [ResnetBlock(channels, channels, groups, dropout) for _ in range(2)]
    return nn.ModuleList([res[0], AttnBlock(channels, groups), res[1]])


class Encoder(nn.Module):
    """Image -> latent grid: ``[B,in_channels,H,W] -> [B,z_channels,H/ds,W/ds]``, ds = 2**(len(ch_mult)-1)."""

    def __init__(
        self,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        groups: int,
        dropout: float = 0.0,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.num_res_blocks = num_res_blocks
        levels = len(ch_mult)
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, padding=1)
        self.conv_blocks = nn.ModuleList()
        block_in = ch
        for i in range(levels):
            block_out = ch * ch_mult[i]
            level = nn.Module()
            level.res = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks):
                level.res.append(ResnetBlock(block_in, block_out, groups, dropout))
                block_in = block_out
                if i == levels - 1:
                    level.attn.append(AttnBlock(block_in, groups))
            if i != levels - 1:
                level.downsample = Downsample(block_in)
            self.conv_blocks.append(level)
        self.mid = _middle(block_in, groups, dropout)
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, z_channels, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` [B,3,H,W] -> [B,z_channels,H/ds,W/ds]."""
        h = self.conv_in(x)
        for level in self.conv_blocks:
            for j, res in enumerate(level.res):
                h = res(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample(h)
        for block in self.mid:
            h = block(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent grid -> image: ``[B,z_channels,h,w] -> [B,out_channels,h*ds,w*ds]``."""

    def __init__(
        self,
        ch: int,
        ch_mult: tuple[int, ...],
        num_res_blocks: int,
        z_channels: int,
        groups: int,
        dropout: float = 0.0,
        out_channels: int = 3,
    ) -> None:
        super().__init__()
        levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, padding=1)
        self.mid = _middle(block_in, groups, dropout)
        self.conv_blocks = nn.ModuleList()
        for i in reversed(range(levels)):  # coarsest level first
            block_out = ch * ch_mult[i]
            level = nn.Module()
            level.res = nn.ModuleList()
            level.attn = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                level.res.append(ResnetBlock(block_in, block_out, groups, dropout))
                block_in = block_out
                if i == levels - 1:
                    level.attn.append(AttnBlock(block_in, groups))
            if i != 0:
                level.upsample = Upsample(block_in)
            self.conv_blocks.append(level)
        self.norm_out = group_norm(block_in, groups)
        self.conv_out = nn.Conv2d(block_in, out_channels, kernel_size=3, padding=1)

    @property
    def last_layer(self) -> torch.Tensor:
        """Weight of the output convolution (used by adaptive GAN-loss weighting)."""
        return self.conv_out.weight

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` [B,z_channels,h,w] -> [B,3,h*ds,w*ds]."""
        h = self.conv_in(z)
        for block in self.mid:
            h = block(h)
        for level in self.conv_blocks:
            for j, res in enumerate(level.res):
                h = res(h)
                if len(level.attn) > 0:
                    h = level.attn[j](h)
            if hasattr(level, "upsample"):
                h = level.upsample(h)
        return self.conv_out(swish(self.norm_out(h)))
