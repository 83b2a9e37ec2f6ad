"""Loading and saving VaVAM: the authors' released ``.pt`` files and our checkpoint folders.

Released layout: ``state_dict`` with ``vam.gpt.*`` (VaViM, reference names), ``vam.action_expert.*``
(``action_encoder.linear_{1,2,3}``, ``action_encoder.command_embedding``,
``action_encoder.action_positional_embedding``, ``transformer.h.{i}.attn.c_attn / c_proj``,
``transformer.h.{i}.mlp.c_fc / c_proj``, ``action_decoder``), duplicates under ``vam.joint_model.*``
and the mask buffer ``vam.attn_mask`` (both ignored). Sizes from ``hyper_parameters["vam_conf"]``;
muP bases from the top-level ``gpt_mup_base_shapes`` and ``action_mup_base_shapess`` (double "s",
as written by the reference), defaults 256 (VaViM) / 64 (expert width) / 256 (expert attention).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from vavam.action.model import VideoActionModel
from vavam.config import ActionConfig
from vavam.io import CONFIG_FILE, MODEL_FILE, is_checkpoint_folder, load_checkpoint, save_checkpoint
from vavam.video.convert import (
    _read_released,
    check_state_fits,
    check_unit_scales,
    file_error,
    own_name,
    reference_key,
    released_video_key,
    strip_prefix,
    strip_wrapper_prefixes,
    video_config_from_reference,
    video_state_from_reference,
)

DEFAULT_BASE_WIDTH = 64
DEFAULT_BASE_ATTENTION_WIDTH = 256

_ENCODER_KEYS = {
    "action_encoder.linear_1.weight": "encoder.action_proj.weight",
    "action_encoder.linear_2.weight": "encoder.fuse_proj.weight",
    "action_encoder.linear_3.weight": "encoder.out_proj.weight",
    "action_encoder.command_embedding.weight": "encoder.command_emb.weight",
    "action_encoder.action_positional_embedding.weight": "encoder.horizon_pos_emb.weight",
    "action_decoder.weight": "readout.weight",
}
_BLOCK_KEYS = {
    "attn.c_attn.weight": "attn.qkv_proj.weight",
    "attn.c_proj.weight": "attn.out_proj.weight",
    "mlp.c_fc.weight": "mlp.fc_in.weight",
    "mlp.c_proj.weight": "mlp.fc_out.weight",
}
_BLOCK_RE = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")


def expert_state_from_reference(ref_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference ``MupActionExpert`` state dict (no prefix) -> :class:`ActionExpert` state dict."""
    out: dict[str, torch.Tensor] = {}
    for key, value in ref_state.items():
        if key in _ENCODER_KEYS:
            out[_ENCODER_KEYS[key]] = value
        elif (m := _BLOCK_RE.match(key)) and m.group(2) in _BLOCK_KEYS:
            out[f"blocks.{m.group(1)}.{_BLOCK_KEYS[m.group(2)]}"] = value
        else:
            raise KeyError(f"unexpected action-expert parameter {key!r} in the released state dict")
    return out


def _base(shapes: Mapping[str, Any] | None, key: str, axis: int, default: int) -> int:
    if isinstance(shapes, Mapping):
        dims = shapes.get(key)
        if dims is not None and len(dims) > axis and dims[axis] is not None:
            return int(dims[axis])
    return default


def action_config_from_reference(
    vam_conf: Mapping[str, Any],
    gpt_base_shapes: Mapping[str, Any] | None = None,
    action_base_shapes: Mapping[str, Any] | None = None,
) -> ActionConfig:
    """``hyper_parameters["vam_conf"]`` + stored base shapes -> :class:`ActionConfig`."""
    video = video_config_from_reference(vam_conf["gpt_config"], gpt_base_shapes)
    ac = vam_conf["action_config"]
    if int(ac.get("attention_dim", video.width)) != video.width:
        raise ValueError(f"expert attention_dim {ac.get('attention_dim')} != VaViM width {video.width}")
    if int(ac.get("dim_heads", video.head_dim)) != video.head_dim:
        raise ValueError(f"expert dim_heads {ac.get('dim_heads')} != VaViM head dim {video.head_dim}")
    if int(ac.get("nb_layers", video.num_layers)) != video.num_layers:
        raise ValueError("the expert and VaViM must have the same number of layers")
    if int(ac.get("mlp_dim_mult", 4)) != 4:
        raise ValueError("only expert MLP ratio 4 is supported")
    check_unit_scales(ac, "action expert")
    d = ActionConfig()
    return ActionConfig(
        video=video,
        width=int(ac["embedding_dim"]),
        base_width=_base(action_base_shapes, "action_decoder.weight", 1, DEFAULT_BASE_WIDTH),
        base_attention_width=_base(
            action_base_shapes, "transformer.h.0.attn.c_proj.weight", 1, DEFAULT_BASE_ATTENTION_WIDTH
        ),
        action_dim=int(ac.get("action_dim", d.action_dim)),
        horizon=int(ac.get("action_horizon", d.horizon)),
        num_commands=int(ac.get("number_high_level_command", d.num_commands)),
        init_std=float(ac.get("init_std", 0.02)),
        train_frames=int(vam_conf.get("finetuning_timesteps", d.train_frames)),
        action_scaling=float(vam_conf.get("action_scaling", d.action_scaling)),
        flow_sig_min=float(vam_conf.get("flow_sig_min", d.flow_sig_min)),
        num_inference_steps=int(vam_conf.get("num_inference_steps", d.num_inference_steps)),
        final_action_clip_value=vam_conf.get("final_action_clip_value"),
        max_period=float(ac.get("max_period", d.max_period)),
    )


def build_from_state(
    config: ActionConfig, state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
    source: str | None = None, name_in_file: Callable[[str], str] | None = None,
    described_by: str = "its hyper-parameters",
) -> VideoActionModel:
    """:class:`VideoActionModel` on ``device`` holding ``state`` (strict), float32, eval mode, frozen VaViM.

    With ``source``, a state that does not fit is refused with a ``ValueError`` naming ``source`` and the parameters
    as ``name_in_file`` names them (default: as the released file does, :func:`released_action_key`).
    """
    with torch.device("meta"):
        model = VideoActionModel(config)
    if source is not None:
        check_state_fits(model, state, name_in_file or released_action_key, source, described_by)
    state = {k: v.to(device=device, dtype=torch.float32) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    model.video.requires_grad_(False)
    return model.eval()


def load_released_action(path: str | os.PathLike, device: str | torch.device = "cpu") -> VideoActionModel:
    """Load the authors' VaVAM ``.pt`` (also a DeepSpeed-consolidated file or checkpoint directory) -> :class:`VideoActionModel`."""
    ckpt = _read_released(Path(path))
    try:
        vam_conf = ckpt["hyper_parameters"]["vam_conf"]
        state = ckpt["state_dict"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a VaVAM Lightning checkpoint (missing {exc}): the expert's sizes are read from "
                         "hyper_parameters['vam_conf'], so a bare state dict is not read (unlike a VaViM's, whose "
                         "sizes its shapes give); load the Lightning checkpoint the authors released") from exc
    state = strip_wrapper_prefixes(state)
    outside = [k for k in state if not k.startswith("vam.")]  # reported by _check_extras
    state = strip_prefix(state, "vam.")
    video_ref, expert_ref = strip_prefix(state, "gpt."), strip_prefix(state, "action_expert.")
    if not video_ref or not expert_ref:
        raise ValueError(f"{path}: no 'vam.gpt.' / 'vam.action_expert.' parameters in the state dict")
    _check_extras(state, path, outside)
    gpt_shapes = ckpt.get("gpt_mup_base_shapes")
    action_shapes = ckpt.get("action_mup_base_shapess", ckpt.get("action_mup_base_shapes"))
    try:
        config = action_config_from_reference(vam_conf, gpt_shapes, action_shapes)
        native = {f"video.{k}": v for k, v in video_state_from_reference(video_ref).items()}
        native.update({f"expert.{k}": v for k, v in expert_state_from_reference(expert_ref).items()})
    except (KeyError, ValueError, TypeError) as exc:  # names the file (messages of the converters do not)
        raise file_error(path, exc) from exc
    return build_from_state(config, native, device, source=str(path))


def released_action_key(key: str) -> str:
    """Our VaVAM parameter name -> the released file's (``vam.gpt.*`` / ``vam.action_expert.*``)."""
    part, _, rest = key.partition(".")
    if part == "video":
        return f"vam.gpt.{released_video_key(rest)}"
    return f"vam.action_expert.{reference_key(rest, _ENCODER_KEYS, _BLOCK_KEYS)}"


_KNOWN_EXTRAS = ("joint_model.gpt.", "joint_model.action_expert.", "attn_mask")  # duplicates and the mask buffer


def _check_extras(state: Mapping[str, torch.Tensor], path: str | os.PathLike, outside: Sequence[str] = ()) -> None:
    """Warn about ``vam.*`` entries (``state``, prefix stripped) the loader does not read (another architecture's?),
    about entries ``outside`` the ``vam.`` module, and about duplicate copies (``vam.joint_model.*``) that differ
    from the ones read."""
    read = ("gpt.", "action_expert.")
    unknown = [f"vam.{k}" for k in state if not k.startswith(read + _KNOWN_EXTRAS)] + list(outside)
    if unknown:
        warnings.warn(f"{path}: ignoring {len(unknown)} unexpected entries: {', '.join(unknown[:5])}", stacklevel=4)
    differ = [f"vam.joint_model.{k[len('joint_model.'):]}" for k, v in state.items() if k.startswith("joint_model.")
              and k[len("joint_model."):] in state and not torch.equal(v, state[k[len("joint_model."):]])]
    if differ:
        warnings.warn(f"{path}: {len(differ)} duplicate entries differ from the copies read (vam.gpt.* / "
                      f"vam.action_expert.*): {', '.join(differ[:5])}", stacklevel=4)


def load_action_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> VideoActionModel:
    """Load a VaVAM: our checkpoint folder or the authors' released ``.pt`` (a Lightning checkpoint with its
    ``hyper_parameters``, also DeepSpeed-consolidated; a bare state dict is refused, as the expert's sizes come from
    ``hyper_parameters["vam_conf"]``). Eval mode, VaViM frozen."""
    path = Path(path)
    if is_checkpoint_folder(path):
        state, config, _ = load_checkpoint(path, expected=ActionConfig)
        # source: weights that do not fit config.json are named with the folder (a bare RuntimeError did not)
        return build_from_state(config, state, device, source=str(path / MODEL_FILE), name_in_file=own_name,
                                described_by=CONFIG_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or checkpoint folder")
    return load_released_action(path, device)


def save_action_model(model: VideoActionModel, folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``model`` (VaViM + expert) as our checkpoint folder."""
    return save_checkpoint(folder, model.state_dict(), model.config, meta)
