"""Training windows over scene records: 8 context frames + per-frame future trajectory + command.

A window is ``context_frames`` (8) frames taken every ``subsampling`` raw frames (so at 2 Hz:
nuPlan / OpenDV at 10 Hz use 5, nuScenes keyframes use 1). For **each** context frame ``k`` it
carries

- ``positions[j]`` ``[6, 2]``: the ego positions of frames ``k + s, k + 2s, ..., k + 6s`` (0.5 s
  apart) expressed in frame ``k``'s ego frame (x forward, y left, metres), absolute offsets from
  the current pose. As in the reference, the world displacement ``(dx, dy, 0)`` is rotated by the
  inverse of the full 3D ego rotation and x, y are kept.
- ``speeds[j]``: the ego speed (m/s) at frame ``k``: the planar distance from the pose one step
  (``s`` raw frames, 0.5 s) earlier over the time between them, or to the pose one step later for
  the first frames of a scene — the speed the constant-velocity baseline reads.
- ``commands[j]``: the high-level command from the pose ``lookahead`` frames ahead (default
  ``6 * s`` = **3 s** at any frame rate), with full 3D translation in the current ego frame:
  lateral ``y > +2 m`` -> LEFT (1), ``y < -2 m`` -> RIGHT (0), else STRAIGHT (2).

  Reference bug fixed: the authors' code looked ``6`` *raw* frames ahead, i.e. 3 s on nuScenes
  (2 Hz) but only 0.6 s on nuPlan (10 Hz), so nuPlan commands were almost always STRAIGHT. The old
  behaviour stays reachable with ``WindowConfig(command_lookahead_frames=6)`` for comparisons.

Windows never cross scene boundaries: a window starting at local frame ``i`` exists when frames
``i .. i + (8 - 1 + 6) * s`` all lie in the scene (14 sampled entries, as in the reference).
Windows start at every ``stride``-th raw frame (default 1, the reference's stride).

Index construction is vectorised over the concatenation of all scenes: per-frame targets
(``[F, 6, 2]`` positions, ``[F]`` commands) are computed once, and a window only gathers rows.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from vavam.data.records import SceneRecord
from vavam.types import CONTEXT_FRAMES, NUM_WAYPOINTS, WAYPOINT_DT, Command

COMMAND_THRESHOLD_M = 2.0

#: largest deviation of a sampled step from 0.5 s that dataset windows accept (nuScenes keyframes
#: jitter by tens of ms; a dropped frame shifts a step by 100 ms at 10 Hz and 500 ms at 2 Hz).
DEFAULT_STEP_TOLERANCE_US = 75_000

#: raw frames per 0.5 s step of the datasets we know.
DATASET_SUBSAMPLING = {"nuplan": 5, "opendv": 5, "nuscenes": 1}


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut.

    Attributes:
        context_frames: frames per window (8).
        num_waypoints: future waypoints per context frame (6, one per ``subsampling`` raw frames).
        subsampling: raw frames per 0.5 s step (nuPlan / OpenDV 5, nuScenes keyframes 1).
        stride: raw frames between consecutive window starts inside a scene.
        command_threshold_m: lateral offset beyond which the command turns LEFT / RIGHT.
        command_lookahead_frames: raw frames ahead for the command pose; None -> ``num_waypoints *
            subsampling`` (3 s). ``6`` reproduces the reference's nuPlan bug (0.6 s at 10 Hz).
        max_step_error_us: when set, skip windows where any of the sampled steps deviates from
            ``WAYPOINT_DT`` (0.5 s) by more than this many microseconds (dropped frames); None keeps
            every window, like the reference.
    """

    context_frames: int = CONTEXT_FRAMES
    num_waypoints: int = NUM_WAYPOINTS
    subsampling: int = 1
    stride: int = 1
    command_threshold_m: float = COMMAND_THRESHOLD_M
    command_lookahead_frames: int | None = None
    max_step_error_us: int | None = None

    def __post_init__(self) -> None:
        for name in ("context_frames", "num_waypoints", "subsampling", "stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"WindowConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.command_lookahead_frames is not None and self.command_lookahead_frames < 1:
            raise ValueError(f"WindowConfig.command_lookahead_frames must be >= 1, got {self.command_lookahead_frames}")

    @classmethod
    def for_dataset(cls, dataset: str, **overrides: Any) -> WindowConfig:
        """Config for a known dataset (``nuplan``, ``opendv``: subsampling 5; ``nuscenes``: 1), refusing
        windows whose 0.5 s steps are off by more than :data:`DEFAULT_STEP_TOLERANCE_US` (a frame that
        a reader dropped with ``skip_bad`` must not silently stretch a window)."""
        key = dataset.lower()
        if key not in DATASET_SUBSAMPLING:
            raise ValueError(f"unknown dataset {dataset!r}; known: {sorted(DATASET_SUBSAMPLING)} (or set subsampling=)")
        return cls(**{"subsampling": DATASET_SUBSAMPLING[key], "max_step_error_us": DEFAULT_STEP_TOLERANCE_US,
                      **overrides})

    @property
    def lookahead(self) -> int:
        """Raw frames between a frame and its command pose."""
        return (
            self.command_lookahead_frames
            if self.command_lookahead_frames is not None
            else self.num_waypoints * self.subsampling
        )

    @property
    def future_frames(self) -> int:
        """Raw frames a context frame needs after itself (waypoints and command pose)."""
        return max(self.num_waypoints * self.subsampling, self.lookahead)

    @property
    def span(self) -> int:
        """Raw frames a window covers, first context frame to last needed future frame, inclusive."""
        return (self.context_frames - 1) * self.subsampling + self.future_frames + 1


def infer_subsampling(timestamps_us: np.ndarray, step_s: float = WAYPOINT_DT) -> int:
    """Raw frames per ``step_s`` from the median frame interval of ``timestamps_us`` ``[N]`` (int64 µs)."""
    dt = np.diff(np.asarray(timestamps_us, dtype=np.int64))
    if len(dt) == 0 or np.median(dt) <= 0:
        raise ValueError("need at least two increasing timestamps to infer the frame rate")
    return max(1, round(step_s * 1e6 / float(np.median(dt))))


# ------------------------------------------------------------------------------------- per-frame targets


def _rotation_entries(rotations: np.ndarray) -> tuple[np.ndarray, ...]:
    """Entries R00, R01, R10, R11, R21 of R(q) for ``[F, 4]`` (w, x, y, z) quaternions."""
    q = rotations / np.linalg.norm(rotations, axis=1, keepdims=True)
    w, x, y, z = q[:, 0], q[:, 1], q[:, 2], q[:, 3]
    r00 = 1 - 2 * (y * y + z * z)
    r01 = 2 * (x * y - w * z)
    r10 = 2 * (x * y + w * z)
    r11 = 1 - 2 * (x * x + z * z)
    r21 = 2 * (y * z + w * x)
    return r00, r01, r10, r11, r21


def _frame_targets(
    translations: np.ndarray,
    rotations: np.ndarray,
    frame_end: np.ndarray,
    config: WindowConfig,
    positions: np.ndarray | None = None,
    commands: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame positions ``[F, W, 2]`` float32 (NaN where the future leaves the scene) and
    commands ``[F]`` int64 (-1 there). ``frame_end[f]`` = exclusive end (in these arrays) of f's scene.

    ``positions`` / ``commands``, when given, are filled in place (views into a larger index).
    """
    n = len(translations)
    s, w = config.subsampling, config.num_waypoints
    if positions is None:
        positions = np.empty((n, w, 2), dtype=np.float32)
    if commands is None:
        commands = np.empty(n, dtype=np.int64)
    if n == 0:
        return positions, commands
    r00, r01, r10, r11, r21 = _rotation_entries(np.asarray(rotations, dtype=np.float64))
    t = np.asarray(translations, dtype=np.float64)
    # Future rows by slicing a padded copy (rows past the end repeat the last one; they are masked below).
    far = max(w * s, config.lookahead)
    tp = np.concatenate([t, np.broadcast_to(t[-1], (far, 3))])
    idx = np.arange(n, dtype=np.int64)
    for m in range(1, w + 1):
        k = m * s
        dx = tp[k : k + n, 0] - t[:, 0]
        dy = tp[k : k + n, 1] - t[:, 1]
        # R^T (dx, dy, 0): the reference rotates the planar displacement by the inverse 3D rotation.
        positions[:, m - 1, 0] = r00 * dx + r10 * dy
        positions[:, m - 1, 1] = r01 * dx + r11 * dy
    positions[idx + w * s >= frame_end] = np.nan  # a frame's trajectory is all or nothing
    k = config.lookahead
    d = tp[k : k + n] - t
    lateral = r01 * d[:, 0] + r11 * d[:, 1] + r21 * d[:, 2]  # y of R^T d (full 3D, as in the reference)
    thr = config.command_threshold_m
    cmd = np.full(n, int(Command.STRAIGHT), dtype=np.int64)
    cmd[lateral > thr] = int(Command.LEFT)
    cmd[lateral < -thr] = int(Command.RIGHT)
    cmd[idx + k >= frame_end] = -1
    commands[:] = cmd
    return positions, commands


def _frame_speeds(
    translations: np.ndarray, timestamps: np.ndarray, frame_start: np.ndarray, frame_end: np.ndarray, step: int
) -> np.ndarray:
    """Ego speed (m/s) ``[F]`` float32 of every frame: planar distance to the pose ``step`` frames earlier
    over their time apart; frames with no such pose in their scene look ``step`` frames later (a scene
    of one frame: 0). ``frame_start`` / ``frame_end`` = first / exclusive end frame of each frame's scene."""
    n = len(translations)
    idx = np.arange(n, dtype=np.int64)
    prev = idx - step
    use_next = prev < frame_start
    a = np.where(use_next, idx, prev)
    b = np.where(use_next, np.minimum(idx + step, frame_end - 1), idx)
    t = np.asarray(translations, dtype=np.float64)
    dist = np.hypot(t[b, 0] - t[a, 0], t[b, 1] - t[a, 1])
    dt = (np.asarray(timestamps, dtype=np.int64)[b] - np.asarray(timestamps, dtype=np.int64)[a]) * 1e-6
    with np.errstate(divide="ignore", invalid="ignore"):
        speed = np.where(dt > 0, dist / np.where(dt > 0, dt, 1.0), 0.0)
    return speed.astype(np.float32)


def trajectory_targets(
    translations: np.ndarray,
    rotations: np.ndarray,
    config: WindowConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Future waypoints and command of every frame of one scene.

    Args:
        translations: ego-to-world translations ``[N, 3]``.
        rotations: ego-to-world quaternions ``[N, 4]`` (w, x, y, z).
        config: window config (subsampling, waypoints, command rule); default ``WindowConfig()``.

    Returns:
        positions ``[N, num_waypoints, 2]`` float32 in each frame's ego frame (x forward, y left;
        NaN where the future leaves the scene) and commands ``[N]`` int64 (0 right, 1 left,
        2 straight; -1 where the command pose leaves the scene).
    """
    config = config or WindowConfig()
    n = len(translations)
    return _frame_targets(
        np.asarray(translations).reshape(n, 3), np.asarray(rotations).reshape(n, 4), np.full(n, n), config
    )


# ------------------------------------------------------------------------------------- the index


#: frames per construction group of :class:`WindowIndex` (whole scenes; bounds temporary memory).
_GROUP_FRAMES = 1 << 18


def _scene_groups(lengths: np.ndarray, target: int) -> list[tuple[int, int]]:
    """Consecutive scene ranges ``[r0, r1)`` of about ``target`` frames each (a longer scene is its own group)."""
    bounds = [0]
    acc = 0
    for i, length in enumerate(lengths.tolist()):
        acc += length
        if acc >= target:
            bounds.append(i + 1)
            acc = 0
    if bounds[-1] != len(lengths):
        bounds.append(len(lengths))
    return list(itertools.pairwise(bounds))


def _check_scene_arrays(record: SceneRecord) -> None:
    """Refuse a record whose poses do not have one row per timestamp (``[N, 3]``, ``[N, 4]``), are not finite
    (or a quaternion has norm 0), or whose timestamps ``[N]`` do not increase strictly; the message names the
    scene (and the first bad frame). A non-finite pose would give NaN waypoints and a STRAIGHT command (NaN
    compares false with the thresholds) to every window that reads it."""
    n = len(record.timestamps)
    for what, arr, width in (("translations", record.translations, 3), ("rotations", record.rotations, 4)):
        if np.shape(arr) != (n, width):
            raise ValueError(f"scene '{record.name}': {what} have shape {np.shape(arr)}, expected ({n}, {width}) "
                             "(one row per timestamp)")
        bad = ~np.isfinite(np.asarray(arr, dtype=np.float64)).all(axis=1)
        if what == "rotations":
            bad |= np.linalg.norm(np.where(np.isfinite(arr), arr, 0.0), axis=1) == 0
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            row = np.asarray(arr)[i]
            why = "is not finite" if not np.isfinite(row).all() else "is a zero quaternion"
            raise ValueError(f"scene '{record.name}', frame {i}: ego pose {what[:-1]} {row.tolist()} {why}")
    dt = np.diff(np.asarray(record.timestamps, dtype=np.int64))
    if np.any(dt <= 0):
        i = int(np.flatnonzero(dt <= 0)[0]) + 1
        raise ValueError(f"scene '{record.name}', frame {i}: timestamps must increase strictly "
                         f"({int(record.timestamps[i - 1])} us, then {int(record.timestamps[i])} us)")


@dataclass
class Window:
    """One window (``C`` = context frames, 8; ``W`` = waypoints, 6).

    Attributes:
        index: window number in its :class:`WindowIndex`.
        scene: scene name.
        scene_index: position of the scene in the index's record list.
        frame_indices: ``[C]`` int64, frame numbers inside the scene of the context frames.
        timestamps_us: ``[C]`` int64 timestamps (µs) of the context frames.
        positions: ``[C, W, 2]`` float32, per context frame its future waypoints (x forward, y left).
        commands: ``[C]`` int64, per context frame its command (0 right, 1 left, 2 straight).
        speeds: ``[C]`` float32, per context frame the ego speed in m/s (None when not computed).
        image_paths: ``C`` image paths as stored in the record, or None.
        token_indices: ``[C]`` int64 token rows from the record, or None.
    """

    index: int
    scene: str
    scene_index: int
    frame_indices: np.ndarray
    timestamps_us: np.ndarray
    positions: np.ndarray
    commands: np.ndarray
    image_paths: list[str] | None = None
    token_indices: np.ndarray | None = None
    speeds: np.ndarray | None = None

    def as_dict(self) -> dict[str, Any]:
        """Torch form: ``positions`` float32 ``[C,W,2]``, ``commands`` int64 ``[C]``, ``timestamps_us``
        int64 ``[C]``, ``frame_indices`` int64 ``[C]``, ``speeds`` float32 ``[C]`` (when known), plus
        ``scene``, ``window_idx``, ``image_paths``."""
        out: dict[str, Any] = {
            "positions": torch.from_numpy(self.positions.copy()),
            "commands": torch.from_numpy(self.commands.copy()),
            "timestamps_us": torch.from_numpy(self.timestamps_us.copy()),
            "frame_indices": torch.from_numpy(self.frame_indices.copy()),
            "scene": self.scene,
            "window_idx": self.index,
        }
        if self.speeds is not None:
            out["speeds"] = torch.from_numpy(self.speeds.copy())
        if self.image_paths is not None:
            out["image_paths"] = list(self.image_paths)
        return out


class WindowIndex:
    """All windows of a list of scene records (vectorised), indexable like a dataset.

    ``index[i]`` -> :class:`Window`; :meth:`batch` gathers many windows at once as arrays.

    Attributes:
        config: the :class:`WindowConfig`.
        scene_names: ``S`` scene names.
        scene_offsets: ``[S+1]`` int64; scene ``s`` owns global frames ``scene_offsets[s]:scene_offsets[s+1]``.
        frame_timestamps: ``[F]`` int64 µs of every frame.
        frame_positions: ``[F, W, 2]`` float32 targets of every frame (NaN where undefined).
        frame_commands: ``[F]`` int64 command of every frame (-1 where undefined).
        frame_speeds: ``[F]`` float32 ego speed (m/s) of every frame.
        window_starts: ``[N]`` int64 global frame of each window's first context frame.
        window_scenes: ``[N]`` int64 scene of each window.
    """

    def __init__(self, records: Sequence[SceneRecord], config: WindowConfig | None = None) -> None:
        """Build the index over ``records`` (each one scene; windows never cross records)."""
        self.config = config = config or WindowConfig()
        self.scene_names = [r.name for r in records]
        if len(set(self.scene_names)) != len(self.scene_names):
            dup = next(n for n in self.scene_names if self.scene_names.count(n) > 1)
            raise ValueError(f"scene '{dup}' appears more than once in the records")
        for r in records:  # a misaligned or unsorted scene would silently pair frames with other frames' poses
            _check_scene_arrays(r)
        lengths = np.array([len(r) for r in records], dtype=np.int64)
        self.scene_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        n = int(self.scene_offsets[-1])
        self._image_paths = [r.image_paths for r in records]
        self._token_indices = [r.token_indices for r in records]
        if n == 0:
            self.frame_timestamps = np.zeros(0, dtype=np.int64)
        else:
            self.frame_timestamps = np.concatenate([r.timestamps for r in records]).astype(np.int64)
        self.frame_positions = np.empty((n, config.num_waypoints, 2), dtype=np.float32)
        self.frame_commands = np.empty(n, dtype=np.int64)
        self.frame_speeds = np.empty(n, dtype=np.float32)
        # Scenes are processed in groups of about _GROUP_FRAMES frames (whole scenes only, so no
        # group needs frames of the next): temporaries stay small and cache-friendly at any scale.
        starts: list[np.ndarray] = []
        scenes: list[np.ndarray] = []
        for r0, r1 in _scene_groups(lengths, _GROUP_FRAMES):
            a, b = int(self.scene_offsets[r0]), int(self.scene_offsets[r1])
            local_scene = np.repeat(np.arange(r1 - r0, dtype=np.int64), lengths[r0:r1])
            frame_end = (self.scene_offsets[r0 + 1 : r1 + 1] - a)[local_scene]
            trans = np.concatenate([records[i].translations for i in range(r0, r1)])
            rots = np.concatenate([records[i].rotations for i in range(r0, r1)])
            _frame_targets(trans, rots, frame_end, config, self.frame_positions[a:b], self.frame_commands[a:b])
            frame_start = (self.scene_offsets[r0:r1] - a)[local_scene]
            self.frame_speeds[a:b] = _frame_speeds(
                trans, self.frame_timestamps[a:b], frame_start, frame_end, config.subsampling
            )
            valid = self._valid_starts(
                frame_end, local_scene, self.scene_offsets[r0:r1] - a, self.frame_timestamps[a:b]
            )
            local = np.flatnonzero(valid)
            starts.append(local + a)
            scenes.append(local_scene[local] + r0)
        self.window_starts = np.concatenate(starts).astype(np.int64) if starts else np.zeros(0, dtype=np.int64)
        self.window_scenes = np.concatenate(scenes).astype(np.int64) if scenes else np.zeros(0, dtype=np.int64)
        s = config.subsampling
        self._ctx = np.arange(config.context_frames, dtype=np.int64) * s

    def _valid_starts(
        self, frame_end: np.ndarray, local_scene: np.ndarray, scene_start: np.ndarray, timestamps: np.ndarray
    ) -> np.ndarray:
        """Window-start mask over one group of whole scenes (all arrays local to the group)."""
        config = self.config
        s = config.subsampling
        n = len(frame_end)
        idx = np.arange(n, dtype=np.int64)
        valid = idx + (config.span - 1) < frame_end
        if config.stride > 1:
            valid &= (idx - scene_start[local_scene]) % config.stride == 0
        if config.max_step_error_us is not None and n:
            j = np.minimum(idx + s, n - 1)
            step = timestamps[j] - timestamps
            bad = (idx + s >= frame_end) | (np.abs(step - round(WAYPOINT_DT * 1e6)) > config.max_step_error_us)
            steps = config.context_frames - 1 + config.num_waypoints
            # A valid window never reads past its scene, so padding with "bad" changes no valid window.
            padded = np.concatenate([bad, np.ones(steps * s, dtype=bool)])
            any_bad = np.zeros(n, dtype=bool)
            for i in range(steps):
                any_bad |= padded[i * s : i * s + n]
            valid &= ~any_bad
        return valid

    # -------------------------------------------------------------------------------- access

    @property
    def num_frames(self) -> int:
        """F, frames over all scenes."""
        return int(self.scene_offsets[-1])

    def __len__(self) -> int:
        return len(self.window_starts)

    def context_frames(self, windows: np.ndarray | int) -> np.ndarray:
        """Global frame numbers of the context frames: ``[...]`` window ids -> ``[..., C]`` int64."""
        return self.window_starts[np.asarray(windows)][..., None] + self._ctx

    def batch(self, windows: np.ndarray | Sequence[int]) -> dict[str, np.ndarray]:
        """Gather ``B`` windows as arrays: ``positions [B,C,W,2]`` float32, ``commands [B,C]`` int64,
        ``speeds [B,C]`` float32, ``timestamps_us [B,C]`` int64, ``frame_indices [B,C]`` int64 (inside the
        scene), ``scene_index [B]``."""
        w = np.asarray(windows, dtype=np.int64)
        g = self.context_frames(w)
        scene = self.window_scenes[w]
        return {
            "positions": self.frame_positions[g],
            "commands": self.frame_commands[g],
            "speeds": self.frame_speeds[g],
            "timestamps_us": self.frame_timestamps[g],
            "frame_indices": g - self.scene_offsets[scene][..., None],
            "scene_index": scene,
        }

    def __getitem__(self, i: int) -> Window:
        i = int(i)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"window {i} out of range (index has {len(self)})")
        g = self.context_frames(i)
        s = int(self.window_scenes[i])
        local = g - self.scene_offsets[s]
        paths = self._image_paths[s]
        tok = self._token_indices[s]
        return Window(
            index=i,
            scene=self.scene_names[s],
            scene_index=s,
            frame_indices=local,
            timestamps_us=self.frame_timestamps[g],
            positions=self.frame_positions[g],
            commands=self.frame_commands[g],
            image_paths=None if paths is None else [paths[k] for k in local.tolist()],
            token_indices=None if tok is None else tok[local],
            speeds=self.frame_speeds[g],
        )

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"WindowIndex({len(self)} windows, {len(self.scene_names)} scenes, {self.num_frames} frames, {self.config})"
        )


def build_window_index(records: Sequence[SceneRecord], config: WindowConfig | None = None) -> WindowIndex:
    """Same as ``WindowIndex(records, config)``."""
    return WindowIndex(records, config)


class WindowDataset(torch.utils.data.Dataset):
    """Windows as dicts for a ``DataLoader`` (no tokens): :meth:`Window.as_dict` of each window.

    Item: ``positions`` float32 ``[C, W, 2]``, ``commands`` int64 ``[C]``, ``speeds`` float32 ``[C]``,
    ``timestamps_us`` int64 ``[C]``, ``frame_indices`` int64 ``[C]``, ``scene`` str, ``window_idx`` int, and
    ``image_paths`` (``C`` strings as stored in the records, joined to ``image_root`` when given) for scenes
    that have them.
    """

    def __init__(self, index: WindowIndex, image_root: str | None = None) -> None:
        self.index = index
        self.image_root = image_root

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        out = self.index[i].as_dict()
        if self.image_root is not None and "image_paths" in out:
            out["image_paths"] = [os.path.join(self.image_root, p) for p in out["image_paths"]]
        return out


# ------------------------------------------------------------------------------------- token adapter


class TokenStoreLike(Protocol):
    """What :class:`TokenWindowDataset` needs from a token store."""

    def timestamps(self, scene: str) -> np.ndarray:  # int64 µs [T]
        ...

    def tokens(self, scene: str) -> np.ndarray:  # memmap [T, h, w]
        ...

    def frame_index_at(self, scene: str, timestamps_us: np.ndarray, tolerance_us: int | None) -> np.ndarray:  # int [K]
        ...


class TokenWindowDataset(torch.utils.data.Dataset):
    """Windows joined with a token store by timestamp.

    Item ``i`` is a dict: ``tokens`` int64 ``[C, h, w]``, ``positions`` float32 ``[C, W, 2]``,
    ``commands`` int64 ``[C]``, ``speeds`` float32 ``[C]`` (m/s), ``timestamps_us`` int64 ``[C]``,
    ``frame_indices`` int64 ``[C]``, ``scene`` str, ``window_idx`` int.

    Args:
        index: the windows.
        store: a token store (e.g. :class:`vavam.data.tokens.TokenStore`):
            ``frame_index_at(scene, timestamps_us, tolerance_us) -> [C]`` ints (raising, or negative,
            for a miss) and ``tokens(scene) -> [T, h, w]``.
        tolerance_us: largest allowed |record timestamp - token timestamp|; None: half the smaller median
            frame interval of the scene's record frames and store frames (:meth:`scene_tolerance_us`).
    """

    def __init__(self, index: WindowIndex, store: TokenStoreLike, tolerance_us: int | None = None) -> None:
        self.index = index
        self.store = store
        self.tolerance_us = tolerance_us
        self._tolerances: dict[int, int | None] = {}

    def __len__(self) -> int:
        return len(self.index)

    def scene_tolerance_us(self, scene_index: int) -> int | None:
        """The join tolerance (µs) of scene ``scene_index``: ``tolerance_us`` when given, else half the smaller
        median frame interval of the record's frames and the store's frames (None when neither has 2 frames).

        The store alone would allow half *its* interval: a store holding fewer frames than the records (2 Hz
        tokens of 10 Hz records) would then pair a record frame with a token up to 0.25 s away, silently.
        """
        if self.tolerance_us is not None:
            return self.tolerance_us
        if scene_index not in self._tolerances:
            idx, name = self.index, self.index.scene_names[scene_index]
            a, b = int(idx.scene_offsets[scene_index]), int(idx.scene_offsets[scene_index + 1])
            halves = [
                int(np.median(np.diff(ts)) // 2)
                for ts in (idx.frame_timestamps[a:b], np.asarray(self.store.timestamps(name), dtype=np.int64))
                if len(ts) > 1
            ]
            self._tolerances[scene_index] = min(halves) if halves else None
        return self._tolerances[scene_index]

    def first_unjoined(self) -> tuple[str, int, int | None] | None:
        """The first context frame of any window with no token within its scene's tolerance, as
        ``(scene, record timestamp µs, tolerance µs)``; None when every window joins.

        One store query per scene over the context frames its windows use (each frame once), so a store
        made at another frame rate than the records is found before training rather than at its first batch.
        """
        idx = self.index
        if len(idx) == 0:
            return None
        frames = np.unique(idx.context_frames(np.arange(len(idx))))  # global frame numbers, sorted
        bounds = np.searchsorted(frames, idx.scene_offsets)  # [S+1]: each scene's slice of ``frames``
        for s in np.flatnonzero(np.diff(bounds)):
            name, ts = idx.scene_names[s], idx.frame_timestamps[frames[bounds[s] : bounds[s + 1]]]
            tol = self.scene_tolerance_us(int(s))
            try:
                rows = np.asarray(self.store.frame_index_at(name, ts, tol), dtype=np.int64).reshape(-1)
            except (KeyError, ValueError):  # the vavam store raises for a miss: find the first one
                rows = np.array([_joined_row(self.store, name, t, tol) for t in ts.tolist()], dtype=np.int64)
            if rows.shape != ts.shape or np.any(rows < 0):
                bad = 0 if rows.shape != ts.shape else int(np.flatnonzero(rows < 0)[0])
                return name, int(ts[bad]), tol
        return None

    def __getitem__(self, i: int) -> dict[str, Any]:
        w = self.index[i]
        tol = self.scene_tolerance_us(w.scene_index)
        rows = np.asarray(self.store.frame_index_at(w.scene, w.timestamps_us, tol), dtype=np.int64).reshape(-1)
        if rows.shape != w.timestamps_us.shape or np.any(rows < 0):
            missing = (
                w.timestamps_us[rows < 0].tolist() if rows.shape == w.timestamps_us.shape else w.timestamps_us.tolist()
            )
            raise KeyError(f"scene '{w.scene}', window {w.index}: no tokens within {tol} us of timestamps {missing}")
        tokens = np.asarray(self.store.tokens(w.scene)[rows]).astype(np.int64)
        out = w.as_dict()
        out.pop("image_paths", None)
        out["tokens"] = torch.from_numpy(tokens)
        return out


def _joined_row(store: TokenStoreLike, scene: str, timestamp_us: int, tolerance_us: int | None) -> int:
    """The store's frame for one timestamp, -1 for a miss (raised or returned negative)."""
    try:
        return int(np.asarray(store.frame_index_at(scene, np.array([timestamp_us]), tolerance_us)).reshape(-1)[0])
    except (KeyError, ValueError):
        return -1


__all__ = [
    "COMMAND_THRESHOLD_M",
    "DATASET_SUBSAMPLING",
    "TokenStoreLike",
    "TokenWindowDataset",
    "Window",
    "WindowConfig",
    "WindowDataset",
    "WindowIndex",
    "build_window_index",
    "infer_subsampling",
    "trajectory_targets",
]
