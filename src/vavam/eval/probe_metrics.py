"""Metrics of the Hummingbird probe (:mod:`vavam.eval.probe`): segmentation IoU and depth errors.

Segmentation -> confusion matrix over pixels whose label is not ``ignore_index``, per-class IoU,
mIoU = mean over classes that occur (in ground truth or prediction); depth -> per image d1 / d2 / d3
(share of pixels with ``max(pred/gt, gt/pred)`` below 1.25, 1.25², 1.25³), abs_rel, sq_rel (zero
ground truth replaced by 1e-6 in denominators) and MSE, averaged over images; RMSE = sqrt(mean of
per-image MSE).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from vavam.eval.probe_data import IGNORE_INDEX


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Pixel confusion matrix long ``[C, C]`` (rows: ground truth, columns: prediction) over pixels with ``gt != ignore_index``."""
    pred, gt = torch.as_tensor(pred).long().reshape(-1), torch.as_tensor(gt).long().reshape(-1)
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt must have the same number of pixels, got {pred.numel()} and {gt.numel()}")
    keep = gt != ignore_index
    pred, gt = pred[keep], gt[keep]
    for name, x in (("gt", gt), ("pred", pred)):
        if x.numel() and (x.min() < 0 or x.max() >= num_classes):
            raise ValueError(f"{name}: class ids must be in [0, {num_classes}) (or ignore_index in gt)")
    return torch.bincount(gt * num_classes + pred, minlength=num_classes**2).reshape(num_classes, num_classes)


def iou_per_class(confusion: torch.Tensor) -> torch.Tensor:
    """IoU per class float64 ``[C]`` = TP / (TP + FP + FN); NaN for a class neither in ground truth nor prediction."""
    cm = confusion.double()
    tp = cm.diag()
    union = cm.sum(0) + cm.sum(1) - tp
    return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))


def mean_iou(confusion: torch.Tensor) -> float:
    """NaN-mean of :func:`iou_per_class` (NaN when no class occurs)."""
    iou = iou_per_class(confusion)
    ok = ~iou.isnan()
    return float(iou[ok].mean()) if ok.any() else float("nan")


class SegmentationMeter:
    """Running confusion matrix -> mIoU, per-class IoU, pixel accuracy."""

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add predictions and labels ``[N, H, W]``."""
        self.confusion += confusion_matrix(pred, gt, self.num_classes, self.ignore_index)

    def compute(self) -> dict[str, Any]:
        """``{"miou", "iou" [C] (list, NaN for absent classes), "pixel_accuracy", "pixels", "confusion"}``."""
        total = int(self.confusion.sum())
        return {
            "miou": mean_iou(self.confusion),
            "iou": iou_per_class(self.confusion).tolist(),
            "pixel_accuracy": float(self.confusion.diag().sum()) / total if total else float("nan"),
            "pixels": total,
            "confusion": self.confusion.tolist(),
        }


def depth_errors(pred: torch.Tensor, gt: torch.Tensor, eps: float = 1e-6) -> dict[str, torch.Tensor]:
    """Per-image depth errors of ``pred``, ``gt`` ``[N, H, W]`` -> dict of float64 ``[N]``.

    Keys: d1, d2, d3 (share of pixels with ``max(pred/gt, gt/pred) < 1.25**i``), abs_rel
    (``|pred-gt| / gt``), sq_rel (``(pred-gt)^2 / gt``), mse. Zero ground truth is replaced by ``eps``
    in denominators, as is a non-positive prediction in the ratio.
    """
    pred, gt = torch.as_tensor(pred).double(), torch.as_tensor(gt).double()
    if pred.shape != gt.shape or pred.ndim != 3:
        raise ValueError(f"pred and gt must both be [N, H, W], got {tuple(pred.shape)} and {tuple(gt.shape)}")
    g = torch.where(gt == 0, torch.full_like(gt, eps), gt)
    ratio = torch.maximum(pred.clamp_min(eps) / g, g / pred.clamp_min(eps))
    diff = pred - gt
    dims = (1, 2)
    return {
        "d1": (ratio < 1.25).double().mean(dims),
        "d2": (ratio < 1.25**2).double().mean(dims),
        "d3": (ratio < 1.25**3).double().mean(dims),
        "abs_rel": (diff.abs() / g).mean(dims),
        "sq_rel": (diff**2 / g).mean(dims),
        "mse": (diff**2).mean(dims),
    }


class DepthMeter:
    """Per-image depth errors, averaged over images; RMSE = sqrt(mean of per-image MSE)."""

    KEYS = ("d1", "d2", "d3", "abs_rel", "sq_rel", "mse")

    def __init__(self) -> None:
        self.sums = {k: 0.0 for k in self.KEYS}
        self.images = 0

    def update(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """Add predictions and ground truth ``[N, H, W]``."""
        errors = depth_errors(pred, gt)
        for key in self.KEYS:
            self.sums[key] += float(errors[key].sum())
        self.images += int(errors["d1"].shape[0])

    def compute(self) -> dict[str, float]:
        """``{"d1", "d2", "d3", "abs_rel", "sq_rel", "rmse", "images"}``."""
        if not self.images:
            raise ValueError("DepthMeter: no image was added")
        out = {k: self.sums[k] / self.images for k in self.KEYS if k != "mse"}
        out["rmse"] = math.sqrt(self.sums["mse"] / self.images)
        out["images"] = self.images
        return out
