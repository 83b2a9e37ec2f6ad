"""Loading and saving VaViM: the authors' released ``.pt`` files and our checkpoint folders.

Released layout (Lightning dict, read through :func:`vavam.io.safe_torch_load`, never by running
pickled code): ``state_dict`` with a ``network.`` prefix (``transformer.wie/wse/wte``,
``transformer.h.{i}.attn.c_attn / c_proj``, ``transformer.h.{i}.mlp.c_fc / c_proj``, ``lm_head``
tied to ``wie``), sizes in ``hyper_parameters["network"]``, muP bases in the top-level
``mup_base_shapes`` (``{name: [base dim or None per axis]}``). DeepSpeed-consolidated files
(Lightning's ``convert_zero_checkpoint_to_fp32_state_dict``, the reference's ``*_fused.pt``) have the same
layout with an fp32 ``state_dict``, plus DeepSpeed client keys (``ds_config``, ``param_shapes``, ...) that are
ignored; Lightning < 2.1 left a ``_forward_module.`` prefix, older wrappers ``module.``. A DeepSpeed checkpoint
directory is read from ``checkpoint/mp_rank_00_model_states.pt`` (weights under ``module``). A bare state dict
(DeepSpeed's own ``zero_to_fp32`` output: parameter names only, with or without those prefixes) is accepted
too: the sizes are then inferred from the tensor shapes (head dim 128 unless given), the muP base width is the
default 256.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from vavam.config import VideoConfig
from vavam.io import CONFIG_FILE, MODEL_FILE, is_checkpoint_folder, load_checkpoint, safe_torch_load, save_checkpoint
from vavam.video.model import VideoGPT

DEFAULT_BASE_WIDTH = 256

_BLOCK_KEYS = {
    "attn.c_attn.weight": "attn.qkv_proj.weight",
    "attn.c_proj.weight": "attn.out_proj.weight",
    "mlp.c_fc.weight": "mlp.fc_in.weight",
    "mlp.c_proj.weight": "mlp.fc_out.weight",
}
_TOP_KEYS = {
    "transformer.wie.weight": "token_emb.weight",
    "transformer.wse.weight": "spatial_pos_emb.weight",
    "transformer.wte.weight": "temporal_pos_emb.weight",
}
_BLOCK_RE = re.compile(r"^transformer\.h\.(\d+)\.(.+)$")


def strip_prefix(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Entries of ``state`` whose key starts with ``prefix``, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def video_state_from_reference(ref_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference ``MupGPT2`` state dict (no ``network.`` prefix) -> :class:`VideoGPT` state dict.

    ``lm_head.weight`` must equal ``transformer.wie.weight`` (tied readout) and is dropped.
    Unknown keys raise ``KeyError``.
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in ref_state.items():
        if key in _TOP_KEYS:
            out[_TOP_KEYS[key]] = value
        elif key == "lm_head.weight":
            wie = ref_state.get("transformer.wie.weight")  # missing: named by build_from_state's check
            if wie is not None and not torch.equal(wie, value):
                raise ValueError("lm_head.weight differs from transformer.wie.weight: only tied readouts are supported")
        elif (m := _BLOCK_RE.match(key)) and m.group(2) in _BLOCK_KEYS:
            out[f"blocks.{m.group(1)}.{_BLOCK_KEYS[m.group(2)]}"] = value
        else:
            raise KeyError(f"unexpected VaViM parameter {key!r} in the released state dict")
    return out


def video_state_to_reference(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`video_state_from_reference` (adds ``lm_head.weight`` = the token embedding)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = released_video_key(key)
        if name == key:
            raise KeyError(f"unexpected VaViM parameter {key!r}")
        out[name] = value
    out["lm_head.weight"] = state["token_emb.weight"]
    return out


def base_width_from_shapes(base_shapes: Mapping[str, Any] | None, default: int = DEFAULT_BASE_WIDTH) -> int:
    """muP base width of a VaViM from stored base shapes (``transformer.wie.weight: [None, base]``)."""
    if not isinstance(base_shapes, Mapping):
        return default
    for key in ("transformer.wie.weight", "network.transformer.wie.weight"):
        dims = base_shapes.get(key)
        if dims is not None and len(dims) == 2 and dims[1] is not None:
            return int(dims[1])
    return default


def check_unit_scales(kwargs: Mapping[str, Any], what: str) -> None:
    """Refuse ``attn_scale`` / ``output_scale`` other than 1 (muP multipliers of the reference's ``MupGPT2`` /
    ``MupActionExpert`` that our configs have no field for: ignoring them would change every output)."""
    for name in ("attn_scale", "output_scale"):
        value = kwargs.get(name, 1.0)
        if value is not None and float(value) != 1.0:
            raise ValueError(f"{what} {name}={value!r} is not supported (only 1.0, as in the released models)")


def video_config_from_reference(network: Mapping[str, Any], base_shapes: Mapping[str, Any] | None = None) -> VideoConfig:
    """``hyper_parameters["network"]`` (``MupGPT2`` kwargs) + stored base shapes -> :class:`VideoConfig`."""
    if network.get("output_tied", True) is False:
        raise ValueError("only VaViM models with a tied readout (output_tied=True) are supported")
    check_unit_scales(network, "VaViM")
    defaults = VideoConfig()
    return VideoConfig(
        width=int(network["embedding_dim"]),
        num_layers=int(network["nb_layers"]),
        head_dim=int(network.get("dim_heads", defaults.head_dim)),
        mlp_ratio=int(network.get("mlp_dim_mult", defaults.mlp_ratio)),
        vocab_size=int(network.get("vocabulary_size", defaults.vocab_size)),
        num_frames=int(network.get("nb_timesteps", defaults.num_frames)),
        tokens_per_frame=int(network.get("nb_tokens_per_timestep", defaults.tokens_per_frame)),
        init_std=float(network.get("init_std", 0.02)),
        base_width=base_width_from_shapes(base_shapes),
    )


def video_network_from_state(ref_state: Mapping[str, torch.Tensor], head_dim: int | None = None) -> dict[str, Any]:
    """``MupGPT2`` kwargs inferred from a reference state dict (no prefix), for files without ``hyper_parameters``.

    The head dimension is not visible in the shapes: ``head_dim`` if given, else 128 (all released models).
    """
    try:
        vocab, width = ref_state["transformer.wie.weight"].shape
        tokens_per_frame = ref_state["transformer.wse.weight"].shape[0]
        frames = ref_state["transformer.wte.weight"].shape[0]
    except KeyError as exc:
        raise ValueError(f"cannot infer the VaViM size: no {exc} in the state dict") from exc
    layers = {int(m.group(1)) for key in ref_state if (m := _BLOCK_RE.match(key))}
    if not layers or layers != set(range(len(layers))):
        raise ValueError(f"cannot infer the VaViM depth from block indices {sorted(layers)[:8]}")
    fc = ref_state.get("transformer.h.0.mlp.c_fc.weight")
    head_dim = 128 if head_dim is None else int(head_dim)
    if width % head_dim:
        raise ValueError(f"width {width} is not a multiple of head dim {head_dim}: pass the model's head_dim")
    return {
        "embedding_dim": int(width),
        "nb_layers": len(layers),
        "dim_heads": head_dim,
        "mlp_dim_mult": int(fc.shape[0] // width) if fc is not None else 4,
        "vocabulary_size": int(vocab),
        "nb_timesteps": int(frames),
        "nb_tokens_per_timestep": int(tokens_per_frame),
        "output_tied": True,
    }


def _is_bare_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def strip_wrapper_prefixes(state: Mapping[str, Any]) -> dict[str, Any]:
    """Remove the DeepSpeed / Lightning wrapper prefixes (``_forward_module.``, ``module.``) of a state dict.

    Keys without the prefix are kept as they are (not dropped), so that the loaders can report them.
    """
    state = dict(state)
    for prefix in ("module.", "_forward_module."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state.items()}
    return state


def warn_ignored(path: str | os.PathLike, names: list[str]) -> None:
    """Warn that the released file at ``path`` holds state-dict entries ``names`` that the loader does not read."""
    if names:
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        warnings.warn(f"{path}: ignoring {len(names)} unexpected state-dict entries: {', '.join(names[:5])}{more}",
                      stacklevel=4)


def file_error(path: str | os.PathLike, exc: Exception) -> ValueError:
    """``exc`` (raised while reading the released file at ``path``) as a ``ValueError`` naming the file.

    A bare ``KeyError('name')`` is a hyper-parameter the file lacks; the converters' own ``KeyError`` s carry a message.
    """
    message = str(exc)
    if isinstance(exc, KeyError) and exc.args:
        arg = str(exc.args[0])
        message = arg if " " in arg else f"missing {arg!r} in the hyper-parameters"
    return ValueError(f"{path}: {message}")


def reference_key(key: str, top: Mapping[str, str], block: Mapping[str, str]) -> str:
    """Our parameter name -> the released file's (``top`` / ``block``: file name -> ours, as the converters'
    tables); names without a counterpart come back unchanged."""
    inverse_top = {ours: theirs for theirs, ours in top.items()}
    if key in inverse_top:
        return inverse_top[key]
    inverse_block = {ours: theirs for theirs, ours in block.items()}
    parts = key.split(".", 2)
    if len(parts) == 3 and parts[0] == "blocks" and parts[2] in inverse_block:
        return f"transformer.h.{parts[1]}.{inverse_block[parts[2]]}"
    return key


def own_name(key: str) -> str:
    """Parameter names as our checkpoint folders hold them (the modules' own names)."""
    return key


def check_state_fits(
    model: torch.nn.Module, state: Mapping[str, torch.Tensor], name_in_file: Callable[[str], str], source: str,
    described_by: str = "its hyper-parameters",
) -> None:
    """Raise ``ValueError`` naming, as the file names them, the parameters ``state`` lacks, holds at a shape
    ``model`` (on any device, meta included) does not have, or holds beyond the model's. ``described_by`` names
    where the model's sizes came from (the released file's hyper-parameters, our folder's ``config.json``)."""
    expected = model.state_dict()
    missing = [name_in_file(k) for k in expected if k not in state]
    wrong = [f"{name_in_file(k)} {list(state[k].shape)} (expected {list(v.shape)})"
             for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)]
    unexpected = [name_in_file(k) for k in state if k not in expected]
    problems = []
    for what, names in (("missing", missing), ("wrong shape", wrong), ("unexpected", unexpected)):
        if names:
            more = f" and {len(names) - 5} more" if len(names) > 5 else ""
            problems.append(f"{what}: {', '.join(names[:5])}{more}")
    if problems:
        raise ValueError(f"{source}: does not fit the model described by {described_by}; {'; '.join(problems)}")


def _meta_model(config: VideoConfig) -> VideoGPT:
    with torch.device("meta"):
        return VideoGPT(config)


def build_from_state(
    config: VideoConfig, state: Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
    source: str | None = None, name_in_file: Callable[[str], str] | None = None,
    described_by: str = "its hyper-parameters",
) -> VideoGPT:
    """Build a :class:`VideoGPT` on ``device`` holding ``state`` (strict), float32, eval mode.

    With ``source``, a state that does not fit is refused with a ``ValueError`` naming ``source`` and the
    parameters as ``name_in_file`` names them (``described_by``: where the config came from).
    """
    model = _meta_model(config)
    if source is not None:
        check_state_fits(model, state, name_in_file or own_name, source, described_by)
    state = {k: v.to(device=device, dtype=torch.float32) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


_PART_RE = re.compile(r"\.part_[a-z]{2,}$")  # `split` output: NAME.part_aa, NAME.part_ab, ...


def _read_released(path: Path) -> dict[str, Any]:
    """The released file (or DeepSpeed checkpoint directory) as plain values.

    A DeepSpeed directory's ``checkpoint/mp_rank_00_model_states.pt`` holds the module's weights in the
    training dtype (bf16 for the authors' runs); the ``*_fused.pt`` / released files hold float32.
    The width-2048 releases come as a split tar archive: a part (or the archive) is refused with how to
    unpack it.
    """
    if _PART_RE.search(path.name):
        stem = _PART_RE.sub("", path.name)
        raise ValueError(f"{path}: one part of a split archive, not a checkpoint; join and unpack the parts "
                         f"first (`cat {stem}.part_* | tar xz`) and load the .pt file inside")
    if path.is_file():
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":  # gzip: torch files are zip or pickle
                raise ValueError(f"{path}: a gzip archive, not a checkpoint; unpack it first (`tar xzf {path.name}`) "
                                 "and load the .pt file inside")
    if path.is_dir():  # DeepSpeed checkpoint directory
        inner = path / "checkpoint" / "mp_rank_00_model_states.pt"
        if not inner.is_file():
            raise ValueError(f"{path}: neither a vavam checkpoint folder nor a DeepSpeed checkpoint directory")
        ckpt = safe_torch_load(inner)
        if "state_dict" not in ckpt and "module" in ckpt:
            ckpt = dict(ckpt, state_dict=ckpt["module"])
        return ckpt
    return safe_torch_load(path)


def load_released_video(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    head_dim: int | None = None,
    base_width: int | None = None,
) -> VideoGPT:
    """Load the authors' VaViM ``.pt`` (or DeepSpeed directory / consolidated file / bare state dict) -> :class:`VideoGPT`.

    ``head_dim`` is used only for files without ``hyper_parameters`` (default 128), ``base_width`` only for
    files without stored ``mup_base_shapes`` (default 256).
    """
    ckpt = _read_released(Path(path))
    if _is_bare_state_dict(ckpt):
        ckpt = {"state_dict": ckpt}
    if not isinstance(ckpt, Mapping) or not isinstance(ckpt.get("state_dict"), Mapping):
        raise ValueError(  # noqa: TRY004 - a wrong file, not a wrong argument type
            f"{path}: not a VaViM Lightning checkpoint or state dict (no 'state_dict')"
        )
    state = strip_wrapper_prefixes(ckpt["state_dict"])
    if any(k.startswith("network.") for k in state):
        warn_ignored(path, [k for k in state if not k.startswith("network.")])
        state = strip_prefix(state, "network.")
    if not state:
        raise ValueError(f"{path}: no VaViM ('network.transformer.*') parameters in the state dict")
    hyper = ckpt.get("hyper_parameters")
    network = hyper.get("network") if isinstance(hyper, Mapping) else None
    try:
        if network is None:
            if any(k.startswith("vam.") for k in state):
                raise ValueError("a VaVAM checkpoint ('vam.*' parameters), not a VaViM one: "
                                 "load it with vavam.load_action_model")
            network = video_network_from_state(state, head_dim)
        shapes = ckpt.get("mup_base_shapes")
        if not isinstance(shapes, Mapping) and base_width is not None:
            shapes = {"transformer.wie.weight": [None, int(base_width)]}
        config = video_config_from_reference(network, shapes)
        native = video_state_from_reference(state)
    except (KeyError, ValueError, TypeError) as exc:  # names the file (messages of the converters do not)
        raise file_error(path, exc) from exc
    return build_from_state(config, native, device, source=str(path), name_in_file=released_video_key)


def released_video_key(key: str) -> str:
    """Our VaViM parameter name -> the released file's (without its ``network.`` prefix)."""
    return reference_key(key, _TOP_KEYS, _BLOCK_KEYS)


def load_video_model(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    head_dim: int | None = None,
    base_width: int | None = None,
) -> VideoGPT:
    """Load a VaViM: our checkpoint folder or the authors' released ``.pt`` file. Eval mode.

    Args:
        path: folder with ``config.json`` / ``model.safetensors`` / ``meta.json``, a ``.pt`` file (Lightning
            checkpoint, DeepSpeed-consolidated file or bare state dict) or a DeepSpeed checkpoint directory.
        device: where the weights go.
        head_dim: head dimension for files that store no ``hyper_parameters`` (default 128).
        base_width: muP base width for files that store no ``mup_base_shapes`` (default 256).
    """
    path = Path(path)
    if is_checkpoint_folder(path):
        state, config, _ = load_checkpoint(path, expected=VideoConfig)
        # source: weights that do not fit config.json are named with the folder (a bare RuntimeError did not)
        return build_from_state(config, state, device, source=str(path / MODEL_FILE), described_by=CONFIG_FILE)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    return load_released_video(path, device, head_dim, base_width)


def save_video_model(model: VideoGPT, folder: str | os.PathLike, meta: dict | None = None) -> Path:
    """Write ``model`` as our checkpoint folder (``model.safetensors`` + ``config.json`` + ``meta.json``)."""
    return save_checkpoint(folder, model.state_dict(), model.config, meta)
