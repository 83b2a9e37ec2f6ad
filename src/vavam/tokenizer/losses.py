"""Training losses of the VQ tokenizer: reconstruction, VQ, optional perceptual and patch-GAN terms.

Generator objective (each term only when its weight is non-zero / its part is enabled)::

    l1_weight * |x - x̂|  +  l2_weight * (x - x̂)^2                       reconstruction
  + codebook_weight * codebook + commit_weight * commit + entropy          VQ, from the quantizer
                                                                         (commit holds β = config.commit_loss_beta)
  + perceptual_weight * P(x, x̂)                                           VGG16-feature distance, local weights only
  + λ_gan * (-mean D(x̂))                                                  hinge generator loss, from ``gan_start``

with ``λ_gan = gan_weight`` (fixed) or ``gan_weight * |∇_last nll| / |∇_last g|`` (adaptive, taming-transformers).
The discriminator (:class:`PatchDiscriminator`, pix2pix "NLayer") minimises the hinge loss
``0.5 * (mean relu(1 - D(x)) + mean relu(1 + D(x̂)))``.

The perceptual loss never downloads anything: :func:`load_perceptual_loss` reads a local file holding the
torchvision VGG16 ``features`` state dict (keys ``features.N.weight`` / ``N.weight``, or LPIPS's
``net.sliceK.N.weight``), optionally with LPIPS's linear heads ``lin0..lin4`` (``linK.model.1.weight``).
vavam ships no weights.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------------------ elementary losses


def _same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    """Refuse tensors of different shapes: elementwise losses would broadcast them silently (e.g. one image
    against a batch), giving a finite but meaningless loss."""
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same shape")


def reconstruction_losses(recon: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean absolute and mean squared error of ``recon`` and ``target`` (same shape, e.g. [B,3,H,W]), in float32
    -> scalars ``(l1, l2)``. Raises ValueError when the shapes differ (no broadcasting)."""
    _same_shape(recon, target, "recon", "target")
    diff = recon.float() - target.float()
    return diff.abs().mean(), diff.pow(2).mean()


def vq_losses(z: torch.Tensor, z_q: torch.Tensor, beta: float = 0.25) -> tuple[torch.Tensor, torch.Tensor]:
    """Codebook and commitment losses of latents ``z`` and their (non straight-through) codes ``z_q``.

    ``codebook = mean((z_q - sg(z))^2)`` moves the codes; ``commit = beta * mean((sg(z_q) - z)^2)`` moves the
    encoder. (:class:`vavam.tokenizer.quantizer.VectorQuantizer` computes the same on normalised latents.)
    ``z`` and ``z_q``: same shape (e.g. [N,D]); scalars out. Raises ValueError when the shapes differ.
    """
    _same_shape(z, z_q, "z", "z_q")
    codebook = torch.mean((z_q - z.detach()) ** 2)
    commit = beta * torch.mean((z_q.detach() - z) ** 2)
    return codebook, commit


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss ``0.5 * (mean relu(1 - real) + mean relu(1 + fake))``."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss against a hinge discriminator: ``-mean(D(x̂))``."""
    return -logits_fake.mean()


def adaptive_gan_weight(
    nll_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4
) -> torch.Tensor:
    """``|∇_last nll| / (|∇_last g| + 1e-4)``, clamped to ``[0, max_weight]`` and detached (taming's rule)."""
    nll_grad = torch.autograd.grad(nll_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    weight = nll_grad.norm() / (g_grad.norm() + 1e-4)
    return weight.clamp(0.0, max_weight).detach()


# ------------------------------------------------------------------------------ discriminator


class PatchDiscriminator(nn.Module):
    """pix2pix / taming "NLayer" patch discriminator: images [B,3,H,W] -> logits [B,1,h',w'].

    4x4 convolutions, stride 2 for the first ``num_layers``, LeakyReLU(0.2), BatchNorm after all but the first,
    weights ~ N(0, 0.02) (norm scales ~ N(1, 0.02)).
    """

    def __init__(self, in_channels: int = 3, channels: int = 64, num_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, num_layers + 1):
            prev, mult = mult, min(2**n, 8)
            stride = 2 if n < num_layers else 1
            layers += [
                nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                nn.BatchNorm2d(channels * mult),
                nn.LeakyReLU(0.2, True),
            ]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """Logit grid ``(h', w')`` for images of ``height x width`` (a side below 1: too small to discriminate)."""
        h, w = height, width
        for m in self.main:
            if isinstance(m, nn.Conv2d):
                (kh, kw), (sh, sw), (ph, pw) = m.kernel_size, m.stride, m.padding
                h = (h + 2 * ph - kh) // sh + 1 if h + 2 * ph >= kh else 0
                w = (w + 2 * pw - kw) // sw + 1 if w + 2 * pw >= kw else 0
        return h, w

    def min_side(self) -> int:
        """Smallest image side (pixels) that still gives a logit grid of at least 1 x 1."""
        side = 1
        while self.output_size(side, side)[0] < 1:
            side += 1
        return side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` [B,3,H,W] -> patch logits [B,1,h',w'] (see :meth:`output_size`)."""
        return self.main(images)


# ------------------------------------------------------------------------------ perceptual (VGG16 features)

#: torchvision VGG16 ``features``: conv widths, "M" = max-pool; module indices follow torchvision's.
_VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
#: indices (in ``features``) of the ReLUs LPIPS reads: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG16_TAPS = (3, 8, 15, 22, 29)
#: channels at those taps (one LPIPS head weight per channel).
_VGG16_TAP_WIDTHS = (64, 128, 256, 512, 512)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)


def _vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for v in _VGG16_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            cin = int(v)
    return nn.Sequential(*layers)  # indices 0..29, as torchvision's features[:30]


class VGGPerceptualLoss(nn.Module):
    """LPIPS-style distance on frozen VGG16 features: images [B,3,H,W] in [-1,1] -> per-image [B].

    Features at relu1_2 ... relu5_3 are unit-normalised over channels; squared differences are weighted by the
    LPIPS linear heads when given (``lins``), else summed over channels; then averaged over space and summed
    over the five layers.
    """

    def __init__(self, lins: list[torch.Tensor] | None = None) -> None:
        super().__init__()
        self.features = _vgg16_features()
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.lins = nn.ParameterList([nn.Parameter(w.reshape(1, -1, 1, 1).float()) for w in lins] if lins else [])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGPerceptualLoss:  # always frozen, always eval
        return super().train(False)

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        h = (x.float() - self.shift) / self.scale
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in _VGG16_TAPS:
                out.append(h)
            if i == _VGG16_TAPS[-1]:
                break
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        total = x.new_zeros(x.shape[0], dtype=torch.float32)
        for k, (fx, fy) in enumerate(zip(self._taps(x), self._taps(y))):
            fx = fx / (fx.norm(dim=1, keepdim=True) + 1e-10)
            fy = fy / (fy.norm(dim=1, keepdim=True) + 1e-10)
            d = (fx - fy) ** 2  # [B,C,h,w]
            d = (d * self.lins[k]).sum(dim=1) if len(self.lins) else d.sum(dim=1)  # [B,h,w]
            total = total + d.mean(dim=(1, 2))
        return total


_PREFIXES = re.compile(r"^(module\.)?(vgg\.|net\.)?(features\.|slice\d\.)?")


def load_perceptual_loss(path: str | Path) -> VGGPerceptualLoss:
    """Build :class:`VGGPerceptualLoss` from a local weights file (``.safetensors`` or a torch file).

    Raises:
        FileNotFoundError: ``path`` does not exist (vavam downloads nothing; see the module docstring).
        ValueError: the file lacks some VGG16 ``features`` tensors, or holds LPIPS heads other than five of
            widths 64, 128, 256, 512, 512 (``lin0..lin4``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"perceptual weights not found at {path}: vavam ships and downloads no weights; pass a local file "
            "holding the torchvision VGG16 `features` state dict (keys 'features.N.weight'), optionally with "
            "LPIPS heads 'linK.model.1.weight', or train without perceptual_weights"
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        raw = load_file(str(path))
    else:
        from vavam.io import safe_torch_load

        raw = safe_torch_load(path)
        if isinstance(raw, dict) and "state_dict" in raw and isinstance(raw["state_dict"], dict):
            raw = raw["state_dict"]
    vgg: dict[str, torch.Tensor] = {}
    lins: dict[int, torch.Tensor] = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            continue
        # LPIPS heads: 'linK.model.1.weight' (with dropout, as LPIPS ships them), 'linK.model.0.weight' (without)
        m = re.match(r"^(?:module\.)?lin(\d)\.(?:model\.\d\.)?weight$", key)
        if m:
            lins[int(m.group(1))] = value
            continue
        name = _PREFIXES.sub("", key)
        if re.match(r"^\d+\.(weight|bias)$", name) and int(name.split(".")[0]) < 30:
            vgg[name] = value
    if lins and sorted(lins) != list(range(5)):
        raise ValueError(f"{path}: LPIPS heads lin{sorted(lins)} found; VGG16 LPIPS needs all five, lin0..lin4")
    for k, width in enumerate(_VGG16_TAP_WIDTHS if lins else ()):
        if lins[k].numel() != width:
            raise ValueError(f"{path}: LPIPS head lin{k} has shape {tuple(lins[k].shape)}, expected {width} "
                             f"weights (one per channel of VGG16's relu{k + 1} features)")
    loss = VGGPerceptualLoss(lins=[lins[k] for k in range(5)] if lins else None)
    expected = set(loss.features.state_dict())
    missing = sorted(expected - set(vgg), key=lambda k: (int(k.split(".")[0]), k))
    if missing:
        raise ValueError(
            f"{path}: not a VGG16 `features` state dict (missing {len(missing)} tensors, e.g. {missing[:3]}; "
            f"found keys like {sorted(raw)[:3]})"
        )
    loss.features.load_state_dict({k: vgg[k].float() for k in expected})
    return loss


# ------------------------------------------------------------------------------ the combined loss


@dataclass(frozen=True)
class LossConfig:
    """Weights and switches of :class:`TokenizerLoss`."""

    l1_weight: float = 1.0
    l2_weight: float = 1.0
    codebook_weight: float = 1.0
    commit_weight: float = 1.0  # multiplies the quantizer's commit loss, which already holds β
    perceptual_weight: float = 1.0  # used only when a perceptual network is given
    gan: bool = False
    gan_weight: float = 0.5
    gan_start: int = 0  # generator step from which the GAN terms are on
    gan_adaptive: bool = True
    disc_channels: int = 64
    disc_layers: int = 3


class TokenizerLoss(nn.Module):
    """Generator and discriminator objectives of the tokenizer (holds the discriminator, if any)."""

    def __init__(self, config: LossConfig = LossConfig(), perceptual: VGGPerceptualLoss | None = None) -> None:
        super().__init__()
        self.config = config
        self.perceptual = perceptual
        self.discriminator = PatchDiscriminator(3, config.disc_channels, config.disc_layers) if config.gan else None

    def active(self) -> list[str]:
        """Names (with weights) of the terms in use, for the training log."""
        c = self.config
        names = []
        if c.l1_weight:
            names.append(f"l1 x{c.l1_weight:g}")
        if c.l2_weight:
            names.append(f"l2 x{c.l2_weight:g}")
        names += [f"codebook x{c.codebook_weight:g}", f"commit x{c.commit_weight:g} (beta in quantizer)", "entropy"]
        if self.perceptual is not None and c.perceptual_weight:
            names.append(f"perceptual(vgg16{'+lpips' if len(self.perceptual.lins) else ''}) x{c.perceptual_weight:g}")
        if self.discriminator is not None:
            rule = "adaptive" if c.gan_adaptive else "fixed"
            names.append(f"gan(hinge, {rule} x{c.gan_weight:g}, from step {c.gan_start})")
        return names

    def gan_on(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.config.gan_start

    def generator_loss(
        self,
        images: torch.Tensor,
        recon: torch.Tensor,
        codebook_loss: torch.Tensor,
        commit_loss: torch.Tensor,
        entropy_loss: torch.Tensor,
        step: int,
        last_layer: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total generator loss (scalar) and a dict of its (detached) parts.

        ``images`` and ``recon``: [B,3,H,W] in [-1,1], the same shape (ValueError otherwise); the VQ terms are
        scalars from the quantizer; ``last_layer``: the decoder's output weight (adaptive GAN weight).
        """
        _same_shape(recon, images, "recon", "images")
        c = self.config
        l1, l2 = reconstruction_losses(recon, images)
        nll = c.l1_weight * l1 + c.l2_weight * l2
        logs = {"l1": l1.item(), "l2": l2.item()}
        if self.perceptual is not None and c.perceptual_weight:
            p = self.perceptual(images, recon.float()).mean()
            nll = nll + c.perceptual_weight * p
            logs["perceptual"] = p.item()
        total = nll + c.codebook_weight * codebook_loss + c.commit_weight * commit_loss + entropy_loss
        logs.update(codebook=codebook_loss.item(), commit=commit_loss.item(), entropy=float(entropy_loss))
        if self.gan_on(step):
            g = hinge_g_loss(self.discriminator(recon.float()))
            if c.gan_adaptive and last_layer is not None and torch.is_grad_enabled():
                weight = c.gan_weight * adaptive_gan_weight(nll, g, last_layer)
            else:
                weight = torch.tensor(c.gan_weight)
            total = total + weight * g
            logs.update(g_loss=g.item(), gan_weight=float(weight))
        logs["loss"] = total.item()
        return total, logs

    def discriminator_loss(self, images: torch.Tensor, recon: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        """Hinge loss of the discriminator on real ``images`` and (detached) ``recon``."""
        if self.discriminator is None:
            raise RuntimeError("discriminator_loss called but the GAN is disabled (LossConfig.gan=False)")
        real = self.discriminator(images.float())
        fake = self.discriminator(recon.detach().float())
        loss = hinge_d_loss(real, fake)
        return loss, {"d_loss": loss.item(), "logits_real": real.mean().item(), "logits_fake": fake.mean().item()}


__all__ = [
    "reconstruction_losses",
    "vq_losses",
    "hinge_d_loss",
    "hinge_g_loss",
    "adaptive_gan_weight",
    "PatchDiscriminator",
    "VGGPerceptualLoss",
    "load_perceptual_loss",
    "LossConfig",
    "TokenizerLoss",
]
