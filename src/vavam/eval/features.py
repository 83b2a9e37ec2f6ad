"""Pluggable image feature extractors for Fréchet distances (video quality).

Every extractor maps images float ``[N, 3, H, W]`` in **[0, 1]** to features ``[N, d]`` and says whether
its numbers can be set beside published ones (``comparable_to_published``):

- :class:`VQEncoderFeatures` (offline default): pooled encoder features of the project's own VQ
  tokenizer. Needs no download; its Fréchet distances are **not comparable to published FID**, and
  they favour the tokenizer's own reconstructions (the features come from the same encoder).
- :class:`DinoV2Features`: DINOv2 ViT-L/14 with registers (the paper's extractor), loaded with
  ``transformers`` from a local folder (``config.json`` + weights); 1024-d CLS embedding.
- :class:`InceptionFeatures`: the FID Inception-v3 (:mod:`vavam.eval.inception`) from a local
  ``pt_inception-2015-12-05-*.pth``; 2048-d pool3 features.

Extractors are plain objects (not models): ``from_local`` reads files, ``__call__`` runs without
gradients and returns float32 features on the CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from vavam.checks import check_finite

#: ImageNet mean / std of RGB images in [0, 1] (DINOv2's preprocessing).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: DINOv2 input size of the reference protocol (H, W), multiples of the 14-pixel patch.
DINOV2_SIZE = (280, 504)
#: Files a local transformers model folder holds (weights: one of the last four).
DINOV2_FILES = ("config.json", "model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
NOT_COMPARABLE = ("not comparable to published FID: features of this project's VQ tokenizer encoder, "
                  "not Inception-v3 or DINOv2")


def check_unit_images(images: torch.Tensor, name: str = "images", tolerance: float = 1e-3) -> None:
    """``images`` must be float ``[N, 3, H, W]``, finite, in [0, 1] (up to ``tolerance``).

    Raises:
        ValueError / TypeError naming ``name``; images in [-1, 1] get a hint to use ``(x + 1) / 2``.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{name} must be float [N, 3, H, W] in [0, 1], got {shape}")
    if not images.is_floating_point():
        raise TypeError(f"{name} must be float in [0, 1], got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError(f"{name}: empty batch {tuple(images.shape)}")
    check_finite(images, name)
    lo, hi = float(images.min()), float(images.max())
    if lo < -tolerance or hi > 1 + tolerance:
        raise ValueError(f"{name} must be in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
                         "(images in [-1, 1] convert with (x + 1) / 2)")


@runtime_checkable
class FeatureExtractor(Protocol):
    """Images float ``[N, 3, H, W]`` in [0, 1] -> features float ``[N, dim]``.

    Attributes: ``name`` (short, for reports), ``dim``, ``comparable_to_published``, ``description``
    (one sentence for reports: network, preprocessing, comparability).
    """

    name: str
    comparable_to_published: bool

    @property
    def dim(self) -> int: ...

    @property
    def description(self) -> str: ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


# ------------------------------------------------------------------------------ VQ encoder (offline)


class VQEncoderFeatures:
    """Offline default: the tokenizer's encoder output (before ``quant_conv`` and quantisation), pooled.

    ``[N, 3, H, W]`` in [0, 1] -> ``2 x - 1`` -> ``tokenizer.encoder`` -> ``[N, C, h, w]`` -> concat of the
    spatial mean and standard deviation per channel -> ``[N, 2 C]`` (C = ``z_channels``, 256 for VQ-16).
    The mean carries the layout, the std the texture. ``comparable_to_published`` is False.
    """

    name = "vq"
    comparable_to_published = False

    def __init__(self, tokenizer) -> None:
        encoder = getattr(tokenizer, "encoder", None)
        if not isinstance(encoder, torch.nn.Module):
            raise TypeError(
                f"VQEncoderFeatures needs a tokenizer with an `encoder` module (a vavam VQModel), got "
                f"{type(tokenizer).__name__} (the TorchScript tokenizer exposes no encoder features; "
                "use --extractor dinov2 or inception)"
            )
        self.tokenizer = tokenizer
        self.encoder = encoder

    @property
    def dim(self) -> int:
        """Feature size ``2 * z_channels``."""
        return 2 * int(self.tokenizer.config.z_channels)

    @property
    def description(self) -> str:
        """One line for reports."""
        return (f"VQ tokenizer encoder features (spatial mean and std of the {self.dim // 2} encoder channels, "
                f"{self.dim}-d); {NOT_COMPARABLE}")

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] (H, W multiples of the tokenizer's downsampling) -> ``[N, 2 C]``."""
        check_unit_images(images)
        ds = int(self.tokenizer.downsample)
        if images.shape[-2] % ds or images.shape[-1] % ds:
            raise ValueError(f"images: size {tuple(images.shape[-2:])} is not a multiple of the tokenizer's "
                             f"downsampling factor {ds}")
        param = next(self.encoder.parameters())
        z = self.encoder((images * 2.0 - 1.0).to(param.device, param.dtype)).float()  # [N, C, h, w]
        flat = z.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1).cpu()


# ------------------------------------------------------------------------------ DINOv2 (transformers)


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise ImportError("DINOv2 features need the `transformers` package: pip install 'vavam[eval]' "
                          "(or pip install transformers)") from exc
    return transformers


def check_local_model_folder(path: str | Path, what: str = "DINOv2 ViT-L/14 with registers") -> Path:
    """``path`` must be a folder with ``config.json`` and weights (safetensors or bin, single or sharded).

    Raises:
        FileNotFoundError: naming ``path``, what is missing and the files expected.
    """
    path = Path(path)
    expected = (f"expected a transformers model folder with config.json and model.safetensors (or "
                f"pytorch_model.bin, or a sharded *.index.json), e.g. {what} saved with save_pretrained "
                "(facebook/dinov2-with-registers-large); nothing is downloaded by vavam")
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder; {expected}")
    present = {p.name for p in path.iterdir()}
    if "config.json" not in present:
        raise FileNotFoundError(f"{path}: config.json is missing; {expected}")
    if not any(f in present for f in DINOV2_FILES[1:]):
        raise FileNotFoundError(f"{path}: no weights file ({', '.join(DINOV2_FILES[1:])}); {expected}")
    return path


class DinoV2Features:
    """DINOv2 (with registers) CLS embedding: ``[N, 3, H, W]`` in [0, 1] -> ``[N, hidden]`` (1024 for ViT-L).

    Preprocessing (reference protocol, §5.4): bilinear resize to ``image_size`` (280 x 504,
    ``align_corners=False``), then ImageNet normalisation ``(x - mean) / std`` **of the [0, 1] image**.
    The original code normalised the [-1, 1] tensor instead (a quirk that shifts and scales every input);
    ``signed_input_quirk=True`` reproduces it for comparisons with its numbers. The embedding is the
    final-LayerNorm CLS token (``pooler_output``), the global embedding of DINOv2's own ``forward``.

    Args:
        model: a transformers ``Dinov2WithRegistersModel`` or ``Dinov2Model`` (put in eval mode here).
        image_size: model input ``(H, W)``; multiples of the patch size.
        signed_input_quirk: normalise ``2 x - 1`` instead of ``x`` (the original's behaviour).
    """

    name = "dinov2"

    def __init__(self, model: torch.nn.Module, image_size: tuple[int, int] = DINOV2_SIZE,
                 signed_input_quirk: bool = False) -> None:
        config = getattr(model, "config", None)
        if config is None or not hasattr(config, "hidden_size"):
            raise TypeError(f"DinoV2Features needs a transformers DINOv2 model, got {type(model).__name__}")
        patch = int(getattr(config, "patch_size", 14))
        if image_size[0] % patch or image_size[1] % patch:
            raise ValueError(f"image_size {tuple(image_size)} must be multiples of the patch size {patch}")
        self.model = model.eval()
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.signed_input_quirk = bool(signed_input_quirk)
        self.model_type = str(getattr(config, "model_type", "?"))
        self.source: str | None = None

    @property
    def dim(self) -> int:
        """``hidden_size`` of the model (1024 for ViT-L)."""
        return int(self.model.config.hidden_size)

    @property
    def comparable_to_published(self) -> bool:
        """True for the paper's extractor: ViT-L/14 with registers (hidden 1024, 24 layers) and the original
        preprocessing quirk; our corrected normalisation gives different numbers."""
        c = self.model.config
        is_vitl_reg = (self.model_type == "dinov2_with_registers" and int(c.hidden_size) == 1024
                       and int(c.num_hidden_layers) == 24 and int(c.patch_size) == 14)
        return is_vitl_reg and self.signed_input_quirk

    @property
    def description(self) -> str:
        """One line for reports."""
        c = self.model.config
        regs = int(getattr(c, "num_register_tokens", 0) or 0)
        norm = ("ImageNet normalisation of the [-1, 1] tensor (the original's quirk)" if self.signed_input_quirk
                else "ImageNet normalisation of [0, 1] images (the original normalised [-1, 1] images: numbers differ)")
        where = f" from {self.source}" if self.source else ""
        return (f"DINOv2 ({self.model_type}, {c.num_hidden_layers} layers, width {c.hidden_size}, patch "
                f"{c.patch_size}, {regs} registers){where}: CLS embedding ({self.dim}-d); bilinear resize to "
                f"{self.image_size[0]}x{self.image_size[1]}; {norm}")

    @classmethod
    def from_local(cls, path: str | Path, device: str | torch.device = "cpu", image_size: tuple[int, int] = DINOV2_SIZE,
                   signed_input_quirk: bool = False) -> DinoV2Features:
        """Load a DINOv2 model from a local transformers folder (``local_files_only=True``).

        Raises:
            ImportError: transformers is not installed.
            FileNotFoundError: ``path`` lacks ``config.json`` or weights (message lists expected files).
            ValueError: the folder holds another kind of model.
        """
        path = check_local_model_folder(path)
        transformers = _import_transformers()
        try:
            config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: config.json is not a readable transformers config: {exc}") from exc
        if config.model_type not in ("dinov2_with_registers", "dinov2"):
            raise ValueError(f"{path}: holds a {config.model_type!r} model, expected a DINOv2 model "
                             "(dinov2_with_registers, e.g. facebook/dinov2-with-registers-large)")
        try:
            model = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot load the DINOv2 weights: {exc}") from exc
        out = cls(model.to(device), image_size=image_size, signed_input_quirk=signed_input_quirk)
        out.source = str(path)
        return out

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> resized, normalised ``[N, 3, 280, 504]`` (see the class docstring)."""
        x = images.float()
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        if self.signed_input_quirk:
            x = x * 2.0 - 1.0
        mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> CLS embeddings ``[N, hidden]`` (float32, CPU)."""
        check_unit_images(images)
        param = next(self.model.parameters())
        x = self.preprocess(images.to(param.device)).to(param.dtype)
        return self.model(pixel_values=x).pooler_output.float().cpu()


# ------------------------------------------------------------------------------ Inception (FID)


class InceptionFeatures:
    """FID Inception-v3 pool3 features: ``[N, 3, H, W]`` in [0, 1] -> ``[N, 2048]``.

    Preprocessing as pytorch-fid: bilinear resize to 299 x 299, ``2 x - 1``. With pytorch-fid's weights the
    features are those of standard FID (``comparable_to_published``); the reference code's optional
    Inception path resized bicubically (clean-fid), which moves values slightly.
    """

    name = "inception"
    comparable_to_published = True

    def __init__(self, model: torch.nn.Module) -> None:
        from vavam.eval.inception import FIDInceptionV3

        if not isinstance(model, FIDInceptionV3):
            raise TypeError(f"InceptionFeatures needs a FIDInceptionV3, got {type(model).__name__}")
        self.model = model.eval()
        self.source: str | None = None

    @property
    def dim(self) -> int:
        """2048."""
        from vavam.eval.inception import FEATURE_DIM

        return FEATURE_DIM

    @property
    def description(self) -> str:
        """One line for reports."""
        where = f" from {self.source}" if self.source else ""
        return (f"FID Inception-v3{where}: 2048-d pool3 features; bilinear resize to 299x299 (pytorch-fid "
                "convention)")

    @classmethod
    def from_local(cls, path: str | Path, device: str | torch.device = "cpu") -> InceptionFeatures:
        """Load ``pt_inception-2015-12-05-*.pth`` (a file, or a folder holding it).

        Raises:
            FileNotFoundError: no weights at ``path`` (the message names the expected file).
            ValueError: the file holds other weights (keys/shapes listed).
        """
        from vavam.eval.inception import load_fid_inception

        out = cls(load_fid_inception(path, device=device))
        out.source = str(path)
        return out

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> ``[N, 2048]`` (float32, CPU)."""
        check_unit_images(images)
        param = self.model.fc.weight
        return self.model(images.to(param.device, param.dtype)).float().cpu()


def build_extractor(kind: str, tokenizer=None, weights: str | Path | None = None, device: str | torch.device = "cpu",
                    signed_input_quirk: bool = False) -> FeatureExtractor:
    """An extractor by name: ``"vq"`` (needs ``tokenizer``), ``"dinov2"`` or ``"inception"`` (need ``weights``).

    Raises:
        ValueError: unknown ``kind``, or ``weights`` missing for dinov2 / inception (the message says what to pass).
    """
    if kind == "vq":
        if tokenizer is None:
            raise ValueError("extractor 'vq' needs the tokenizer")
        return VQEncoderFeatures(tokenizer)
    if kind == "dinov2":
        if weights is None:
            raise ValueError("extractor 'dinov2' needs --weights: a local folder with DINOv2 ViT-L/14-reg "
                             "(config.json + model.safetensors, from facebook/dinov2-with-registers-large)")
        return DinoV2Features.from_local(weights, device=device, signed_input_quirk=signed_input_quirk)
    if kind == "inception":
        if weights is None:
            raise ValueError("extractor 'inception' needs --weights: pytorch-fid's "
                             "pt_inception-2015-12-05-6726825d.pth (file or folder)")
        return InceptionFeatures.from_local(weights, device=device)
    raise ValueError(f"unknown extractor {kind!r}: choose vq, dinov2 or inception")
