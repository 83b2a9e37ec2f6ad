"""The VaVAM driving agent behind the server: image -> tokens once, context chosen by timestamp.

Each ``/infer`` call brings one new front-camera image. The agent tokenizes only that image and
keeps a short history of ``(timestamp, tokens)``. The context for the model is chosen by time:
the newest frame, then the frames nearest to 0.5 s, 1.0 s, ... earlier (within a tolerance), up to
``context_frames``; it stops at the first gap. So the model always sees 2 Hz context whatever rate
the simulator calls at (NeuroNCAP calls at 2 Hz), and a frame is never tokenized twice (the
reference re-tokenized all 8 frames on every call).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from vavam.types import CONTEXT_FRAMES, IMAGE_SIZE, WAYPOINT_DT

NEURONCAP_SIZE = (900, 1600)  # (H, W) the simulator renders; resized to this first when it differs
Reduction = Literal["first", "mean", "medoid"]


def preprocess_image(image: np.ndarray, size: tuple[int, int] = IMAGE_SIZE, neuroncap_rule: bool = True) -> torch.Tensor:
    """uint8 ``[H, W, 3]`` -> float ``[3, h, w]`` in [-1, 1] at ``size`` (antialiased bilinear).

    With ``neuroncap_rule`` an image that is not 900x1600 is first resized to 900x1600 (handles
    1599-wide renders), then to ``size``, as the reference server did.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 H x W x 3 image, got {image.dtype} {list(image.shape)}")
    if not image.flags.writeable or not image.flags.c_contiguous:
        image = np.array(image, copy=True, order="C")
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0  # [1, 3, H, W]
    if neuroncap_rule and tuple(x.shape[-2:]) != NEURONCAP_SIZE:
        x = F.interpolate(x, size=NEURONCAP_SIZE, mode="bilinear", antialias=True, align_corners=False)
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", antialias=True, align_corners=False)
    return (x[0] * 2.0 - 1.0).clamp(-1.0, 1.0)


class TokenHistory:
    """Recent ``(timestamp µs, tokens [h, w])`` pairs; :meth:`context` picks frames at ``spacing_us``."""

    def __init__(self, context_frames: int = CONTEXT_FRAMES, spacing_us: int = int(WAYPOINT_DT * 1e6), tolerance_us: int = 100_000):
        self.context_frames = context_frames
        self.spacing_us = spacing_us
        self.tolerance_us = tolerance_us
        self.timestamps: list[int] = []
        self.tokens: list[torch.Tensor] = []

    def clear(self) -> None:
        self.timestamps.clear()
        self.tokens.clear()

    def push(self, timestamp_us: int, tokens: torch.Tensor) -> None:
        """Add the newest frame. Timestamps must increase (a new run must :meth:`clear` first)."""
        if self.timestamps and timestamp_us <= self.timestamps[-1]:
            raise ValueError(
                f"timestamp {timestamp_us} us is not after the previous frame's {self.timestamps[-1]} us; call /reset between runs"
            )
        self.timestamps.append(int(timestamp_us))
        self.tokens.append(tokens)
        horizon = self.spacing_us * self.context_frames + self.tolerance_us
        while self.timestamps and self.timestamps[0] < timestamp_us - horizon:
            self.timestamps.pop(0)
            self.tokens.pop(0)

    def context_indices(self) -> list[int]:
        """Indices into the history, oldest first, of the frames forming the 2 Hz context."""
        if not self.timestamps:
            return []
        ts = np.asarray(self.timestamps, dtype=np.int64)
        chosen = [len(ts) - 1]
        for k in range(1, self.context_frames):
            target = ts[-1] - k * self.spacing_us
            j = int(np.abs(ts - target).argmin())
            if abs(int(ts[j]) - target) > self.tolerance_us or j in chosen:
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
    """How the agent plans."""

    num_samples: int = 1
    reduction: Reduction = "first"
    num_steps: int | None = None  # Euler steps; None = the checkpoint's own
    seed: int | None = None  # same request + same seed -> same answer
    image_size: tuple[int, int] = IMAGE_SIZE
    neuroncap_rule: bool = True
    dtype: Literal["fp32", "bf16"] = "fp32"
    device: str = "cpu"


class VaVAMAgent:
    """Tokenizer + VaVAM + :class:`TokenHistory`; thread-safe :meth:`plan` and :meth:`reset`.

    ``tokenizer.encode(float [B,3,H,W]) -> long [B,h,w]`` and
    ``model.sample_trajectory(tokens [B,T,h,w], command [B], num_samples, num_steps, generator=...)
    -> metres [B,K,6,2]`` (the public API of vavam's tokenizer and action model).
    """

    def __init__(self, tokenizer, model, options: AgentOptions | None = None, context_frames: int | None = None):
        self.tokenizer = tokenizer
        self.model = model
        self.options = options or AgentOptions()
        if context_frames is None:
            video_config = getattr(getattr(model, "config", None), "video", None)
            context_frames = video_config.num_frames if video_config is not None else CONTEXT_FRAMES
        self.history = TokenHistory(context_frames=int(context_frames))
        self._lock = threading.Lock()

    def reset(self) -> None:
        with self._lock:
            self.history.clear()

    def _autocast(self):
        enabled = self.options.dtype == "bf16"
        device_type = torch.device(self.options.device).type
        return torch.autocast(device_type=device_type, dtype=torch.bfloat16, enabled=enabled)

    @torch.inference_mode()
    def observe(self, image: np.ndarray, timestamp_us: int) -> None:
        """Tokenize a uint8 ``[H,W,3]`` frame and add it to the history without planning."""
        with self._lock:
            self._push(image, timestamp_us)

    def _push(self, image: np.ndarray, timestamp_us: int) -> None:
        opts = self.options
        pixels = preprocess_image(image, opts.image_size, opts.neuroncap_rule)[None].to(opts.device)  # [1, 3, H, W]
        with self._autocast():
            tokens = self.tokenizer.encode(pixels)[0].cpu()  # [h, w]
        self.history.push(timestamp_us, tokens)

    @torch.inference_mode()
    def plan(self, image: np.ndarray, timestamp_us: int, command: int) -> np.ndarray:
        """One step: uint8 ``[H,W,3]`` CAM_FRONT image, time, command -> trajectory float64 ``[6, 2]`` metres."""
        opts = self.options
        with self._lock:
            self._push(image, timestamp_us)
            context = self.history.context()[None].to(opts.device)  # [1, T, h, w]
            generator = None
            if opts.seed is not None:
                generator = torch.Generator(device=opts.device).manual_seed(hash((opts.seed, int(timestamp_us))) % (2**63))
            kwargs = {"num_samples": opts.num_samples, "generator": generator}
            if opts.num_steps is not None:
                kwargs["num_steps"] = opts.num_steps
            with self._autocast():
                samples = self.model.sample_trajectory(context, torch.tensor([command], device=opts.device), **kwargs)
        traj = reduce_samples(samples[0].float().cpu(), opts.reduction)  # [6, 2]
        return traj.double().numpy()
