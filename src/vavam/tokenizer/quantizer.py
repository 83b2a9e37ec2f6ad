"""Vector quantizer with an (optionally) L2-normalised codebook, as in LlamaGen.

Nearest code: with ``l2_norm`` both the latent vectors and the codebook rows are unit-normalised
and the code minimising the squared distance ``|z|^2 + |e|^2 - 2 z.e`` is chosen (the same formula,
in float32, as LlamaGen, so ties and near-ties resolve the same way). Losses (LlamaGen):

- codebook loss ``mean((z_q - sg(z))^2)`` (moves the codes),
- commitment loss ``beta * mean((sg(z_q) - z)^2)`` (moves the encoder),
- entropy loss ``ratio * (mean per-sample entropy - entropy of the mean)`` of ``softmax(-d / 0.01)``,

where ``z`` is the normalised latent. The quantized output is the straight-through estimate
``z + sg(z_q - z)``: its value is ``z_q`` and its gradient goes to ``z``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class QuantizeOutput(NamedTuple):
    """Result of :meth:`VectorQuantizer.forward`.

    z_q: [B,D,h,w] straight-through quantized latents; indices: long [B,h,w];
    codebook_loss, commit_loss, entropy_loss: scalar tensors (entropy 0 when its ratio is 0).
    """

    z_q: torch.Tensor
    indices: torch.Tensor
    codebook_loss: torch.Tensor
    commit_loss: torch.Tensor
    entropy_loss: torch.Tensor


def entropy_loss(affinity: torch.Tensor, temperature: float = 0.01) -> torch.Tensor:
    """LlamaGen's codebook entropy loss: mean per-sample entropy minus entropy of the mean.

    ``affinity`` [N,K] (negative distances) -> scalar. Low when each sample picks one code
    confidently and the batch spreads over many codes.
    """
    logits = affinity / temperature
    probs = F.softmax(logits, dim=-1)  # [N,K]
    log_probs = F.log_softmax(logits + 1e-5, dim=-1)
    avg_probs = probs.mean(dim=0)  # [K]
    avg_entropy = -(avg_probs * torch.log(avg_probs + 1e-5)).sum()
    sample_entropy = -(probs * log_probs).sum(dim=-1).mean()
    return sample_entropy - avg_entropy


class VectorQuantizer(nn.Module):
    """Codebook ``embedding.weight`` [K,D]; latents [B,D,h,w] -> nearest codes.

    LlamaGen's ``codebook_used`` usage buffer is not kept; a state dict that holds it loads anyway
    (the entry is dropped).
    """

    def __init__(
        self, codebook_size: int, dim: int, beta: float = 0.25, entropy_ratio: float = 0.0, l2_norm: bool = True
    ) -> None:
        super().__init__()
        if codebook_size < 1 or dim < 1:
            raise ValueError(f"quantizer needs codebook_size >= 1 and dim >= 1, got {codebook_size} and {dim}")
        for name, value in (("commit_loss_beta", beta), ("entropy_loss_ratio", entropy_ratio)):
            if not (math.isfinite(value) and value >= 0):  # a negative entropy ratio was silently treated as 0
                raise ValueError(f"quantizer {name} must be a finite number >= 0, got {value!r}")
        self.codebook_size = codebook_size
        self.dim = dim
        self.beta = beta
        self.entropy_ratio = entropy_ratio
        self.l2_norm = l2_norm
        self.embedding = nn.Embedding(codebook_size, dim)
        with torch.no_grad():
            self.embedding.weight.uniform_(-1.0 / codebook_size, 1.0 / codebook_size)
            if l2_norm:
                self.embedding.weight.copy_(F.normalize(self.embedding.weight, p=2, dim=-1))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: D102
        state_dict.pop(prefix + "codebook_used", None)  # LlamaGen's usage statistics: not model weights
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def codebook(self) -> torch.Tensor:
        """The codebook as used for lookup, float32: [K,D], rows unit-norm when ``l2_norm``."""
        weight = self.embedding.weight.float()
        return F.normalize(weight, p=2, dim=-1) if self.l2_norm else weight

    def _distances(self, z_flat: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """Squared distances ``[N,D] x [K,D] -> [N,K]``."""
        return (z_flat**2).sum(dim=1, keepdim=True) + (codebook**2).sum(dim=1) - 2 * (z_flat @ codebook.t())

    def _flatten(self, z: torch.Tensor) -> torch.Tensor:
        """[B,D,h,w] -> [B,h,w,D] float32, normalised along D when ``l2_norm``."""
        if z.ndim != 4 or z.shape[1] != self.dim:
            raise ValueError(f"quantizer expects latents [B,{self.dim},h,w], got {tuple(z.shape)}")
        z = z.float().permute(0, 2, 3, 1)  # [B,D,h,w] -> [B,h,w,D]
        return F.normalize(z, p=2, dim=-1) if self.l2_norm else z

    def lookup(self, z: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        """Nearest codes only (no losses): latents [B,D,h,w] -> long [B,h,w].

        Distances are computed ``chunk`` latent vectors at a time (bounded memory for big batches).
        """
        with torch.autocast(z.device.type, enabled=False):
            zn = self._flatten(z)
            b, h, w, d = zn.shape
            codebook = self.codebook()
            flat = zn.reshape(-1, d)  # [B*h*w, D]
            idx = [self._distances(part, codebook).argmin(dim=1) for part in flat.split(chunk)]  # [n, K] -> [n]
        return torch.cat(idx).reshape(b, h, w)  # [B*h*w] -> [B,h,w]

    def embed(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of ``indices`` long [B,h,w] -> [B,D,h,w] float32."""
        return self.codebook()[indices].permute(0, 3, 1, 2).contiguous()  # [B,h,w,D] -> [B,D,h,w]

    def forward(self, z: torch.Tensor) -> QuantizeOutput:
        """Quantize latents ``z`` [B,D,h,w] (float) -> :class:`QuantizeOutput` (computed in float32)."""
        with torch.autocast(z.device.type, enabled=False):
            return self._quantize(z)

    def _quantize(self, z: torch.Tensor) -> QuantizeOutput:
        zn = self._flatten(z)  # [B,h,w,D]
        b, h, w, d = zn.shape
        codebook = self.codebook()
        dist = self._distances(zn.reshape(-1, d), codebook)  # [B*h*w, K]
        flat_idx = dist.argmin(dim=1)
        zq = codebook[flat_idx].view(b, h, w, d)  # [B*h*w, D] -> [B,h,w,D]
        codebook_loss = torch.mean((zq - zn.detach()) ** 2)
        commit_loss = self.beta * torch.mean((zq.detach() - zn) ** 2)
        if self.entropy_ratio > 0:
            ent = self.entropy_ratio * entropy_loss(-dist)
        else:
            ent = zn.new_zeros(())
        zq = zn + (zq - zn).detach()  # straight-through: value of z_q, gradient of z
        return QuantizeOutput(
            z_q=zq.permute(0, 3, 1, 2),  # [B,h,w,D] -> [B,D,h,w]
            indices=flat_idx.view(b, h, w),
            codebook_loss=codebook_loss,
            commit_loss=commit_loss,
            entropy_loss=ent,
        )
