"""Memory of the Hummingbird probe (:mod:`vavam.eval.probe`): patch targets, rare-label sampling, memory bank.

For feature maps ``[N, h, w, d]`` whose patch ``(i, j)`` covers the ``P_h x P_w`` pixels
``[i P_h, (i+1) P_h) x [j P_w, (j+1) P_w)`` of an ``H x W`` target map, the memory keeps, per image,
``patches_per_image`` patches (default 10 for segmentation, 100 for depth: the reference's "x10" /
"x100"), chosen with a preference for rare labels: the set of classes present in each patch is
computed, a class's frequency is the number of the image's patches containing it, a patch's score is
the sum of the frequencies of its classes, multiplied by U(0, 1) (1e6, unscaled, for a patch without any
label: it comes after every labelled one); the lowest scores are kept. For depth, the depth values of
each image are min-max normalised and cut into 255 bins that play the role of classes (the reference
normalised over its batch, which made the memory depend on the batch size; per image is its batch-size-1 case).
Stored values: the patch's class histogram (segmentation) or its mean depth (depth; the reference
stores the patch's raw depths and averages them after the transfer, which gives the same prediction
because the transfer is linear).

**Fix of the reference's label memory** (reference §8.15): the reference remaps ignore pixels (255) to
class 0 before building the memory's patch histograms, so void areas vote for class 0 (road on
Cityscapes). Here ignore pixels are dropped: a patch's histogram is the count of each valid class
divided by the number of pixels in the patch (ignore pixels add nothing), and ignore pixels never
make a class "present" for the rare-label sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from vavam.checks import check_finite
from vavam.eval.probe_data import IGNORE_INDEX

Task = Literal["segmentation", "depth"]
DEFAULT_PATCHES = {"segmentation": 10, "depth": 100}
DEPTH_BINS = 255
NO_LABEL_SCORE = 1e6


def check_task(task: str) -> None:
    """Raise a ValueError unless ``task`` is ``segmentation`` or ``depth``."""
    if task not in ("segmentation", "depth"):
        raise ValueError(f"task must be 'segmentation' or 'depth', got {task!r}")


# ------------------------------------------------------------------------------- patch targets


def patch_view(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Pixels of each patch: ``[N, H, W]`` -> ``[N, h, w, P_h*P_w]`` (``H = h P_h``, ``W = w P_w``)."""
    if maps.ndim != 3:
        raise ValueError(f"target maps must be [N, H, W], got shape {tuple(maps.shape)}")
    n, big_h, big_w = maps.shape
    h, w = grid
    if h < 1 or w < 1 or big_h % h or big_w % w:
        raise ValueError(f"target maps {big_h}x{big_w} (HxW) are not a whole number of patches of the {h}x{w} grid")
    ph, pw = big_h // h, big_w // w
    return maps.reshape(n, h, ph, w, pw).permute(0, 1, 3, 2, 4).reshape(n, h, w, ph * pw)


def label_histograms(
    labels: torch.Tensor, grid: tuple[int, int], num_classes: int, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """Per-patch class histograms with ignore pixels dropped.

    Args:
        labels: integer ``[N, H, W]``, values in ``[0, num_classes)`` or ``ignore_index``.
        grid: ``(h, w)`` patch grid.
        num_classes: C.
        ignore_index: label of pixels that count for no class.

    Returns:
        float ``[N, h, w, C]``: the number of pixels of each class divided by the patch's pixel count
        (a patch of ignore pixels only is all zeros; rows sum to the valid share of the patch).
    """
    labels = torch.as_tensor(labels).long()
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        value = int(labels[bad][0])
        raise ValueError(f"labels: value {value} is neither a class in [0, {num_classes}) nor ignore_index {ignore_index}")
    pix = patch_view(labels.where(valid, torch.zeros_like(labels)), grid)  # [N, h, w, P]
    ok = patch_view(valid, grid).float()
    hist = torch.zeros(*pix.shape[:3], num_classes)
    hist.scatter_add_(-1, pix, ok)
    return hist / pix.shape[-1]


def depth_bins(depth: torch.Tensor, num_bins: int = DEPTH_BINS) -> torch.Tensor:
    """Min-max normalise ``depth [N, H, W]`` over ALL given images and cut it into ``num_bins`` bins -> long ``[N, H, W]``."""
    depth = torch.as_tensor(depth).float()
    lo, hi = depth.min(), depth.max()
    norm = (depth - lo) / (hi - lo).clamp_min(1e-12)
    return (norm * num_bins).long().clamp_(0, num_bins - 1)


def select_patches(presence: torch.Tensor, per_image: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Rare-label patch sampling of the reference.

    Args:
        presence: bool ``[N, P, K]``: class k occurs in patch p of image n.
        per_image: patches kept per image (at most P).
        generator: randomness of the U(0, 1) factors.

    Returns:
        long ``[N, per_image]`` patch indices (lowest scores first).
    """
    if presence.ndim != 3:
        raise ValueError(f"presence must be [N, P, K], got shape {tuple(presence.shape)}")
    if not 1 <= per_image <= presence.shape[1]:
        raise ValueError(f"per_image must be in [1, {presence.shape[1]}], got {per_image}")
    present = presence.float()
    freq = present.sum(1, keepdim=True)  # [N, 1, K] patches of the image holding each class
    score = (present * freq).sum(-1)  # [N, P]
    # as the reference, only labelled patches get the U(0, 1) factor: a label-less patch keeps 1e6 and so comes
    # after every labelled one (scaled by U it could undercut a labelled patch and enter the memory as all-zero)
    score = score * torch.rand(score.shape, generator=generator)
    score = torch.where(presence.any(-1), score, torch.full_like(score, NO_LABEL_SCORE))
    return score.topk(per_image, dim=1, largest=False).indices


# ------------------------------------------------------------------------------------- memory


@dataclass
class MemoryBank:
    """Memory of the probe.

    Attributes:
        features: float32 ``[M, d]``, L2-normalised.
        values: float32 ``[M, C]`` class histograms (segmentation) or ``[M]`` patch depths.
        task: ``segmentation`` or ``depth``.
        num_images: images the memory was built from.
    """

    features: torch.Tensor
    values: torch.Tensor
    task: str
    num_images: int

    def __len__(self) -> int:
        return int(self.features.shape[0])


class MemoryBuilder:
    """Accumulates memory patches batch by batch (seeded; same batches in the same order -> same memory).

    Args:
        task: ``segmentation`` or ``depth``.
        num_classes: C (segmentation).
        patches_per_image: patches kept per image (default 10 / 100; capped at the grid size).
        ignore_index: ignore label (segmentation).
        seed: seed of the patch sampling.
    """

    def __init__(
        self,
        task: Task,
        num_classes: int | None = None,
        patches_per_image: int | None = None,
        ignore_index: int = IGNORE_INDEX,
        seed: int = 0,
    ) -> None:
        check_task(task)
        if task == "segmentation" and (num_classes is None or num_classes < 1):
            raise ValueError(f"num_classes must be >= 1 for segmentation, got {num_classes}")
        per = DEFAULT_PATCHES[task] if patches_per_image is None else int(patches_per_image)
        if per < 1:
            raise ValueError(f"patches_per_image must be >= 1, got {per}")
        self.task, self.num_classes, self.per_image, self.ignore_index = task, num_classes, per, ignore_index
        self.generator = torch.Generator().manual_seed(int(seed))
        self._features: list[torch.Tensor] = []
        self._values: list[torch.Tensor] = []
        self.num_images = 0
        self.used_per_image = per

    def add(self, features: torch.Tensor, targets: torch.Tensor | np.ndarray) -> None:
        """Add a batch: features ``[N, h, w, d]`` (finite); targets ``[N, H, W]`` labels or depths."""
        features = torch.as_tensor(features)
        if features.ndim != 4:
            raise ValueError(f"features must be [N, h, w, d], got shape {tuple(features.shape)}")
        targets = torch.as_tensor(np.asarray(targets) if isinstance(targets, np.ndarray) else targets)
        if targets.ndim != 3 or targets.shape[0] != features.shape[0]:
            raise ValueError(f"targets must be [N, H, W] with N={features.shape[0]}, got shape {tuple(targets.shape)}")
        n, h, w, d = features.shape
        # a NaN feature would be normalised to NaN, never be a neighbour, and silently bias the transfer
        check_finite(features, f"memory features (images {self.num_images}..{self.num_images + n - 1} of the memory)")
        grid = (h, w)
        if self.task == "segmentation":
            values = label_histograms(targets, grid, self.num_classes, self.ignore_index)  # [N, h, w, C]
            presence = values > 0
        else:
            depth = targets.float()
            values = patch_view(depth, grid).mean(-1)  # [N, h, w]
            # bins per image: over the batch (the reference), the memory would depend on the batch size
            bins = torch.cat([depth_bins(one[None]) for one in depth])  # [N, H, W]
            presence = label_histograms(bins, grid, DEPTH_BINS, ignore_index=-1) > 0
        per = min(self.per_image, h * w)
        self.used_per_image = per
        idx = select_patches(presence.reshape(n, h * w, -1), per, self.generator)  # [N, per]
        feats = F.normalize(features.reshape(n, h * w, d).float(), dim=-1)
        self._features.append(torch.gather(feats, 1, idx[..., None].expand(-1, -1, d)).reshape(-1, d))
        flat = values.reshape(n, h * w, -1)
        self._values.append(torch.gather(flat, 1, idx[..., None].expand(-1, -1, flat.shape[-1])).reshape(n * per, -1))
        self.num_images += n

    def build(self) -> MemoryBank:
        """The memory so far."""
        if not self._features:
            raise ValueError("MemoryBuilder: no memory image was added")
        values = torch.cat(self._values)
        if self.task == "depth":
            values = values[:, 0]
        return MemoryBank(torch.cat(self._features).contiguous(), values.contiguous(), self.task, self.num_images)
