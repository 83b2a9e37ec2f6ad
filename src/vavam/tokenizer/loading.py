"""Loading and saving tokenizers, and their identity for the token store.

Accepted by :func:`load_tokenizer`:

- our checkpoint folder (``model.safetensors`` + ``config.json`` + ``meta.json``);
- a LlamaGen VQ ``.pt`` (read by vavam's restricted unpickler; the architecture comes from shapes);
- with ``trust_code=True`` only: the TorchScript encoder/decoder pair released by the VaViM authors
  (``VQ_ds16_16384_llamagen_encoder.jit`` + ``VQ_ds16_16384_llamagen_decoder.jit``), given as either
  file or the folder holding both, wrapped in :class:`TorchScriptTokenizer`.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from vavam import io as vio
from vavam.config import VQConfig, config_to_dict
from vavam.tokenizer.convert import load_llamagen
from vavam.tokenizer.model import VQModel, checked_ids

ENCODER_SUFFIX = "_encoder.jit"
DECODER_SUFFIX = "_decoder.jit"


class TorchScriptTokenizer:
    """The authors' TorchScript tokenizer exports behind the :class:`VQModel` inference API.

    ``encoder``: images float [B,3,H,W] in [-1,1] -> ids [B,H/16,W/16]; ``decoder``: ids [B,h,w] ->
    images [B,3,16h,16w]. ``decoder`` may be None (the old single-file encoder export).
    """

    def __init__(
        self,
        encoder: torch.jit.ScriptModule,
        decoder: torch.jit.ScriptModule | None,
        downsample: int = 16,
        codebook_size: int = 16384,
        files: tuple[Path, ...] = (),
    ) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self._downsample = downsample
        self.codebook_size = codebook_size
        self.files = files
        self.config = None

    @property
    def downsample(self) -> int:
        """Spatial downsampling factor (16 for the released exports)."""
        return self._downsample

    def _device(self) -> torch.device:
        for p in list(self.encoder.parameters()) + list(self.encoder.buffers()):
            return p.device
        return torch.device("cpu")

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images float [B,3,H,W] in [-1,1] -> ids long [B,H/ds,W/ds]."""
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"tokenizer expects images [B,3,H,W], got {shape}")
        if not images.is_floating_point():
            raise TypeError(f"tokenizer expects float images in [-1, 1], got dtype {images.dtype}")
        h, w = images.shape[-2:]
        if h % self.downsample or w % self.downsample:
            raise ValueError(f"image size {h}x{w} (HxW) is not a multiple of the downsampling factor {self.downsample}")
        ids = self.encoder(images.to(self._device()))
        b, ds = images.shape[0], self.downsample
        if ids.numel() != b * (h // ds) * (w // ds):
            raise ValueError(
                f"TorchScript encoder {[str(f) for f in self.files]} returned ids {tuple(ids.shape)} for images "
                f"{tuple(images.shape)}; expected {b * (h // ds) * (w // ds)} ids (grid {h // ds}x{w // ds}, "
                f"downsampling {ds})"
            )
        return ids.reshape(b, h // ds, w // ds).long()  # [B*h*w] or [B,h,w] -> [B,h,w]

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids long [B,h,w] -> images float [B,3,h*ds,w*ds]."""
        if self.decoder is None:
            raise RuntimeError(f"this TorchScript tokenizer has no decoder (files: {[str(f) for f in self.files]})")
        ids = checked_ids(ids, self.codebook_size)
        return self.decoder(ids.to(self._device())).float()

    def eval(self) -> "TorchScriptTokenizer":
        """Put both modules in eval mode; returns self."""
        self.encoder.eval()
        if self.decoder is not None:
            self.decoder.eval()
        return self

    def to(self, device: str | torch.device) -> "TorchScriptTokenizer":
        """Move both modules to ``device``; returns self."""
        self.encoder.to(device)
        if self.decoder is not None:
            self.decoder.to(device)
        return self


def _torchscript_pair(path: Path) -> tuple[Path, Path | None] | None:
    """(encoder, decoder) files of a TorchScript export named by ``path`` (file or folder), else None."""
    if path.is_dir():
        encoders = sorted(path.glob("*" + ENCODER_SUFFIX))
        if not encoders:
            return None
        if len(encoders) > 1:
            raise ValueError(f"{path}: several TorchScript encoders ({[e.name for e in encoders]}); pass one file")
        path = encoders[0]
    name = path.name
    if name.endswith(ENCODER_SUFFIX):
        decoder = path.with_name(name[: -len(ENCODER_SUFFIX)] + DECODER_SUFFIX)
        return path, decoder if decoder.is_file() else None
    if name.endswith(DECODER_SUFFIX):
        encoder = path.with_name(name[: -len(DECODER_SUFFIX)] + ENCODER_SUFFIX)
        if not encoder.is_file():
            raise FileNotFoundError(f"{path}: the matching encoder {encoder.name} is missing beside it")
        return encoder, path
    if path.suffix == ".jit" or _is_torchscript_zip(path):
        return path, None  # single-file encoder export
    return None


def _is_torchscript_zip(path: Path) -> bool:
    """True when ``path`` is a zip archive holding TorchScript code (``*/code/*``)."""
    try:
        with zipfile.ZipFile(path) as zf:
            return any("/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load_script(path: Path, trust_code: bool, device: str) -> torch.jit.ScriptModule:
    """One TorchScript file; a file TorchScript cannot read is refused with a ``ValueError`` naming it."""
    try:
        return vio.load_torchscript(path, trust_code=trust_code, map_location=device)
    except RuntimeError as exc:  # torch.jit.load's messages do not name the file
        raise ValueError(f"{path}: cannot read as a TorchScript module (not a TorchScript export, or truncated?): "
                         f"{exc}") from exc


def load_torchscript_tokenizer(
    path: str | os.PathLike, trust_code: bool = False, device: str = "cpu"
) -> TorchScriptTokenizer:
    """Load the authors' TorchScript encoder/decoder pair (file or folder); needs ``trust_code=True``."""
    path = Path(path)
    pair = _torchscript_pair(path)
    if pair is None:
        raise ValueError(f"{path}: no TorchScript tokenizer export (*{ENCODER_SUFFIX} / *{DECODER_SUFFIX}) found")
    enc_path, dec_path = pair
    encoder = _load_script(enc_path, trust_code, device)
    decoder = _load_script(dec_path, trust_code, device) if dec_path else None
    files = (enc_path,) + ((dec_path,) if dec_path else ())
    return TorchScriptTokenizer(encoder, decoder, files=files).eval()


def load_tokenizer(
    path: str | os.PathLike, trust_code: bool = False, device: str = "cpu"
) -> VQModel | TorchScriptTokenizer:
    """Load a tokenizer in eval mode from our checkpoint folder, a LlamaGen ``.pt``, or (with
    ``trust_code=True``) the authors' TorchScript export.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        PermissionError: ``path`` is TorchScript and ``trust_code`` is False.
        ValueError: ``path`` is none of the supported formats, or its weights do not fit its architecture
            (missing / unexpected tensors, shapes that config.json or the LlamaGen layout does not give).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path}: no such tokenizer file or folder (expected our checkpoint folder, a LlamaGen VQ .pt, "
            "or the TorchScript *_encoder.jit/*_decoder.jit export)"
        )
    if vio.is_checkpoint_folder(path):
        state, config, _meta = vio.load_checkpoint(path, expected=VQConfig)
        with torch.device("meta"):
            model = VQModel(config)
        try:
            model.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:  # missing / unexpected tensors or shapes that config.json does not give
            raise ValueError(f"{path}: the weights do not fit config.json: {exc}") from exc
        return model.to(device).eval()
    if _torchscript_pair(path) is not None:
        return load_torchscript_tokenizer(path, trust_code=trust_code, device=device)
    if path.is_dir():
        raise ValueError(
            f"{path}: folder is neither a vavam checkpoint (config.json) "
            f"nor a TorchScript tokenizer export (*{ENCODER_SUFFIX})"
        )
    return load_llamagen(path, map_location="cpu").to(device).eval()


def recorded_image_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(H, W)`` the tokenizer at ``path`` was trained on, as our tokenizer folders record it in
    ``meta.json`` (``image_size`` or ``training.image_size``); None for other files or when not recorded."""
    from vavam.io import is_checkpoint_folder, read_json

    path = Path(path)
    if not is_checkpoint_folder(path):
        return None
    meta = read_json(path / "meta.json")
    if not isinstance(meta, dict):
        return None
    size = meta.get("image_size") or (meta.get("training") or {}).get("image_size")
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    return None


def save_tokenizer(model: VQModel, folder: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as our checkpoint folder (``model.safetensors``, ``config.json``, ``meta.json``)."""
    if not isinstance(model, VQModel):
        raise TypeError(f"save_tokenizer: expected a VQModel, got {type(model).__name__}")
    return vio.save_checkpoint(folder, model.state_dict(), model.config, meta)


def weights_sha256(model: torch.nn.Module) -> str:
    """sha256 over the state dict: names (sorted), dtypes, shapes and float32/raw bytes of each tensor."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def tokenizer_identity(model: VQModel | TorchScriptTokenizer) -> dict[str, Any]:
    """Stable identity of a tokenizer for the token store: ``{"kind", "config", "weights_sha256", "downsample",
    "codebook_size"}``. Same weights and config -> same dict, whatever file they were loaded from."""
    if isinstance(model, TorchScriptTokenizer):
        digest = hashlib.sha256()
        for f in model.files:
            digest.update(vio.sha256_file(f).encode())
        return {
            "kind": "torchscript",
            "config": None,
            "weights_sha256": digest.hexdigest(),
            "downsample": model.downsample,
            "codebook_size": model.codebook_size,
        }
    return {
        "kind": "vq",
        "config": config_to_dict(model.config),
        "weights_sha256": weights_sha256(model),
        "downsample": model.downsample,
        "codebook_size": model.codebook_size,
    }
