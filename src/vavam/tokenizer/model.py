"""``VQModel``: the LlamaGen-compatible VQ tokenizer (encoder, quantizer, decoder).

Parameter names match LlamaGen's ``VQModel`` (``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``,
``quant_conv.*``, ``post_quant_conv.*``), so a LlamaGen state dict loads with ``load_state_dict``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from vavam.checks import check_finite
from vavam.config import VQConfig
from vavam.tokenizer.quantizer import VectorQuantizer
from vavam.tokenizer.vq import Decoder, Encoder


class VQOutput(NamedTuple):
    """Result of :meth:`VQModel.forward`.

    recon: [B,3,H,W] reconstruction; indices: long [B,h,w]; codebook_loss, commit_loss,
    entropy_loss: scalar tensors.
    """

    recon: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor
    entropy_loss: torch.Tensor


def checked_ids(ids: torch.Tensor, codebook_size: int) -> torch.Tensor:
    """Token ids ``[B, h, w]`` of any integer dtype (the token store's uint16 included) as long, after checking
    their shape, dtype and range ``[0, codebook_size)``; raises ValueError / TypeError naming what is wrong."""
    if not isinstance(ids, torch.Tensor) or ids.ndim != 3:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"tokenizer expects ids [B,h,w], got {shape}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise TypeError(f"tokenizer expects integer ids, got dtype {ids.dtype}")
    ids = ids.long()  # min/max are not implemented for uint16 and the other unsigned types
    if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= codebook_size):
        raise ValueError(f"token ids out of range: min {int(ids.min())}, max {int(ids.max())}, "
                         f"codebook size {codebook_size}")
    return ids


class VQModel(nn.Module):
    """Image tokenizer: images float [B,3,H,W] in [-1,1] <-> codes long [B,H/ds,W/ds].

    ``encode``/``decode`` are the inference API (no autograd); ``encode_latents``, ``quantize``
    (the :class:`VectorQuantizer` submodule: latents [B,D,h,w] -> :class:`QuantizeOutput`),
    ``decode_latents`` and ``forward`` are differentiable and used for training.
    """

    def __init__(self, config: VQConfig) -> None:
        super().__init__()
        self.config = config
        kw = dict(
            ch=config.base_channels,
            ch_mult=tuple(config.ch_mult),
            num_res_blocks=config.num_res_blocks,
            z_channels=config.z_channels,
            groups=config.norm_groups,
            dropout=config.dropout,
        )
        self.encoder = Encoder(**kw)
        self.decoder = Decoder(**kw)
        self.quantize = VectorQuantizer(
            config.codebook_size,
            config.codebook_embed_dim,
            beta=config.commit_loss_beta,
            entropy_ratio=config.entropy_loss_ratio,
            l2_norm=config.codebook_l2_norm,
        )
        self.quant_conv = nn.Conv2d(config.z_channels, config.codebook_embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.codebook_embed_dim, config.z_channels, kernel_size=1)

    # ------------------------------------------------------------------ properties

    @property
    def downsample(self) -> int:
        """Spatial downsampling factor ds (16 for VQ-16)."""
        return self.config.downsample

    @property
    def codebook_size(self) -> int:
        """Number of codes K; ids are in [0, K)."""
        return self.config.codebook_size

    # ------------------------------------------------------------------ checks

    def _check_images(self, images: torch.Tensor) -> None:
        if not isinstance(images, torch.Tensor) or images.ndim != 4:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"tokenizer expects images [B,3,H,W], got {shape}")
        if images.shape[1] != 3:
            raise ValueError(f"tokenizer expects 3 (RGB) channels in dim 1 of [B,3,H,W], got {tuple(images.shape)}")
        if not images.is_floating_point():
            raise TypeError(f"tokenizer expects float images in [-1, 1], got dtype {images.dtype}")
        ds = self.downsample
        h, w = images.shape[-2:]
        if h % ds or w % ds:
            raise ValueError(f"image size {h}x{w} (HxW) is not a multiple of the downsampling factor {ds}")
        if images.numel() == 0:
            raise ValueError(f"tokenizer got an empty batch of images {tuple(images.shape)}")
        check_finite(images, "images")


    # ------------------------------------------------------------------ training path

    def encode_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Pre-quantization latents ``quant_conv(encoder(x))``: [B,3,H,W] -> [B,D,H/ds,W/ds].

        Floating images of another dtype than the weights (e.g. bf16 frames into an fp32 model) are cast
        to the weights' dtype, unless autocast decides the compute dtype.
        """
        self._check_images(images)
        weight = self.quant_conv.weight
        if images.dtype != weight.dtype and not torch.is_autocast_enabled(images.device.type):
            images = images.to(weight.dtype)
        return self.quant_conv(self.encoder(images))

    def decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        """Quantized latents [B,D,h,w] -> images [B,3,h*ds,w*ds] (``decoder(post_quant_conv(z_q))``)."""
        return self.decoder(self.post_quant_conv(z_q.to(self.post_quant_conv.weight.dtype)))

    def forward(self, images: torch.Tensor) -> VQOutput:
        """Reconstruct ``images`` [B,3,H,W] through the straight-through quantizer -> :class:`VQOutput`."""
        q = self.quantize(self.encode_latents(images))
        recon = self.decode_latents(q.z_q)
        return VQOutput(recon, q.indices, q.codebook_loss, q.commit_loss, q.entropy_loss)

    # ------------------------------------------------------------------ inference path

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images float [B,3,H,W] in [-1,1] -> code ids long [B,H/ds,W/ds] (row-major grid).

        Raises ValueError when H or W is not a multiple of ``downsample`` or the channel count is not 3.
        """
        if isinstance(images, torch.Tensor):  # anything else: encode_latents' check names what it got
            images = images.to(self.quant_conv.weight.device)
        return self.quantize.lookup(self.encode_latents(images))

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids long [B,h,w] -> images float [B,3,h*ds,w*ds], roughly in [-1,1].

        Raises ValueError when an id is outside [0, codebook_size).
        """
        ids = checked_ids(ids, self.codebook_size).to(self.quant_conv.weight.device)
        return self.decode_latents(self.quantize.embed(ids)).float()

    @staticmethod
    def codebook_usage_of(indices: torch.Tensor, codebook_size: int) -> float:
        """Fraction of the ``codebook_size`` codes that occur in ``indices`` (any shape)."""
        return torch.unique(indices).numel() / codebook_size

    def codebook_usage(self, indices: torch.Tensor) -> float:
        """Fraction of this model's codes that occur in ``indices`` (any shape)."""
        return self.codebook_usage_of(indices, self.codebook_size)
