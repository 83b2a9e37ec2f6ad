"""Label transfer of the Hummingbird probe (:mod:`vavam.eval.probe`): neighbours' values -> dense prediction.

Softmax over the k neighbours of similarity / temperature (0.02), weighted average of their values ->
``[N, h, w, C]`` (or ``[N, h, w]`` depth), bilinear upsampling to ``H x W`` (``align_corners=False``);
segmentation prediction = argmax.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from vavam.checks import check_finite
from vavam.eval.probe_knn import KnnIndex
from vavam.eval.probe_memory import MemoryBank

#: Elements (float32) of the transferred values and upsampled maps computed at once by :func:`predict_dense`.
PREDICT_CHUNK_ELEMENTS = 2**24


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
        features: ``[N, h, w, d]`` (finite; normalised here).
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
    check_finite(features, "query features")  # a NaN query has no neighbours: its prediction would be garbage
    if k > len(memory):
        warnings.warn(f"k={k} exceeds the memory size {len(memory)}; using k={len(memory)}", stacklevel=2)
        k = len(memory)
    # images in chunks: the neighbours' values [n*h*w, k, C] and the upsampled maps [n, C, H, W] of all queries at
    # once would be several times the features' own size (GBs for a dataset's worth of queries); rows are independent
    width = int(memory.values.shape[1]) if memory.values.ndim == 2 else 1
    per_image = h * w * k * width + width * int(size[0]) * int(size[1])
    step = max(1, PREDICT_CHUNK_ELEMENTS // per_image)
    out = []
    for start in range(0, n, step):
        part = features[start : start + step]
        q = F.normalize(part.reshape(-1, d).float(), dim=-1)
        sims, idx = index.search(q, k)
        soft = transfer_labels(sims, idx, memory.values, temperature)  # [m*h*w, (C)]
        grid = soft.reshape(part.shape[0], h, w, -1).permute(0, 3, 1, 2)  # [m, C, h, w]
        up = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
        out.append(up.argmax(1) if memory.task == "segmentation" else up[:, 0])
    return torch.cat(out)
