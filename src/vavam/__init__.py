"""vavam: VaViM (autoregressive video model) and VaVAM (video-action model) for driving.

Public API (stable names)::

    model = vavam.build_model(vavam.presets.vavim_s())
    tok = vavam.load_tokenizer(path)
    vim = vavam.load_video_model(path)
    frames = vavam.generate_frames(vim, context, num_frames)
    vam = vavam.load_action_model(path)
"""

from __future__ import annotations

from typing import Any

from vavam import presets
from vavam.config import ActionConfig, VideoConfig, VQConfig

__version__ = "0.1.0"


def build_model(config: Any):
    """Build the ``nn.Module`` of a config (works under ``torch.device('meta')``).

    ``VQConfig`` -> :class:`vavam.tokenizer.VQModel`; ``VideoConfig`` -> :class:`vavam.video.VideoGPT`;
    ``ActionConfig`` -> :class:`vavam.action.VideoActionModel`.
    """
    if isinstance(config, VQConfig):
        from vavam.tokenizer import VQModel

        return VQModel(config)
    if isinstance(config, VideoConfig):
        from vavam.video import VideoGPT

        return VideoGPT(config)
    if isinstance(config, ActionConfig):
        from vavam.action import VideoActionModel

        return VideoActionModel(config)
    raise TypeError(f"build_model: no model for config of type {type(config).__name__}")


def load_tokenizer(path, trust_code: bool = False, device: str = "cpu"):
    """Load a tokenizer: a LlamaGen VQ ``.pt`` (``{"model": state_dict}``) or our checkpoint folder."""
    from vavam.tokenizer import load_tokenizer as _load

    return _load(path, trust_code=trust_code, device=device)


def load_video_model(path, device: str = "cpu", head_dim: int | None = None, base_width: int | None = None):
    """Load a VaViM: the authors' released ``.pt`` (Lightning dict), a DeepSpeed-consolidated or bare
    state dict (``head_dim`` / ``base_width`` default to 128 / 256 when the file does not say), or our
    checkpoint folder."""
    from vavam.video import load_video_model as _load

    return _load(path, device=device, head_dim=head_dim, base_width=base_width)


def generate_frames(model, context, num_frames: int, temperature: float = 1.0, top_k: int | None = 1, generator=None):
    """Generate ``num_frames`` new frames of tokens after ``context`` long ``[B,T0,h,w]`` -> ``[B,F,h,w]``."""
    from vavam.video import generate_frames as _gen

    return _gen(model, context, num_frames, temperature=temperature, top_k=top_k, generator=generator)


def load_action_model(path, device: str = "cpu"):
    """Load a VaVAM: the authors' released ``.pt`` or our checkpoint folder."""
    from vavam.action import load_action_model as _load

    return _load(path, device=device)


__all__ = [
    "presets",
    "build_model",
    "load_tokenizer",
    "load_video_model",
    "generate_frames",
    "load_action_model",
    "VQConfig",
    "VideoConfig",
    "ActionConfig",
]
