"""Pictures and media shared by commands and evaluations: tokens <-> images, image grids, PNG / npy / mp4 writing.

Images are RGB uint8 ``[H, W, 3]`` numpy arrays unless stated; model images are float ``[N, 3, H, W]`` in
about [-1, 1]. Files are written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from vavam.io import atomic_write, atomic_write_bytes

__all__ = [
    "caption",
    "decode_tokens",
    "encode_images",
    "hstack",
    "labelled",
    "pad_even",
    "to_uint8",
    "upscale",
    "vstack",
    "write_mp4",
    "write_npy",
    "write_png",
]


@torch.no_grad()
def encode_images(tok, images: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Tokenize float images ``[N, 3, H, W]`` -> long ``[N, h, w]`` on the CPU."""
    out = [tok.encode(images[i : i + batch_size]).long().cpu() for i in range(0, len(images), batch_size)]
    return torch.cat(out)


@torch.no_grad()
def decode_tokens(tok, ids: torch.Tensor, batch_size: int = 16) -> tuple[torch.Tensor, int]:
    """Decode ids ``[N, h, w]`` -> (float ``[N, 3, H, W]`` on the CPU, number of ids outside the codebook
    that were clamped to the last code)."""
    k = int(tok.codebook_size)
    outside = int(((ids < 0) | (ids >= k)).sum())
    ids = ids.clamp(0, k - 1)
    out = [tok.decode(ids[i : i + batch_size]).float().cpu() for i in range(0, len(ids), batch_size)]
    return torch.cat(out), outside


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float ``[N, 3, H, W]`` in about [-1, 1] -> RGB uint8 ``[N, H, W, 3]``."""
    from vavam.types import unit_to_uint8

    return unit_to_uint8(images.detach().cpu()).permute(0, 2, 3, 1).contiguous().numpy()


# ------------------------------------------------------------------------------ pictures


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=max(6, int(size)))
    except TypeError:
        return ImageFont.load_default()


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour integer upscaling (token-level detail stays visible) ``[H, W, 3]``."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


def labelled(image: np.ndarray, text: str, bar: int | None = None, color=(235, 235, 235)) -> np.ndarray:
    """``image`` with a dark label bar of ``text`` above it."""
    from PIL import Image, ImageDraw

    h, w = image.shape[:2]
    bar = bar or max(12, min(24, w // 12))
    canvas = Image.new("RGB", (w, h + bar), (16, 16, 16))
    canvas.paste(Image.fromarray(image), (0, bar))
    ImageDraw.Draw(canvas).text((4, max(0, (bar - int(bar * 0.7)) // 2)), text, fill=color, font=_font(int(bar * 0.7)))
    return np.asarray(canvas).copy()


def caption(image: np.ndarray, text: str, color=(235, 235, 235)) -> np.ndarray:
    """Copy of ``image`` with ``text`` on a dark box in its bottom-left corner (pixel positions unchanged)."""
    from PIL import Image, ImageDraw

    h = image.shape[0]
    pil = Image.fromarray(image)
    draw = ImageDraw.Draw(pil)
    font = _font(max(8, min(20, h // 20)))
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    x, y = 4, h - 4 - (bottom - top) - 4
    draw.rectangle([x - 2, y - 2, x + right - left + 4, h - 4], fill=(16, 16, 16))
    draw.text((x + 1 - left, y + 1 - top), text, fill=color, font=font)
    return np.asarray(pil).copy()


def hstack(images: Sequence[np.ndarray], gap: int = 4, fill: int = 0) -> np.ndarray:
    """Images of equal height side by side with ``gap`` pixels between them."""
    h = max(im.shape[0] for im in images)
    parts: list[np.ndarray] = []
    for i, im in enumerate(images):
        if im.shape[0] < h:
            im = np.concatenate([im, np.full((h - im.shape[0], *im.shape[1:]), fill, np.uint8)])
        if i:
            parts.append(np.full((h, gap, 3), fill, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=1)


def vstack(images: Sequence[np.ndarray], gap: int = 4, fill: int = 0) -> np.ndarray:
    """Images stacked top to bottom (narrower ones padded on the right)."""
    w = max(im.shape[1] for im in images)
    parts: list[np.ndarray] = []
    for i, im in enumerate(images):
        if im.shape[1] < w:
            im = np.concatenate([im, np.full((im.shape[0], w - im.shape[1], 3), fill, np.uint8)], axis=1)
        if i:
            parts.append(np.full((gap, w, 3), fill, np.uint8))
        parts.append(im)
    return np.concatenate(parts, axis=0)


def pad_even(image: np.ndarray) -> np.ndarray:
    """Pad to even height and width (H.264 / yuv420p needs them)."""
    h, w = image.shape[:2]
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)))


# ------------------------------------------------------------------------------ writing


def write_png(path: Path, image: np.ndarray) -> Path:
    """Write RGB uint8 ``[H, W, 3]`` as PNG, atomically."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def write_npy(path: Path, array: np.ndarray) -> Path:
    """Write a numpy array as ``.npy``, atomically."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


#: MAX_MP4_FPS: the fastest frame rate :func:`write_mp4` writes (at 10,000 fps PyAV's mp4 decodes to no frame).
MAX_MP4_FPS = 1000


def write_mp4(path: Path, frames: Sequence[np.ndarray], fps: float = 2.0) -> Path:
    """Write RGB uint8 frames ``[H, W, 3]`` (equal sizes, padded to even) as an mp4 with PyAV, atomically.

    H.264 (yuv420p) when PyAV has libx264, else MPEG-4 part 2.

    Raises:
        ValueError: no frames, frames of different sizes, or an ``fps`` that is not a finite rate in
            [1/1000, 1000] (PyAV would silently write 24 fps for 0, and at 10,000 fps or more a video that decodes
            to no frame).
    """
    import av

    if not frames:
        raise ValueError("write_mp4: no frames")
    try:
        good = (not isinstance(fps, bool) and math.isfinite(float(fps))
                and 0 < Fraction(fps).limit_denominator(1000) <= MAX_MP4_FPS)
    except (TypeError, ValueError):
        good = False
    if not good:
        raise ValueError(f"write_mp4: fps must be a positive frame rate from 1/1000 to {MAX_MP4_FPS}, got {fps!r}")
    frames = [np.asarray(f) for f in frames]
    for i, f in enumerate(frames):
        if f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8:
            raise ValueError(f"write_mp4: frame {i} must be RGB uint8 [H, W, 3], got {f.dtype} {tuple(f.shape)}")
        if f.shape != frames[0].shape:  # checked before padding: 63 and 64 rows would both pad to 64
            sizes = f"frame 0 {frames[0].shape[:2]}, frame {i} {f.shape[:2]}"
            raise ValueError(f"write_mp4: frames of different sizes ({sizes})")
    frames = [pad_even(np.ascontiguousarray(f)) for f in frames]
    h, w = frames[0].shape[:2]
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    rate = Fraction(fps).limit_denominator(1000)
    with atomic_write(path, "wb") as f, av.open(f, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)
