"""Weighted data mixes with exact per-source targets, and the cool-down rule.

The cool-down ("fine-tuning") of VaViM trains on a mix of OpenDV, nuPlan and nuScenes windows with
ratios 0.40 / 0.5872 / 0.0128 of 5,963,251 samples (reference §2.10, §4.6). Here:

* **Targets** (:func:`mix_targets`): source ``i`` contributes exactly ``round(ratio_i * total)``
  windows, rounded by the largest-remainder rule so the targets sum to ``total`` exactly (ratios are
  normalised by their sum; computed in exact rational arithmetic from the ratios' decimal form;
  ties go to the earlier source). The cool-down targets are 2,385,300 / 3,501,621 / 76,330 (the
  reference's ``int(ratio * total)`` gave 2,385,300 / 3,501,620 / 76,329, two short of the total).
* **Drawing** (:func:`draw_exact`): a source with at least ``target`` windows is subsampled
  without replacement; a smaller one is repeated whole ``target // n`` times plus a remainder of
  ``target % n`` distinct windows drawn without replacement. Each source draws from its own
  generator ``np.random.default_rng([seed, i])``, so a mix is a pure function of (sizes, ratios,
  total, seed) and changing one source's size leaves the other sources' draws unchanged.
* **Cool-down rule** (:class:`ConsumedWindows`, :func:`unconsumed_windows`): the cool-down draws
  its pretraining-source windows only among those the pretraining run has *not* consumed. A run
  that reads its dataset through :class:`SeededPermutationSampler` consumes, in epoch ``e``, the
  windows in the order ``np.random.default_rng([seed, e]).permutation(num_windows)``; its
  consumption is then recorded by three numbers, ``(num_windows, seed, consumed)`` — ``consumed``
  being the read position ``epoch * num_windows + windows drawn in the current epoch`` over all
  ranks (= optimiser steps x global batch in the first epoch with ``drop_last``; a finished epoch
  counts ``num_windows`` even when ``drop_last`` left its tail undrawn) — which the sampler's
  ``state_dict`` holds and checkpoints store. The unconsumed windows are the rest of the current
  epoch's permutation. A run that recorded an explicit set (indices or a boolean mask) can pass it
  instead.

:class:`MixedDataset` wraps several datasets and serves the mix's ``(source, window)`` list.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Sampler

__all__ = [
    "COOLDOWN_RATIOS",
    "COOLDOWN_SOURCES",
    "COOLDOWN_TOTAL",
    "ConsumedWindows",
    "Mix",
    "MixPart",
    "MixedDataset",
    "SeededPermutationSampler",
    "build_mix",
    "cooldown_mix",
    "draw_exact",
    "mix_targets",
    "permutation_order",
    "unconsumed_windows",
]

#: the reference cool-down mix (reference §2.10 / §4.6): sources, ratios, total samples.
COOLDOWN_SOURCES: tuple[str, ...] = ("opendv", "nuplan", "nuscenes")
COOLDOWN_RATIOS: tuple[float, ...] = (0.40, 0.5872, 0.0128)
COOLDOWN_TOTAL = 5_963_251  # 15,529 steps x global batch 384


# ------------------------------------------------------------------------------ targets


def exact_fraction(value: float | Fraction) -> Fraction:
    """``value`` as the exact decimal it was written as (``0.7`` -> 7/10, not its binary neighbour)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, int):
        return Fraction(value)
    if not math.isfinite(value):
        raise ValueError(f"ratio {value!r} is not finite")
    return Fraction(repr(float(value)))  # the decimal the user wrote (0.5872), not its binary neighbour


def mix_targets(ratios: Sequence[float], total: int) -> list[int]:
    """Per-source sample counts: ``round(ratio_i / sum(ratios) * total)`` by largest remainder.

    Every source gets ``floor(share_i)``; the ``total - sum(floors)`` leftover samples go one each
    to the sources with the largest fractional parts (ties: earlier source first). The result sums
    to ``total`` exactly and each entry is within 1 of its exact share.

    Example: ``mix_targets([0.40, 0.5872, 0.0128], 5_963_251) == [2_385_300, 3_501_621, 76_330]``.
    """
    total = int(total)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if not ratios:
        raise ValueError("need at least one ratio")
    exact = [exact_fraction(r) for r in ratios]
    if any(r < 0 for r in exact):
        raise ValueError(f"ratios must be >= 0, got {list(ratios)}")
    denom = sum(exact)
    if denom <= 0:
        raise ValueError(f"ratios must not all be 0, got {list(ratios)}")
    shares = [r * total / denom for r in exact]
    floors = [math.floor(s) for s in shares]
    left = total - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (-(shares[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    return floors


# ------------------------------------------------------------------------------ drawing


def draw_exact(available: int | np.ndarray, target: int, rng: np.random.Generator) -> np.ndarray:
    """Exactly ``target`` window indices from a source, sorted ascending (int64).

    Args:
        available: the source's size ``n`` (windows ``0..n-1``), or an explicit 1-D array of the
            candidate window indices (e.g. the unconsumed pretraining windows).
        target: how many to draw.
        rng: the source's generator.

    ``target <= n``: a uniform subset without replacement. ``target > n``: every candidate
    ``target // n`` times plus ``target % n`` distinct candidates drawn without replacement.
    """
    pool = None if np.ndim(available) == 0 else np.asarray(available, dtype=np.int64).reshape(-1)
    n = int(available) if pool is None else len(pool)
    target = int(target)
    if target < 0:
        raise ValueError(f"target must be >= 0, got {target}")
    if target == 0:
        return np.zeros(0, dtype=np.int64)
    if n <= 0:
        raise ValueError(f"cannot draw {target} windows from an empty source")
    repeats, remainder = divmod(target, n)
    picks = rng.choice(n, size=remainder, replace=False) if remainder else np.zeros(0, dtype=np.int64)
    local = np.concatenate([np.tile(np.arange(n, dtype=np.int64), repeats), picks.astype(np.int64)])
    local.sort(kind="stable")
    return local if pool is None else pool[local]


@dataclass
class MixPart:
    """One source of a mix.

    Attributes:
        name: source name.
        size: windows in the source dataset.
        ratio: its ratio (as given).
        target: windows it contributes.
        indices: ``[target]`` int64 window indices into the source dataset (sorted; repeats allowed).
        pool: number of candidate windows drawn from (``size`` unless a pool restricted it).
    """

    name: str
    size: int
    ratio: float
    target: int
    indices: np.ndarray
    pool: int

    @property
    def repeats(self) -> float:
        """Average times each candidate is used (``target / pool``)."""
        return self.target / self.pool if self.pool else 0.0


@dataclass
class Mix:
    """A built mix: the parts in source order; item ``k`` of the mix is ``(source_ids[k], window_ids[k])``.

    The order is the parts concatenated (source 0's windows first, each part sorted); shuffle with a
    sampler (a ``DataLoader(shuffle=True)``) or build with ``shuffle=True``.
    """

    parts: list[MixPart]
    seed: int
    total: int
    source_ids: np.ndarray = field(repr=False)
    window_ids: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.window_ids)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.parts]

    def summary(self) -> dict[str, Any]:
        """JSON-friendly description: per source its size, pool, ratio, target and repeats."""
        return {
            "seed": self.seed,
            "total": self.total,
            "sources": [
                {
                    "name": p.name,
                    "size": p.size,
                    "pool": p.pool,
                    "ratio": p.ratio,
                    "target": p.target,
                    "repeats": round(p.repeats, 6),
                }
                for p in self.parts
            ],
        }


def build_mix(
    sizes: Sequence[int] | Mapping[str, int],
    ratios: Sequence[float] | Mapping[str, float],
    total: int,
    seed: int = 42,
    pools: Mapping[str, np.ndarray] | Sequence[np.ndarray | None] | None = None,
    shuffle: bool = False,
) -> Mix:
    """Mix ``total`` windows from several sources with exact per-source targets.

    Args:
        sizes: windows per source, as a list (sources named ``"0"``, ``"1"``, ...) or ``{name: size}``.
        ratios: one per source (same order / keys); normalised by their sum.
        total: samples in the mix.
        seed: the mix is a pure function of (sizes, ratios, total, seed, pools).
        pools: optional candidate windows per source (by name or position; None = all windows), e.g.
            :func:`unconsumed_windows` for the pretraining source. Indices must lie in ``[0, size)``.
        shuffle: shuffle the final ``(source, window)`` list with ``default_rng([seed, 2**32 - 1])``.

    Returns:
        :class:`Mix`.
    """
    if isinstance(sizes, Mapping):
        names = [str(k) for k in sizes]
        size_list = [int(sizes[k]) for k in sizes]
        if isinstance(ratios, Mapping):
            missing = [k for k in sizes if k not in ratios]
            if missing or len(ratios) != len(sizes):
                raise ValueError(f"ratios {sorted(ratios)} do not match sources {names}")
            ratio_list = [float(ratios[k]) for k in sizes]
        else:
            ratio_list = [float(r) for r in ratios]
    else:
        size_list = [int(s) for s in sizes]
        names = [str(i) for i in range(len(size_list))]
        if isinstance(ratios, Mapping):
            raise TypeError("give ratios as a list when sizes is a list")
        ratio_list = [float(r) for r in ratios]
    if len(ratio_list) != len(size_list):
        raise ValueError(f"{len(ratio_list)} ratios for {len(size_list)} sources")
    if any(s < 0 for s in size_list):
        raise ValueError(f"source sizes must be >= 0, got {size_list}")
    pool_list: list[np.ndarray | None] = [None] * len(size_list)
    if pools is not None:
        if isinstance(pools, Mapping):
            unknown = [k for k in pools if str(k) not in names]
            if unknown:
                raise ValueError(f"pools given for unknown sources {unknown} (sources: {names})")
            for k, v in pools.items():
                pool_list[names.index(str(k))] = v
        else:
            if len(pools) != len(size_list):
                raise ValueError(f"{len(pools)} pools for {len(size_list)} sources")
            pool_list = list(pools)
    targets = mix_targets(ratio_list, total)
    parts = []
    for i, (name, size, ratio, target, pool) in enumerate(zip(names, size_list, ratio_list, targets, pool_list)):
        if pool is not None:
            pool = np.asarray(pool, dtype=np.int64).reshape(-1)
            if len(pool) and (pool.min() < 0 or pool.max() >= size):
                raise ValueError(f"source '{name}': pool indices must lie in [0, {size})")
            if len(np.unique(pool)) != len(pool):  # a repeated candidate would be drawn more often than the rest
                raise ValueError(f"source '{name}': pool holds repeated window indices (each candidate once)")
        candidates = size if pool is None else pool
        n = size if pool is None else len(pool)
        if target > 0 and n == 0:
            what = "has no windows" if pool is None else "has no candidate windows left in its pool"
            raise ValueError(f"source '{name}' {what} but its ratio {ratio} asks for {target}")
        rng = np.random.default_rng([int(seed), i])
        parts.append(MixPart(name, size, ratio, target, draw_exact(candidates, target, rng), n))
    source_ids = np.repeat(np.arange(len(parts), dtype=np.int64), [p.target for p in parts])
    window_ids = np.concatenate([p.indices for p in parts]) if parts else np.zeros(0, dtype=np.int64)
    if shuffle:
        order = np.random.default_rng([int(seed), 2**32 - 1]).permutation(len(window_ids))
        source_ids, window_ids = source_ids[order], window_ids[order]
    return Mix(parts, int(seed), int(total), source_ids, window_ids)


# ------------------------------------------------------------------------------ cool-down rule


def permutation_order(num_windows: int, seed: int, epoch: int = 0) -> np.ndarray:
    """The order in which :class:`SeededPermutationSampler` visits ``num_windows`` windows in ``epoch``."""
    return np.random.default_rng([int(seed), int(epoch)]).permutation(int(num_windows))


@dataclass(frozen=True)
class ConsumedWindows:
    """How much of its dataset a pretraining run has consumed.

    The run read its ``num_windows`` windows through :class:`SeededPermutationSampler` with
    ``seed``; ``consumed`` is its read position over all ranks: ``epoch * num_windows`` plus the
    windows drawn in the current epoch (a finished epoch counts ``num_windows`` even when
    ``drop_last`` left its tail undrawn). Epoch ``e`` visits :func:`permutation_order`
    ``(num_windows, seed, e)``; the consumed windows of the current epoch ``consumed // num_windows``
    are the first ``consumed % num_windows`` of its order.
    """

    num_windows: int
    seed: int
    consumed: int

    def __post_init__(self) -> None:
        if self.num_windows < 0 or self.consumed < 0:
            raise ValueError(f"num_windows and consumed must be >= 0, got {self.num_windows}, {self.consumed}")

    @classmethod
    def from_steps(cls, num_windows: int, seed: int, steps: int, global_batch: int) -> ConsumedWindows:
        """After ``steps`` optimiser steps of ``global_batch`` windows (drop_last, no accumulation), within
        the first epoch (later epochs also count the tail ``drop_last`` skipped: use the sampler's state)."""
        return cls(int(num_windows), int(seed), int(steps) * int(global_batch))

    @property
    def epoch(self) -> int:
        return self.consumed // self.num_windows if self.num_windows else 0

    def state_dict(self) -> dict[str, int]:
        return {"num_windows": self.num_windows, "seed": self.seed, "consumed": self.consumed}


def unconsumed_windows(
    consumed: ConsumedWindows | np.ndarray | Sequence[int],
    num_windows: int | None = None,
) -> np.ndarray:
    """Window indices a pretraining run has not consumed (sorted ascending, int64).

    Args:
        consumed: a :class:`ConsumedWindows` record (the rest of the current epoch's permutation),
            or an explicit record: a boolean mask ``[num_windows]`` (True = consumed) or an array of
            consumed window indices (then ``num_windows`` is required).
        num_windows: dataset size, for an index-array record.
    """
    if isinstance(consumed, ConsumedWindows):
        if consumed.num_windows == 0:
            return np.zeros(0, dtype=np.int64)
        order = permutation_order(consumed.num_windows, consumed.seed, consumed.epoch)
        rest = order[consumed.consumed % consumed.num_windows :]
        return np.sort(rest).astype(np.int64)
    arr = np.asarray(consumed)
    if arr.dtype == bool:
        if num_windows is not None and len(arr) != num_windows:
            raise ValueError(f"consumed mask has {len(arr)} entries for {num_windows} windows")
        return np.flatnonzero(~arr).astype(np.int64)
    if num_windows is None:
        raise ValueError("num_windows is required with an array of consumed indices")
    mask = np.zeros(int(num_windows), dtype=bool)
    idx = arr.astype(np.int64).reshape(-1)
    if len(idx) and (idx.min() < 0 or idx.max() >= num_windows):
        raise ValueError(f"consumed indices must lie in [0, {num_windows})")
    mask[idx] = True
    return np.flatnonzero(~mask).astype(np.int64)


def cooldown_mix(
    sizes: Sequence[int] | Mapping[str, int],
    total: int = COOLDOWN_TOTAL,
    ratios: Sequence[float] | Mapping[str, float] = COOLDOWN_RATIOS,
    seed: int = 42,
    pretraining: ConsumedWindows | np.ndarray | None = None,
    pretraining_source: int | str = 0,
    shuffle: bool = False,
) -> Mix:
    """The cool-down mix: :func:`build_mix` with the pretraining source restricted to unconsumed windows.

    Args:
        sizes: windows per source (default order OpenDV, nuPlan, nuScenes for the default ratios).
        total: samples (default 5,963,251).
        ratios: default 0.40 / 0.5872 / 0.0128.
        seed: mix seed (the reference's data config used 42).
        pretraining: what the pretraining run consumed of ``pretraining_source`` (a
            :class:`ConsumedWindows` or a boolean consumed-mask); None draws from all its windows.
        pretraining_source: position or name of the pretraining dataset among the sources.
        shuffle: see :func:`build_mix`.
    """
    names = [str(k) for k in sizes] if isinstance(sizes, Mapping) else [str(i) for i in range(len(sizes))]
    size_list = list(sizes.values()) if isinstance(sizes, Mapping) else list(sizes)
    if isinstance(ratios, Sequence) and isinstance(sizes, Mapping) and len(ratios) == len(names):
        ratios = dict(zip(names, ratios))
    pools = None
    if pretraining is not None:
        key = str(pretraining_source) if isinstance(pretraining_source, str) else names[int(pretraining_source)]
        n = int(size_list[names.index(key)])
        if isinstance(pretraining, ConsumedWindows) and pretraining.num_windows != n:
            raise ValueError(
                f"the pretraining record covers {pretraining.num_windows} windows but source '{key}' has {n}: "
                "the cool-down must index the same windows, in the same order, as the pretraining run"
            )
        pools = {key: unconsumed_windows(pretraining, n)}
    return build_mix(sizes, ratios, total, seed=seed, pools=pools, shuffle=shuffle)


class SeededPermutationSampler(Sampler[int]):
    """Visits ``num_windows`` windows in :func:`permutation_order` (seed, epoch), resumable and rank-sharded.

    Rank ``r`` of ``world_size`` takes positions ``r, r + W, r + 2W, ...`` of the epoch's order
    (``drop_last``: every rank gets ``num_windows // W``), so after ``k`` items per rank the run has
    consumed exactly the first ``k * W`` windows of the order. ``state_dict()`` records
    ``(num_windows, seed, consumed)`` — the :class:`ConsumedWindows` of the run, ``consumed`` counted
    as ``epoch * num_windows + k * W`` so that it means the same at any world size — and
    ``load_state_dict`` resumes mid-epoch. Call :meth:`set_epoch` to move to the next epoch
    (done automatically when an epoch is exhausted).

    The position advances when an index is handed out; a ``DataLoader`` that prefetches therefore
    records a few batches more than were trained on. That errs on the safe side for the cool-down
    rule (a fetched-but-unused window is treated as seen); ``ConsumedWindows.from_steps`` gives the
    exact count from the optimiser step.
    """

    def __init__(self, num_windows: int, seed: int = 0, rank: int = 0, world_size: int = 1, consumed: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got {rank}, {world_size}")
        self.num_windows = int(num_windows)
        self.seed = int(seed)
        self.rank, self.world_size = int(rank), int(world_size)
        self.per_epoch = (self.num_windows // self.world_size) * self.world_size
        self.consumed = int(consumed)
        self._yielded = 0

    def _position(self) -> tuple[int, int]:
        """(epoch, windows drawn in it) at ``consumed``; a position with no whole round of ``world_size``
        windows left before ``per_epoch`` (inside the tail that ``drop_last`` skips, or a few windows short of
        it after a resume at another world size) is the start of the next epoch."""
        if not self.num_windows:
            return 0, 0
        epoch, pos = divmod(self.consumed, self.num_windows)
        if self.per_epoch - pos < self.world_size:
            return (epoch + 1, 0) if self.per_epoch else (epoch, 0)
        return epoch, pos

    def __len__(self) -> int:
        return (self.per_epoch - self._position()[1]) // self.world_size

    @property
    def epoch(self) -> int:
        return self._position()[0]

    def set_epoch(self, epoch: int) -> None:
        self.consumed = int(epoch) * self.num_windows

    def __iter__(self) -> Iterator[int]:
        if not self.per_epoch:
            return
        epoch, pos = self._position()
        # Whole rounds only: every rank yields len(self) items even when ``pos`` is not a multiple of the
        # world size (a run resumed at another world size); the windows short of a round join the tail.
        end = pos + (self.per_epoch - pos) // self.world_size * self.world_size
        order = permutation_order(self.num_windows, self.seed, epoch)[:end]
        for k in range(pos + self.rank, end, self.world_size):
            # Every rank advances by one global round (W windows) per item it yields; a finished epoch counts
            # num_windows (the dropped tail included), the unit ConsumedWindows reads.
            done = k - self.rank + self.world_size
            self.consumed = epoch * self.num_windows + (done if done < end else self.num_windows)
            yield int(order[k])

    def state(self) -> ConsumedWindows:
        """What has been consumed so far (over all ranks), as a :class:`ConsumedWindows`."""
        return ConsumedWindows(self.num_windows, self.seed, self.consumed)

    def state_dict(self) -> dict[str, int]:
        return self.state().state_dict()

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if int(state["num_windows"]) != self.num_windows or int(state["seed"]) != self.seed:
            raise ValueError(
                f"sampler state for {state['num_windows']} windows / seed {state['seed']} does not "
                f"match this sampler ({self.num_windows} windows, seed {self.seed})"
            )
        self.consumed = int(state["consumed"])


# ------------------------------------------------------------------------------ dataset


class MixedDataset(Dataset):
    """Several datasets served through a :class:`Mix`: item ``k`` is ``datasets[s][w]`` for the mix's ``(s, w)``.

    Args:
        datasets: one dataset per mix source, in the mix's order; ``len(datasets[i])`` must equal
            the size the mix was built for.
        mix: the :class:`Mix`.
        return_source: return ``(item, source index)`` instead of the item alone.
    """

    def __init__(self, datasets: Sequence[Dataset], mix: Mix, return_source: bool = False) -> None:
        if len(datasets) != len(mix.parts):
            raise ValueError(f"{len(datasets)} datasets for a mix of {len(mix.parts)} sources")
        for ds, part in zip(datasets, mix.parts):
            if len(ds) != part.size:  # type: ignore[arg-type]
                raise ValueError(
                    f"source '{part.name}': dataset has {len(ds)} windows but the mix was built for {part.size}"
                )
        self.datasets = list(datasets)
        self.mix = mix
        self.return_source = return_source

    @classmethod
    def build(
        cls, datasets: Mapping[str, Dataset] | Sequence[Dataset], ratios, total: int, seed: int = 42, **kwargs: Any
    ) -> MixedDataset:
        """Build the mix from the datasets' lengths and wrap them (kwargs go to :func:`build_mix`)."""
        if isinstance(datasets, Mapping):
            sizes: Any = {k: len(v) for k, v in datasets.items()}  # type: ignore[arg-type]
            ds = list(datasets.values())
        else:
            sizes = [len(d) for d in datasets]  # type: ignore[arg-type]
            ds = list(datasets)
        return cls(ds, build_mix(sizes, ratios, total, seed=seed, **kwargs))

    def __len__(self) -> int:
        return len(self.mix)

    def __getitem__(self, k: int) -> Any:
        k = int(k)
        if k < 0:
            k += len(self)
        if not 0 <= k < len(self):
            raise IndexError(f"item {k} out of range (mix has {len(self)})")
        s = int(self.mix.source_ids[k])
        item = self.datasets[s][int(self.mix.window_ids[k])]
        return (item, s) if self.return_source else item

    def source_counts(self) -> dict[str, int]:
        """Items per source."""
        counts = np.bincount(self.mix.source_ids, minlength=len(self.mix.parts))
        return {p.name: int(c) for p, c in zip(self.mix.parts, counts)}
