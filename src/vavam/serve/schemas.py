"""NeuroNCAP's model-server wire format (pydantic), and image payload encoding.

The simulator POSTs a :class:`ModelInput` to ``/infer`` at 2 Hz and expects a :class:`ModelOutput`:
six ``[x, y]`` points in the ego frame (x forward, y left, metres) at 0.5 s, 1.0 s, ... 3.0 s.
Images arrive as base64 of a ``torch.save``d uint8 ``H x W x 3`` tensor (NeuroNCAP's own format);
PNG and JPEG base64 are accepted too. Torch payloads are decoded through vavam's restricted
unpickler, so a payload can never run code.
"""

from __future__ import annotations

import base64
import binascii
import io as _io
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, Field, ValidationInfo, field_validator

from vavam.io import safe_torch_loads
from vavam.types import NUM_WAYPOINTS

CAMERAS = ("CAM_FRONT", "CAM_FRONT_LEFT", "CAM_FRONT_RIGHT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")
DEFAULT_PORT = 9000


class Calibration(BaseModel):
    """Per-camera intrinsics (3x3) and extrinsics (camera-to-ego 4x4), and lidar-to-ego (4x4)."""

    camera2image: dict[str, list[list[float]]] = Field(default_factory=dict)
    camera2ego: dict[str, list[list[float]]] = Field(default_factory=dict)
    lidar2ego: list[list[float]] = Field(default_factory=lambda: np.eye(4).tolist())


class ModelInput(BaseModel):
    """One ``/infer`` request (NeuroNCAP ``ModelInput.to_json_dict``)."""

    images: dict[str, str]
    ego2world: list[list[float]]
    canbus: list[float]
    timestamp: int = Field(ge=-(2**63), le=2**63 - 1)  # microseconds (int64, as NeuroNCAP's)
    command: int  # 0 right, 1 left, 2 straight (3 follow-reference is resolved by the simulator)
    calibration: Calibration = Field(default_factory=Calibration)

    @field_validator("ego2world")
    @classmethod
    def _pose_is_4x4(cls, value: list[list[float]]) -> list[list[float]]:
        if len(value) != 4 or any(len(row) != 4 for row in value):
            raise ValueError("ego2world must be a 4x4 matrix")
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise ValueError("ego2world has non-finite entries")
        return value

    @field_validator("command", "timestamp", mode="before")
    @classmethod
    def _integer_not_bool_or_text(cls, value: Any, info: ValidationInfo) -> Any:
        # pydantic's lax int turns JSON true into 1 (LEFT, or 1 us) and "1" into 1: refuse both by name
        if isinstance(value, (bool, str, bytes)):
            raise ValueError(f"{info.field_name} must be an integer, got {type(value).__name__} {value!r:.40}")
        return value

    @field_validator("command")
    @classmethod
    def _command_known(cls, value: int) -> int:
        if value not in (0, 1, 2):
            raise ValueError(f"command must be 0 (right), 1 (left) or 2 (straight), got {value}")
        return value

    @property
    def speed(self) -> float | None:
        """Forward speed in m/s (``canbus[13]``); None when the CAN bus vector is shorter than 14 values."""
        return float(self.canbus[13]) if len(self.canbus) > 13 else None


class AuxOutputs(BaseModel):
    """Optional perception outputs. NeuroNCAP reads this dict's keys, so it must be an object (fields may be null)."""

    objects_in_bev: list[list[float]] | None = None
    object_classes: list[str] | None = None
    object_scores: list[float] | None = None
    object_ids: list[int] | None = None
    future_trajs: list[Any] | None = None


class ModelOutput(BaseModel):
    """One ``/infer`` response: ``NUM_WAYPOINTS`` [x, y] points, ego frame, metres."""

    trajectory: list[list[float]]
    aux_outputs: AuxOutputs = Field(default_factory=AuxOutputs)

    @field_validator("trajectory")
    @classmethod
    def _trajectory_shape(cls, value: list[list[float]]) -> list[list[float]]:
        if len(value) != NUM_WAYPOINTS or any(len(p) != 2 for p in value):
            raise ValueError(f"trajectory must be {NUM_WAYPOINTS} [x, y] points, got {len(value)} points")
        if not np.isfinite(np.asarray(value, dtype=np.float64)).all():
            raise ValueError("trajectory has non-finite entries")
        return value


def encode_image(image: np.ndarray | torch.Tensor, fmt: str = "torch") -> str:
    """uint8 ``[H, W, 3]`` RGB image -> base64 string (``fmt`` 'torch' as NeuroNCAP sends, or 'png')."""
    array = image.cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"encode_image expects uint8 [H,W,3], got {array.dtype} {list(array.shape)}")
    buffer = _io.BytesIO()
    if fmt == "torch":
        torch.save(torch.from_numpy(np.ascontiguousarray(array)), buffer)
    elif fmt == "png":
        from PIL import Image

        Image.fromarray(array).save(buffer, format="PNG")
    else:
        raise ValueError(f"unknown image format {fmt!r} (torch or png)")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


MAX_IMAGE_PIXELS = 4096 * 4096  # larger decoded images are refused (a PNG can expand enormously)


def decode_image(payload: str, name: str = "image", max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """base64 (torch.save'd uint8 tensor, PNG or JPEG) -> uint8 ``[H, W, 3]``. Errors name ``name``.

    Raises ``ValueError`` (bad base64, unreadable payload, not a tensor, wrong shape or dtype, more
    than ``max_pixels`` pixels) or :class:`vavam.io.UnsafePickleError` (the pickle names a global that
    is not allowed; nothing of it ran).
    """
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"{name}: not valid base64 ({exc})") from exc
    if data[:8] == b"\x89PNG\r\n\x1a\n" or data[:3] == b"\xff\xd8\xff":
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(_io.BytesIO(data)) as img:
                if img.width * img.height > max_pixels:
                    raise ValueError(f"{name}: image of {img.height} x {img.width} pixels is larger than allowed ({max_pixels} pixels)")
                array = np.asarray(img.convert("RGB"))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
            raise ValueError(f"{name}: corrupt PNG/JPEG ({exc})") from exc
    else:
        try:
            obj = safe_torch_loads(data, source=name)
        except RecursionError as exc:  # e.g. a pickled list that contains itself
            raise ValueError(f"{name}: payload nests too deeply (or refers to itself), expected a uint8 tensor") from exc
        if not isinstance(obj, torch.Tensor):
            raise ValueError(f"{name}: payload holds a {type(obj).__name__}, expected a uint8 tensor")
        if obj.layout != torch.strided or obj.dtype != torch.uint8:
            raise ValueError(f"{name}: expected uint8 pixels (a dense uint8 tensor), got {obj.dtype} {list(obj.shape)}")
        array = obj.detach().cpu().numpy()
    if array.ndim >= 2 and array.shape[0] * array.shape[1] > max_pixels:
        raise ValueError(f"{name}: image of {array.shape[0]} x {array.shape[1]} pixels is larger than allowed ({max_pixels} pixels)")
    if array.ndim == 3 and array.shape[2] == 3 and 0 in array.shape:
        raise ValueError(f"{name}: empty image, shape {list(array.shape)}")
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{name}: expected an H x W x 3 image, got shape {list(array.shape)}")
    if array.dtype != np.uint8:
        raise ValueError(f"{name}: expected uint8 pixels, got {array.dtype}")
    return array


def parse_server_timing(header: str) -> dict[str, float]:
    """``Server-Timing`` header -> {stage: seconds}."""
    out = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        for p in params.split(";"):
            key, _, value = p.strip().partition("=")
            if key == "dur":
                out[name.strip()] = float(value) / 1000.0
    return out
