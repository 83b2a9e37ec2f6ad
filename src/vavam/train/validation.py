"""Validation split over ranks, with the exact mean of the whole set.

Under DDP or FSDP each rank validates its own contiguous shard of the validation windows (``ceil(n / world)``
of them), not the whole set: validation takes ``1 / world`` of the time. Shards are padded to the same length
with repeats of the first windows so that every rank runs the same number of forward passes (FSDP gathers
parameters in every forward, collectively); padded windows carry index ``-1`` and count for nothing. Each rank
sums the per-window losses of its real windows in float64 and the sums and counts are all-reduced at the end of
the validation, so the logged value is the mean over the whole set's windows, as one process computes it (up
to the order of the float64 sums).

Building blocks: :class:`ShardSampler` (this rank's positions), :class:`IndexedItems` (each item with its index
in the set, ``-1`` for padding), :func:`sharded_loader` (both in a DataLoader) and :class:`ValidationSums` (the
sums, their reduction and logging) for the Lightning modules.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from vavam.train.distributed import process_rank_and_world


class ShardSampler(Sampler[int]):
    """This rank's contiguous shard of positions ``0 .. n-1``, padded to ``ceil(n / world)`` positions.

    Rank ``r`` gets positions ``[r·m, (r+1)·m)`` with ``m = ceil(n / world)``; positions ``>= n`` are padding
    (:class:`IndexedItems` maps them to index ``-1``). The rank and world size are read from the process group
    when the sampler is iterated (``rank`` / ``world`` override them, for tests).
    """

    def __init__(self, num_items: int, rank: int | None = None, world: int | None = None) -> None:
        if num_items < 1:
            raise ValueError(f"a validation set needs at least one item, got {num_items}")
        self.num_items = int(num_items)
        self.rank, self.world = rank, world

    def _shard(self) -> range:
        rank, world = process_rank_and_world()
        rank = rank if self.rank is None else self.rank
        world = world if self.world is None else self.world
        per = math.ceil(self.num_items / world)
        return range(rank * per, (rank + 1) * per)

    def __iter__(self) -> Iterator[int]:
        return iter(self._shard())

    def __len__(self) -> int:
        return len(self._shard())


class IndexedItems(Dataset):
    """``(index, item)`` for positions of a :class:`ShardSampler`: ``index`` is the item's index in ``items``, or
    ``-1`` for a padding position (``>= len(items)``, whose item repeats ``items[position % len(items)]``)."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[int, Any]:
        n = len(self.items)
        return (position if position < n else -1), self.items[position % n]


def sharded_loader(items: Sequence[Any], batch_size: int, collate_fn: Callable | None = None,
                   num_workers: int = 0) -> DataLoader:
    """A DataLoader over this rank's shard of ``items`` (in order) yielding ``(indices, batch)``.

    Args:
        items: the validation set (a map-style dataset).
        batch_size: items per batch.
        collate_fn: how items make a batch (default: torch's ``default_collate``).
        num_workers: DataLoader workers.

    Returns:
        batches ``(indices, batch)``: ``indices`` long ``[B]`` (``-1``: padding), ``batch`` the collated items.
    """
    collate = collate_fn or default_collate

    def indexed(pairs: list[tuple[int, Any]]) -> tuple[torch.Tensor, Any]:
        return torch.tensor([i for i, _ in pairs], dtype=torch.long), collate([item for _, item in pairs])

    return DataLoader(IndexedItems(items), batch_size=batch_size, sampler=ShardSampler(len(items)),
                      collate_fn=indexed, num_workers=num_workers)


class ValidationSums:
    """Float64 sums and counts of per-item losses, one pair per validation loader, for a LightningModule.

    A fresh one per validation; ``add`` in ``validation_step``, ``means`` in ``on_validation_epoch_end`` (on every
    rank: it all-reduces).
    """

    def __init__(self) -> None:
        self.sums: dict[int, torch.Tensor] = {}

    def add(self, loader: int, losses: torch.Tensor, indices: torch.Tensor) -> None:
        """Add the per-item ``losses`` ``[B]`` of one batch whose items have ``indices`` ``[B]`` (``-1``: padding)."""
        if losses.shape != indices.shape:
            raise ValueError(f"per-item losses {tuple(losses.shape)} and indices {tuple(indices.shape)} differ")
        real = indices.cpu() >= 0
        losses = losses.detach().cpu().double()  # on the CPU: float64 exists on every device's host (not on MPS)
        pair = torch.stack([torch.where(real, losses, 0.0).sum(), real.double().sum()])  # [sum, count]
        self.sums[loader] = self.sums[loader] + pair if loader in self.sums else pair

    def means(self, num_loaders: int, device: torch.device) -> list[float]:
        """The mean loss of each of ``num_loaders`` loaders over all ranks (a collective under a process group,
        on ``device``: the one the backend reduces on, e.g. CUDA for NCCL)."""
        pairs = torch.stack([self.sums.get(i, torch.zeros(2, dtype=torch.float64)) for i in range(num_loaders)])
        if process_rank_and_world()[1] > 1:  # [loaders, 2] summed over ranks
            pairs = pairs.to(device)
            torch.distributed.all_reduce(pairs)
        return [float(s / c) if c > 0 else math.nan for s, c in pairs.tolist()]


class ShardedValidation:
    """Validation hooks for a LightningModule whose loaders come from :func:`sharded_loader`.

    The module defines ``validation_losses(batch, indices) -> [B]`` (per-item losses of one batch; ``indices``
    long ``[B]``, ``-1`` for padding) and ``validation_name(loader) -> str`` (the logged name). The mean of each
    loader's losses over the whole set, all ranks together, is logged at the end of each validation.
    """

    def on_validation_epoch_start(self) -> None:
        self._validation_sums = ValidationSums()

    def validation_step(self, batch: tuple[torch.Tensor, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        indices, items = batch
        self._validation_sums.add(dataloader_idx, self.validation_losses(items, indices), indices)

    def on_validation_epoch_end(self) -> None:
        loaders = len(self.trainer.num_val_batches)
        for i, value in enumerate(self._validation_sums.means(loaders, self.device)):
            self.log(self.validation_name(i), value, prog_bar=True, sync_dist=False)
