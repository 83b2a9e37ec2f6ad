"""Scene records: validation errors name scene and frame, save/load round trip, reference pickles."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from vavam.data.geometry import quat_from_yaw
from vavam.data.records import (
    AgentBoxes,
    RecordError,
    SceneRecord,
    load_records,
    read_records_header,
    records_from_reference_pickle,
    save_records,
    validate_record,
)
from vavam.io import UnsafePickleError


def scene(name: str = "scene-0001", n: int = 10, with_extras: bool = True) -> SceneRecord:
    yaw = np.linspace(0, 0.5, n)
    trans = np.stack([np.arange(n) * 2.0, np.arange(n) * 0.1, np.full(n, 0.3)], axis=1)
    boxes = None
    if with_extras:
        frames = [
            {
                "centers": [[10.0 + i, 2.0, 0.5]] * (i % 3),
                "sizes": [[4.5, 1.9, 1.6]] * (i % 3),
                "yaws": [0.1] * (i % 3),
                "categories": ["vehicle.car"] * (i % 3),
                "track_ids": [f"t{k}" for k in range(i % 3)],
            }
            for i in range(n)
        ]
        boxes = AgentBoxes.from_frames(frames)
    return SceneRecord(
        name=name,
        timestamps=1_000_000 + np.arange(n, dtype=np.int64) * 500_000,
        translations=trans,
        rotations=quat_from_yaw(yaw),
        camera="CAM_FRONT",
        dataset="nuscenes",
        image_paths=[f"samples/CAM_FRONT/{name}_{i}.jpg" for i in range(n)] if with_extras else None,
        token_indices=np.arange(n) if with_extras else None,
        intrinsics=np.array([[1266.4, 0, 816.3], [0, 1266.4, 491.5], [0, 0, 1.0]]) if with_extras else None,
        boxes=boxes,
        metadata={"description": "rain, turn left"} if with_extras else {},
    )


def assert_same(a: SceneRecord, b: SceneRecord) -> None:
    assert a.name == b.name and a.camera == b.camera and a.dataset == b.dataset and a.metadata == b.metadata
    np.testing.assert_array_equal(a.timestamps, b.timestamps)
    assert b.timestamps.dtype == np.int64
    np.testing.assert_array_equal(a.translations, b.translations)
    np.testing.assert_array_equal(a.rotations, b.rotations)
    assert a.image_paths == b.image_paths
    for x, y in [(a.token_indices, b.token_indices), (a.intrinsics, b.intrinsics)]:
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)
    assert (a.boxes is None) == (b.boxes is None)
    if a.boxes is not None:
        for f in ("offsets", "centers", "sizes", "yaws"):
            np.testing.assert_array_equal(getattr(a.boxes, f), getattr(b.boxes, f))
        assert a.boxes.categories == b.boxes.categories and a.boxes.track_ids == b.boxes.track_ids


def test_round_trip(tmp_path) -> None:
    recs = [scene("scene-0001", 10), scene("scene-0002", 7, with_extras=False), scene("scene-0003", 4)]
    recs[2].boxes = None
    path = save_records(
        tmp_path / "nuscenes.npz", recs, dataset="nuscenes", image_root="/data/nuscenes", metadata={"split": "val"}
    )
    assert not list(tmp_path.glob(".*.tmp"))  # atomic write leaves no temporary file
    header = read_records_header(path)
    assert header["format"] == "vavam-records" and header["version"] == 1
    assert header["image_root"] == "/data/nuscenes" and header["metadata"] == {"split": "val"}
    assert [s["num_frames"] for s in header["scenes"]] == [10, 7, 4]
    loaded = load_records(path, check_files=False)
    assert len(loaded) == 3
    for a, b in zip(recs, loaded):
        assert_same(a, b)
    # boxes survive and transform into the ego frame
    centers, sizes, yaws = loaded[0].boxes_in_ego(2)
    assert centers.shape == (2, 3) and sizes.shape == (2, 3) and yaws.shape == (2,)
    # also loadable with plain numpy, no pickle
    with np.load(path, allow_pickle=False) as data:
        assert data["timestamps"].shape == (21,)


def test_round_trip_checks_image_files(tmp_path) -> None:
    rec = scene("s", 3)
    for p in rec.image_paths:
        (tmp_path / "img" / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "img" / p).write_bytes(b"jpg")
    path = save_records(tmp_path / "r.npz", [rec], image_root=tmp_path / "img")
    assert len(load_records(path)) == 1  # files exist under the stored image root
    (tmp_path / "img" / rec.image_paths[2]).unlink()
    with pytest.raises(RecordError, match=r"scene 's', frame 2: image file .* does not exist"):
        load_records(path)
    assert len(load_records(path, check_files=False)) == 1


def test_boxes_in_ego_frame() -> None:
    rec = SceneRecord(
        name="b",
        timestamps=[0, 500_000],
        translations=[[10.0, 5.0, 0.0], [11.0, 5.0, 0.0]],
        rotations=quat_from_yaw(np.array([np.pi / 2, np.pi / 2])),
        boxes=AgentBoxes(
            offsets=[0, 1, 1], centers=[[8.0, 15.0, 1.0]], sizes=[[4.0, 2.0, 1.5]], yaws=[np.pi / 2 + 0.2]
        ),
    )
    validate_record(rec)
    centers, _, yaws = rec.boxes_in_ego(0)
    np.testing.assert_allclose(centers, [[10.0, 2.0, 1.0]], atol=1e-12)  # 10 m ahead, 2 m left
    np.testing.assert_allclose(yaws, [0.2], atol=1e-12)
    assert rec.boxes_in_ego(1)[0].shape == (0, 3)


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda r: r.timestamps.__setitem__(4, r.timestamps[3]), r"scene 'bad', frame 4: timestamps must increase"),
        (lambda r: r.timestamps.__setitem__(6, 0), r"scene 'bad', frame 6: timestamps must increase"),
        (lambda r: r.translations.__setitem__((5, 1), np.nan), r"scene 'bad', frame 5: translation is not finite"),
        (lambda r: r.rotations.__setitem__((7, 0), np.inf), r"scene 'bad', frame 7: rotation is not finite"),
        (
            lambda r: r.rotations.__setitem__(3, r.rotations[3] * 1.1),
            r"scene 'bad', frame 3: rotation quaternion .* norm 1.1",
        ),
        (lambda r: r.boxes.sizes.__setitem__((1, 0), -1.0), r"scene 'bad', frame 2: box 0 has a negative size"),
        (lambda r: r.boxes.centers.__setitem__((2, 2), np.nan), r"scene 'bad', frame 2: box 1 has a non-finite center"),
        (lambda r: r.image_paths.__setitem__(8, ""), r"scene 'bad', frame 8: image path is empty"),
        (lambda r: setattr(r, "translations", r.translations[:-1]), r"scene 'bad': translations have shape"),
        (lambda r: setattr(r, "image_paths", r.image_paths[:-1]), r"scene 'bad': has 9 image paths for 10 frames"),
    ],
)
def test_bad_records_name_scene_and_frame(tmp_path, mutate, pattern) -> None:
    rec = scene("bad", 10)
    mutate(rec)
    with pytest.raises(RecordError, match=pattern):
        validate_record(rec)
    with pytest.raises(RecordError, match=pattern):
        save_records(tmp_path / "x.npz", [rec])
    if "shape" not in pattern and "image paths for" not in pattern:
        # a file written without validation is caught on load
        path = save_records(tmp_path / "y.npz", [scene("ok", 5), rec], validate=False)
        with pytest.raises(RecordError, match=pattern):
            load_records(path, check_files=False)


def test_small_quaternion_drift_is_accepted() -> None:
    rec = scene("drift", 5)
    rec.rotations[2] *= 1.0 + 5e-4
    validate_record(rec)
    with pytest.raises(RecordError, match="frame 2"):
        validate_record(rec, quat_tol=1e-4)


def test_not_a_record_file(tmp_path) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="junk.npz"):
        load_records(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="missing"):
        load_records(tmp_path / "absent.npz")


# ------------------------------------------------------------------------------------- reference pickles


def _reference_entries(camera: str = "CAM_F0") -> list[dict]:
    entries = []
    for name, n, t0 in [("log-b", 6, 2_000_000), ("log-a", 5, 1_000_000)]:
        for i in range(n):
            yaw = 0.1 * i
            entries.append(
                {
                    "scene": {"name": name, "token": f"tok-{name}"},
                    camera: {
                        "file_path": f"{name}/CAM_F0/{i:04d}.jpg",
                        "timestamp": t0 + i * 100_000,
                        "ego_to_world_tran": np.array(
                            [float(i), 2.0 * i, 0.1]
                        ),  # numpy arrays, as real pickles may hold
                        "ego_to_world_rot": [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)],
                        "camera_intrinsic": [[1000.0, 0, 960], [0, 1000.0, 540], [0, 0, 1]],
                    },
                }
            )
    order = np.random.default_rng(0).permutation(len(entries))  # the reader sorts by (scene, timestamp)
    return [entries[i] for i in order]


def test_reference_pickle(tmp_path) -> None:
    path = tmp_path / "nuplan_val_data_cleaned.pkl"
    path.write_bytes(pickle.dumps(_reference_entries()))
    recs = records_from_reference_pickle(path, camera="CAM_F0", dataset="nuplan")
    assert [r.name for r in recs] == ["log-a", "log-b"]
    a = recs[0]
    assert len(a) == 5 and a.camera == "CAM_F0" and a.dataset == "nuplan"
    np.testing.assert_array_equal(a.timestamps, 1_000_000 + np.arange(5) * 100_000)
    np.testing.assert_allclose(a.translations[:, 1], 2.0 * np.arange(5))
    assert a.image_paths == [f"log-a/CAM_F0/{i:04d}.jpg" for i in range(5)]
    assert a.intrinsics.shape == (3, 3) and a.intrinsics[0, 0] == 1000.0
    # a dict of splits
    path2 = tmp_path / "splits.pkl"
    path2.write_bytes(pickle.dumps({"train": _reference_entries(), "val": _reference_entries()[:3]}))
    assert len(records_from_reference_pickle(path2, camera="CAM_F0", split="train")) == 2
    with pytest.raises(ValueError, match="split="):
        records_from_reference_pickle(path2, camera="CAM_F0")
    with pytest.raises(ValueError, match="entry 0 .* camera 'CAM_FRONT'"):
        records_from_reference_pickle(path, camera="CAM_FRONT")


def test_reference_pickle_duplicate_timestamp_named(tmp_path) -> None:
    entries = _reference_entries()
    dup = dict(entries[0])
    entries.append(dup)
    with pytest.raises(RecordError, match=r"scene 'log-.', frame \d+: timestamps must increase"):
        records_from_reference_pickle(entries, camera="CAM_F0")


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_reference_pickle_refuses_code(tmp_path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps([{"scene": {"name": "x"}, "CAM_F0": _Evil()}]))
    with pytest.raises(UnsafePickleError):
        records_from_reference_pickle(path, camera="CAM_F0")
