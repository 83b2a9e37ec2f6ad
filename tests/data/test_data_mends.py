"""Regression tests of the data audit (windows, mix, token store): each failed before its fix."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vavam.data.geometry import quat_from_yaw
from vavam.data.mix import (
    ConsumedWindows,
    SeededPermutationSampler,
    build_mix,
    draw_exact,
    permutation_order,
    unconsumed_windows,
)
from vavam.data.records import SceneRecord
from vavam.data.tokens import TokenStore, TokenStoreWriter
from vavam.data.windows import WindowIndex

# ------------------------------------------------------------------------------ mix: sampler


def test_sampler_state_after_a_full_drop_last_epoch_is_the_next_epoch():
    # 10 windows on 3 ranks: an epoch draws 9, window order[9] is the dropped tail. Once the epoch is done
    # the sampler is in epoch 1, and its state must say so (a finished epoch counts num_windows): it used to
    # record 9, so the cool-down pool was the single tail window instead of the whole next epoch.
    samplers = [SeededPermutationSampler(10, seed=7, rank=r, world_size=3) for r in range(3)]
    for s in samplers:
        assert len(list(s)) == 3
    state = samplers[0].state_dict()
    assert state == {"num_windows": 10, "seed": 7, "consumed": 10}
    assert ConsumedWindows(**state).epoch == samplers[0].epoch == 1
    assert unconsumed_windows(ConsumedWindows(**state)).tolist() == list(range(10))
    # and the next pass is epoch 1's order
    assert sorted(i for s in samplers for i in s) == sorted(permutation_order(10, 7, 1)[:9].tolist())


def test_sampler_resumed_at_another_world_size_yields_len_items_on_every_rank():
    # A 2-rank run stopped after 4 of 10 windows (consumed=4); resumed on 3 ranks (9 windows per epoch), the
    # ranks used to yield 2, 2 and 1 items while len() said 1 (DDP ranks out of step) and record different
    # states. Now: one whole round (order[4:7]), every rank 1 item, the same state on every rank.
    order = permutation_order(10, 7, 0)
    three = [SeededPermutationSampler(10, seed=7, rank=r, world_size=3) for r in range(3)]
    got = []
    for s in three:
        s.load_state_dict({"num_windows": 10, "seed": 7, "consumed": 4})
        n = len(s)
        items = list(s)
        assert len(items) == n == 1
        got += items
    assert got == order[4:7].tolist()
    assert {s.state_dict()["consumed"] for s in three} == {10}  # epoch 0 done on every rank
    assert all(s.epoch == 1 for s in three)
    # a position with fewer than a round left goes straight to the next epoch (no empty epoch forever)
    stuck = SeededPermutationSampler(10, seed=7, rank=0, world_size=3, consumed=8)
    assert stuck.epoch == 1 and len(stuck) == 3 and list(stuck) == permutation_order(10, 7, 1)[0:9:3].tolist()


# ------------------------------------------------------------------------------ mix: inputs


def test_draw_exact_reads_a_0d_size_as_a_size_and_pools_refuse_repeats():
    # np.array(5) is a size (it used to be taken as the one-window pool [5]: 3 copies of window 5)
    got = draw_exact(np.array(5), 3, np.random.default_rng(0))
    assert len(set(got.tolist())) == 3 and got.min() >= 0 and got.max() < 5
    with pytest.raises(ValueError, match="source '0': pool holds repeated window indices"):
        build_mix([5, 5], [1, 1], 4, pools=[np.array([1, 1, 2]), None])


# ------------------------------------------------------------------------------ windows


def _scene(name: str, n: int) -> SceneRecord:
    trans = np.zeros((n, 3))
    trans[:, 0] = 5.0 * np.arange(n)  # 10 m/s at 2 Hz
    ts = np.arange(n, dtype=np.int64) * 500_000
    return SceneRecord(name=name, timestamps=ts, translations=trans, rotations=quat_from_yaw(np.zeros(n)))


def test_window_index_refuses_misaligned_or_unsorted_records():
    ok = _scene("ok", 20)
    assert len(WindowIndex([ok])) == 7
    short = SceneRecord("short", ok.timestamps, ok.translations[:-1], ok.rotations)  # one pose missing
    with pytest.raises(ValueError, match=r"scene 'short': translations have shape \(19, 3\), expected \(20, 3\)"):
        WindowIndex([ok, short])
    rots = SceneRecord("rots", ok.timestamps, ok.translations, ok.rotations[:, :3])
    with pytest.raises(ValueError, match=r"scene 'rots': rotations have shape \(20, 3\), expected \(20, 4\)"):
        WindowIndex([rots])
    # reversed clock: used to give 7 windows whose "future" lies in the past
    rev = SceneRecord("rev", ok.timestamps[::-1].copy(), ok.translations, ok.rotations)
    with pytest.raises(ValueError, match=r"scene 'rev', frame 1: timestamps must increase strictly"):
        WindowIndex([rev])
    dup = ok.timestamps.copy()
    dup[5] = dup[4]
    with pytest.raises(ValueError, match=r"scene 'dup', frame 5"):
        WindowIndex([SceneRecord("dup", dup, ok.translations, ok.rotations)])


# ------------------------------------------------------------------------------ token store


def test_write_scene_refuses_float_ids_ids_past_the_codebook_and_fractional_timestamps(tmp_path):
    w = TokenStoreWriter(tmp_path, (1, 2), codebook_size=16, resume=False)
    with pytest.raises(ValueError, match=r"scene 'f': token ids must be integers, got dtype float64"):
        w.write_scene("f", np.array([[[1.7, 2.0]]]), [0])  # used to be stored as [1, 2]
    with pytest.raises(ValueError, match=r"scene 'n': token ids must be integers"):
        w.write_scene("n", np.array([[[np.nan, 2.0]]]), [0])
    with pytest.raises(ValueError, match=r"scene 'big': token id 16 is outside the store's codebook of 16 codes"):
        w.write_scene("big", np.array([[[16, 2]]], dtype=np.uint16), [0])
    with pytest.raises(ValueError, match=r"scene 'sec': timestamps must be whole microseconds"):
        w.write_scene("sec", np.zeros((2, 1, 2), np.uint16), [0.1, 0.2])  # seconds: used to become [0, 0]
    assert not (tmp_path / "scenes").exists() or not list((tmp_path / "scenes").glob("*.npy"))
    # valid input still goes through, float timestamps that are whole µs included
    w.write_scene("ok", np.array([[[15, 0]], [[3, 4]]], dtype=np.int64), np.array([0.0, 100_000.0]))
    store = TokenStore(tmp_path)
    assert store.tokens("ok").tolist() == [[[15, 0]], [[3, 4]]] and store.timestamps("ok").tolist() == [0, 100_000]


def test_window_starts_refuse_bad_window_shapes(tmp_path):
    w = TokenStoreWriter(tmp_path, (1, 1), codebook_size=16, fps=10.0, resume=False)
    w.write_scene("s", np.zeros((5, 1, 1), np.uint16), np.arange(5) * 100_000)
    store = TokenStore(tmp_path)
    assert list(store.window_starts("s", 2, 3)) == [0, 1]  # frames (0, 3), (1, 4)
    for frames, stride in ((0, 3), (2, 0)):  # used to list starts past the scene (range(8) for 0 frames)
        with pytest.raises(ValueError, match="num_frames and stride must be >= 1"):
            store.window_starts("s", frames, stride)
        with pytest.raises(ValueError, match="num_frames and stride must be >= 1"):
            store.steady_window_starts("s", frames, stride)


def test_token_store_keeps_a_bounded_number_of_memory_maps(tmp_path, monkeypatch):
    # Every cached memory map holds a file descriptor: a training pass over a store of thousands of scenes
    # (OpenDV, nuPlan) used to keep one per scene and run into the open-files limit.
    w = TokenStoreWriter(tmp_path, (1, 1), codebook_size=64, resume=False)
    for k in range(24):
        w.write_scene(f"s{k:02d}", np.full((3, 1, 1), k, np.uint16), [0, 1, 2])
    monkeypatch.setattr(TokenStore, "max_open_scenes", 4)
    store = TokenStore(tmp_path)
    fd_dir = Path("/proc/self/fd")
    before = len(os.listdir(fd_dir)) if fd_dir.is_dir() else None
    held = [store.tokens(f"s{k:02d}") for k in range(8)]  # handed-out arrays stay valid after eviction
    for _ in range(2):
        for k in range(24):
            assert int(store.tokens(f"s{k:02d}")[1, 0, 0]) == k
    assert len(store._tokens) == 4
    assert [int(a[0, 0, 0]) for a in held] == list(range(8))
    del held
    if before is not None:
        assert len(os.listdir(fd_dir)) - before <= 4
    # most recently used are kept
    store.tokens("s05")
    store.tokens("s23")
    assert list(store._tokens)[-2:] == ["s05", "s23"]
