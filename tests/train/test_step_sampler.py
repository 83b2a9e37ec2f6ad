"""StepBatchSampler: step-addressed batches (pure in (seed, step)), rank slices of one global batch,
whole epochs without repeats, restart positions, and the unseen pool of a partial epoch."""

from __future__ import annotations

import numpy as np
import pytest

from vavam.train.resume import StepBatchSampler


def test_batches_are_a_function_of_seed_and_step():
    a = StepBatchSampler(10, 4, seed=1, total_steps=6)
    b = StepBatchSampler(10, 4, seed=1, total_steps=6, start_step=3)
    assert list(b) == list(a)[3:]
    assert len(a) == len(b) == 6  # full-run length, whatever the start
    assert list(StepBatchSampler(10, 4, seed=2, total_steps=6)) != list(a)
    pos = {"step": 4}
    a.position = lambda: pos["step"]
    assert list(a) == [a.batch(4), a.batch(5)]


def test_epochs_cover_every_item_once_and_cross_boundaries():
    s = StepBatchSampler(10, 4, seed=0, total_steps=5)  # 20 positions = exactly 2 epochs
    flat = np.concatenate([s.batch(k) for k in range(5)])
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert not np.array_equal(flat[:10], flat[10:])  # a new permutation per epoch
    assert len(s.batch(2)) == 4  # positions 8..11 straddle the boundary: no item dropped


def test_ranks_partition_the_global_batch():
    single = StepBatchSampler(13, 6, seed=5, total_steps=4)
    ranks = [StepBatchSampler(13, 3, seed=5, total_steps=4, rank=r, world_size=2) for r in range(2)]
    for k in range(4):
        assert ranks[0].batch(k) + ranks[1].batch(k) == single.batch(k)
    with pytest.raises(ValueError, match="rank 2 outside world_size 2"):
        StepBatchSampler(13, 3, seed=5, total_steps=4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="num_items"):
        StepBatchSampler(0, 3, seed=5, total_steps=4)


def test_unseen_is_the_rest_of_the_running_epoch():
    s = StepBatchSampler(10, 3, seed=4, total_steps=10)
    seen = np.concatenate([s.batch(k) for k in range(2)])  # 6 of epoch 0
    unseen = s.unseen(2)
    assert sorted(np.concatenate([seen, unseen])) == list(range(10)) and len(unseen) == 4
    # 9 positions consumed by 3 steps; step 3 straddles the boundary
    assert len(s.unseen(3)) == 1 and s.unseen(3)[0] == s.batch(3)[0]
    s2 = StepBatchSampler(10, 5, seed=4, total_steps=10)
    assert sorted(s2.unseen(2)) == list(range(10))  # exactly one epoch consumed: the whole next one
