"""The VaVAM driving agent behind the server: image -> tokens once, context chosen by timestamp.

Each ``/infer`` call brings one new front-camera image. The agent tokenizes only that image and
keeps a short history of ``(timestamp, tokens)`` per session. The context for the model is chosen by
time: the newest frame, then, step by step, the frame nearest to 0.5 s before the frame chosen last
(within a tolerance), up to ``context_frames``; it stops at the first gap. Each step is measured from
the previous choice, so logged timestamps a little off 0.5 s (NeuroNCAP's priming steps replay
nuScenes keyframes, 0.45-0.55 s apart) do not add up and cut the context short. So the model always
sees 2 Hz context whatever rate the simulator calls at (NeuroNCAP calls at 2 Hz), and a frame is never
tokenized twice (the reference re-tokenized all 8 frames on every call).

Reproducibility: with ``AgentOptions.seed`` set, the noise of a call comes from a CPU generator
seeded with :func:`sample_seed` ``(seed, timestamp_us)``, so the same frames, command and timestamp
give the same trajectory whatever came before (and whichever session or thread asks).

Concurrency: every session (a string key; the server takes it from a header) has its own history
and lock; the model itself runs under one lock (one forward at a time), so concurrent callers get
exactly the answers they would get alone.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from vavam.types import CONTEXT_FRAMES, IMAGE_SIZE, WAYPOINT_DT, uint8_to_unit

NEURONCAP_SIZE = (900, 1600)  # (H, W) the simulator renders; resized to this first when it differs
DEFAULT_SESSION = "default"
MAX_SPEED = 100.0  # m/s; an ego speed beyond this is refused as bad input (the model's output would be garbage)
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
Reduction = Literal["first", "mean", "medoid"]
log = logging.getLogger(__name__)


def preprocess_image(image: np.ndarray, size: tuple[int, int] = IMAGE_SIZE, neuroncap_rule: bool = True) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, h, w]`` in [-1, 1] at ``size`` (antialiased bilinear).

    An image already of ``size`` is only normalised. Otherwise, with ``neuroncap_rule``, an image
    that is not 900x1600 is first resized to 900x1600 (handles 1599-wide renders), then to ``size``,
    as the reference server did (900x1600 -> 288x512 is its divide-by-3.125 step). Each resize works
    on the uint8 values and rounds back to integers, as the reference's torchvision resize of a uint8
    image does (and as :func:`vavam.data.frames.preprocess_frame` does for the training frames).
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 image, got {image.dtype} {list(image.shape)}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, copy=True, order="C")
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float()  # [1, 3, H, W], 0..255
    size = (int(size[0]), int(size[1]))

    def resize_u8(x: torch.Tensor, out: tuple[int, int]) -> torch.Tensor:
        x = F.interpolate(x, size=out, mode="bilinear", antialias=True, align_corners=False)
        return x.round_().clamp_(0.0, 255.0)

    if tuple(x.shape[-2:]) != size:
        if neuroncap_rule and tuple(x.shape[-2:]) != NEURONCAP_SIZE:
            x = resize_u8(x, NEURONCAP_SIZE)
        if tuple(x.shape[-2:]) != size:
            x = resize_u8(x, size)
    return uint8_to_unit(x[0]).clamp(-1.0, 1.0)  # as the training frames (vavam.data.frames.preprocess_frame)


def grid_for(tokens_per_frame: int, aspect: float = 16 / 9) -> tuple[int, int]:
    """The ``(h, w)`` token grid with ``h * w = tokens_per_frame`` whose ``w / h`` is nearest ``aspect``
    (576 -> 18 x 32, 128 -> 8 x 16, 24 -> 4 x 6)."""
    pairs = [(h, tokens_per_frame // h) for h in range(1, tokens_per_frame + 1) if tokens_per_frame % h == 0]
    return min(pairs, key=lambda p: abs(np.log(p[1] / p[0]) - np.log(aspect)))


def checkpoint_image_size(tokenizer, model, default: tuple[int, int] = IMAGE_SIZE) -> tuple[int, int]:
    """The image size a model was trained at: its token grid (:func:`grid_for` of the video model's
    ``tokens_per_frame``) times the tokenizer's downsampling; ``default`` when either is unknown."""
    video = getattr(getattr(model, "config", None), "video", None)
    ds = getattr(tokenizer, "downsample", None)
    if video is None or not isinstance(ds, int):
        return tuple(default)
    h, w = grid_for(int(video.tokens_per_frame))
    return (h * ds, w * ds)


def check_tokenizer_fits(tokenizer, model, image_size: tuple[int, int]) -> None:
    """Refuse, before any frame, a tokenizer whose token grid at ``image_size`` (H, W) is not the model's
    (``tokens_per_frame``): each call would fail later with a message naming neither. Models or tokenizers that do
    not say their sizes (no ``config.video`` / integer ``downsample``) are not checked.

    Raises:
        ValueError: naming the tokenizer's downsampling, the image size and both token counts.
    """
    video = getattr(getattr(model, "config", None), "video", None)
    ds = getattr(tokenizer, "downsample", None)
    if video is None or not isinstance(ds, int) or ds < 1:
        return
    h, w = int(image_size[0]), int(image_size[1])
    grid = (h // ds, w // ds)
    if h % ds or w % ds or grid[0] * grid[1] != int(video.tokens_per_frame):
        raise ValueError(
            f"the tokenizer (downsampling {ds}) turns {h}x{w} images into {grid[0]}x{grid[1]} = {grid[0] * grid[1]} "
            f"tokens per frame, but the model takes {video.tokens_per_frame}: pass the tokenizer the model was trained "
            "with (--tokenizer), or its image size (--image-height / --image-width)")


def _checked_position(position: Sequence[float] | None) -> tuple[float, float] | None:
    """A planar ego position ``(x, y)`` metres (more values: the first two), refused unless finite."""
    if position is None:
        return None
    xy = np.asarray(position, dtype=np.float64).reshape(-1)
    if xy.size < 2 or not np.isfinite(xy[:2]).all():
        raise ValueError(f"position: expected a finite ego position (x, y) in metres, got {list(position)}")
    return float(xy[0]), float(xy[1])


def _check_speed(speed: float | None, what: str) -> float:
    """``speed`` (m/s) when given, finite and plausible, else ``ValueError`` naming ``what``."""
    if speed is None or not np.isfinite(speed):
        raise ValueError(f"{what}: this model reads the ego speed (m/s), got {speed}")
    if abs(speed) > MAX_SPEED:
        raise ValueError(f"{what}: {speed} m/s is not a plausible ego speed (|speed| <= {MAX_SPEED:g} m/s)")
    return speed


def sample_seed(seed: int, timestamp_us: int) -> int:
    """Seed of the noise generator for one call: a fixed mix of the option seed and the frame time."""
    return (int(seed) * 1_000_003 + int(timestamp_us)) % (2**63 - 1)


class TokenHistory:
    """Recent ``(timestamp µs, tokens [h, w], ego position)`` frames; :meth:`context` picks frames at ``spacing_us``
    and :meth:`recent_speed` measures the ego speed over the last of those steps."""

    def __init__(self, context_frames: int = CONTEXT_FRAMES, spacing_us: int = int(WAYPOINT_DT * 1e6), tolerance_us: int = 100_000):
        self.context_frames = context_frames
        self.spacing_us = spacing_us
        self.tolerance_us = tolerance_us
        self.timestamps: list[int] = []
        self.tokens: list[torch.Tensor] = []
        self.positions: list[tuple[float, float] | None] = []  # planar ego position (m, world frame), if given

    def __len__(self) -> int:
        return len(self.timestamps)

    def clear(self) -> None:
        self.timestamps.clear()
        self.tokens.clear()
        self.positions.clear()

    def check_next(self, timestamp_us: int) -> None:
        """Raise ``ValueError`` unless ``timestamp_us`` is an int64 after the newest frame."""
        if not INT64_MIN <= timestamp_us <= INT64_MAX:
            raise ValueError(f"timestamp {timestamp_us} us is outside the int64 range")
        if self.timestamps and timestamp_us <= self.timestamps[-1]:
            raise ValueError(
                f"timestamp {timestamp_us} us is not after the previous frame's {self.timestamps[-1]} us; call /reset between runs"
            )

    def push(self, timestamp_us: int, tokens: torch.Tensor,
             position: tuple[float, float] | None = None) -> list[tuple[int, torch.Tensor, tuple[float, float] | None]]:
        """Add the newest frame (with the ego's planar world position in metres, when known). Timestamps must
        increase (a new run must :meth:`clear` first).

        Returns the ``(timestamp, tokens, position)`` frames dropped as too old for any context now, oldest first
        (give them to :meth:`drop_newest` to undo this push exactly)."""
        self.check_next(timestamp_us)
        self.timestamps.append(int(timestamp_us))
        self.tokens.append(tokens)
        self.positions.append(None if position is None else (float(position[0]), float(position[1])))
        horizon = (self.spacing_us + self.tolerance_us) * self.context_frames  # the oldest frame a context can reach
        pruned = []
        while self.timestamps and self.timestamps[0] < timestamp_us - horizon:
            pruned.append((self.timestamps.pop(0), self.tokens.pop(0), self.positions.pop(0)))
        return pruned

    def drop_newest(self, timestamp_us: int,
                    pruned: Sequence[tuple[int, torch.Tensor, tuple[float, float] | None]] = ()) -> None:
        """Forget the newest frame if it is ``timestamp_us``'s (a call that failed after :meth:`push`), and put back
        the old frames ``pruned`` that this push dropped (its return value), so the history is as before it."""
        if self.timestamps and self.timestamps[-1] == timestamp_us:
            self.timestamps.pop()
            self.tokens.pop()
            self.positions.pop()
            self.timestamps[:0] = [int(t) for t, _, _ in pruned]
            self.tokens[:0] = [tok for _, tok, _ in pruned]
            self.positions[:0] = [pos for _, _, pos in pruned]

    def recent_speed(self) -> float | None:
        """Ego speed (m/s) as training measures each frame's (``vavam.data.windows``): the planar distance from the
        context frame before the newest (about ``spacing_us`` earlier) to the newest, over their time apart.
        None when the context has one frame or either frame came without a position."""
        idx = self.context_indices()
        if len(idx) < 2:
            return None
        a, b = idx[-2], idx[-1]
        pa, pb = self.positions[a], self.positions[b]
        if pa is None or pb is None:
            return None
        return math.hypot(pb[0] - pa[0], pb[1] - pa[1]) / ((self.timestamps[b] - self.timestamps[a]) * 1e-6)

    def context_indices(self) -> list[int]:
        """Indices into the history, oldest first, of the frames forming the 2 Hz context: each is the frame
        nearest to ``spacing_us`` before the one chosen after it (within ``tolerance_us``)."""
        if not self.timestamps:
            return []
        ts = self.timestamps  # Python ints: no int64 overflow near the ends of the range
        chosen = [len(ts) - 1]
        for _ in range(1, self.context_frames):
            target = ts[chosen[-1]] - self.spacing_us
            j = min(range(len(ts)), key=lambda i: abs(ts[i] - target))  # the first (oldest) of equally near ones
            if abs(ts[j] - target) > self.tolerance_us or j in chosen:
                break
            chosen.append(j)
        return chosen[::-1]

    def context(self) -> torch.Tensor:
        """``long [T, h, w]`` context tokens, oldest first (T >= 1)."""
        idx = self.context_indices()
        if not idx:
            raise RuntimeError("TokenHistory: no frame yet")
        return torch.stack([self.tokens[i] for i in idx])


def reduce_samples(samples: torch.Tensor, reduction: Reduction) -> torch.Tensor:
    """``[K, 6, 2]`` trajectories -> ``[6, 2]``: the first, the mean, or the medoid (least summed distance)."""
    if reduction == "first":
        return samples[0]
    if reduction == "mean":
        return samples.mean(0)
    if reduction == "medoid":
        flat = samples.reshape(samples.shape[0], -1)  # [K, 12]
        return samples[torch.cdist(flat, flat).sum(1).argmin()]
    raise ValueError(f"unknown reduction {reduction!r} (first, mean, medoid)")


@dataclass
class AgentOptions:
    """How the agent plans.

    ``image_size`` None: the checkpoint's own resolution (:func:`checkpoint_image_size`).
    ``dtype`` bf16: tokenizer and model run under bf16 autocast (CPU or GPU).
    """

    num_samples: int = 1
    reduction: Reduction = "first"
    num_steps: int | None = None  # Euler steps; None = the checkpoint's own
    seed: int | None = None  # same frames + same seed + same timestamp -> same answer
    image_size: tuple[int, int] | None = None
    neuroncap_rule: bool = True
    dtype: Literal["fp32", "bf16"] = "fp32"
    device: str = "cpu"
    max_sessions: int = 64  # least recently used session histories beyond this are dropped

    def __post_init__(self) -> None:
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.num_steps is not None and self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1 (or None: the checkpoint's own), got {self.num_steps}")
        if self.reduction not in ("first", "mean", "medoid"):
            raise ValueError(f"unknown reduction {self.reduction!r} (first, mean, medoid)")
        if self.dtype not in ("fp32", "bf16"):
            raise ValueError(f"dtype must be fp32 or bf16, got {self.dtype!r}")
        if self.max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")


_TIMING = threading.local()  # .timing: the dict of the agent call running in this thread; .sync: its device sync


class _PrefillTimer:
    """Stands in for ``model.visual_kv`` on the model instance: calls the original and, when an agent
    call in this thread has a timing dict open, adds the seconds it took under ``"prefill"``. Shared
    by every agent around the same model; transparent to everyone else."""

    def __init__(self, original):
        self.original = original

    def __call__(self, *args, **kwargs):
        timing = getattr(_TIMING, "timing", None)
        if timing is None:
            return self.original(*args, **kwargs)
        sync = getattr(_TIMING, "sync", None) or (lambda: None)
        sync()
        t0 = time.perf_counter()
        try:
            return self.original(*args, **kwargs)
        finally:
            sync()
            timing["prefill"] = timing.get("prefill", 0.0) + time.perf_counter() - t0


class VaVAMAgent:
    """Tokenizer + VaVAM + one :class:`TokenHistory` per session; thread-safe.

    ``tokenizer.encode(float [B,3,H,W]) -> long [B,h,w]`` and
    ``model.sample_trajectory(tokens [B,T,h,w], command [B], num_samples, num_steps, generator=...)
    -> metres [B,K,6,2]`` (the public API of vavam's tokenizer and action model).

    Timing: :meth:`plan_timed` returns seconds spent in ``tokenize``, ``prefill`` (VaViM's keys and
    values over the context, measured by wrapping ``model.visual_kv`` on the instance; absent for
    models without it), ``denoise`` (the rest of ``sample_trajectory``: the Euler steps of the
    action expert) and ``total``.
    """

    def __init__(self, tokenizer, model, options: AgentOptions | None = None, context_frames: int | None = None):
        self.tokenizer = tokenizer
        self.model = model
        options = options or AgentOptions()
        size = options.image_size if options.image_size is not None else checkpoint_image_size(tokenizer, model)
        self.options = dataclasses.replace(options, image_size=(int(size[0]), int(size[1])))  # a copy: never the caller's
        check_tokenizer_fits(tokenizer, model, self.options.image_size)
        from vavam.hardware import warn_if_slow_bf16

        warn_if_slow_bf16("bf16" if self.options.dtype == "bf16" else "32", self.options.device, "serving")
        if context_frames is None:
            video_config = getattr(getattr(model, "config", None), "video", None)
            context_frames = video_config.num_frames if video_config is not None else CONTEXT_FRAMES
        self.context_frames = int(context_frames)
        self._sessions: OrderedDict[str, tuple[TokenHistory, threading.Lock]] = OrderedDict()
        self._sessions_lock = threading.Lock()
        self._model_lock = threading.Lock()
        if callable(getattr(model, "visual_kv", None)) and not isinstance(model.visual_kv, _PrefillTimer):
            model.visual_kv = _PrefillTimer(model.visual_kv)

    @property
    def reads_speed(self) -> bool:
        """Whether the model is conditioned on the ego speed (``ActionConfig.ego_speed``)."""
        return bool(getattr(getattr(self.model, "config", None), "ego_speed", False))

    # ------------------------------------------------------------------ sessions

    def _session(self, session: str) -> tuple[TokenHistory, threading.Lock]:
        with self._sessions_lock:
            entry = self._sessions.get(session)
            if entry is None:
                entry = (TokenHistory(context_frames=self.context_frames), threading.Lock())
                self._sessions[session] = entry
                while len(self._sessions) > self.options.max_sessions:
                    dropped, (old, _) = self._sessions.popitem(last=False)
                    if len(old):
                        log.warning("session %r dropped with its %d frames: more than %d sessions (the least recently "
                                    "used goes; its next call starts a fresh history)", dropped, len(old),
                                    self.options.max_sessions)
            self._sessions.move_to_end(session)
            return entry

    def history(self, session: str = DEFAULT_SESSION) -> TokenHistory:
        """The frame history of ``session`` (created empty when new)."""
        return self._session(session)[0]

    @property
    def sessions(self) -> list[str]:
        with self._sessions_lock:
            return list(self._sessions)

    def reset(self, session: str = DEFAULT_SESSION) -> None:
        """Forget the frames of ``session`` (a new run starts)."""
        history, lock = self._session(session)
        with lock:
            history.clear()

    # ------------------------------------------------------------------ compute

    def _sync(self) -> None:
        if torch.device(self.options.device).type == "cuda":
            torch.cuda.synchronize()

    def _autocast(self):
        enabled = self.options.dtype == "bf16"
        device_type = torch.device(self.options.device).type
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled)

    def _tokenize(self, image: np.ndarray) -> torch.Tensor:
        opts = self.options
        pixels = preprocess_image(image, opts.image_size, opts.neuroncap_rule)[None].to(opts.device)  # [1, 3, H, W]
        with self._model_lock, self._autocast():
            return self.tokenizer.encode(pixels)[0].cpu()  # [h, w]

    @torch.inference_mode()
    def observe(self, image: np.ndarray, timestamp_us: int, session: str = DEFAULT_SESSION,
                position: Sequence[float] | None = None) -> None:
        """Tokenize a uint8 ``[H,W,3]`` frame and add it to the history without planning (``position``: the ego's
        planar world position in metres, for :meth:`plan`'s speed)."""
        position = _checked_position(position)
        history, lock = self._session(session)
        with lock:
            history.check_next(int(timestamp_us))
            history.push(int(timestamp_us), self._tokenize(image), position)

    def plan(
        self, image: np.ndarray, timestamp_us: int, command: int, session: str = DEFAULT_SESSION,
        speed: float | None = None, position: Sequence[float] | None = None,
    ) -> np.ndarray:
        """One step: uint8 ``[H,W,3]`` CAM_FRONT image, time, command -> trajectory float64 ``[6, 2]`` metres.

        Models with ``config.ego_speed`` read the ego speed (m/s) as training measured it: the distance driven
        over the last context step, from the ``position`` (planar world position, metres; NeuroNCAP's
        ``ego2world`` translation) of this frame and of the context frame before it. Without both positions
        (a run's first frame, or a caller that sends none) they read ``speed`` (e.g. the CAN bus's).
        """
        return self.plan_timed(image, timestamp_us, command, session, speed, position)[0]

    @torch.inference_mode()
    def plan_timed(
        self, image: np.ndarray, timestamp_us: int, command: int, session: str = DEFAULT_SESSION,
        speed: float | None = None, position: Sequence[float] | None = None,
    ) -> tuple[np.ndarray, dict[str, float]]:
        """:meth:`plan`, also returning seconds spent per stage (``tokenize``, ``prefill``, ``denoise``, ``total``)."""
        if int(command) not in (0, 1, 2):
            raise ValueError(f"command must be 0 (right), 1 (left) or 2 (straight), got {command}")
        position = _checked_position(position)
        # checked here too (the model checks again): refuse before the frame joins the session's history
        if self.reads_speed:
            _check_speed(speed, "speed")
        timing: dict[str, float] = {}
        t_start = time.perf_counter()
        history, lock = self._session(session)
        # the session's lock is held until the answer is ready (then the model's, the order tokenizing
        # takes them in): a session's calls run one after the other, so a failed call can forget exactly
        # its own frame; other sessions run meanwhile
        with lock:
            history.check_next(int(timestamp_us))  # refuse before spending compute
            t0 = time.perf_counter()
            tokens = self._tokenize(image)
            timing["tokenize"] = time.perf_counter() - t0
            pruned = history.push(int(timestamp_us), tokens, position)
            try:  # a call that fails from here on leaves the history as it was (the caller may send the frame again)
                if self.reads_speed:  # the speed training saw, where the poses give it
                    measured = history.recent_speed()
                    if measured is not None:
                        speed = _check_speed(measured, "speed measured from the last two context frames' positions")
                traj = self._sample(history.context()[None], command, timestamp_us, speed, timing)  # [6, 2]
            except BaseException:
                history.drop_newest(int(timestamp_us), pruned)  # old frames the push dropped come back too
                raise
        timing["total"] = time.perf_counter() - t_start
        return traj, timing

    def _sample(
        self, context: torch.Tensor, command: int, timestamp_us: int, speed: float | None, timing: dict[str, float]
    ) -> np.ndarray:
        """``long [1, T, h, w]`` context -> float64 ``[6, 2]`` trajectory; adds ``prefill`` / ``denoise`` seconds
        to ``timing``. Raises :class:`~vavam.serve.errors.NonFiniteTrajectory` on a NaN / inf answer."""
        from vavam.serve.errors import NonFiniteTrajectory

        opts = self.options
        generator = None
        if opts.seed is not None:  # sample_trajectory draws its noise on the CPU
            generator = torch.Generator().manual_seed(sample_seed(opts.seed, timestamp_us))
        kwargs = {"num_samples": opts.num_samples, "generator": generator}
        if opts.num_steps is not None:
            kwargs["num_steps"] = opts.num_steps
        if self.reads_speed:
            kwargs["speed"] = torch.tensor([float(speed)], device=opts.device)
        with self._model_lock:
            _TIMING.timing, _TIMING.sync = timing, self._sync
            try:
                self._sync()
                t0 = time.perf_counter()
                with self._autocast():
                    commands = torch.tensor([int(command)], device=opts.device)
                    samples = self.model.sample_trajectory(context.to(opts.device), commands, **kwargs)
                self._sync()
                sampling = time.perf_counter() - t0
            finally:
                _TIMING.timing = _TIMING.sync = None
        traj = reduce_samples(samples[0].float().cpu(), opts.reduction).double().numpy()  # [6, 2]
        if not np.isfinite(traj).all():
            raise NonFiniteTrajectory(f"the model returned a non-finite trajectory: {traj.tolist()}")
        timing["denoise"] = sampling - timing.get("prefill", 0.0)
        return traj
