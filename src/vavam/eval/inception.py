"""The FID Inception-v3 network (2048-d pool3 features), written to load pytorch-fid's weights file.

Standard FID features come from the TensorFlow Inception graph of 2015-12-05; pytorch-fid ships it as
``pt_inception-2015-12-05-6726825d.pth``. That network is torchvision's Inception-v3 layout with four
differences, reproduced here:

- 1008 output classes (``fc`` is ``Linear(2048, 1008)``), no auxiliary classifier;
- the average pools inside the ``Mixed_5*``, ``Mixed_6b..e`` and ``Mixed_7b`` blocks exclude the
  zero padding from the mean (``count_include_pad=False``);
- the pool branch of the last block (``Mixed_7c``) is a 3x3 *max* pool (stride 1, padding 1), as in
  the TensorFlow graph;
- batch norms use eps = 0.001.

Parameter names are those of that file (``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``,
..., ``fc.bias``), so its state dict loads with ``strict=True`` (:func:`load_fid_inception_state_dict`).

Input convention (pytorch-fid's ``InceptionV3(resize_input=True, normalize_input=True)``): images
float ``[N, 3, H, W]`` in [0, 1] -> bilinear resize to 299 x 299 (``align_corners=False``, no
antialiasing) -> ``2 x - 1`` -> network -> global average pool -> ``[N, 2048]``. clean-fid and
torch-fidelity resize differently (bicubic / antialiased), which moves FID by a little; numbers are
comparable to pytorch-fid's on the same images.

No weights are downloaded here: the user supplies the file (see :func:`load_fid_inception`).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"
FID_WEIGHTS_GLOB = "pt_inception-2015-12-05-*.pth"
INPUT_SIZE = 299
FEATURE_DIM = 2048
NUM_CLASSES = 1008

_Size = int | tuple[int, int]


class BasicConv2d(nn.Module):
    """Conv (no bias) -> BatchNorm (eps 0.001) -> ReLU: ``[N, C_in, H, W] -> [N, C_out, H', W']``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _Size, stride: _Size = 1,
                 padding: _Size = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool whose mean ignores the zero padding (the TF graph's pooling)."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 | 1x1-5x5 | 1x1-3x3-3x3 | pool-1x1 -> ``224 + pool_features`` channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, 1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch5x5_2(self.branch5x5_1(x))
        c = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        d = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([a, b, c, d], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: 3x3/2 | 1x1-3x3-3x3/2 | maxpool/2 -> ``480 + in_channels`` channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3(x)
        b = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], 1)


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (``c7`` inner channels) -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        c = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                      self.branch7x7dbl_5):
            c = layer(c)
        d = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([a, b, c, d], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: 1x1-3x3/2 | 1x1-1x7-7x1-3x3/2 | maxpool/2 -> ``512 + in_channels`` channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch3x3_2(self.branch3x3_1(x))
        b = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        c = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([a, b, c], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 convolutions -> 2048 channels.

    ``max_pool=True`` (the last block of the FID graph) uses a 3x3 max pool in the pool branch instead
    of the padding-excluding average pool.
    """

    def __init__(self, in_channels: int, max_pool: bool = False) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, 1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.branch1x1(x)
        b = self.branch3x3_1(x)
        b = torch.cat([self.branch3x3_2a(b), self.branch3x3_2b(b)], 1)
        c = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        c = torch.cat([self.branch3x3dbl_3a(c), self.branch3x3dbl_3b(c)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool_3x3(x)
        d = self.branch_pool(pooled)
        return torch.cat([a, b, c, d], 1)


class FIDInceptionV3(nn.Module):
    """FID Inception-v3: images float ``[N, 3, H, W]`` in [0, 1] -> pool3 features ``[N, 2048]``.

    Put it in eval mode (batch norms use their running statistics). ``logits`` gives the 1008-way
    classifier output, which FID does not use.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    @staticmethod
    def preprocess(images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, H, W]`` in [0, 1] -> ``[N, 3, 299, 299]`` in [-1, 1] (bilinear, ``align_corners=False``)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"FIDInceptionV3 expects images [N, 3, H, W], got {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != (INPUT_SIZE, INPUT_SIZE):
            images = F.interpolate(images, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return 2.0 * images - 1.0

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Pool3 features: ``[N, 3, H, W]`` in [0, 1] -> ``[N, 2048]``."""
        x = self.preprocess(images.to(self.fc.weight.dtype))
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c,
                      self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))  # [N, 2048]

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """1008-way classifier logits ``[N, 1008]`` (dropout is an identity at inference)."""
        return self.fc(self.forward(images))


def load_fid_inception_state_dict(model: FIDInceptionV3, state_dict: dict[str, torch.Tensor],
                                  source: str = "<state dict>") -> FIDInceptionV3:
    """Load pytorch-fid's FID Inception state dict into ``model`` with ``strict=True``; returns ``model``.

    ``*.num_batches_tracked`` entries are optional (older files lack them; they do not affect inference).

    Raises:
        ValueError: keys missing or unexpected, or a shape differs (the message lists some of each and
            names ``source``).
    """
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{source}: not a state dict of tensors (expected pytorch-fid's {FID_WEIGHTS_NAME})")
    expected = model.state_dict()
    given = dict(state_dict)
    for key, value in expected.items():
        if key.endswith("num_batches_tracked") and key not in given:
            given[key] = torch.zeros_like(value)
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(expected[k].shape) != tuple(given[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s) (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s) (e.g. {', '.join(unexpected[:4])})")
        if wrong:
            parts.append("shape mismatch for " + ", ".join(
                f"{k}: file {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}" for k in wrong[:4]))
        raise ValueError(f"{source}: not the FID Inception-v3 weights (pytorch-fid's {FID_WEIGHTS_NAME}): "
                         + "; ".join(parts))
    model.load_state_dict(given, strict=True)
    return model


def find_fid_inception_weights(path: str | Path) -> Path:
    """The weights file: ``path`` itself, or the one ``pt_inception-2015-12-05-*.pth`` inside folder ``path``.

    Raises:
        FileNotFoundError: nothing there; the message names ``path`` and the expected file.
    """
    path = Path(path)
    hint = (f"expected pytorch-fid's FID Inception weights {FID_WEIGHTS_NAME} (the file pytorch-fid downloads "
            "to its torch hub cache; copy it here — nothing is downloaded by vavam)")
    if path.is_file():
        return path
    if path.is_dir():
        found = sorted(path.glob(FID_WEIGHTS_GLOB))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise FileNotFoundError(f"{path}: several {FID_WEIGHTS_GLOB} files ({', '.join(p.name for p in found)}); "
                                    "pass the file itself")
        raise FileNotFoundError(f"{path}: no {FID_WEIGHTS_GLOB} in this folder; {hint}")
    raise FileNotFoundError(f"{path}: no such file or folder; {hint}")


def load_fid_inception(path: str | Path, device: str | torch.device = "cpu") -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load the weights at ``path`` (file or folder), in eval mode.

    The file is read with the restricted unpickler (:func:`vavam.io.safe_torch_load`); a top-level
    ``{"state_dict": ...}`` wrapper is accepted.
    """
    from vavam.io import safe_torch_load

    file = find_fid_inception_weights(path)
    state = safe_torch_load(file, map_location="cpu")
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    model = load_fid_inception_state_dict(FIDInceptionV3(), state, source=str(file))
    return model.to(device).eval()
