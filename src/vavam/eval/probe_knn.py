"""k-NN search of the Hummingbird probe (:mod:`vavam.eval.probe`): inner-product top-k over memory features.

The ``k`` nearest memory patches by cosine similarity (inner product of normalised features): exact
chunked ``torch`` matmul + top-k with bounded memory, or ``faiss`` when installed (exact
``IndexFlatIP``, or IVF with sqrt(M) lists probing a tenth of them with ``exact=False``).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch

from vavam.eval.probe_memory import MemoryBank

Backend = Literal["auto", "torch", "faiss"]


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
