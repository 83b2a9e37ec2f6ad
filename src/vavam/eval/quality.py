"""Fréchet distance between two sets of features (the FID formula), with running statistics.

``FD = |mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2))`` with covariances using ``n - 1``. The
matrix square root is scipy's ``sqrtm``; when its result is not finite (a singular product), ``eps`` is added to
both diagonals and the root taken again, as in the common FID implementations. scipy's own warning about a
singular product (few samples and a feature that does not vary, e.g. a dead encoder channel) is silenced: the
fallback handles it, and the callers that know the counts state the covariances' rank in words
(:func:`rank_deficiency`).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from scipy import linalg


class FeatureStats:
    """Running sums of features and their outer products (float64) -> mean and covariance.

    ``name`` says which feature set this is in error messages (e.g. "generated frames").
    """

    def __init__(self, dim: int, name: str = "features") -> None:
        self.dim = dim
        self.name = name
        self.n = 0
        self.sum = np.zeros(dim, dtype=np.float64)
        self.outer = np.zeros((dim, dim), dtype=np.float64)

    def update(self, features: torch.Tensor | np.ndarray) -> None:
        """Add ``[N, dim]`` features (all finite: a NaN would make the covariance, and the distance, meaningless)."""
        x = features.detach().double().cpu().numpy() if isinstance(features, torch.Tensor) else np.asarray(features, np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{self.name}: FeatureStats expects [N, {self.dim}] features, got {list(x.shape)}")
        finite = np.isfinite(x).all(axis=1)
        if not finite.all():
            rows = np.flatnonzero(~finite)
            raise ValueError(f"{self.name}: {len(rows)} of {len(x)} feature vectors hold NaN or infinite values "
                             f"(first: row {int(rows[0])} of this batch)")
        self.n += x.shape[0]
        self.sum += x.sum(0)
        self.outer += x.T @ x

    def mean_cov(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean [dim], covariance [dim, dim] with n - 1). Needs at least 2 samples."""
        if self.n < 2:
            raise ValueError(f"{self.name}: need at least 2 samples for a covariance, have {self.n}")
        mu = self.sum / self.n
        cov = (self.outer - self.n * np.outer(mu, mu)) / (self.n - 1)
        return mu, cov


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray, eps: float = 1e-6) -> float:
    """Fréchet distance between the Gaussians N(mu1, cov1) and N(mu2, cov2) (never below 0)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape:
        raise ValueError(f"frechet_distance: shapes differ ({mu1.shape} vs {mu2.shape}, {cov1.shape} vs {cov2.shape})")
    for name, value in (("mu1", mu1), ("cov1", cov1), ("mu2", mu2), ("cov2", cov2)):
        if not np.isfinite(value).all():
            raise ValueError(f"frechet_distance: {name} holds NaN or infinite values")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)  # a singular product: handled below
        covmean = linalg.sqrtm(cov1 @ cov2)
        if not np.isfinite(covmean).all():
            offset = np.eye(cov1.shape[0]) * eps
            covmean = linalg.sqrtm((cov1 + offset) @ (cov2 + offset))
    covmean = covmean.real
    # a distance: the float sums of a set against itself (or a near copy) land a hair either side of 0
    return max(0.0, float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * np.trace(covmean)))


def rank_deficiency(samples: int, dim: int, what: str = "windows") -> str | None:
    """Words for a report when ``samples`` feature vectors of ``dim`` dimensions cannot give a full-rank covariance
    (``samples <= dim``), else None: the Fréchet distance is then biased upward and only comparable between
    evaluations of the same number of ``what``."""
    if samples > dim:
        return None
    return (f"{samples} {what} for {dim}-d features: the covariances are rank-deficient (at most {samples - 1} of "
            f"{dim} dimensions), so the Fréchet distances are biased upward; compare them only with evaluations of "
            f"the same number of {what}")


def frechet_distance_from_features(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> float:
    """Fréchet distance between two feature sets ``[N, d]`` and ``[M, d]`` (finite; errors name ``x`` or ``y``)."""
    stats = []
    for name, feats in (("x (first feature set)", x), ("y (second feature set)", y)):
        s = FeatureStats(int(feats.shape[-1]), name)
        s.update(feats)
        stats.append(s.mean_cov())
    return frechet_distance(*stats[0], *stats[1])
