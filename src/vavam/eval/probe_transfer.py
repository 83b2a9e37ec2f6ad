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
    q = F.normalize(features.reshape(n * h * w, d).float(), dim=-1)
    sims, idx = index.search(q, k)
    soft = transfer_labels(sims, idx, memory.values, temperature)  # [n*h*w, (C)]
    grid = soft.reshape(n, h, w, -1).permute(0, 3, 1, 2)  # [N, C, h, w]
    up = F.interpolate(grid, size=tuple(size), mode="bilinear", align_corners=False)
    return up.argmax(1) if memory.task == "segmentation" else up[:, 0]
