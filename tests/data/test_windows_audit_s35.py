"""Second-round audit of scene records -> training windows (session 35): poses that cannot make a window,
reference-pickle translations, and the timestamp join between windows and tokens."""

from __future__ import annotations

import numpy as np
import pytest

from vavam.data.geometry import quat_from_yaw
from vavam.data.records import SceneRecord, records_from_reference_pickle
from vavam.data.windows import TokenWindowDataset, WindowConfig, WindowIndex


def _straight_scene_s35(n: int = 120, dt_us: int = 100_000, name: str = "a") -> SceneRecord:
    """``n`` frames ``dt_us`` apart driving +x at 10 m/s, heading 0."""
    t = np.stack([np.arange(n) * 10.0 * dt_us / 1e6, np.zeros(n), np.zeros(n)], axis=1)
    return SceneRecord(name, np.arange(n, dtype=np.int64) * dt_us, t, quat_from_yaw(np.zeros(n)))


class _StoreS35:
    """Token store stand-in: token of frame k is k everywhere; nearest-frame join like the vavam store."""

    def __init__(self, timestamps_us: np.ndarray) -> None:
        self.ts = np.asarray(timestamps_us, dtype=np.int64)

    def timestamps(self, scene: str) -> np.ndarray:
        return self.ts

    def tokens(self, scene: str) -> np.ndarray:
        return np.broadcast_to(np.arange(len(self.ts))[:, None, None], (len(self.ts), 2, 3))

    def frame_index_at(self, scene: str, timestamps_us: np.ndarray, tolerance_us: int | None) -> np.ndarray:
        if tolerance_us is None:
            tolerance_us = int(np.median(np.diff(self.ts)) // 2)
        q = np.asarray(timestamps_us, dtype=np.int64)
        i = np.abs(self.ts[None, :] - q[:, None]).argmin(axis=1)
        return np.where(np.abs(self.ts[i] - q) <= tolerance_us, i, -1)


@pytest.mark.parametrize("field", ["translations", "rotations"])
def test_window_index_refuses_non_finite_pose_s35(field: str) -> None:
    rec = _straight_scene_s35()
    getattr(rec, field)[60, 0] = np.nan
    # Before: accepted; 11 windows got NaN waypoints and a STRAIGHT command for the frames reading frame 60.
    with pytest.raises(ValueError, match=r"scene 'a', frame 60: .*not finite"):
        WindowIndex([rec], WindowConfig(subsampling=5))


def test_window_index_refuses_zero_quaternion_s35() -> None:
    rec = _straight_scene_s35()
    rec.rotations[7] = 0.0
    with pytest.raises(ValueError, match=r"frame 7: .*zero quaternion"):
        WindowIndex([rec], WindowConfig(subsampling=5))


def test_reference_pickle_refuses_short_translation_s35() -> None:
    def item(i: int, tran: list[float]) -> dict:
        cam = {"file_path": f"f{i}.jpg", "timestamp": 1_000 + i * 500_000, "ego_to_world_tran": tran,
               "ego_to_world_rot": [1.0, 0.0, 0.0, 0.0]}
        return {"scene": {"name": "s"}, "CAM_FRONT": cam}

    ok = records_from_reference_pickle([item(i, [float(i), 2.0]) for i in range(4)])  # (x, y): z = 0
    np.testing.assert_array_equal(ok[0].translations[3], [3.0, 2.0, 0.0])
    for bad in ([], [5.0]):  # before: silently the pose (0, 0, 0) / (5, 0, 0)
        items = [item(i, [float(i), 0.0, 0.0]) for i in range(4)]
        items[2] = item(2, bad)
        with pytest.raises(ValueError, match="entry 2 .*ego_to_world_tran has"):
            records_from_reference_pickle(items)


def test_token_join_refuses_sparser_store_s35() -> None:
    """2 Hz tokens of 10 Hz records: the store's own half interval (250 ms) paired record frames with tokens
    200 ms away, silently; the join now allows at most half the records' interval too."""
    rec = _straight_scene_s35()
    index = WindowIndex([rec], WindowConfig(subsampling=5))
    store = _StoreS35(rec.timestamps[2::5])  # the tokens of frames 2, 7, 12, ...
    ds = TokenWindowDataset(index, store)
    assert ds.scene_tolerance_us(0) == 50_000
    with pytest.raises(KeyError, match="window 0: no tokens within 50000 us"):
        ds[0]  # context frames 0, 5, 10, ... have no token of their own
    item = ds[2]  # window starting at frame 2: its frames are exactly the store's
    assert item["tokens"][:, 0, 0].tolist() == list(range(8))
    np.testing.assert_array_equal(item["timestamps_us"].numpy(), store.ts[:8])


def test_token_join_same_rate_unchanged_s35() -> None:
    """Same frames in records and store: the tolerance is the store's own default, every window joins."""
    rec = _straight_scene_s35()
    jitter = np.random.default_rng(0).integers(-20_000, 20_000, len(rec))
    rec.timestamps = rec.timestamps + jitter  # stays increasing (steps 60..140 ms)
    index = WindowIndex([rec], WindowConfig(subsampling=5))
    store = _StoreS35(rec.timestamps)
    ds = TokenWindowDataset(index, store)
    assert ds.scene_tolerance_us(0) == int(np.median(np.diff(rec.timestamps)) // 2)
    for i in range(len(ds)):
        start = int(index.window_starts[i])
        assert ds[i]["tokens"][:, 0, 0].tolist() == list(range(start, start + 40, 5))
    assert TokenWindowDataset(index, store, tolerance_us=7).scene_tolerance_us(0) == 7


class _RaisingStoreS35(_StoreS35):
    """Like the vavam store: a miss raises ValueError instead of returning -1."""

    def frame_index_at(self, scene: str, timestamps_us: np.ndarray, tolerance_us: int | None) -> np.ndarray:
        rows = super().frame_index_at(scene, timestamps_us, tolerance_us)
        if np.any(rows < 0):
            raise ValueError(f"scene {scene!r}: no frame within {tolerance_us} µs")
        return rows


@pytest.mark.parametrize("store_kind", [_StoreS35, _RaisingStoreS35])
def test_first_unjoined_finds_the_first_context_frame_without_tokens_s35(store_kind) -> None:
    """Checked before training: the first scene / frame a window reads that has no token, whether the store
    returns -1 or raises for a miss; None when the store holds every frame."""
    recs = [_straight_scene_s35(100, name="a"), _straight_scene_s35(100, name="b")]
    index = WindowIndex(recs, WindowConfig(subsampling=5))

    class Stores:
        def __init__(self, by_scene):
            self.by_scene = by_scene

        def __getattr__(self, attr):
            return lambda scene, *args: getattr(self.by_scene[scene], attr)(scene, *args)

    full = store_kind(recs[0].timestamps)
    assert TokenWindowDataset(index, Stores({"a": full, "b": full})).first_unjoined() is None
    # scene b lacks frame 23 (a context frame of windows starting at 3, 8, 13, 18)
    holes = store_kind(np.delete(recs[1].timestamps, 23))
    assert TokenWindowDataset(index, Stores({"a": full, "b": holes})).first_unjoined() == ("b", 2_300_000, 50_000)
    # 2 Hz tokens of 10 Hz records: frame 0 of scene a already misses
    sparse = store_kind(recs[0].timestamps[2::5])
    assert TokenWindowDataset(index, Stores({"a": sparse, "b": full})).first_unjoined() == ("a", 0, 50_000)


def test_action_windows_refuse_a_store_at_a_lower_frame_rate_s35(tmp_path) -> None:
    """``train action`` / ``eval openloop``: 2 Hz tokens of 10 Hz records are refused when the windows are made,
    naming the options, the scene and the frame (before: every window joined tokens up to 200 ms away)."""
    from vavam.data.records import save_records
    from vavam.data.tokens import TokenStoreWriter
    from vavam.train.action import make_window_dataset

    rec = _straight_scene_s35(80)
    save_records(tmp_path / "records.npz", [rec])
    for name, frames in (("tok_full", slice(None)), ("tok_2hz", slice(2, None, 5))):
        writer = TokenStoreWriter(tmp_path / name, (2, 3), codebook_size=16, tokenizer={"name": "t"}, fps=10.0,
                                  resume=False)
        ts = rec.timestamps[frames]
        writer.write_scene("a", np.zeros((len(ts), 2, 3), dtype=np.uint16), ts)
    assert len(make_window_dataset(tmp_path / "records.npz", tmp_path / "tok_full", 8, subsampling=5)) == 15
    with pytest.raises(ValueError, match=r"--tokens .*tok_2hz has no tokens within 50000 µs of frame 0 µs of "
                                         r"scene 'a' in --records .*records.npz"):
        make_window_dataset(tmp_path / "records.npz", tmp_path / "tok_2hz", 8, subsampling=5)
