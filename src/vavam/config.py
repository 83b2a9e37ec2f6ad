"""Frozen dataclass configs of every model, and their (de)serialisation to JSON-able dicts.

Each config carries a ``kind`` class attribute used as the discriminator in ``config.json``.
Variations are made with :func:`dataclasses.replace`; presets live in :mod:`vavam.presets`.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True)
class VQConfig:
    """LlamaGen-style VQ tokenizer (conv encoder/decoder, L2-normalised codebook).

    The downsampling factor is ``2 ** (len(ch_mult) - 1)``.
    """

    kind: ClassVar[str] = "vq"
    codebook_size: int = 16384
    codebook_embed_dim: int = 8
    codebook_l2_norm: bool = True
    commit_loss_beta: float = 0.25
    entropy_loss_ratio: float = 0.0
    base_channels: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    z_channels: int = 256
    num_res_blocks: int = 2
    norm_groups: int = 32
    dropout: float = 0.0

    def __post_init__(self) -> None:
        _check_positive_ints(self, "codebook_size", "codebook_embed_dim", "base_channels", "z_channels", "norm_groups")
        if not self.ch_mult or not all(_is_of(m, int) and m > 0 for m in self.ch_mult):
            # () gave a downsampling factor of 2 ** -1 = 0.5
            raise ValueError(f"vq config field 'ch_mult' must be a non-empty list of positive int, "
                             f"got {self.ch_mult!r}")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)


@dataclass(frozen=True)
class VideoConfig:
    """VaViM: GPT-2-style next-token model over frames of VQ tokens, muP-parametrised.

    ``base_width`` is the muP base width (256 in the released models); the tied readout divides
    its input by ``width / base_width``.
    """

    kind: ClassVar[str] = "video"
    width: int = 768
    num_layers: int = 24
    head_dim: int = 128
    mlp_ratio: int = 4
    vocab_size: int = 16385
    num_frames: int = 8
    tokens_per_frame: int = 576
    init_std: float = 0.0289
    base_width: int = 256

    def __post_init__(self) -> None:
        _check_positive_ints(self, "width", "num_layers", "head_dim", "mlp_ratio", "vocab_size", "num_frames",
                             "tokens_per_frame", "base_width")
        if self.width % self.head_dim:  # num_heads = width // head_dim would drop the remainder
            raise ValueError(f"video config: width {self.width} is not a multiple of head_dim {self.head_dim}")

    @property
    def num_heads(self) -> int:
        return self.width // self.head_dim

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width


@dataclass(frozen=True)
class ActionConfig:
    """VaVAM: action expert reading a VaViM's keys/values at every layer, trained by flow matching.

    The expert has ``video.num_layers`` layers and attention of the video width and heads.
    ``base_width`` / ``base_attention_width`` are the expert's muP bases (64 / 256 released).

    ``ego_speed``: also condition every action token on the ego speed (m/s, divided by
    ``speed_scaling``) of its context frame. Off in the released models, which see only images and
    the command (reference limitation 10); a trajectory planner that must guess its own speed from
    frames loses to one that reads it (the constant-velocity baseline reads it).

    ``speed_prior`` (needs ``ego_speed``): the flow generates the deviation from driving straight on
    at the ego speed (the constant-velocity trajectory, ``speed x 0.5 s x k`` forward at waypoint k),
    and the model adds that trajectory back; the expert then learns turns and speed changes rather than
    the speed itself, and ``action_scaling`` should match the deviations (a few metres), not whole
    trajectories (``final_action_clip_value`` then bounds the deviation). Off in the released models.
    """

    kind: ClassVar[str] = "action"
    video: VideoConfig = field(default_factory=VideoConfig)
    width: int = 192
    base_width: int = 64
    base_attention_width: int = 256
    action_dim: int = 2
    horizon: int = 6
    num_commands: int = 3
    init_std: float = 0.0086
    train_frames: int = 8
    action_scaling: float = 70.0
    flow_sig_min: float = 0.001
    num_inference_steps: int = 10
    final_action_clip_value: float | None = None
    max_period: float = 10000.0
    ego_speed: bool = False
    speed_scaling: float = 10.0
    speed_prior: bool = False

    def __post_init__(self) -> None:
        _check_positive_ints(self, "width", "base_width", "base_attention_width", "action_dim", "horizon",
                             "num_commands", "train_frames")
        for name in ("action_scaling", "speed_scaling"):  # trajectories (speeds) are divided by them
            value = getattr(self, name)
            if _is_of(value, float) and not (math.isfinite(value) and value > 0):
                raise ValueError(f"action config field {name!r} must be a positive finite number, got {value!r}")

    @property
    def width_mult(self) -> float:
        return self.width / self.base_width


def _check_positive_ints(config: Any, *names: str) -> None:
    """Refuse a size field below 1 (0 used to build empty layers or divide by zero much later), naming it; values
    of another type are left to :func:`config_from_dict`'s type check."""
    for name in names:
        value = getattr(config, name)
        if _is_of(value, int) and value < 1:
            raise ValueError(f"{type(config).kind} config field {name!r} must be a positive int, got {value!r}")


CONFIG_TYPES: dict[str, type] = {c.kind: c for c in (VQConfig, VideoConfig, ActionConfig)}


def config_to_dict(config: Any) -> dict[str, Any]:
    """Config dataclass -> JSON-able dict with a ``kind`` key (nested configs included)."""
    out: dict[str, Any] = {"kind": type(config).kind}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            value = config_to_dict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


def config_from_dict(data: dict[str, Any]) -> Any:
    """Inverse of :func:`config_to_dict`. Unknown kinds or fields raise ``ValueError``.

    A nested config field (``ActionConfig.video``) takes its declared kind when its dict has no ``kind``;
    a dict of another kind, or a value that is not a dict, raises ``ValueError``.
    """
    if not isinstance(data, dict):  # e.g. a config.json holding a list: dict() of it raised a TypeError
        raise ValueError(f"a config must be a JSON object with a 'kind' key, got {type(data).__name__} {data!r:.80}")
    data = dict(data)
    kind = data.pop("kind", None)
    if kind not in CONFIG_TYPES:
        raise ValueError(f"config kind {kind!r} is not one of {sorted(CONFIG_TYPES)}")
    cls = CONFIG_TYPES[kind]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(fields)
    if unknown:
        raise ValueError(f"{kind} config has unknown fields {sorted(unknown)}")
    hints = typing.get_type_hints(cls)  # the declared types, resolved
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        nested = hints[name] if hints[name] in CONFIG_TYPES.values() else None
        if nested is not None:
            if not isinstance(value, dict):
                raise ValueError(f"{kind} config field {name!r} must be a {nested.kind} config object, got {value!r}")
            value = config_from_dict({"kind": nested.kind, **value})
            if not isinstance(value, nested):
                raise ValueError(f"{kind} config field {name!r} must be a {nested.kind} config, got {value.kind!r}")
        else:
            value = tuple(value) if isinstance(value, list) else value
            _check_field_type(kind, name, hints[name], value)
        kwargs[name] = value
    return cls(**kwargs)


def _check_field_type(kind: str, name: str, hint: Any, value: Any) -> None:
    """Refuse a value that is not of its field's declared type (``int``, ``float``, ``bool``, ``str``, ``X | None``,
    ``tuple[int, ...]``), naming the config and the field: a ``"64"`` from a hand-edited config.json would
    otherwise reach the model. An ``int`` is a ``float``; a ``bool`` is neither."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        ok = isinstance(value, tuple) and all(_is_of(v, args[0]) for v in value)
        what = f"a list of {args[0].__name__}"
    else:
        ok, what = _is_of(value, hint), getattr(hint, "__name__", str(hint))
    if not ok:
        raise ValueError(f"{kind} config field {name!r} must be {what}, got {value!r}")


def _is_of(value: Any, expected: Any) -> bool:
    if expected is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return not isinstance(expected, type) or isinstance(value, expected)
