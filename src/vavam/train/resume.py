"""Exact, pre-emption-safe resume for vavam's Lightning trainers.

Three pieces make a killed run continue exactly where it left off (bit-identical weights and loss
curve in fp32 on CPU, data position included):

- :class:`StepBatchSampler`: the batch of optimiser step ``k`` is a pure function of ``(seed, k)``
  (an endless stream of seeded permutations of the dataset, cut into global batches; rank ``r``
  takes its slice). Resuming at step ``k`` needs nothing but ``k``: no loader state to save.
  Per-step randomness of the model (flow times, noise) is drawn from :func:`step_generator` for the
  same reason.
- :class:`SafeCheckpointIO`: Lightning's checkpoint I/O, but every ``.ckpt`` is written atomically
  (temporary file, fsync, rename) with a ``.ckpt.sha256`` sidecar, and every load checks the hash
  and unpickles **weights-only** (plain tensors and containers; a checkpoint that would run code is
  refused).
- :class:`ResumeCallback`: checkpoints every ``every_n_steps`` optimiser steps (``step-XXXXXXXX.ckpt``,
  the newest ``keep`` kept) and when the process receives SIGTERM or SIGUSR1 (cluster pre-emption);
  appends one JSON line per step to ``metrics.jsonl`` (the loss curve), truncated back to the
  checkpoint's step on resume so that replayed steps are not logged twice. With several ranks the
  pre-emption decision is agreed by all of them, the logged loss is the mean over ranks and over the
  gradient-accumulation batches of the step, and checkpoints are only taken between optimiser steps.

Sharded checkpoints (FSDP ``checkpoint_format="sharded"``, DeepSpeed) are folders named like the
files; each gets a ``.sha256`` sidecar listing its files and their sizes once every rank has written
its part, and a folder whose files do not match the list is treated like a corrupt file. Before an FSDP
folder is resumed its pickles are read safely (:func:`vavam.train.consolidate.check_sharded_pickles`), since
Lightning's load unpickles them with plain ``pickle``.

:func:`find_resume_checkpoint` picks the newest intact checkpoint of a run folder and warns about
any newer one that is truncated or corrupt.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import signal
import threading
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import lightning as L
import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from vavam.io import atomic_write, atomic_write_json, json_safe

__all__ = [
    "CheckpointError",
    "StepBatchSampler",
    "step_generator",
    "SafeCheckpointIO",
    "ResumeCallback",
    "find_resume_checkpoint",
    "checkpoint_step",
    "read_checkpoint",
    "write_checkpoint",
    "prune_checkpoints",
    "PreemptionSignals",
    "verify_checkpoint",
    "write_folder_manifest",
    "RUN_SETTINGS",
    "check_run_settings",
    "check_resume",
    "check_resume_layout",
    "checkpoint_layout",
    "deepspeed_tags",
    "check_past_rates",
    "refuse_fresh_run_over_checkpoints",
    "read_run_settings",
    "write_run_settings",
]

CKPT_DIR = "checkpoints"
_STEP_NAME = re.compile(r"^step-(\d{8,})\.ckpt$")

#: RESUME_HINT: what the message printed after a SIGTERM / SIGUSR1 checkpoint tells the user to do (right for
#: ``vavam train ...``; a caller that re-runs the stage itself, like the quickstart, passes its own ``resume_hint``).
RESUME_HINT = "rerun with --resume to continue"


class CheckpointError(RuntimeError):
    """A training checkpoint is missing, truncated, corrupt or not loadable weights-only."""


def _mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across runs and platforms)."""
    digest = hashlib.sha256(b"vavam" + b"".join(int(p).to_bytes(8, "little", signed=True) for p in parts)).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_generator(seed: int, step: int, rank: int = 0, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` seeded by ``(seed, step, rank)``: per-step model randomness that a resume
    at ``step`` reproduces without saving any RNG state."""
    return torch.Generator(device=device).manual_seed(_mix_seed(seed, step, rank))


class StepBatchSampler:
    """Batches of dataset indices where step ``k``'s batch depends only on ``(seed, k)``.

    The index stream is the concatenation of permutations ``perm(seed, epoch)`` of ``range(num_items)``;
    step ``k`` takes stream positions ``[k·G, (k+1)·G)`` with ``G = batch_size · world_size`` (the
    global batch), and rank ``r`` keeps the ``r``-th contiguous slice of ``batch_size``. Epoch
    boundaries fall inside a batch when ``G`` does not divide ``num_items`` (no sample is dropped).

    Args:
        num_items: dataset length (> 0).
        batch_size: items per rank and step.
        seed: data-order seed.
        total_steps: steps of the whole run; iteration stops there.
        start_step: first step to yield (the resume step).
        rank: this process's rank; world_size: number of ranks.
        shuffle: False yields the stream in dataset order (validation-like, still step-addressable).

    Each ``iter()`` starts at ``position()`` when a position callable is set (the trainer's live
    ``global_step``), else at ``start_step``; ``len()`` is always ``total_steps`` so that a loop which
    restores its in-epoch batch counter on resume ends the epoch exactly at ``total_steps``.
    """

    def __init__(self, num_items: int, batch_size: int, seed: int, total_steps: int, start_step: int = 0,
                 rank: int = 0, world_size: int = 1, shuffle: bool = True) -> None:
        if num_items <= 0:
            raise ValueError(f"num_items must be > 0, got {num_items}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.total_steps, self.start_step = total_steps, start_step
        self.rank, self.world_size, self.shuffle = rank, world_size, shuffle
        self._perms: dict[int, np.ndarray] = {}
        self.position: Callable[[], int] | None = None

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            if self.shuffle:
                rng = np.random.default_rng(_mix_seed(self.seed, epoch))
                self._perms[epoch] = rng.permutation(self.num_items)
            else:
                self._perms[epoch] = np.arange(self.num_items)
        return self._perms[epoch]

    def batch(self, step: int) -> list[int]:
        """Dataset indices of this rank's batch at ``step``."""
        g = self.batch_size * self.world_size
        pos = np.arange(step * g + self.rank * self.batch_size, step * g + (self.rank + 1) * self.batch_size)
        epochs, offsets = np.divmod(pos, self.num_items)
        out = np.empty(len(pos), dtype=np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            out[sel] = self._perm(int(e))[offsets[sel]]
        return out.tolist()

    def unseen(self, consumed_steps: int) -> np.ndarray:
        """Dataset indices not yet drawn in the epoch that was running after ``consumed_steps`` steps
        (every rank's share counted): the pool the cool-down recipe draws pretraining windows from.
        At an epoch boundary that is the whole next epoch."""
        pos = consumed_steps * self.batch_size * self.world_size
        epoch, offset = divmod(pos, self.num_items)
        return self._perm(epoch)[offset:].copy()

    def __iter__(self) -> Iterator[list[int]]:
        start = self.position() if self.position is not None else self.start_step
        for step in range(start, self.total_steps):
            yield self.batch(step)

    def __len__(self) -> int:
        return self.total_steps


# --------------------------------------------------------------------------- checkpoint files

def sidecar_path(path: Path) -> Path:
    """The ``.sha256`` file beside a checkpoint (for a folder: the list of its files and sizes)."""
    return path.with_name(path.name + ".sha256")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checkpoint_step(path: str | os.PathLike) -> int | None:
    """The step encoded in a ``step-XXXXXXXX.ckpt`` name, else None."""
    m = _STEP_NAME.match(Path(path).name)
    return int(m.group(1)) if m else None


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """Load a Lightning ``.ckpt`` weights-only after checking its sha256 sidecar (when present).

    Raises:
        CheckpointError: missing, truncated or corrupt file, hash mismatch, or content that is not
            plain tensors / containers (it would need to run pickled code).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    data = path.read_bytes()
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{side}: unreadable hash file ({exc})") from exc
        if meta.get("size") != len(data):
            raise CheckpointError(f"{path}: truncated or overwritten ({len(data)} bytes, expected {meta.get('size')})")
        if meta.get("sha256") != _sha256(data):
            raise CheckpointError(f"{path}: content hash mismatch (corrupt checkpoint)")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is reported with the file name
        raise CheckpointError(f"{path}: not a loadable weights-only checkpoint ({type(exc).__name__}: {exc})") from exc


def write_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """``torch.save`` a plain state (tensors, numbers, strings, containers) atomically, then its
    ``.sha256`` sidecar; a kill at any moment leaves the old pair or a new file whose hash check
    fails (never a half-written file that loads)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    with atomic_write(path, "wb") as f:
        f.write(data)
    atomic_write_json(sidecar_path(path), {"sha256": _sha256(data), "size": len(data),
                                       "global_step": state.get("global_step", state.get("step"))})
    return path


def prune_checkpoints(run: str | os.PathLike, keep: int, protect: Iterable[int] = (), upto: int | None = None) -> None:
    """Delete all but the newest ``keep`` step checkpoints of a run (files or folders, and their sidecars);
    the checkpoints of the steps in ``protect`` (a recipe's snapshots) are never deleted nor counted.

    ``upto``: the step just saved. Checkpoints of later steps are left by an attempt that was killed while
    writing them (the resume skipped them as unusable): they are neither deleted nor counted, so that they
    never push the checkpoint just written, or the other newest good ones, out of the ``keep`` newest (the
    run overwrites them when it gets there).
    """
    protected = {int(s) for s in protect}
    if keep > 0:
        rolling = [p for p in list_checkpoints(run) if checkpoint_step(p) not in protected
                   and (upto is None or checkpoint_step(p) <= upto)]
        for old in rolling[:-keep]:
            sidecar_path(old).unlink(missing_ok=True)  # first: a half-deleted folder is then never "intact"
            if old.is_dir():
                shutil.rmtree(old, ignore_errors=True)
            else:
                old.unlink(missing_ok=True)


def write_folder_manifest(path: str | os.PathLike, step: int | None = None) -> Path:
    """Write the ``.sha256`` sidecar of a sharded checkpoint folder: its files and their sizes."""
    path = Path(path)
    files = {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*")) if f.is_file()}
    if not files:
        raise CheckpointError(f"{path}: empty checkpoint folder")
    atomic_write_json(sidecar_path(path), {"folder": True, "files": files, "global_step": step})
    return sidecar_path(path)


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Check a checkpoint without keeping it: a file must load weights-only with a matching hash
    (:func:`read_checkpoint`); a folder must match the file list of its sidecar.

    Raises:
        CheckpointError: missing, truncated or corrupt.
    """
    path = Path(path)
    if not path.is_dir():
        read_checkpoint(path)
        return
    side = sidecar_path(path)
    try:
        meta = json.loads(side.read_text())
        files = dict(meta["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: checkpoint folder without a readable file list ({side.name}): "
                              "incomplete (a kill while it was written?)") from exc
    for name, size in files.items():
        f = path / name
        if not f.is_file() or f.stat().st_size != size:
            raise CheckpointError(f"{path}: {name} is missing or truncated (corrupt checkpoint folder)")


class PreemptionSignals:
    """Context manager that records SIGTERM / SIGUSR1 instead of dying (main thread only); the
    training loop checks :attr:`received` after each step, checkpoints and exits with 128 + signal."""

    def __init__(self, signals: tuple[int, ...] | None = None) -> None:
        default = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR1", None)) if s)
        self.signals = default if signals is None else signals
        self.received: int | None = None
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        self.received = signum
        old = self._old.get(signum)
        if callable(old):  # keep an earlier handler (e.g. Lightning's SIGTERM bookkeeping) working
            old(signum, frame)

    def __enter__(self) -> "PreemptionSignals":
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                self._old[s] = signal.signal(s, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old if old is not None else signal.SIG_DFL)
        self._old.clear()


class SafeCheckpointIO(TorchCheckpointIO):
    """Atomic, hashed ``.ckpt`` writes and weights-only, hash-checked loads (see module doc)."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        write_checkpoint(path, checkpoint)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        return read_checkpoint(path, map_location=map_location or "cpu")  # always weights-only

    def remove_checkpoint(self, path: Any) -> None:
        path = Path(path)
        for p in (path, sidecar_path(path)):
            p.unlink(missing_ok=True)


def list_checkpoints(run: str | os.PathLike) -> list[Path]:
    """``run/checkpoints/step-*.ckpt`` sorted by step, newest last."""
    folder = Path(run) / CKPT_DIR
    if not folder.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in folder.iterdir() if checkpoint_step(p) is not None]
    return [p for _, p in sorted(found)]


def find_resume_checkpoint(run: str | os.PathLike) -> Path | None:
    """Newest intact checkpoint of a run folder (None when there is none at all).

    Newer checkpoints that are truncated, corrupt or fail their hash are skipped with a warning;
    if every checkpoint is bad, :class:`CheckpointError` lists them.
    """
    candidates = list_checkpoints(run)
    bad = []
    for path in reversed(candidates):
        try:
            verify_checkpoint(path)
        except CheckpointError as exc:
            warnings.warn(f"skipping unusable checkpoint: {exc}", stacklevel=2)
            bad.append(str(exc))
            continue
        return path
    if bad:
        raise CheckpointError(f"{run}: no intact checkpoint to resume from:\n  " + "\n  ".join(bad))
    return None


def checkpoint_layout(path: str | os.PathLike) -> str:
    """How a training checkpoint is stored: ``"file"`` (one device, DDP, FSDP full state dict),
    ``"fsdp-sharded"`` (a folder of ``torch.distributed.checkpoint`` shards with Lightning's ``meta.pt``)
    or ``"deepspeed"`` (a folder with ``<tag>/mp_rank_00_model_states.pt``); ``"unknown"`` otherwise."""
    path = Path(path)
    if not path.is_dir():
        return "file"
    if (path / "meta.pt").is_file():
        return "fsdp-sharded"
    if deepspeed_tags(path)[0]:
        return "deepspeed"
    return "unknown"


#: RESUMING_STRATEGIES: the strategies that can restore each checkpoint layout. Lightning loads an FSDP
#: sharded folder only under FSDP (which also loads one full file, whatever its own checkpoint format) and a
#: DeepSpeed folder only under DeepSpeed; DeepSpeed takes one file only with ZeRO-3 and ``load_full_weights``,
#: which vavam's ZeRO-2 strategy (:func:`vavam.train.distributed.make_strategy`) does not set.
RESUMING_STRATEGIES = {"file": ("auto", "ddp", "fsdp"), "fsdp-sharded": ("fsdp",), "deepspeed": ("deepspeed",)}


def check_resume_layout(checkpoint: str | os.PathLike, strategy: str) -> None:
    """Refuse, before training starts, to resume ``checkpoint`` under a strategy that cannot load its layout.

    Raises:
        ValueError: names the checkpoint, its layout and the strategies that can resume it (a sharded
            folder's weights alone can still be gathered with ``vavam checkpoint consolidate``); or a
            folder of no known layout, which no strategy can resume; or, under DeepSpeed, a DeepSpeed folder
            without the ``checkpoint`` tag or a ``latest`` file naming one of its tags (what Lightning needs);
            or, under FSDP, a single file that FSDP did not write (its optimiser state is not laid out for FSDP).
    """
    layout = checkpoint_layout(checkpoint)
    allowed = RESUMING_STRATEGIES.get(layout, ())
    if strategy in allowed:
        if layout == "deepspeed":
            _check_deepspeed_resumable(Path(checkpoint))
        if layout == "file" and strategy == "fsdp":
            writer = checkpoint_writer(checkpoint)
            if writer != "fsdp":
                raise ValueError(
                    f"{checkpoint}: a single-file checkpoint written by "
                    f"{'strategy ' + repr(writer) if writer else 'an unrecorded strategy'}, whose optimiser state "
                    "FSDP cannot load (it resumes only the full files FSDP writes); resume it with strategy 'ddp' "
                    "(or one device: the number of devices may change at the same global batch)")
        return
    if not allowed:
        raise ValueError(f"{checkpoint}: a checkpoint folder that is neither an FSDP sharded checkpoint (meta.pt) "
                         "nor a DeepSpeed one (<tag>/mp_rank_00_model_states.pt); no strategy can resume it")
    kind = {"file": "a single-file checkpoint", "fsdp-sharded": "an FSDP sharded checkpoint folder",
            "deepspeed": "a DeepSpeed checkpoint folder"}[layout]
    hint = ("; its weights alone (no optimiser or data position) can be gathered into a model folder with "
            "`vavam checkpoint consolidate`" if layout != "file" else "")
    raise ValueError(f"{checkpoint}: {kind}, which strategy {strategy!r} cannot resume; resume it with "
                     f"strategy {' / '.join(repr(a) for a in allowed)}{hint}")


#: WRITER_KEY: the key of a vavam single-file checkpoint that names the strategy which wrote it.
WRITER_KEY = "vavam_strategy"


def checkpoint_writer(path: str | os.PathLike) -> str | None:
    """The strategy that wrote a single-file checkpoint: its ``WRITER_KEY``, else (older files) the strategy
    the video module recorded in its hyper-parameters, else ``None``. Memory-maps the file (reads no tensor)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - a file torch cannot read: the resume reports it in detail
        raise CheckpointError(f"{path}: cannot read the checkpoint ({type(exc).__name__}: {exc})") from exc
    writer = state.get(WRITER_KEY)
    if writer is None:
        data = (state.get("hyper_parameters") or {}).get("data")
        writer = data.get("strategy") if isinstance(data, dict) else None
    return str(writer) if writer is not None else None


def _check_deepspeed_resumable(folder: Path) -> None:
    """Lightning's DeepSpeed strategy loads a folder only with a ``checkpoint`` sub-folder (the tag it writes)
    and passes DeepSpeed no tag, so DeepSpeed resumes the tag the ``latest`` file names; a folder short of
    either fails only after the engine is built ("not a valid DeepSpeed checkpoint" / "unable to load")."""
    tags, named = deepspeed_tags(folder)
    problems = [] if "checkpoint" in tags else ["no 'checkpoint' tag, the one Lightning writes and looks for"]
    if named not in tags:
        problems.append("no 'latest' file" if named is None else f"a 'latest' file naming {named!r}, not one of them")
    if problems:
        raise ValueError(f"{folder}: a DeepSpeed checkpoint folder (tags: {', '.join(tags)}) with "
                         f"{' and '.join(problems)}, which Lightning cannot resume (it writes the tag 'checkpoint' "
                         "and a 'latest' file naming it); its weights alone (no optimiser or data position) can be "
                         "gathered into a model folder with `vavam checkpoint consolidate`")


def deepspeed_tags(folder: str | os.PathLike) -> tuple[list[str], str | None]:
    """A DeepSpeed checkpoint folder's tags (sub-folders with ``mp_rank_00_model_states.pt``, sorted by name)
    and the tag its ``latest`` file names (``None`` without that file; it may name no existing tag)."""
    folder = Path(folder)
    tags = sorted(p.parent.name for p in folder.glob("*/mp_rank_00_model_states.pt"))
    latest = folder / "latest"
    return tags, (latest.read_text().strip() if latest.is_file() else None)


# --------------------------------------------------------------------------- run settings

#: RUN_SETTINGS: the file of a run folder that records what a fresh run was started with.
RUN_SETTINGS = "run_settings.json"


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys; values normalised as JSON reads them back."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: json.loads(json.dumps(value, default=str))}


def write_run_settings(run: str | os.PathLike, settings: dict[str, Any]) -> Path:
    """Record the settings a fresh run starts with (``run/run_settings.json``, written atomically).

    Args:
        run: run folder.
        settings: JSON-able (nested) dict: model config, optimiser, schedule, data, seed.
    """
    path = Path(run) / RUN_SETTINGS
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, json.loads(json.dumps(settings, default=str)))
    return path


def read_run_settings(run: str | os.PathLike) -> dict[str, Any] | None:
    """The settings a run folder's fresh run recorded (None for a folder without them).

    Raises:
        ValueError: the file exists but is not JSON (named, with how to go on).
    """
    path = Path(run) / RUN_SETTINGS
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: unreadable run settings ({exc}); delete the file to resume unchecked") from exc


def check_run_settings(run: str | os.PathLike, settings: dict[str, Any],
                       ignore: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Refuse to resume a run with settings that differ from those it was started with.

    A checkpoint holds weights and optimiser moments for the run's own model, schedule and data
    order; continuing it with another learning rate, seed, batch or model option would silently
    train a mixture of two runs. Runs started before this file existed are not checked.

    Args:
        run: run folder (its ``run_settings.json`` is compared when it exists).
        settings: this invocation's settings, as given to :func:`write_run_settings`.
        ignore: dotted keys (``"module.data.tokens"``) allowed to change on a resume, e.g. data paths.

    Returns:
        the recorded settings (None for a folder without them).

    Raises:
        ValueError: naming every setting that differs, with the recorded and the requested value.
    """
    recorded = read_run_settings(run)
    if recorded is not None:
        diffs = _differences(recorded, settings, lambda key: key not in ignore)
        if diffs:
            raise ValueError(f"{run}: cannot resume with different settings (the checkpoint belongs to the run as "
                             "it was started):\n  " + "\n  ".join(diffs)
                             + "\nresume with the same settings, or start a new run in another folder")
    return recorded


def _differences(recorded: dict[str, Any], settings: dict[str, Any], keys: Callable[[str], bool]) -> list[str]:
    """``key: run started with A, this call asks B`` for every dotted key selected by ``keys`` that differs."""
    saved, now = _flatten(recorded), _flatten(settings)
    unset = "(unset)"
    return [f"{key}: run started with {saved.get(key, unset)!r}, this call asks {now.get(key, unset)!r}"
            for key in sorted(set(saved) | set(now))
            if keys(key) and (key in saved, saved.get(key)) != (key in now, now.get(key))]


def check_resume(run: str | os.PathLike, settings: dict[str, Any], resumed_at: int | None,
                 ignore: tuple[str, ...] = (), rate: Callable[[dict[str, Any], int], float] | None = None,
                 ) -> dict[str, Any] | None:
    """What every trainer checks before it starts: a fresh run (``resumed_at`` None) refuses a folder with
    checkpoints (:func:`refuse_fresh_run_over_checkpoints`); a resume at step ``resumed_at`` refuses settings
    other than the recorded ones except ``ignore`` (:func:`check_run_settings`, the file read once) and, with
    ``rate`` (settings, step -> learning-rate factor), a schedule that moves the rate of a step already
    taken (:func:`check_past_rates`). The caller records a fresh run's settings once it knows its rank.

    Returns:
        a resume's recorded settings, for checks of the keys in ``ignore`` (None for a fresh run or a run from
        before the file existed).

    Raises:
        ValueError: naming the folder and what would change.
    """
    if resumed_at is None:
        refuse_fresh_run_over_checkpoints(run)
        return None
    recorded = check_run_settings(run, settings, ignore)
    if recorded is not None and rate is not None:  # None: a run from before the file existed
        what = "; ".join(_differences(recorded, settings, lambda key: key in ignore)) or "same settings"
        check_past_rates(run, resumed_at, lambda k: rate(recorded, k), lambda k: rate(settings, k), what)
    return recorded


def check_past_rates(run: str | os.PathLike, done: int, before: Callable[[int], float], now: Callable[[int], float],
                     what: str) -> None:
    """Refuse a resume at step ``done`` whose learning-rate schedule would have given any step up to ``done``
    (the steps taken, and step ``done``, whose rate the checkpoint's optimiser already holds) another
    rate than the run's own: a longer run may continue while its warmup and decay leave the past alone.

    Args:
        run: run folder (named in the error).
        done: optimiser steps taken (the checkpoint's step).
        before, now: step -> learning-rate factor of the recorded and of the requested schedule.
        what: the two schedules in words, for the error.

    Raises:
        ValueError: naming the first step whose rate differs.
    """
    for step in range(done + 1):
        if before(step) != now(step):
            raise ValueError(f"{run}: cannot resume at step {done} with another learning-rate schedule ({what}): step "
                             f"{step} had {before(step):g} x lr and would now have {now(step):g} x lr; resume with "
                             "the run's step count, or start a new run in another folder")


def refuse_fresh_run_over_checkpoints(run: str | os.PathLike) -> None:
    """A fresh run must not start in a folder that holds another run's checkpoints (a later ``--resume``
    would pick theirs, and they would be pruned as its own).

    Raises:
        ValueError: naming the folder, its newest checkpoint and the two ways on.
    """
    found = list_checkpoints(run)
    if found:
        raise ValueError(f"{run}: holds the checkpoints of an earlier run (newest {found[-1].name}); pass --resume to "
                         f"continue it, or start afresh in another folder (or delete {Path(run) / CKPT_DIR})")


# --------------------------------------------------------------------------- callback

class ResumeCallback(L.Callback):
    """Periodic and pre-emption checkpoints plus a resumable per-step metrics log.

    Args:
        run: run folder; checkpoints go to ``run/checkpoints``, the log to ``run/metrics.jsonl``.
        every_n_steps: checkpoint interval in optimiser steps (0: only on signals and at the end).
        keep: how many periodic checkpoints to keep (older ones are deleted; 0 keeps all).
        resumed_step: the step the run resumed from (the log is cut back to it; its checkpoint, named as this
            callback names them, counts as saved), 0 for a fresh run.
        signals: signals that trigger a checkpoint and a clean stop (default SIGTERM and SIGUSR1).
        settings: a fresh run's settings, written to ``run/run_settings.json`` when training starts (rank 0;
            None: nothing written, as on a resume).
        strategy: the strategy writing the checkpoints (``single``, ``ddp``, ``fsdp``, ``deepspeed``), stored in
            each as ``WRITER_KEY`` so that a resume can tell whether it can load the optimiser state.
        snapshots: steps whose checkpoints are also written and kept for good (outside ``keep``), e.g. the
            pretraining recipe's quarter-epoch and "before drop" checkpoints that cool-downs start from.
    """

    def __init__(self, run: str | os.PathLike, every_n_steps: int = 0, keep: int = 3, resumed_step: int = 0,
                 signals: tuple[int, ...] | None = None, settings: dict[str, Any] | None = None,
                 strategy: str | None = None, snapshots: Iterable[int] = ()) -> None:
        self.run = Path(run)
        self.snapshots = frozenset(int(s) for s in snapshots)
        self.settings = settings
        self.strategy = strategy
        self.every_n_steps, self.keep, self.resumed_step = every_n_steps, keep, resumed_step
        self._signals = PreemptionSignals(signals)
        self._log: Any = None
        # a resume's starting state is on disk already (the checkpoint it resumed from, written under this name):
        # a stop before the next step (a pre-emption signal right after the restart, a run resumed when it had
        # finished) rewrites nothing -- rewriting a checkpoint folder in place leaves no intact copy while it runs
        # -- and the run's last checkpoint is that one
        self.last_saved: Path | None = self.checkpoint_path(resumed_step) if resumed_step > 0 else None
        self._loss_sum, self._loss_count = 0.0, 0
        self._at_step_boundary = True  # False between the batches of one accumulated optimiser step

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        if self.strategy is not None:
            checkpoint[WRITER_KEY] = self.strategy

    # -- paths
    @property
    def log_path(self) -> Path:
        return self.run / "metrics.jsonl"

    def checkpoint_path(self, step: int) -> Path:
        return self.run / CKPT_DIR / f"step-{step:08d}.ckpt"

    # -- signals
    @property
    def preempted(self) -> int | None:
        """The pre-emption signal received (None while none was)."""
        return self._signals.received

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._signals.__enter__()

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._signals.__exit__()
        if self._log is not None:
            self._log.close()
            self._log = None

    # -- metrics log
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.run.mkdir(parents=True, exist_ok=True)
        if self.settings is not None:
            write_run_settings(self.run, self.settings)
        kept = []
        if self.resumed_step and self.log_path.is_file():
            for line in self.log_path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except ValueError:  # a line cut by a kill
                    continue
                if row.get("step", 0) <= self.resumed_step:
                    kept.append(line)
        with atomic_write(self.log_path, "w") as f:
            f.write("".join(k + "\n" for k in kept))
        self._log = open(self.log_path, "a", encoding="utf-8")

    def _step_loss(self, trainer: L.Trainer, pl_module: L.LightningModule) -> float | None:
        """Loss of the optimiser step just taken: mean over its accumulation batches (Lightning reports each
        divided by their number) and over ranks (a collective: every rank calls this at every step)."""
        total, count = self._loss_sum, self._loss_count
        self._loss_sum, self._loss_count = 0.0, 0
        if trainer.world_size > 1:
            t = torch.tensor([total, float(count > 0)], dtype=torch.float64, device=trainer.strategy.root_device)
            torch.distributed.all_reduce(t)
            total, count = float(t[0]) / trainer.world_size, int(t[1])
        return total if count else None

    def _agree_on_signal(self, trainer: L.Trainer) -> None:
        """Make every rank see a pre-emption signal that any rank received (the highest signal number)."""
        if trainer.world_size <= 1:
            return
        t = torch.tensor([self.preempted or 0], dtype=torch.int64, device=trainer.strategy.root_device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        if int(t) and self._signals.received is None:
            self._signals.received = int(t)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor):
            self._loss_sum += float(loss.detach())
            self._loss_count += 1
        self._at_step_boundary = (batch_idx + 1) % max(1, int(trainer.accumulate_grad_batches)) == 0
        if not self._at_step_boundary:  # inside an accumulated step: nothing is logged or saved
            return
        step = trainer.global_step
        step_loss = self._step_loss(trainer, pl_module)
        if trainer.is_global_zero and self._log is not None:
            row = {"step": step}
            if step_loss is not None:
                row["loss"] = step_loss
            row.update({k: float(v) for k, v in getattr(pl_module, "step_stats", {}).items()})
            opt = trainer.optimizers[0] if trainer.optimizers else None
            if opt is not None:
                row["lr"] = float(opt.param_groups[0]["lr"])
            self._log.write(json.dumps(json_safe(row)) + "\n")  # a skipped step's NaN loss / norm: null
            self._log.flush()
        self._agree_on_signal(trainer)
        periodic = (self.every_n_steps and step % self.every_n_steps == 0) or step in self.snapshots
        if periodic or self.preempted is not None:
            self.save(trainer, step)
        if self.preempted is not None:
            trainer.should_stop = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.last_saved is None or checkpoint_step(self.last_saved) != trainer.global_step:
            self.save(trainer, trainer.global_step)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        # Lightning turns SIGTERM into an exception at the next loop boundary (possibly inside
        # validation): the last optimiser step is complete, so its state is saved here -- unless the
        # exception came between the batches of an accumulated step (the newest checkpoint then stays).
        if self.preempted is not None and self._at_step_boundary and (
                self.last_saved is None or checkpoint_step(self.last_saved) != trainer.global_step):
            self.save(trainer, trainer.global_step)

    def save(self, trainer: L.Trainer, step: int) -> Path:
        """Write ``step-XXXXXXXX.ckpt`` now (all ranks call; rank 0 writes a file, or every rank its shards
        of a folder, which rank 0 then lists in the sidecar) and prune old ones."""
        path = self.checkpoint_path(step)
        if trainer.is_global_zero:
            sidecar_path(path).unlink(missing_ok=True)  # an older folder of this name is not intact while rewritten
        trainer.save_checkpoint(path, weights_only=False)  # ends with a barrier: every rank has written
        self.last_saved = path
        if trainer.is_global_zero:
            if path.is_dir():
                write_folder_manifest(path, step)
            prune_checkpoints(self.run, self.keep, protect=self.snapshots, upto=step)
        return path
