"""Hummingbird in-context dense probes of frozen VaViM features: semantic segmentation and depth.

Protocol (reference §5.2), for feature maps ``[N, h, w, d]`` whose patch ``(i, j)`` covers the
``P_h x P_w`` pixels ``[i P_h, (i+1) P_h) x [j P_w, (j+1) P_w)`` of an ``H x W`` target map:

1. **Features**: ``vim.features(tokens, layer)`` of the LAST frame of a window (default layer: the
   middle block, ``num_layers // 2``, i.e. 12 of 24 as the reference), L2-normalised.
2. **Memory** (from the memory split): per image ``patches_per_image`` patches (default 10 for
   segmentation, 100 for depth: the reference's "x10" / "x100"), chosen with a preference for rare
   labels: the set of classes present in each patch is computed, a class's frequency is the number of
   the image's patches containing it, a patch's score is the sum of the frequencies of its classes
   (1e6 for a patch without any label), multiplied by U(0, 1); the lowest scores are kept. For depth,
   the depth values of the images added together are min-max normalised and cut into 255 bins that
   play the role of classes. Stored values: the patch's class histogram (segmentation) or its mean
   depth (depth; the reference stores the patch's raw depths and averages them after the transfer,
   which gives the same prediction because the transfer is linear).
3. **Retrieval**: the ``k`` nearest memory patches by cosine similarity (inner product of normalised
   features): exact chunked ``torch`` matmul + top-k with bounded memory, or ``faiss`` when installed
   (exact ``IndexFlatIP``, or IVF with sqrt(M) lists probing a tenth of them with ``exact=False``).
4. **Label transfer**: softmax over the k neighbours of similarity / temperature (0.02), weighted
   average of their values -> ``[N, h, w, C]`` (or ``[N, h, w]`` depth), bilinear upsampling to
   ``H x W`` (``align_corners=False``); segmentation prediction = argmax.
5. **Metrics**: segmentation -> confusion matrix over pixels whose label is not ``ignore_index``,
   per-class IoU, mIoU = mean over classes that occur (in ground truth or prediction); depth -> per
   image d1 / d2 / d3 (share of pixels with ``max(pred/gt, gt/pred)`` below 1.25, 1.25², 1.25³),
   abs_rel, sq_rel (zero ground truth replaced by 1e-6 in denominators) and MSE, averaged over
   images; RMSE = sqrt(mean of per-image MSE).

**Fix of the reference's label memory** (reference §8.15): the reference remaps ignore pixels (255) to
class 0 before building the memory's patch histograms, so void areas vote for class 0 (road on
Cityscapes). Here ignore pixels are dropped: a patch's histogram is the count of each valid class
divided by the number of pixels in the patch (ignore pixels add nothing), and ignore pixels never
make a class "present" for the rare-label sampling.

Entry points: the model-agnostic core (:class:`MemoryBuilder`, :func:`build_index`,
:func:`predict_dense`, :class:`SegmentationMeter`, :class:`DepthMeter`, :func:`probe` on feature
tensors), :func:`run_probe` for in-memory models and data, and the CLI :func:`eval_probe`
(``vavam eval probe``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F

from vavam.eval.probe_data import IGNORE_INDEX, ProbeSample

Task = Literal["segmentation", "depth"]
Backend = Literal["auto", "torch", "faiss"]
DEFAULT_PATCHES = {"segmentation": 10, "depth": 100}
DEPTH_BINS = 255
NO_LABEL_SCORE = 1e6


def _check_task(task: str) -> None:
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
    score = torch.where(presence.any(-1), score, torch.full_like(score, NO_LABEL_SCORE))
    score = score * torch.rand(score.shape, generator=generator)
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
        _check_task(task)
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
        """Add a batch: features ``[N, h, w, d]``; targets ``[N, H, W]`` labels or depths."""
        features = torch.as_tensor(features)
        if features.ndim != 4:
            raise ValueError(f"features must be [N, h, w, d], got shape {tuple(features.shape)}")
        targets = torch.as_tensor(np.asarray(targets) if isinstance(targets, np.ndarray) else targets)
        if targets.ndim != 3 or targets.shape[0] != features.shape[0]:
            raise ValueError(f"targets must be [N, H, W] with N={features.shape[0]}, got shape {tuple(targets.shape)}")
        n, h, w, d = features.shape
        grid = (h, w)
        if self.task == "segmentation":
            values = label_histograms(targets, grid, self.num_classes, self.ignore_index)  # [N, h, w, C]
            presence = values > 0
        else:
            depth = targets.float()
            values = patch_view(depth, grid).mean(-1)  # [N, h, w]
            presence = label_histograms(depth_bins(depth), grid, DEPTH_BINS, ignore_index=-1) > 0
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


# ------------------------------------------------------------------------------------ k-NN search


def faiss_available() -> bool:
    """Whether ``faiss`` can be imported."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(backend: str) -> str:
    """``auto`` -> ``faiss`` when installed, else ``torch``; ``faiss`` without faiss raises."""
    if backend not in ("auto", "torch", "faiss"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'faiss', got {backend!r}")
    if backend == "auto":
        return "faiss" if faiss_available() else "torch"
    if backend == "faiss" and not faiss_available():
        raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu, or vavam[eval])")
    return backend


def topk_inner_product(
    queries: torch.Tensor, memory: torch.Tensor, k: int, query_chunk: int = 1024, memory_chunk: int = 32768
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of ``queries @ memory.T`` in chunks (peak extra memory ~ query_chunk x memory_chunk floats).

    Args:
        queries: float ``[Q, d]``.
        memory: float ``[M, d]``.
        k: neighbours (at most M).

    Returns:
        (similarities float ``[Q, k]`` descending, indices long ``[Q, k]``).
    """
    if queries.ndim != 2 or memory.ndim != 2 or queries.shape[1] != memory.shape[1]:
        raise ValueError(f"queries [Q, d] and memory [M, d] must share d, got {tuple(queries.shape)}, {tuple(memory.shape)}")
    if not 1 <= k <= memory.shape[0]:
        raise ValueError(f"k must be in [1, {memory.shape[0]}] (the memory size), got {k}")
    sims, idxs = [], []
    for qs in range(0, queries.shape[0], query_chunk):
        q = queries[qs : qs + query_chunk]
        cand_s, cand_i = [], []
        for ms in range(0, memory.shape[0], memory_chunk):
            s = q @ memory[ms : ms + memory_chunk].T  # [q, m]
            top = s.topk(min(k, s.shape[1]), dim=1)
            cand_s.append(top.values)
            cand_i.append(top.indices + ms)
        s_all, i_all = torch.cat(cand_s, 1), torch.cat(cand_i, 1)
        top = s_all.topk(k, dim=1)
        sims.append(top.values)
        idxs.append(torch.gather(i_all, 1, top.indices))
    return torch.cat(sims), torch.cat(idxs)


class KnnIndex:
    """Inner-product nearest-neighbour index over memory features ``[M, d]`` (torch or faiss).

    Args:
        memory: float ``[M, d]`` (L2-normalised for cosine similarity).
        backend: ``auto`` (faiss if installed), ``torch`` or ``faiss``.
        exact: faiss only: exact flat index (True) or IVF with sqrt(M) lists, probing a tenth.
        query_chunk: torch only: queries per matmul.
        memory_chunk: torch only: memory rows per matmul.
    """

    def __init__(
        self, memory: torch.Tensor, backend: Backend = "auto", exact: bool = True,
        query_chunk: int = 1024, memory_chunk: int = 32768,
    ) -> None:  # fmt: skip
        memory = torch.as_tensor(memory).float().contiguous()
        if memory.ndim != 2 or memory.shape[0] < 1:
            raise ValueError(f"memory must be a non-empty [M, d] tensor, got shape {tuple(memory.shape)}")
        self.backend = resolve_backend(backend)
        self.memory, self.query_chunk, self.memory_chunk = memory, query_chunk, memory_chunk
        self.size, self.dim = memory.shape
        self.index = None
        if self.backend == "faiss":
            import faiss

            data = memory.numpy()
            if exact:
                self.index = faiss.IndexFlatIP(self.dim)
            else:
                nlist = max(1, int(math.sqrt(self.size)))
                self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
                self.index.train(data)
                self.index.nprobe = max(1, nlist // 10)
            self.index.add(data)

    def search(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries float ``[Q, d]`` -> (similarities ``[Q, k]`` descending, indices long ``[Q, k]``).

        Slots faiss could not fill (approximate search) get index 0 and similarity -inf.
        """
        queries = torch.as_tensor(queries).float()
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries must be [Q, {self.dim}], got shape {tuple(queries.shape)}")
        if not 1 <= k <= self.size:
            raise ValueError(f"k must be in [1, {self.size}] (the memory size), got {k}")
        if self.index is None:
            return topk_inner_product(queries, self.memory, k, self.query_chunk, self.memory_chunk)
        dist, idx = self.index.search(np.ascontiguousarray(queries.numpy(), dtype=np.float32), k)
        sims, idx = torch.from_numpy(dist).float(), torch.from_numpy(idx).long()
        missing = idx < 0
        return sims.masked_fill(missing, float("-inf")), idx.masked_fill(missing, 0)


def build_index(memory: MemoryBank, backend: Backend = "auto", exact: bool = True) -> KnnIndex:
    """A :class:`KnnIndex` over a memory bank's features."""
    return KnnIndex(memory.features, backend=backend, exact=exact)


# ---------------------------------------------------------------------------------- label transfer


def transfer_labels(sims: torch.Tensor, idx: torch.Tensor, values: torch.Tensor, temperature: float = 0.02) -> torch.Tensor:
    """Softmax(sims / temperature)-weighted average of the neighbours' values.

    Args:
        sims: float ``[Q, k]``.
        idx: long ``[Q, k]`` rows of ``values``.
        values: ``[M, C]`` or ``[M]``.
        temperature: softmax temperature (> 0).

    Returns:
        ``[Q, C]`` or ``[Q]``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    weights = torch.softmax(sims / temperature, dim=-1)  # [Q, k]
    neigh = values[idx]  # [Q, k, (C)]
    if neigh.ndim == 3:
        return (weights[..., None] * neigh).sum(1)
    return (weights * neigh).sum(1)


def predict_dense(
    features: torch.Tensor, memory: MemoryBank, index: KnnIndex, size: tuple[int, int], k: int = 30,
    temperature: float = 0.02,
) -> torch.Tensor:  # fmt: skip
    """Dense prediction for query features.

    Args:
        features: ``[N, h, w, d]`` (normalised here).
        memory: the memory bank (its values are transferred).
        index: k-NN index over ``memory.features``.
        size: output ``(H, W)``.
        k: neighbours (capped at the memory size, with a warning).
        temperature: softmax temperature.

    Returns:
        segmentation: long ``[N, H, W]`` class ids; depth: float ``[N, H, W]``.
    """
    features = torch.as_tensor(features)
    if features.ndim != 4 or features.shape[-1] != index.dim:
        raise ValueError(f"features must be [N, h, w, {index.dim}] (the memory's width), got shape {tuple(features.shape)}")
    if memory.task not in ("segmentation", "depth") or len(memory) != index.size:
        raise ValueError(f"memory ({memory.task}, {len(memory)} patches) does not match the index ({index.size} patches)")
    n, h, w, d = features.shape
    if k > len(memory):
        warnings.warn(f"k={k} exceeds the memory size {len(memory)}; using k={len(memory)}", stacklevel=2)
        k = len(memory)
    q = F.normalize(features.reshape(n * h * w, d).float(), dim=-1)
    sims, idx = index.search(q, k)
    soft = transfer_labels(sims, idx, memory.values, temperature)  # [n*h*w, (C)]
    grid = soft.reshape(n, h, w, -1).permute(0, 3, 1, 2)  # [N, C, h, w]
    up = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
    return up.argmax(1) if memory.task == "segmentation" else up[:, 0]


# ------------------------------------------------------------------------------------------ metrics


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


# --------------------------------------------------------------------------------- model-agnostic probe


def probe(
    memory_features: torch.Tensor,
    memory_targets: torch.Tensor | np.ndarray,
    query_features: torch.Tensor,
    query_targets: torch.Tensor | np.ndarray,
    task: Task = "segmentation",
    num_classes: int | None = None,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    backend: Backend = "auto",
    exact: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole probe on feature tensors (no model).

    Args:
        memory_features: ``[N, h, w, d]`` of the memory images.
        memory_targets: ``[N, H, W]`` labels (segmentation) or depths.
        query_features: ``[Q, h, w, d]``.
        query_targets: ``[Q, H, W]``.
        task, num_classes, k, temperature, patches_per_image, ignore_index, backend, exact, seed:
            see the module docstring and :class:`MemoryBuilder` / :class:`KnnIndex`.

    Returns:
        the meter's metrics plus ``memory_patches``, ``backend`` and ``prediction`` (``[Q, H, W]``).
    """
    builder = MemoryBuilder(task, num_classes, patches_per_image, ignore_index, seed)
    builder.add(memory_features, memory_targets)
    memory = builder.build()
    index = build_index(memory, backend, exact)
    q_targets = torch.as_tensor(np.asarray(query_targets) if isinstance(query_targets, np.ndarray) else query_targets)
    pred = predict_dense(torch.as_tensor(query_features), memory, index, tuple(q_targets.shape[-2:]), k, temperature)
    meter: SegmentationMeter | DepthMeter = SegmentationMeter(num_classes, ignore_index) if task == "segmentation" else DepthMeter()
    meter.update(pred, q_targets)
    return {**meter.compute(), "memory_patches": len(memory), "backend": index.backend, "prediction": pred}


# --------------------------------------------------------------------------------------- with models


def _module_device(module: Any) -> torch.device:
    for p in getattr(module, "parameters", lambda: iter(()))():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(vim: Any, tokenizer: Any, frames: torch.Tensor, layer: int) -> torch.Tensor:
    """VaViM features of the last frame of each window.

    Args:
        vim: a :class:`~vavam.video.VideoGPT` (frozen).
        tokenizer: has ``encode(images [B,3,H,W]) -> ids [B,h,w]``.
        frames: float ``[B, T, 3, H, W]`` in [-1, 1]; windows longer than the model's frame count
            keep their last ``num_frames`` frames.
        layer: block index for ``vim.features``.

    Returns:
        float32 ``[B, h, w, d]`` on the CPU.
    """
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be [B, T, 3, H, W], got shape {tuple(frames.shape)}")
    frames = frames[:, -vim.config.num_frames :]
    b, t = frames.shape[:2]
    ids = tokenizer.encode(frames.flatten(0, 1).to(_module_device(tokenizer)))  # [B*T, h, w]
    tokens = ids.reshape(b, t, *ids.shape[-2:]).to(_module_device(vim))
    return vim.features(tokens, layer)[:, -1].float().cpu()


def _batches(data: Iterable[ProbeSample], batch_size: int) -> Iterable[list[ProbeSample]]:
    batch: list[ProbeSample] = []
    for sample in data:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stack(batch: list[ProbeSample], task: str) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {(tuple(s.frames.shape), tuple(s.target.shape)) for s in batch}
    if len(shapes) != 1:
        raise ValueError(f"samples of a batch differ in shape (frames, target): {sorted(shapes)}")
    frames = torch.stack([s.frames for s in batch])
    if frames.shape[-2:] != batch[0].target.shape:
        raise ValueError(f"sample {batch[0].name}: target {batch[0].target.shape} does not match frames {tuple(frames.shape[-2:])}")
    dtype = np.int64 if task == "segmentation" else np.float32
    return frames, torch.from_numpy(np.stack([np.asarray(s.target, dtype=dtype) for s in batch]))


def run_probe(
    vim: Any,
    tokenizer: Any,
    memory_data: Sequence[ProbeSample] | Iterable[ProbeSample],
    query_data: Sequence[ProbeSample] | Iterable[ProbeSample],
    task: Task = "segmentation",
    layer: int | None = None,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    batch_size: int = 8,
    backend: Backend = "auto",
    exact: bool = True,
    seed: int = 0,
    num_examples: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Hummingbird probe of a VaViM with a tokenizer, on in-memory data.

    Args:
        vim: the frozen video model (``features(tokens, layer)``, ``config.num_layers / num_frames``).
        tokenizer: ``encode(images) -> ids``.
        memory_data: samples of the memory split (e.g. a :mod:`vavam.eval.probe_data` reader).
        query_data: samples to evaluate.
        task: ``segmentation`` or ``depth``.
        layer: feature block (default ``num_layers // 2``).
        k: neighbours.
        temperature: softmax temperature.
        patches_per_image: memory patches per image (default 10 / 100).
        num_classes: C (default ``memory_data.num_classes``).
        class_names: names for the per-class table (default ``memory_data.class_names``).
        ignore_index: ignore label.
        batch_size: images per forward pass.
        backend: k-NN backend (``auto``, ``torch``, ``faiss``).
        exact: exact search (faiss IVF otherwise).
        seed: memory sampling seed.
        num_examples: query examples kept for figures (image, ground truth, prediction).
        progress: tqdm bars.

    Returns:
        metrics (see :class:`SegmentationMeter` / :class:`DepthMeter`; per-class IoU by name for
        segmentation) plus settings, and ``_examples`` (list of dicts with ``image`` uint8 ``[H,W,3]``,
        ``target``, ``prediction``, ``name``; not JSON).
    """
    from tqdm.auto import tqdm

    from vavam.types import unit_to_uint8

    _check_task(task)
    n_layers = int(vim.config.num_layers)
    layer = n_layers // 2 if layer is None else int(layer)
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer must be in [0, {n_layers}) for this {n_layers}-block model, got {layer}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if task == "segmentation":
        num_classes = num_classes if num_classes is not None else getattr(memory_data, "num_classes", None)
        if num_classes is None:
            raise ValueError("num_classes is needed for segmentation (memory_data has no num_classes)")
        class_names = list(class_names or getattr(memory_data, "class_names", None) or [str(c) for c in range(num_classes)])
    builder = MemoryBuilder(task, num_classes, patches_per_image, ignore_index, seed)
    total = len(memory_data) if hasattr(memory_data, "__len__") else None
    grid = None
    with tqdm(total=total, desc="probe memory", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in _batches(memory_data, batch_size):
            frames, targets = _stack(batch, task)
            feats = extract_features(vim, tokenizer, frames, layer)
            grid = tuple(feats.shape[1:3])
            builder.add(feats, targets)
            bar.update(len(batch))
    memory = builder.build()
    index = build_index(memory, backend, exact)
    if k > len(memory):
        warnings.warn(f"k={k} exceeds the memory size {len(memory)}; using k={len(memory)}", stacklevel=2)
        k = len(memory)
    meter: SegmentationMeter | DepthMeter = SegmentationMeter(num_classes, ignore_index) if task == "segmentation" else DepthMeter()
    examples: list[dict[str, Any]] = []
    queries = 0
    total = len(query_data) if hasattr(query_data, "__len__") else None
    with tqdm(total=total, desc="probe queries", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in _batches(query_data, batch_size):
            frames, targets = _stack(batch, task)
            feats = extract_features(vim, tokenizer, frames, layer)
            pred = predict_dense(feats, memory, index, tuple(targets.shape[-2:]), k, temperature)
            meter.update(pred, targets)
            for j in range(min(len(batch), num_examples - len(examples))):
                examples.append({"image": unit_to_uint8(frames[j, -1]).permute(1, 2, 0).numpy(),
                                 "target": targets[j].numpy(), "prediction": pred[j].numpy(), "name": batch[j].name})
            queries += len(batch)
            bar.update(len(batch))
    if not queries:
        raise ValueError("query_data is empty")
    metrics = meter.compute()
    if task == "segmentation":
        metrics["iou"] = dict(zip(class_names, metrics["iou"]))
        metrics["class_names"] = class_names
    return {
        "task": task, **metrics, "layer": layer % n_layers, "k": k, "temperature": temperature,
        "patches_per_image": builder.used_per_image, "memory_patches": len(memory), "memory_images": memory.num_images,
        "query_images": queries, "grid": list(grid or ()), "backend": index.backend, "exact": exact, "seed": seed,
        "_examples": examples,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------ figures


def _palette(num_classes: int) -> np.ndarray:
    """uint8 ``[num_classes, 3]`` colours: tab10, then the light tab20 shades, cycling."""
    import matplotlib

    strong, light = matplotlib.colormaps["tab10"], matplotlib.colormaps["tab20"]
    colours = [strong(i)[:3] for i in range(10)] + [light(2 * i + 1)[:3] for i in range(10)]
    return (np.array([colours[i % 20] for i in range(num_classes)]) * 255).round().astype(np.uint8)


def colorize_labels(labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Label map ``[H, W]`` -> RGB uint8 ``[H, W, 3]`` (ignore pixels black)."""
    labels = np.asarray(labels).astype(np.int64)
    table = np.zeros((max(num_classes, 256), 3), np.uint8)
    table[:num_classes] = _palette(num_classes)
    out = table[np.clip(labels, 0, len(table) - 1)]
    out[labels == ignore_index] = 0
    return out


def save_examples_figure(path: Path, examples: Sequence[dict[str, Any]], task: str, class_names: Sequence[str] | None = None,
                         ignore_index: int = IGNORE_INDEX) -> Path:
    """PNG: per example, the image, the ground truth and the prediction (labels overlaid, or depth maps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, 3, figsize=(11, 2.2 * rows + 0.6), squeeze=False)
    for r, ex in enumerate(examples):
        img = ex["image"].astype(np.float32)
        if task == "segmentation":
            n = len(class_names or ()) or int(max(ex["target"][ex["target"] != ignore_index].max(initial=0), ex["prediction"].max()) + 1)
            panels = []
            for lab in (ex["target"], ex["prediction"]):
                over = 0.45 * img + 0.55 * colorize_labels(lab, n, ignore_index)
                over[lab == ignore_index] = img[lab == ignore_index]
                panels.append(over.round().astype(np.uint8))
            axes[r][1].imshow(panels[0])
            axes[r][2].imshow(panels[1])
        else:
            lo, hi = float(np.min(ex["target"])), float(np.max(ex["target"]))
            axes[r][1].imshow(ex["target"], cmap="magma_r", vmin=lo, vmax=hi)
            axes[r][2].imshow(ex["prediction"], cmap="magma_r", vmin=lo, vmax=hi)
        axes[r][0].imshow(ex["image"])
        axes[r][0].set_ylabel(ex["name"], fontsize=7)
    titles = ("image", "ground truth", "prediction") if task == "segmentation" else (
        "image", "ground-truth depth (dark = far)", "predicted depth")
    for c, title in enumerate(titles):
        axes[0][c].set_title(title)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if task == "segmentation" and class_names:
        from matplotlib.patches import Patch

        colours = _palette(len(class_names)) / 255.0
        fig.legend(handles=[Patch(color=colours[i], label=name) for i, name in enumerate(class_names)],
                   loc="lower center", ncol=min(len(class_names), 7), fontsize=7, frameon=False)
        fig.subplots_adjust(bottom=0.12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def probe_sections(results: dict[str, Any], figure: str | None = None) -> list:
    """Report sections (:class:`vavam.eval.report.Section`) of :func:`run_probe` results."""
    from vavam.eval.report import Section, Table

    task = results["task"]
    settings = (f"Frozen VaViM features of block {results['layer']} (grid {'x'.join(map(str, results['grid']))}); "
                f"memory of {results['memory_patches']} patches from {results['memory_images']} images "
                f"({results['patches_per_image']} per image, rare-label sampling); {results['query_images']} query images; "
                f"k = {results['k']}, temperature {results['temperature']}, {results['backend']} search.")
    if task == "segmentation":
        cm = np.asarray(results["confusion"], dtype=np.float64)
        share = cm.sum(1) / max(cm.sum(), 1)
        rows = [[name, iou, float(share[i])] for i, (name, iou) in enumerate(results["iou"].items())]
        tables = [Table(["metric", "value"], [["mIoU", results["miou"]], ["pixel accuracy", results["pixel_accuracy"]]]),
                  Table(["class", "IoU", "share of ground-truth pixels"], rows)]
        text = settings + " Ignore pixels are left out of the memory's histograms (the reference counted them as class 0)."
    else:
        tables = [Table(["metric", "value"], [[k, results[k]] for k in ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse")])]
        text = settings + " Depth: per-image metrics averaged over images; RMSE = sqrt(mean per-image MSE)."
    sections = [Section(f"Hummingbird {task} probe", text, tables)]
    if figure:
        sections.append(Section("Query examples", "Image, ground truth and prediction for the first query images.",
                                figures=[figure]))
    return sections


# ------------------------------------------------------------------------------------------- CLI


def _tokenizer_image_size(tokenizer: Path) -> tuple[int, int] | None:
    from vavam.io import read_json

    meta = Path(tokenizer) / "meta.json"
    if not meta.is_file():
        return None
    size = (read_json(meta).get("training") or {}).get("image_size")
    return (int(size[0]), int(size[1])) if size else None


def eval_probe(
    video: Path,
    tokenizer: Path,
    out: Path,
    data: Path | None = None,
    dataset: Literal["world", "cityscapes", "kitti-step"] = "world",
    task: Literal["segmentation", "depth"] = "segmentation",
    layer: int | None = None,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    memory_split: str | None = None,
    query_split: str | None = None,
    window: int = 1,
    frame_step: int | None = None,
    sample_step: int | None = None,
    max_memory_images: int | None = None,
    max_query_images: int | None = None,
    image_height: int | None = None,
    image_width: int | None = None,
    world_scenes: int = 8,
    backend: Literal["auto", "torch", "faiss"] = "auto",
    exact: bool = True,
    batch_size: int = 8,
    num_examples: int = 4,
    seed: int = 0,
    device: str = "cpu",
    trust_code: bool = False,
    progress: bool = True,
) -> dict:
    """Hummingbird segmentation / depth probe of frozen VaViM features (k-NN label transfer).

    Writes ``evaluation.json``, ``report.md`` / ``report.html`` (kind ``probe``: metrics table, per-class
    IoU) and ``probe_examples.png`` under ``out``.

    Args:
        video: VaViM checkpoint (released ``.pt`` or our folder).
        tokenizer: its tokenizer (checkpoint folder, LlamaGen ``.pt``, or TorchScript with --trust-code).
        out: output folder.
        data: dataset root; for ``world`` without it, a small world export is generated under ``out/world``.
        dataset: world, cityscapes or kitti-step.
        task: segmentation or depth.
        layer: feature block (default: the middle one, num_layers // 2).
        k: neighbours (the reference README uses 30, its runs 128).
        temperature: softmax temperature of the label transfer.
        patches_per_image: memory patches per image (default 10 segmentation, 100 depth).
        memory_split: split of the memory (default train).
        query_split: split of the queries (default heldout for world, val otherwise).
        window: frames per sample, the last one evaluated (world, kitti-step).
        frame_step: frames between the frames of a window (default: 1 world, 5 kitti-step).
        sample_step: frames between evaluated frames of a scene (default: 2 world, 1 kitti-step).
        max_memory_images: cap on memory images (evenly spread).
        max_query_images: cap on query images (evenly spread).
        image_height: world frames are resized to this (default: the tokenizer's training size, if recorded).
        image_width: see image_height.
        world_scenes: scenes of the generated world export (without --data).
        backend: k-NN backend (auto = faiss when installed, else chunked torch).
        exact: exact search (False: faiss IVF, approximate).
        batch_size: images per forward pass.
        num_examples: query examples drawn in probe_examples.png.
        seed: seed of the memory sampling (and of the generated world).
        device: torch device of the models.
        trust_code: allow TorchScript tokenizer files.
        progress: progress bars.
    """
    import vavam
    from vavam.eval.probe_data import open_probe_data
    from vavam.eval.report import save_evaluation

    out = Path(out)
    vim = vavam.load_video_model(video, device=device).eval()
    tok = vavam.load_tokenizer(tokenizer, trust_code=trust_code, device=device)
    size = (image_height, image_width) if image_height and image_width else None
    if data is None:
        if dataset != "world":
            raise ValueError(f"--data is required for dataset {dataset!r} (the folder holding its files)")
        from vavam.world.export import generate

        size = size or _tokenizer_image_size(tokenizer) or (288, 512)
        data = out / "world"
        generate(data, num_scenes=world_scenes, duration_s=20.0, rate_hz=2.0, height=size[0], width=size[1], seed=seed,
                 hazard_share=0.0, labels=True, depth=True, held_out_towns=1, scenes_per_town=max(1, world_scenes // 2),
                 progress=progress)
    elif dataset == "world" and size is None:
        size = _tokenizer_image_size(tokenizer)
    memory_split = memory_split or "train"
    query_split = query_split or ("heldout" if dataset == "world" else "val")
    kw: dict[str, Any] = {}
    if dataset in ("world", "kitti-step"):
        kw["window"] = window
        if frame_step is not None:
            kw["frame_step"] = frame_step
        kw["sample_step"] = sample_step if sample_step is not None else (2 if dataset == "world" else 1)
    elif window != 1:
        raise ValueError("--window applies to world and kitti-step (Cityscapes has single images)")
    if dataset == "world":
        kw["size"] = size
    memory_data = open_probe_data(dataset, data, memory_split, task, max_samples=max_memory_images, **kw)
    query_data = open_probe_data(dataset, data, query_split, task, max_samples=max_query_images, **kw)
    results = run_probe(vim, tok, memory_data, query_data, task=task, layer=layer, k=k, temperature=temperature,
                        patches_per_image=patches_per_image, batch_size=batch_size, backend=backend, exact=exact,
                        seed=seed, num_examples=num_examples, progress=progress)
    examples = results.pop("_examples")
    figure = None
    if examples:
        save_examples_figure(out / "probe_examples.png", examples, task, results.get("class_names"))
        figure = "probe_examples.png"
    results.update({"dataset": dataset, "data": str(data), "memory_split": memory_split, "query_split": query_split,
                    "window": window, "video": str(video), "tokenizer": str(tokenizer)})
    save_evaluation(out, "probe", f"Hummingbird {task} probe ({dataset})", results, probe_sections(results, figure))
    head = f"mIoU {results['miou']:.3f}" if task == "segmentation" else f"d1 {results['d1']:.3f}  abs_rel {results['abs_rel']:.3f}  rmse {results['rmse']:.3f}"
    print(f"probe {task} on {dataset} ({query_split}): {head} -> {out}")
    return results
