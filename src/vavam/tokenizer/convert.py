"""LlamaGen VQ checkpoints <-> :class:`VQModel`.

A LlamaGen ``.pt`` stores no config, only ``{"model": state_dict}`` (training checkpoints also
``"ema"``, ``"optimizer"``, ...). The architecture is read from tensor shapes:

- base channels ``C`` = out channels of ``encoder.conv_in``; ``z_channels`` = out channels of
  ``encoder.conv_out``; codebook ``K x D`` = shape of ``quantize.embedding.weight``;
- ``ch_mult[i]`` = out channels of ``encoder.conv_blocks.{i}.res.0.conv1`` / ``C``;
- ``num_res_blocks`` = number of ``encoder.conv_blocks.0.res.{j}`` blocks.

GroupNorm group counts, the L2-normalisation flag and the loss weights leave no trace in the
weights: they take LlamaGen's values (32 groups, normalised codes, beta 0.25) unless overridden.
Parameter names are the same on both sides; only LlamaGen's ``quantize.codebook_used`` usage
buffer is dropped.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch

from vavam.config import VQConfig
from vavam.tokenizer.model import VQModel

USAGE_BUFFER = "quantize.codebook_used"


class TrainingArgs:
    """Stand-in for the ``argparse.Namespace`` that LlamaGen's ``vq_train.py`` stores as ``"args"`` in every
    training checkpoint: the restricted unpickler builds this plain attribute holder instead (nothing is called)."""

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise TypeError(f"argparse.Namespace: unexpected state of type {type(state).__name__}")
        self.__dict__.update(state)


#: Globals a LlamaGen ``.pt`` may hold beyond vavam's allow-list (its training checkpoints pickle the argparse args).
LLAMAGEN_GLOBALS: dict[tuple[str, str], Any] = {("argparse", "Namespace"): TrainingArgs}

_PREFIXES = ("module.", "_orig_mod.", "vq_model.", "vqvae.")


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The VQ state dict inside a loaded LlamaGen file.

    Accepts ``{"model": sd}`` (LlamaGen's layout), ``{"ema": sd}``, ``{"state_dict": sd}`` or a bare
    state dict; strips ``module.`` / ``_orig_mod.`` prefixes. Raises ValueError when none is found.
    A file holding both ``"model"`` and ``"ema"`` gives ``"model"``, the weights LlamaGen's generation scripts
    load from ``--vq-ckpt`` (its reconstruction evaluation prefers ``"ema"``).
    """
    if isinstance(obj, Mapping):
        for key in ("model", "ema", "state_dict"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            "not a LlamaGen VQ checkpoint: expected {'model': state_dict}, {'ema': ...}, "
            "{'state_dict': ...} or a state dict"
        )
    out: dict[str, torch.Tensor] = {}
    for name, value in obj.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in _PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix) :]
        out[name] = value
    if "quantize.embedding.weight" not in out or "encoder.conv_in.weight" not in out:
        raise ValueError(
            "not a LlamaGen VQ state dict: 'quantize.embedding.weight' or 'encoder.conv_in.weight' is missing "
            f"(first keys: {list(out)[:5]})"
        )
    return out


def infer_vq_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> VQConfig:
    """Read the architecture of a LlamaGen VQ state dict from its tensor shapes -> :class:`VQConfig`.

    ``overrides`` (e.g. ``norm_groups=8``) set the fields that the weights cannot tell.
    Raises ValueError when encoder and decoder disagree or a tensor is missing.
    """

    def count(pattern: str) -> int:  # 1 + the largest index matched by the regex group, 0 if none
        return 1 + max((int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))), default=-1)

    try:
        base = state_dict["encoder.conv_in.weight"].shape[0]
        z_channels = state_dict["encoder.conv_out.weight"].shape[0]
        codebook_size, dim = state_dict["quantize.embedding.weight"].shape
        levels = count(r"encoder\.conv_blocks\.(\d+)\.")
        num_res = count(r"encoder\.conv_blocks\.0\.res\.(\d+)\.")
        enc_channels = [state_dict[f"encoder.conv_blocks.{i}.res.0.conv1.weight"].shape[0] for i in range(levels)]
    except KeyError as exc:
        raise ValueError(f"cannot infer the VQ architecture from the state dict: tensor {exc} is missing") from exc
    if levels == 0 or num_res == 0 or any(c % base for c in enc_channels):
        raise ValueError(
            f"cannot infer the VQ architecture: {levels} encoder levels with channels {enc_channels}, base {base}"
        )
    ch_mult = [c // base for c in enc_channels]
    dec_levels = count(r"decoder\.conv_blocks\.(\d+)\.")
    dec_res = count(r"decoder\.conv_blocks\.0\.res\.(\d+)\.")
    if dec_levels != levels or dec_res != num_res + 1:
        raise ValueError(
            f"encoder ({levels} levels, {num_res} res blocks) and decoder ({dec_levels} levels, {dec_res} res blocks) "
            "do not match the symmetric LlamaGen layout"
        )
    for j, mult in enumerate(reversed(ch_mult)):
        out_ch = state_dict[f"decoder.conv_blocks.{j}.res.0.conv1.weight"].shape[0]
        if out_ch != base * mult:
            raise ValueError(
                f"decoder ch_mult differs from the encoder's {ch_mult} (decoder level {j}: {out_ch} channels)"
            )
    config = VQConfig(
        codebook_size=int(codebook_size),
        codebook_embed_dim=int(dim),
        base_channels=int(base),
        ch_mult=tuple(ch_mult),
        z_channels=int(z_channels),
        num_res_blocks=int(num_res),
        norm_groups=32,
    )
    return dataclasses.replace(config, **overrides)


def convert_llamagen_state_dict(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> VQModel:
    """LlamaGen VQ state dict -> :class:`VQModel` (float32, eval mode), architecture from shapes."""
    state_dict = extract_state_dict(state_dict)
    config = infer_vq_config(state_dict, **overrides)
    with torch.device("meta"):
        model = VQModel(config)
    tensors = {k: v.detach().float().contiguous() for k, v in state_dict.items() if k != USAGE_BUFFER}
    try:
        result = model.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as exc:  # shape mismatches (e.g. quant_conv for another code dimension)
        raise ValueError(f"LlamaGen state dict does not fit the inferred architecture {config}: {exc}") from exc
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(
            f"LlamaGen state dict does not fit the inferred architecture {config}: "
            f"missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def load_llamagen(path: str | os.PathLike, map_location: str = "cpu", **overrides: Any) -> VQModel:
    """Load a LlamaGen VQ ``.pt`` through vavam's restricted unpickler -> :class:`VQModel` (eval)."""
    from vavam.io import safe_torch_load

    path = Path(path)  # as the reader names it ("./vq.pt" -> "vq.pt")
    try:
        obj = safe_torch_load(path, map_location=map_location, extra_globals=LLAMAGEN_GLOBALS)
        return convert_llamagen_state_dict(obj, **overrides)
    except ValueError as exc:
        if str(exc).startswith(f"{path}:"):  # the reader's messages already name the file
            raise
        raise ValueError(f"{path}: {exc}") from exc


def to_llamagen_state_dict(model: VQModel) -> dict[str, torch.Tensor]:
    """:class:`VQModel` -> LlamaGen state dict (same names, plus a zero ``quantize.codebook_used`` buffer)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    state[USAGE_BUFFER] = torch.zeros(65536)
    return state
