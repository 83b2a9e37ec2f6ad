"""Safe file handling: a restricted unpickler for third-party ``.pt`` files, and atomic writes.

Every loader of a file we did not write goes through :func:`safe_torch_load`; every writer goes
through :func:`atomic_write` (temporary name in the same folder, fsync, rename), so a crash leaves
either the old file or the new one, never half of one.

Third-party pickles (the authors' Lightning checkpoints) contain omegaconf and mup objects. They
are mapped to small stand-in classes here and converted to plain Python values afterwards
(:func:`to_plain`): a ``DictConfig`` becomes a dict, a ``ListConfig`` a list, a mup ``InfShape``
the list of its base dims. Every global not on the allow-list is refused with
:class:`UnsafePickleError` before anything is called.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io as _io
import json
import math
import os
import pickle
import stat
import tempfile
import types
from pathlib import Path
from typing import Any, Iterator

import torch


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global that is not on the allow-list."""


# ------------------------------------------------------------------------------ stand-ins


class _StandIn:
    """Base of the stand-ins: accepts any pickled state and keeps it as attributes."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict state, slots state)
            state = {**(state[0] or {}), **(state[1] or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{type(self).__name__}: unexpected state of type {type(state).__name__}")
        self.__dict__.update(state)


class DictConfigStandIn(_StandIn):
    """omegaconf ``DictConfig``: values in ``_content``."""


class ListConfigStandIn(_StandIn):
    """omegaconf ``ListConfig``: values in ``_content``."""


class NodeStandIn(_StandIn):
    """omegaconf value node (``AnyNode``, ``StringNode``, ...): value in ``_val``."""


class MetadataStandIn(_StandIn):
    """omegaconf metadata: not needed to read values."""


class InfDimStandIn(_StandIn):
    """mup ``InfDim``: ``base_dim`` (None for a finite axis) and ``dim``."""


class InfShapeStandIn(tuple):
    """mup ``InfShape``: a tuple of ``InfDim``."""

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)


class _AnyStandIn:
    """``typing.Any`` referenced as a value."""


_OMEGACONF_NODES = ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode", "BytesNode", "PathNode")

#: (module, name) -> object the pickle gets instead. Torch's own storage classes are resolved by
#: torch before this table is consulted.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "dict"): dict,
    ("builtins", "list"): list,
    ("builtins", "tuple"): tuple,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "int"): int,
    ("builtins", "float"): float,
    ("builtins", "bool"): bool,
    ("builtins", "str"): str,
    ("builtins", "bytes"): bytes,
    ("builtins", "slice"): slice,
    ("builtins", "object"): object,
    ("__builtin__", "dict"): dict,
    ("__builtin__", "list"): list,
    ("__builtin__", "tuple"): tuple,
    ("__builtin__", "set"): set,
    ("__builtin__", "int"): int,
    ("__builtin__", "long"): int,
    ("__builtin__", "float"): float,
    ("__builtin__", "bool"): bool,
    ("__builtin__", "str"): str,
    ("__builtin__", "unicode"): str,
    ("__builtin__", "object"): object,
    ("typing", "Any"): _AnyStandIn,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch", "Size"): torch.Size,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "device"): torch.device,
    ("omegaconf.dictconfig", "DictConfig"): DictConfigStandIn,
    ("omegaconf.listconfig", "ListConfig"): ListConfigStandIn,
    ("omegaconf.base", "ContainerMetadata"): MetadataStandIn,
    ("omegaconf.base", "Metadata"): MetadataStandIn,
    ("mup.infshape", "InfShape"): InfShapeStandIn,
    ("mup.infshape", "InfDim"): InfDimStandIn,
    **{("omegaconf.nodes", n): NodeStandIn for n in _OMEGACONF_NODES},
}
for _dtype_name in ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool"):
    ALLOWED_GLOBALS[("torch", _dtype_name)] = getattr(torch, _dtype_name)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS` (plus ``extra_globals``)."""

    extra_globals: dict[tuple[str, str], Any] = {}
    source: str = "<pickle>"

    def find_class(self, module: str, name: str) -> Any:  # noqa: D102
        key = (module, name)
        if key in self.extra_globals:
            return self.extra_globals[key]
        if key in ALLOWED_GLOBALS:
            return ALLOWED_GLOBALS[key]
        raise UnsafePickleError(
            f"{self.source}: refusing to load global '{module}.{name}' (not on vavam's allow-list of "
            "tensor, container and config types; the file may run code when unpickled)"
        )


def _pickle_module(source: str, extra_globals: dict[tuple[str, str], Any] | None) -> types.ModuleType:
    """A stand-in for the ``pickle`` module whose ``Unpickler`` is restricted (for ``torch.load``)."""
    unpickler = type(
        "RestrictedUnpickler",
        (RestrictedUnpickler,),
        {"extra_globals": dict(extra_globals or {}), "source": source},
    )
    module = types.ModuleType("vavam_restricted_pickle")
    module.Unpickler = unpickler  # type: ignore[attr-defined]
    module.load = lambda f, **kw: unpickler(f, **kw).load()  # type: ignore[attr-defined]
    module.loads = lambda b, **kw: unpickler(_io.BytesIO(b), **kw).load()  # type: ignore[attr-defined]
    module.__name__ = "pickle"  # torch checks pickle_module.__name__ for protocol handling
    return module


def to_plain(obj: Any) -> Any:
    """Replace stand-ins by plain values, recursively: configs -> dict/list (a None config -> None, a missing ``???``
    or interpolation ``${...}`` -> that string), InfShape -> list of base dims."""
    if isinstance(obj, (DictConfigStandIn, ListConfigStandIn)):
        content = getattr(obj, "_content", None)
        if content is None or isinstance(content, str):  # a None config, or "???" (missing) / "${...}" (interpolation)
            return content  # ({} / [] for None used to make an unset section look present; a str raised AttributeError)
        if isinstance(obj, DictConfigStandIn):
            return {key: to_plain(value) for key, value in content.items()}
        return [to_plain(value) for value in content]
    if isinstance(obj, NodeStandIn):
        return to_plain(getattr(obj, "_val", None))
    if isinstance(obj, InfShapeStandIn):
        return [getattr(dim, "base_dim", None) for dim in obj]
    if isinstance(obj, InfDimStandIn):
        return getattr(obj, "base_dim", None)
    if isinstance(obj, (MetadataStandIn, _AnyStandIn)) or obj is _AnyStandIn:
        return None
    if isinstance(obj, collections.OrderedDict):
        return collections.OrderedDict((k, to_plain(v)) for k, v in obj.items())
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_plain(v) for v in obj]
    if isinstance(obj, tuple) and not isinstance(obj, torch.Size):
        return tuple(to_plain(v) for v in obj)
    return obj


def _check_map_location(map_location: Any) -> None:
    """Refuse a bad ``map_location`` up front (the loaders report every error while reading as a bad file)."""
    if isinstance(map_location, str):
        torch.device(map_location)  # RuntimeError naming the device string
    elif not (map_location is None or isinstance(map_location, (torch.device, dict)) or callable(map_location)):
        raise TypeError(f"map_location must be a device, a string, a dict or a callable, got {map_location!r}")


def safe_torch_load(
    path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    extra_globals: dict[tuple[str, str], Any] | None = None,
) -> Any:
    """Load a ``torch.save`` file without running pickled code; stand-ins converted to plain values.

    Args:
        path: a ``.pt`` / ``.ckpt`` file (zip or legacy format).
        map_location: where tensors go.
        extra_globals: further ``(module, name) -> object`` entries to allow (trusted, plain types only).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file names a global that is not allowed (nothing of it was run).
        ValueError: the file is truncated or not a torch file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    _check_map_location(map_location)
    module = _pickle_module(str(path), extra_globals)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=False, pickle_module=module)
    except (UnsafePickleError, FileNotFoundError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a crafted pickle can make an allowed global raise anything
        raise ValueError(f"{path}: cannot read as a torch checkpoint (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from exc
    return to_plain(obj)


def safe_torch_loads(data: bytes, source: str = "<bytes>", map_location: str | torch.device = "cpu") -> Any:
    """:func:`safe_torch_load` for in-memory bytes (e.g. a base64-decoded server payload).

    ``source`` names the input in error messages. Raises ``UnsafePickleError`` or ``ValueError``.
    """
    _check_map_location(map_location)
    module = _pickle_module(source, None)
    try:
        obj = torch.load(_io.BytesIO(data), map_location=map_location, weights_only=False, pickle_module=module)
    except (UnsafePickleError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 - a crafted pickle can make an allowed global raise anything
        raise ValueError(f"{source}: cannot read as a torch.save payload (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from exc
    return to_plain(obj)


def safe_pickle_load(path: str | os.PathLike, extra_globals: dict[tuple[str, str], Any] | None = None) -> Any:
    """Load a plain pickle file (e.g. a dataset index) through the restricted unpickler.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        UnsafePickleError: the file names a global that is not allowed (nothing of it was run).
        ValueError: the file is truncated or not a pickle (naming it).
    """
    path = Path(path)
    with open(path, "rb") as f:
        unpickler = _pickle_module(str(path), extra_globals).Unpickler(f)
        try:
            obj = unpickler.load()
        except (UnsafePickleError, MemoryError):
            raise
        except Exception as exc:  # noqa: BLE001 - EOFError, UnpicklingError, what an allowed global raises
            raise ValueError(f"{path}: cannot read as a pickle (truncated or corrupt?): "
                             f"{type(exc).__name__}: {exc}") from exc
    return to_plain(obj)


def load_torchscript(path: str | os.PathLike, trust_code: bool = False, map_location: str = "cpu") -> torch.jit.ScriptModule:
    """Load a TorchScript file. TorchScript runs arbitrary code, so ``trust_code=True`` is required."""
    if not trust_code:
        raise PermissionError(
            f"{path}: TorchScript files execute code when loaded; pass trust_code=True if you trust this file"
        )
    return torch.jit.load(str(path), map_location=map_location)


# ------------------------------------------------------------------------------ atomic writes


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync and rename it over ``path``.

    On an exception (or a kill before the rename) ``path`` keeps its old content and the
    temporary file is removed (or left under a ``.tmp`` name that readers never pick up). A file that is
    replaced keeps its permission bits; a new one gets ``0666`` less the umask.
    """
    if mode not in ("w", "wb", "wt"):  # "a" / "r+" / "r" would replace the old content by only what is written now
        raise ValueError(f"{path}: atomic_write replaces the whole file; mode must be 'w', 'wt' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # a file replaced keeps its permissions (a 0600 file must not become world-readable)
        perms = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        perms = 0o666 & ~_UMASK  # mkstemp makes 0600 files; a new file gets the usual permissions
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, perms)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_write(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """Floats NaN / inf -> None, tuples -> lists, tensors / arrays -> lists (JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist"):
        return json_safe(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def sha256_json(obj: Any) -> str:
    """sha256 (hex) of ``obj`` as canonical JSON (sorted keys; values JSON cannot hold as ``str``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a missing or malformed file raises ``ValueError`` naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ValueError(f"{path}: file is missing") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def read_loss_log(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a training run's per-step log (``metrics.jsonl`` of ``vavam train video`` / ``action``) that hold a
    step and a loss, in file order; lines cut by a kill and steps without a loss (skipped: null) are left out."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("step") is not None and row.get("loss") is not None:
            rows.append(row)
    return rows


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------ checkpoint folders

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
META_FILE = "meta.json"


def save_checkpoint(folder: str | os.PathLike, state_dict: dict[str, torch.Tensor], config: Any, meta: dict | None = None) -> Path:
    """Write our checkpoint folder: ``model.safetensors`` + ``config.json`` + ``meta.json``.

    Each file is written atomically; ``meta.json`` (written last) records the sha256 of the
    weights, so a folder whose meta is missing or whose hash does not match is incomplete.
    Tensors that share storage (tied weights) are stored once per name as contiguous copies.
    """
    from safetensors.torch import save as st_save

    from vavam.config import config_to_dict

    folder = Path(folder)
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state_dict.items()}
    data = st_save(tensors)
    meta = dict(meta or {})
    meta["model_sha256"] = hashlib.sha256(data).hexdigest()
    meta.setdefault("vavam_version", _version())
    # both JSON texts first: a config or meta that JSON cannot hold must fail before a file is replaced (it used to
    # fail after model.safetensors was, leaving an existing checkpoint's weights overwritten and its meta stale)
    texts = {}
    for name, obj in ((CONFIG_FILE, config_to_dict(config) if not isinstance(config, dict) else config),
                      (META_FILE, meta)):
        try:
            texts[name] = json.dumps(obj, indent=2) + "\n"
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{folder / name}: cannot write as JSON ({exc}); nothing was written") from exc
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / MODEL_FILE, data)
    atomic_write_text(folder / CONFIG_FILE, texts[CONFIG_FILE])
    atomic_write_text(folder / META_FILE, texts[META_FILE])  # last: it vouches for the two files before it
    return folder


def load_checkpoint(
    folder: str | os.PathLike, verify: bool = True, expected: type | None = None
) -> tuple[dict[str, torch.Tensor], Any, dict]:
    """Read our checkpoint folder -> (state_dict, config, meta). Checks the weights' sha256.

    Raises ``ValueError`` naming the folder and the file when something is missing or corrupt, or
    when the config is not an instance of ``expected`` (e.g. a VaViM folder given as a tokenizer).
    """
    from vavam.config import config_from_dict

    folder = Path(folder)
    for name in (MODEL_FILE, CONFIG_FILE, META_FILE):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: not a complete vavam checkpoint folder ({name} is missing)")
    meta = read_json(folder / META_FILE)
    if not isinstance(meta, dict):
        raise ValueError(f"{folder / META_FILE}: must hold a JSON object, got {type(meta).__name__}")
    state = _read_safetensors(folder / MODEL_FILE, meta.get("model_sha256") if verify else None)
    try:
        config = config_from_dict(read_json(folder / CONFIG_FILE))
    except ValueError as exc:
        raise ValueError(f"{folder / CONFIG_FILE}: {exc}") from exc
    if expected is not None and not isinstance(config, expected):
        raise ValueError(f"{folder}: holds a {type(config).__name__}, not a {expected.__name__}")
    return state, config, meta


def _read_safetensors(path: Path, sha256: str | None) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file, checked against ``sha256`` when given. The file is hashed through a
    memory map and read by safetensors from the file, so the peak memory is about the weights once (reading the
    bytes, then building tensors from them, held both: twice the weights, 10 GB for a 1.2B-parameter float32
    VaViM). The file is the one hashed: a replacement in between (an atomic write renames a new file over it) is
    refused, as the hash of one file cannot vouch for another."""
    import mmap

    from safetensors.torch import load_file

    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        if sha256:
            if before.st_size == 0:  # mmap refuses an empty file
                digest = hashlib.sha256(b"").hexdigest()
            else:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                    digest = hashlib.sha256(mm).hexdigest()
            if digest != sha256:
                raise ValueError(f"{path}: content hash does not match meta.json (corrupt or partly written)")
        try:
            state = load_file(path)
        except Exception as exc:  # safetensors raises its own error types
            raise ValueError(f"{path}: cannot read safetensors ({exc})") from exc
        after = os.stat(path)
    if (after.st_dev, after.st_ino, after.st_size, after.st_mtime_ns) != \
            (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns):
        raise ValueError(f"{path}: was replaced or changed while it was read; load it again")
    return state


def is_checkpoint_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder holding our ``config.json``."""
    path = Path(path)
    return path.is_dir() and (path / CONFIG_FILE).is_file()


def tokenizer_record(tokenizer: str | os.PathLike, model_folder: str | os.PathLike) -> dict[str, str]:
    """What a model folder's ``meta.json`` records of the tokenizer its tokens came from: the absolute path
    (``tokenizer``) and the path relative to the model folder (``tokenizer_relative``), which still finds it
    after the runs are moved or copied together to another place or machine."""
    tok, folder = Path(tokenizer).resolve(), Path(model_folder).resolve()
    return {"tokenizer": str(tok), "tokenizer_relative": os.path.relpath(tok, folder)}


def _folder_meta(checkpoint: Path) -> dict:
    """The ``meta.json`` object of our checkpoint folder; ``{}`` for anything else (a released file, a folder
    without our config, an unreadable meta or one that is not an object: loading the folder reports those)."""
    if not is_checkpoint_folder(checkpoint):
        return {}
    try:
        meta = read_json(checkpoint / META_FILE)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def recorded_tokenizer(checkpoint: str | os.PathLike) -> Path | None:
    """The tokenizer our checkpoint folder records in ``meta.json`` (:func:`tokenizer_record`): the recorded path
    (a relative one is relative to the folder), or, when it is gone, ``tokenizer_relative`` from the folder if
    that exists. None for a released file or a folder that records none; the path returned may not exist."""
    checkpoint = Path(checkpoint)
    meta = _folder_meta(checkpoint)
    if not meta.get("tokenizer"):
        return None
    path = Path(meta["tokenizer"])
    path = path if path.is_absolute() else (checkpoint / path).resolve()
    relative = meta.get("tokenizer_relative")
    if not path.exists() and isinstance(relative, str) and (checkpoint / relative).exists():
        return (checkpoint / relative).resolve()
    return path


def recorded_grid(checkpoint: str | os.PathLike) -> tuple[int, int] | None:
    """The token grid ``(h, w)`` our VaViM / VaVAM checkpoint folder was trained on (``token_grid`` in its
    ``meta.json``): the models themselves record only ``h * w`` tokens per frame, and a store of the transposed grid
    (same count) would feed every token at another token's spatial position. None for a released file, a folder
    written before folders recorded it, or an unreadable meta (whose loading reports it)."""
    return as_token_grid(_folder_meta(Path(checkpoint)).get("token_grid"))


def as_token_grid(value: Any) -> tuple[int, int] | None:
    """A recorded token grid (a JSON list ``[h, w]`` of positive integers) as ``(h, w)``; None for anything else
    (not recorded, or not a grid)."""
    if isinstance(value, (list, tuple)) and len(value) == 2 and \
            all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        return int(value[0]), int(value[1])
    return None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("vavam")
    except Exception:
        return "0+unknown"


__all__ = [
    "UnsafePickleError",
    "RestrictedUnpickler",
    "ALLOWED_GLOBALS",
    "safe_torch_load",
    "safe_torch_loads",
    "safe_pickle_load",
    "load_torchscript",
    "to_plain",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "read_json",
    "sha256_file",
    "save_checkpoint",
    "load_checkpoint",
    "is_checkpoint_folder",
    "recorded_grid",
    "as_token_grid",
]
