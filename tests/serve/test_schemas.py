"""NeuroNCAP wire format: image payloads round-trip, bad payloads are refused with named errors."""

from __future__ import annotations

import base64
import io
import os

import numpy as np
import pytest
import torch

from vavam.io import UnsafePickleError
from vavam.serve.schemas import ModelInput, ModelOutput, decode_image, encode_image


def _image(h=9, w=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["torch", "png"])
def test_image_round_trip(fmt):
    img = _image()
    assert np.array_equal(decode_image(encode_image(img, fmt)), img)


def test_torch_payload_as_neuroncap_sends_it():
    # NeuroNCAP: base64 of torch.save(uint8 tensor [H, W, 3]).
    img = torch.from_numpy(_image(seed=1))
    buf = io.BytesIO()
    torch.save(img, buf)
    payload = base64.b64encode(buf.getvalue()).decode()
    assert np.array_equal(decode_image(payload, "CAM_FRONT"), img.numpy())


class _Gadget:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_malicious_payload_refused(tmp_path):
    target = tmp_path / "pwned"
    buf = io.BytesIO()
    torch.save({"x": _Gadget(str(target))}, buf)
    with pytest.raises(UnsafePickleError, match="CAM_FRONT"):
        decode_image(base64.b64encode(buf.getvalue()).decode(), "CAM_FRONT")
    assert not target.exists()


def test_bad_payloads_named():
    with pytest.raises(ValueError, match="CAM_FRONT: not valid base64"):
        decode_image("***", "CAM_FRONT")
    with pytest.raises(ValueError, match="CAM_FRONT: .*H x W x 3"):
        buf = io.BytesIO()
        torch.save(torch.zeros(4, 4, dtype=torch.uint8), buf)
        decode_image(base64.b64encode(buf.getvalue()).decode(), "CAM_FRONT")
    with pytest.raises(ValueError, match="CAM_FRONT: cannot read"):
        decode_image(base64.b64encode(b"garbage bytes").decode(), "CAM_FRONT")


def test_model_io_validation():
    good = ModelInput(images={}, ego2world=np.eye(4).tolist(), canbus=[0.0] * 13 + [7.5, 0, 0], timestamp=1, command=2)
    assert good.speed == 7.5
    with pytest.raises(ValueError):
        ModelInput(images={}, ego2world=[[1.0]], canbus=[], timestamp=1, command=2)
    with pytest.raises(ValueError):
        ModelInput(images={}, ego2world=np.eye(4).tolist(), canbus=[], timestamp=1, command=3)
    out = ModelOutput(trajectory=[[i, 0.0] for i in range(6)])
    dumped = out.model_dump()
    assert dumped["aux_outputs"] is not None and dumped["aux_outputs"]["objects_in_bev"] is None
    with pytest.raises(ValueError):
        ModelOutput(trajectory=[[0.0, 0.0]] * 5)
    with pytest.raises(ValueError):
        ModelOutput(trajectory=[[float("nan"), 0.0]] * 6)


def test_jpeg_payload_and_size_limit():
    from PIL import Image

    img = np.full((16, 24, 3), 128, dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    out = decode_image(base64.b64encode(buf.getvalue()).decode(), "CAM_FRONT")
    assert out.shape == (16, 24, 3) and out.dtype == np.uint8 and np.abs(out.astype(int) - 128).max() <= 2
    with pytest.raises(ValueError, match="larger than allowed"):
        decode_image(encode_image(img, "png"), "CAM_FRONT", max_pixels=100)
    with pytest.raises(ValueError, match="larger than allowed"):
        decode_image(encode_image(img, "torch"), "CAM_FRONT", max_pixels=100)
    with pytest.raises(ValueError, match="uint8"):
        buf = io.BytesIO()
        torch.save(torch.zeros(4, 4, 3, dtype=torch.bfloat16), buf)
        decode_image(base64.b64encode(buf.getvalue()).decode(), "CAM_FRONT")


def test_server_defaults_are_safe():
    import inspect

    from vavam.serve.server import DEFAULT_MAX_BODY_BYTES, serve

    params = inspect.signature(serve).parameters
    assert params["host"].default == "127.0.0.1" and params["port"].default == 9000
    assert params["token"].default is None and DEFAULT_MAX_BODY_BYTES >= 40 * 2**20  # six 900x1600 cameras fit
