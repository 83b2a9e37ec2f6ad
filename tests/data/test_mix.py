"""Data mixes: exact targets (hand-computed), subsample / repeat rules, determinism, the cool-down rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from vavam.data.mix import (
    COOLDOWN_RATIOS,
    COOLDOWN_TOTAL,
    ConsumedWindows,
    MixedDataset,
    SeededPermutationSampler,
    build_mix,
    cooldown_mix,
    draw_exact,
    mix_targets,
    permutation_order,
    unconsumed_windows,
)


def test_cooldown_targets_by_hand():
    # shares: 0.40 * 5,963,251 = 2,385,300.4; 0.5872 * ... = 3,501,620.9872; 0.0128 * ... = 76,329.6128.
    # floors sum to 5,963,249; the 2 left go to the largest fractions (.9872 nuPlan, .6128 nuScenes).
    assert mix_targets(COOLDOWN_RATIOS, COOLDOWN_TOTAL) == [2_385_300, 3_501_621, 76_330]
    assert sum(mix_targets(COOLDOWN_RATIOS, COOLDOWN_TOTAL)) == COOLDOWN_TOTAL


def test_targets_small_cases_by_hand():
    assert mix_targets([1, 1, 1], 10) == [4, 3, 3]  # 3.33 each; the one left goes to the first (tie)
    assert mix_targets([0.5, 0.25, 0.25], 7) == [3, 2, 2]  # 3.5, 1.75, 1.75 -> 3, 1, 1; the 2 left go to the .75s
    assert mix_targets([2, 6], 9) == [2, 7]  # ratios normalised: 2.25, 6.75 -> 2, 6, +1 to the second
    assert mix_targets([0.1, 0.2, 0.7], 0) == [0, 0, 0]
    assert mix_targets([0.0, 1.0], 5) == [0, 5]
    with pytest.raises(ValueError, match="not all be 0"):
        mix_targets([0, 0], 3)
    with pytest.raises(ValueError, match=">= 0"):
        mix_targets([-0.1, 1.1], 3)


def test_targets_use_the_written_decimal():
    # 0.1 * 30 = 3.0000000000000004 in floats; exact decimal arithmetic gives exactly 3, 6, 21.
    assert mix_targets([0.1, 0.2, 0.7], 30) == [3, 6, 21]


def test_draw_exact_subsample_and_repeat():
    rng = np.random.default_rng(0)
    sub = draw_exact(10, 4, rng)
    assert len(sub) == 4 and len(set(sub.tolist())) == 4 and sub.min() >= 0 and sub.max() < 10
    assert np.all(np.diff(sub) > 0)
    rep = draw_exact(3, 8, np.random.default_rng(1))  # 2 full copies + 2 distinct extra
    counts = np.bincount(rep, minlength=3)
    assert len(rep) == 8 and sorted(counts.tolist()) == [2, 3, 3]
    pool = np.array([5, 7, 11])
    got = draw_exact(pool, 7, np.random.default_rng(2))  # 2 copies + 1 extra, all from the pool
    assert set(got.tolist()) <= {5, 7, 11} and len(got) == 7
    assert sorted(np.unique(got, return_counts=True)[1].tolist()) == [2, 2, 3]
    with pytest.raises(ValueError, match="empty source"):
        draw_exact(0, 1, rng)
    assert len(draw_exact(0, 0, rng)) == 0


def test_build_mix_exact_and_deterministic():
    sizes = {"opendv": 1000, "nuplan": 40, "nuscenes": 3}
    mix = build_mix(sizes, [0.40, 0.5872, 0.0128], total=500, seed=7)
    # 200, 293.6, 6.4 -> floors 200, 293, 6 (499); +1 to nuPlan (.6)
    assert [p.target for p in mix.parts] == [200, 294, 6]
    assert len(mix) == 500 and np.bincount(mix.source_ids).tolist() == [200, 294, 6]
    opendv, nuplan, nuscenes = mix.parts
    assert len(set(opendv.indices.tolist())) == 200  # subsampled without replacement
    # 294 = 7 x 40 + 14: every window 7 times, 14 distinct ones an 8th time
    assert sorted(np.bincount(nuplan.indices, minlength=40).tolist()) == [7] * 26 + [8] * 14
    assert np.bincount(nuscenes.indices).tolist() == [2, 2, 2]  # exactly twice each
    again = build_mix(sizes, [0.40, 0.5872, 0.0128], total=500, seed=7)
    assert np.array_equal(again.window_ids, mix.window_ids) and np.array_equal(again.source_ids, mix.source_ids)
    other = build_mix(sizes, [0.40, 0.5872, 0.0128], total=500, seed=8)
    assert not np.array_equal(other.window_ids, mix.window_ids)
    # Sources draw independently: another nuPlan size leaves the OpenDV draw unchanged.
    changed = build_mix({**sizes, "nuplan": 41}, [0.40, 0.5872, 0.0128], total=500, seed=7)
    assert np.array_equal(changed.parts[0].indices, opendv.indices)
    shuffled = build_mix(sizes, [0.40, 0.5872, 0.0128], total=500, seed=7, shuffle=True)
    assert sorted(zip(shuffled.source_ids, shuffled.window_ids)) == sorted(zip(mix.source_ids, mix.window_ids))
    assert mix.summary()["sources"][2] == {
        "name": "nuscenes",
        "size": 3,
        "pool": 3,
        "ratio": 0.0128,
        "target": 6,
        "repeats": 2.0,
    }


def test_build_mix_errors():
    with pytest.raises(ValueError, match="source '1' has no windows"):
        build_mix([5, 0], [0.5, 0.5], 4)
    with pytest.raises(ValueError, match="2 ratios for 3 sources"):
        build_mix([1, 2, 3], [0.5, 0.5], 4)
    with pytest.raises(ValueError, match=r"pool indices must lie in \[0, 5\)"):
        build_mix([5, 5], [1, 1], 4, pools=[np.array([9]), None])


# ------------------------------------------------------------------------------ cool-down rule


def test_unconsumed_windows_from_a_seeded_position():
    record = ConsumedWindows(num_windows=20, seed=3, consumed=12)
    order = permutation_order(20, 3)
    rest = unconsumed_windows(record)
    assert rest.tolist() == sorted(order[12:].tolist()) and len(rest) == 8
    assert not set(rest.tolist()) & set(order[:12].tolist())
    # a second epoch: 20 + 5 consumed -> the last 15 of epoch 1's order
    assert unconsumed_windows(ConsumedWindows(20, 3, 25)).tolist() == sorted(permutation_order(20, 3, 1)[5:].tolist())
    assert ConsumedWindows.from_steps(20, 3, steps=3, global_batch=4).consumed == 12
    mask = np.zeros(6, bool)
    mask[[0, 4]] = True
    assert unconsumed_windows(mask).tolist() == [1, 2, 3, 5]
    assert unconsumed_windows(np.array([0, 4]), num_windows=6).tolist() == [1, 2, 3, 5]


def test_sampler_records_what_was_consumed():
    # Two ranks read 5 windows each of a 13-window dataset: the first 10 of the order are consumed.
    samplers = [SeededPermutationSampler(13, seed=5, rank=r, world_size=2) for r in range(2)]
    seen = []
    for s in samplers:
        it = iter(s)
        seen += [next(it) for _ in range(5)]
    order = permutation_order(13, 5)
    assert sorted(seen) == sorted(order[:10].tolist())
    state = samplers[0].state_dict()
    assert state == {"num_windows": 13, "seed": 5, "consumed": 10}
    assert set(unconsumed_windows(ConsumedWindows(**state)).tolist()) == set(range(13)) - set(seen)
    resumed = SeededPermutationSampler(13, seed=5)
    resumed.load_state_dict(state)
    assert list(resumed) == order[10:13].tolist()  # one rank now: the rest of the epoch
    full = list(SeededPermutationSampler(13, seed=5))
    assert full == order.tolist()


def test_sampler_state_is_exact_after_a_drop_last_epoch():
    # 10 windows on 3 ranks: each epoch draws 9 (drop_last). After epoch 0 and one round of epoch 1, the
    # recorded state must name exactly the 3 windows drawn in epoch 1 as consumed (it used to count in
    # units of 9, so ConsumedWindows placed the position one window short, in the wrong epoch).
    samplers = [SeededPermutationSampler(10, seed=7, rank=r, world_size=3) for r in range(3)]
    epoch0 = [i for s in samplers for i in s]
    assert sorted(epoch0) == sorted(permutation_order(10, 7, 0)[:9].tolist())
    iters = [iter(s) for s in samplers]
    drawn = [next(it) for it in iters]
    assert sorted(drawn) == sorted(permutation_order(10, 7, 1)[:3].tolist())
    state = samplers[0].state_dict()
    assert ConsumedWindows(**state).epoch == 1 and samplers[0].epoch == 1
    assert set(unconsumed_windows(ConsumedWindows(**state)).tolist()) == set(range(10)) - set(drawn)
    # resuming from that state, on any world size, continues epoch 1 where it stopped
    rest = [i for it in iters for i in it]
    one = SeededPermutationSampler(10, seed=7)
    one.load_state_dict(state)
    assert sorted(one) == sorted(rest + permutation_order(10, 7, 1)[9:].tolist())
    three = [SeededPermutationSampler(10, seed=7, rank=r, world_size=3) for r in range(3)]
    for s in three:
        s.load_state_dict(state)
    assert len(three[0]) == 2 and sorted(i for s in three for i in s) == sorted(rest)


def test_cooldown_draws_only_unconsumed_pretraining_windows():
    record = ConsumedWindows(num_windows=100, seed=11, consumed=70)
    mix = cooldown_mix([100, 50, 4], total=200, pretraining=record, seed=42)
    assert [p.target for p in mix.parts] == [80, 117, 3]  # 80, 117.44, 2.56 -> 80, 117, 2 + 1 to nuScenes
    consumed = set(permutation_order(100, 11)[:70].tolist())
    opendv = mix.parts[0]
    assert opendv.pool == 30 and not set(opendv.indices.tolist()) & consumed
    # 80 from a pool of 30: each twice (60) + 20 distinct a third time
    counts = np.bincount(opendv.indices, minlength=100)[sorted(set(range(100)) - consumed)].tolist()
    assert sorted(counts) == [2] * 10 + [3] * 20
    with pytest.raises(ValueError, match="covers 99 windows but source '0' has 100"):
        cooldown_mix([100, 50, 4], total=200, pretraining=ConsumedWindows(99, 11, 70))
    with pytest.raises(ValueError, match="no candidate windows left"):
        cooldown_mix([100, 50, 4], total=200, pretraining=np.ones(100, dtype=bool))  # explicit mask: all seen
    # a record at an epoch boundary starts the next epoch: every window is a candidate again
    assert cooldown_mix([100, 50, 4], total=200, pretraining=ConsumedWindows(100, 11, 200)).parts[0].pool == 100


# ------------------------------------------------------------------------------ dataset wrapper


class Numbers(Dataset):
    def __init__(self, tag: int, n: int) -> None:
        self.tag, self.n = tag, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return torch.tensor([self.tag, i])


def test_mixed_dataset_serves_the_mix():
    data = {"a": Numbers(0, 10), "b": Numbers(1, 3)}
    ds = MixedDataset.build(data, [0.5, 0.5], total=12, seed=0)
    assert len(ds) == 12 and ds.source_counts() == {"a": 6, "b": 6}
    items = torch.stack([ds[k] for k in range(len(ds))])
    assert items[:, 0].tolist() == [0] * 6 + [1] * 6
    assert sorted(items[6:, 1].tolist()) == [0, 0, 1, 1, 2, 2]
    assert ds[-1].tolist() == items[-1].tolist()
    item, source = MixedDataset(list(data.values()), ds.mix, return_source=True)[7]
    assert source == 1 and item[0] == 1
    batches = list(DataLoader(ds, batch_size=4, shuffle=True, generator=torch.Generator().manual_seed(0)))
    assert sum(len(b) for b in batches) == 12
    with pytest.raises(ValueError, match="dataset has 4 windows but the mix was built for 3"):
        MixedDataset([Numbers(0, 10), Numbers(1, 4)], ds.mix)
    with pytest.raises(IndexError):
        ds[12]
