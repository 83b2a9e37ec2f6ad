"""Training checkpoints of any strategy -> our model folder (``model.safetensors`` + ``config.json`` + ``meta.json``).

Accepted inputs (``vavam checkpoint consolidate --checkpoint CHECKPOINT --out OUT``):

- a Lightning ``.ckpt`` file of ``vavam train video`` / ``vavam train action``, written on one device,
  by DDP or by FSDP with full state dicts (weights under ``state_dict``, prefix ``model.``; the model
  config in ``hyper_parameters``), read weights-only with its hash checked when it has a sidecar;
- an FSDP sharded checkpoint folder (``--checkpoint-format sharded``: ``torch.distributed.checkpoint``
  shards + Lightning's ``meta.pt``), gathered on one CPU without a process group;
- a DeepSpeed checkpoint folder (``latest`` / ``<tag>/mp_rank_00_model_states.pt`` + ZeRO optimiser
  shards), whose float32 master weights are rebuilt with DeepSpeed's ``zero_to_fp32`` (the
  ``deepspeed`` package must be installed; the bf16 module copy alone would lose precision);
- a ``step-*.ckpt`` of ``vavam train tokenizer`` (weights under ``model``, config under ``config``).

A run trained with ``--ema`` keeps its weight average in each checkpoint (beside the raw weights it resumes
from) and saves the average as its model: consolidation takes the average too (``--weights raw``: the
optimiser's weights). The kind (video / action / tokenizer) is read from the stored config. Wrapper prefixes that
strategies add to names (``_forward_module.``, ``_fsdp_wrapped_module.``, ``_checkpoint_wrapped_module.``,
``_orig_mod.``, ``module.``) are removed; the result is loaded strictly into a freshly built model, so a
checkpoint that does not match its config fails here, not later. The folder then loads on one CPU with
``vavam.load_video_model`` / ``load_action_model`` / ``load_tokenizer``.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from vavam.train.distributed import clean_name, deepspeed_available

Kind = Literal["auto", "video", "action", "tokenizer"]
Weights = Literal["average", "raw"]
KINDS = ("video", "action", "tokenizer")

__all__ = ["TrainingCheckpoint", "check_sharded_pickles", "consolidate", "consolidate_to", "read_training_checkpoint"]


@dataclass
class TrainingCheckpoint:
    """A training checkpoint reduced to what a model folder needs.

    Attributes:
        kind: ``video``, ``action`` or ``tokenizer``.
        config: the model's config dataclass.
        state: the model's state dict (plain names, float tensors on CPU).
        source: ``lightning`` (one file), ``fsdp-sharded``, ``deepspeed`` or ``tokenizer-loop``.
        step: the optimiser step it was written at (None when unknown).
        weights: ``average`` (an ``--ema`` run's weight average) or ``raw`` (the optimiser's weights).
    """

    kind: str
    config: Any
    state: dict[str, torch.Tensor]
    source: str
    step: int | None
    weights: str = "raw"


def _kind_of(config: Any) -> str:
    from vavam.config import ActionConfig, VideoConfig, VQConfig

    if isinstance(config, VideoConfig):
        return "video"
    if isinstance(config, ActionConfig):
        return "action"
    if isinstance(config, VQConfig):
        return "tokenizer"
    raise ValueError(f"unexpected config type {type(config).__name__}")


def _config_from_hparams(hparams: Mapping[str, Any] | None, path: Path) -> Any:
    from vavam.config import VideoConfig, config_from_dict

    hparams = hparams or {}
    if isinstance(hparams.get("vavam_config"), Mapping):
        return config_from_dict(dict(hparams["vavam_config"]))
    if isinstance(hparams.get("config"), Mapping):  # VaViM runs written before "vavam_config" existed
        return VideoConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in hparams["config"].items()})
    raise ValueError(f"{path}: the checkpoint stores no model config (hyper_parameters 'vavam_config'); it was not "
                     "written by vavam train video / action, so the model cannot be rebuilt from it")


def _model_state(state: Mapping[str, Any], prefix: str = "model.") -> dict[str, torch.Tensor]:
    """Plain model names: wrapper prefixes removed, then the LightningModule attribute prefix."""
    out: dict[str, torch.Tensor] = {}
    for name, value in state.items():
        if not torch.is_tensor(value):
            continue
        name = clean_name(name)
        name = name.removeprefix("module.")
        if name.startswith(prefix):
            out[name[len(prefix):]] = value
    return out


def _ema_average(meta: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor] | None:
    """The weight average that an ``--ema`` run keeps in its checkpoints (the state of its
    :class:`~vavam.train.ema.EMAWeights` callback), under LightningModule names (``model.expert...``); None
    when the run kept none."""
    callbacks = meta.get("callbacks")
    if not isinstance(callbacks, Mapping):
        return None
    from vavam.train.ema import EMAWeights

    for key, state in callbacks.items():
        prefix = EMAWeights.prefix_of(key)
        if prefix is None or not isinstance(state, Mapping):
            continue
        average = state.get("average")
        if not isinstance(average, Mapping) or not average:
            raise ValueError(f"{path}: its {key} state holds no weight average")
        return {(f"{prefix}.{name}" if prefix else name): value for name, value in average.items()}
    return None


def _step_of(meta: Mapping[str, Any]) -> int | None:
    step = meta.get("global_step", meta.get("step"))
    return int(step) if isinstance(step, (int, float)) else None


def _read_file(path: Path) -> dict[str, Any]:
    from vavam.io import safe_torch_load
    from vavam.train.resume import CheckpointError, read_checkpoint

    try:
        return read_checkpoint(path)
    except CheckpointError as exc:
        if "weights-only" not in str(exc):  # missing, truncated, hash mismatch: never fall back
            raise
        return safe_torch_load(path)  # e.g. a DeepSpeed-consolidated file holding non-tensor client objects


def _deepspeed_tag_dir(path: Path) -> Path:
    """The tag folder to read: the one ``latest`` names, else (no ``latest``) the only one. A ``latest``
    naming no tag, or several tags without a ``latest``, are refused rather than guessed between (tag names
    need not sort by step)."""
    from vavam.train.resume import deepspeed_tags

    tags, named = deepspeed_tags(path)
    if named in tags:
        return path / named
    if named is None and len(tags) == 1:
        return path / tags[0]
    problem = "no 'latest' file" if named is None else f"a 'latest' file naming {named!r}, not one of them"
    raise ValueError(f"{path}: a DeepSpeed checkpoint folder with tags {', '.join(tags)} and {problem}; write the "
                     f"name of the tag to consolidate into {path / 'latest'}")


def _dcp_metadata_globals() -> dict[tuple[str, str], Any]:
    """What a ``torch.distributed.checkpoint`` ``.metadata`` pickle may name: the metadata dataclasses and enums,
    the file reader's storage info, ``torch.Size``, layouts and paths (plain data; nothing that runs code)."""
    import pathlib

    import torch.distributed.checkpoint.metadata as md
    from torch.distributed.checkpoint.filesystem import _StorageInfo

    allowed: dict[tuple[str, str], Any] = {(md.__name__, name): obj for name, obj in vars(md).items()
                                           if isinstance(obj, type) and obj.__module__ == md.__name__}
    allowed[(_StorageInfo.__module__, _StorageInfo.__name__)] = _StorageInfo
    allowed[("torch", "Size")] = torch.Size
    allowed[("torch.serialization", "_get_layout")] = torch.serialization._get_layout
    for cls in (pathlib.Path, pathlib.PosixPath, pathlib.PurePosixPath, pathlib.PureWindowsPath):
        allowed[("pathlib", cls.__name__)] = cls
    return allowed


def _safe_metadata(path: Path) -> list[Any]:
    """The ``.metadata`` pickles of a sharded folder, each read with vavam's restricted unpickler.

    Raises:
        vavam.io.UnsafePickleError: a pickle names a global off :func:`_dcp_metadata_globals` (it would run code).
    """
    from vavam.io import RestrictedUnpickler

    out = []
    for metadata in sorted(path.glob("*.metadata")):
        unpickler = type("DCPMetadataUnpickler", (RestrictedUnpickler,),
                         {"extra_globals": _dcp_metadata_globals(), "source": str(metadata)})
        with open(metadata, "rb") as f:
            out.append(unpickler(f).load())
    return out


def check_sharded_pickles(checkpoint: str | os.PathLike) -> None:
    """Refuse an FSDP sharded folder that would run code when Lightning resumes from it.

    Lightning's FSDP resume reads the folder with ``torch.distributed.checkpoint``, which unpickles the
    ``.metadata`` with plain ``pickle`` and every non-tensor item (optimiser param groups, ...) with
    ``torch.load(weights_only=False)``. This reads those pickles only (no tensor is loaded): the metadata
    with vavam's restricted unpickler and each non-tensor item weights-only.

    Raises:
        vavam.io.UnsafePickleError: the ``.metadata`` names a global off the allow-list.
        CheckpointError: a non-tensor item is not plain data (names the folder and the item), or cannot be read.
    """
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex

    from vavam.train.resume import CheckpointError

    path = Path(checkpoint)
    reader = FileSystemReader(path)
    for metadata in _safe_metadata(path):
        for fqn, entry in metadata.state_dict_metadata.items():
            if not isinstance(entry, BytesStorageMetadata):
                continue
            try:
                info = metadata.storage_data[MetadataIndex(fqn)]
                with open(path / info.relative_path, "rb") as f:
                    raw = reader.transforms.transform_load_stream(
                        None, info.transform_descriptors or (), reader._slice_file(f, info))  # its (de)compression
                    data = io.BytesIO(raw.read(-1))
                torch.load(data, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - not plain data, or unreadable: either way not resumed
                first = str(exc).splitlines()[0] if str(exc) else ""
                raise CheckpointError(f"{path}: item {fqn!r} of the sharded checkpoint does not load weights-only "
                                      f"(resuming would unpickle it with plain pickle, which can run code): "
                                      f"{type(exc).__name__}: {first}") from exc


def _load_sharded_weights_only(path: Path) -> dict[str, Any]:
    """Lightning's ``_load_distributed_checkpoint`` without running pickled code: torch reads a sharded folder's
    ``.metadata`` with plain ``pickle`` and its non-tensor items with ``torch.load(weights_only=False)``, so a
    crafted folder would run code when consolidated. The metadata is first unpickled with vavam's restricted
    unpickler (a global off the allow-list is refused), non-tensor items and ``meta.pt`` load weights-only."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.format_utils import _EmptyStateDictLoadPlanner
    from torch.distributed.checkpoint.state_dict_loader import _load_state_dict

    _safe_metadata(path)

    class WeightsOnlyPlanner(_EmptyStateDictLoadPlanner):
        def load_bytes(self, read_item: Any, value: Any) -> None:
            from torch.distributed.checkpoint._traverse import set_element  # as torch's DefaultLoadPlanner

            loaded = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], loaded)
            else:
                self.state_dict[read_item.dest_index.fqn] = loaded

    checkpoint: dict[str, Any] = {}
    _load_state_dict(checkpoint, storage_reader=FileSystemReader(path), planner=WeightsOnlyPlanner(), no_dist=True)
    extra = path / "meta.pt"  # Lightning's metadata file: the rest of the Lightning checkpoint
    if extra.is_file():
        checkpoint.update(torch.load(extra, map_location="cpu", weights_only=True))
    return checkpoint


def _read_sharded(path: Path) -> dict[str, Any]:
    """An FSDP sharded folder gathered into one dict on the CPU (no process group).

    Raises:
        CheckpointError: a shard or the ``.metadata`` file is missing, truncated or corrupt, named with the
            folder (torch reports it as a ``CheckpointException``, a ``BaseException`` with per-rank tracebacks).
    """
    from torch.distributed.checkpoint.api import CheckpointException

    from vavam.io import UnsafePickleError
    from vavam.train.resume import CheckpointError

    try:
        return _load_sharded_weights_only(path)
    except UnsafePickleError:
        raise
    except (Exception, CheckpointException) as exc:  # noqa: BLE001 - any failure to read is a bad folder
        causes = [pair[0] for pair in exc.failures.values()] if isinstance(exc, CheckpointException) else [exc]
        what = "; ".join(f"{type(c).__name__}: {str(c).splitlines()[0] if str(c) else ''}" for c in causes)
        raise CheckpointError(f"{path}: cannot read the FSDP sharded checkpoint folder (a shard or its .metadata "
                              f"missing, truncated or corrupt?): {what}") from exc


def _read_deepspeed(path: Path, tag_dir: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from vavam.io import safe_torch_load

    if not deepspeed_available():
        raise RuntimeError(
            f"{path}: a DeepSpeed checkpoint folder; its float32 weights are rebuilt from the ZeRO shards by "
            "deepspeed's zero_to_fp32, and the 'deepspeed' package is not installed (pip install deepspeed, on "
            "any machine: consolidation runs on CPU)")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(path), tag=tag_dir.name)
    client = safe_torch_load(tag_dir / "mp_rank_00_model_states.pt")
    return dict(state), dict(client)


def read_training_checkpoint(checkpoint: str | os.PathLike, kind: Kind = "auto",
                             weights: Weights = "average") -> TrainingCheckpoint:
    """Read a training checkpoint of any supported format (see the module doc) on CPU.

    ``weights``: ``average`` takes the weight average of a run trained with ``--ema`` (as its final model
    holds; the other weights stay the checkpoint's), ``raw`` the optimiser's weights; a checkpoint without
    an average gives its weights either way (``TrainingCheckpoint.weights`` says which were taken).

    Raises:
        FileNotFoundError: nothing at ``checkpoint``.
        ValueError: an unknown layout, no stored config, a kind other than ``kind``, or weights that do not
            fit the config.
        RuntimeError: a DeepSpeed folder without the ``deepspeed`` package.
        CheckpointError: a file that fails its hash or does not load; a folder whose files do not match the list
            written beside it (``.sha256``), or an FSDP sharded folder whose shards cannot be read.
    """
    from vavam.config import config_from_dict
    from vavam.io import is_checkpoint_folder
    from vavam.train.resume import checkpoint_layout, sidecar_path, verify_checkpoint

    path = Path(checkpoint)
    if kind not in ("auto", *KINDS):
        raise ValueError(f"kind must be 'auto' or one of {KINDS}, got {kind!r}")
    if weights not in ("average", "raw"):
        raise ValueError(f"--weights must be 'average' or 'raw', got {weights!r}")
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint file or folder")
    if path.is_dir():
        if is_checkpoint_folder(path):
            raise ValueError(f"{path}: already a vavam model folder (config.json); nothing to consolidate")
        layout = checkpoint_layout(path)
        if layout in ("fsdp-sharded", "deepspeed") and sidecar_path(path).is_file():
            verify_checkpoint(path)  # a shard truncated or missing since the run listed them: named, not read
        if layout == "fsdp-sharded":  # torch.distributed.checkpoint shards + Lightning metadata
            data = _read_sharded(path)
            config = _config_from_hparams(data.get("hyper_parameters"), path)
            raw, source, meta = data.get("model", {}), "fsdp-sharded", data
        elif layout == "deepspeed":
            raw, meta = _read_deepspeed(path, _deepspeed_tag_dir(path))
            config = _config_from_hparams(meta.get("hyper_parameters"), path)
            source = "deepspeed"
        else:
            raise ValueError(f"{path}: a folder that is neither an FSDP sharded checkpoint (meta.pt) nor a DeepSpeed "
                             "checkpoint (latest, <tag>/mp_rank_00_model_states.pt)")
        state = _model_state(raw)
    else:
        data = _read_file(path)
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: not a training checkpoint (a {type(data).__name__})")
        if "state_dict" in data:
            config = _config_from_hparams(data.get("hyper_parameters"), path)
            state, source, meta = _model_state(data["state_dict"]), "lightning", data
        elif isinstance(data.get("model"), Mapping) and "step" in data:
            if not isinstance(data.get("config"), Mapping):
                raise ValueError(f"{path}: a tokenizer checkpoint without its config (written by an older vavam); "
                                 "its out/tokenizer folder holds the same weights at that step")
            config = config_from_dict(dict(data["config"]))
            state, source, meta = _model_state(data["model"], prefix=""), "tokenizer-loop", data
        else:
            raise ValueError(f"{path}: neither a Lightning checkpoint (state_dict) nor a vavam tokenizer checkpoint "
                             "(model, step)")
    found = _kind_of(config)
    if kind != "auto" and kind != found:
        raise ValueError(f"{path}: holds a {found} model, not a {kind} model")
    if not state:
        raise ValueError(f"{path}: no model weights found (expected names starting with 'model.')")
    average = _ema_average(meta, path) if weights == "average" else None
    if average is not None:
        averaged = _model_state(average)
        unknown = sorted(set(averaged) - set(state))
        if unknown:
            raise ValueError(f"{path}: its weight average names parameters the model does not have: {unknown[:5]}")
        state = {**state, **averaged}
    state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.detach().cpu()
             for k, v in state.items()}
    return TrainingCheckpoint(found, config, state, source, _step_of(meta), "average" if average else "raw")


def _build(ckpt: TrainingCheckpoint, path: Path) -> torch.nn.Module:
    import vavam

    with torch.device("meta"):
        model = vavam.build_model(ckpt.config)
    try:
        model.load_state_dict(ckpt.state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the stored {ckpt.kind} config: {exc}") from exc
    if ckpt.kind == "action":
        model.video.requires_grad_(False)
    return model.eval()


def consolidate_to(checkpoint: str | os.PathLike, out: str | os.PathLike, kind: Kind = "auto",
                   meta: Mapping[str, Any] | None = None, weights: Weights = "average") -> dict[str, Any]:
    """:func:`consolidate` with extra ``meta`` recorded in the folder's ``meta.json``."""
    from vavam.action import save_action_model
    from vavam.tokenizer import save_tokenizer
    from vavam.video import save_video_model

    path = Path(checkpoint)
    ckpt = read_training_checkpoint(path, kind, weights)
    model = _build(ckpt, path)
    info = {"kind": ckpt.kind, "source": ckpt.source, "step": ckpt.step, "weights": ckpt.weights,
            "checkpoint": str(path), "out": str(out),
            "parameters": sum(t.numel() for t in ckpt.state.values() if t.is_floating_point())}
    origin = {k: info[k] for k in ("checkpoint", "source", "step", "weights")}
    full_meta = {**dict(meta or {}), "consolidated_from": origin}
    save = {"video": save_video_model, "action": save_action_model, "tokenizer": save_tokenizer}[ckpt.kind]
    save(model, Path(out), meta=full_meta)
    return info


def consolidate(checkpoint: Path, out: Path, kind: Kind = "auto", weights: Weights = "average") -> dict[str, Any]:
    """Turn a training checkpoint (DDP / FSDP / DeepSpeed / one device) into our model folder OUT.

    Args:
        checkpoint: a Lightning ``.ckpt`` (one device, DDP, FSDP full), an FSDP sharded checkpoint folder,
            a DeepSpeed checkpoint folder (needs the deepspeed package) or a tokenizer ``step-*.ckpt``.
        out: the model folder to write (``model.safetensors``, ``config.json``, ``meta.json``); it loads on one
            CPU with ``vavam.load_video_model`` / ``load_action_model`` / ``load_tokenizer``.
        kind: ``auto`` (from the stored config) or the expected kind (``video``, ``action``, ``tokenizer``).
        weights: ``average``: for a run trained with ``--ema``, its weight average (what the run's own final
            model folder holds); ``raw``: the optimiser's weights at that step. Runs without ``--ema`` have
            only the latter.

    Returns:
        ``{"kind", "source", "step", "weights", "checkpoint", "parameters", "out"}``.
    """
    return consolidate_to(checkpoint, out, kind, weights=weights)
