"""nuScenes source: a miniature v1.0 dataroot in the real layout -> records, windows, commands, bad input.

The fixture writes all 13 JSON tables of a version folder, a map mask, CAM_FRONT keyframe JPEGs under
``samples/``, sweep rows under ``sweeps/`` and other sensors' rows (which must be ignored). Three
scenes, 15 keyframes each, 0.5 s apart, chosen so that every expected value is easy by hand:

- ``scene-0001`` (train): ego yaw 90 deg (facing world +y), moves (-0.5, +2) m per keyframe in the
  world -> waypoint m is (2m, 0.5m) in the ego frame; 3 s ahead y = 3 m -> LEFT.
- ``scene-0002`` (train): yaw 0, moves (+2, -0.5) -> (2m, -0.5m); y = -3 m -> RIGHT.
- ``scene-0003`` (val): yaw 180 deg (facing -x), moves (-2, +0.2) -> (2m, -0.2m); y = -1.2 m -> STRAIGHT.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vavam.data.frames import DATASET_DIVISORS
from vavam.data.geometry import quat_from_yaw
from vavam.data.records import load_records, save_records
from vavam.data.sources import SourceError
from vavam.data.sources.nuscenes import MINI_TRAIN_SCENES, MINI_VAL_SCENES, VAL_SCENES, load_nuscenes
from vavam.data.windows import WindowConfig, WindowIndex
from vavam.types import Command

N_KEY = 15
T0 = 1_532_402_927_000_000
W, H = 160, 90  # small JPEGs (the table states the size; the check compares them)
INTRINSIC = [[1266.4, 0.0, 816.3], [0.0, 1266.4, 491.5], [0.0, 0.0, 1.0]]
LOGFILE = "n015-2018-07-24-11-22-45+0800"
# name -> (start xy, ego yaw, world step per keyframe)
SCENES = {
    "scene-0001": ((100.0, 200.0), math.pi / 2, (-0.5, 2.0)),
    "scene-0002": ((0.0, 0.0), 0.0, (2.0, -0.5)),
    "scene-0003": ((50.0, -20.0), math.pi, (-2.0, 0.2)),
}
EXPECTED = {  # per scene: waypoint m -> (a*m, b*m) in the ego frame, and the command
    "scene-0001": ((2.0, 0.5), Command.LEFT),
    "scene-0002": ((2.0, -0.5), Command.RIGHT),
    "scene-0003": ((2.0, -0.2), Command.STRAIGHT),
}


def _jpeg(w: int = W, h: int = H) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (90, 120, 150)).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def _tok(*parts: object) -> str:
    return "t" + "-".join(str(p) for p in parts)


def _q(yaw: float) -> list[float]:
    return [float(v) for v in quat_from_yaw(yaw)]


def make_dataroot(root: Path, version: str = "v1.0-trainval", scenes: dict | None = None) -> dict[str, list]:
    """Write a dataroot with ``scenes`` (default :data:`SCENES`); return the tables (for editing)."""
    scenes = SCENES if scenes is None else scenes
    t: dict[str, list] = {k: [] for k in (
        "category", "attribute", "visibility", "instance", "sensor", "calibrated_sensor", "ego_pose", "log",
        "scene", "sample", "sample_data", "sample_annotation", "map",
    )}  # fmt: skip
    t["category"] = [
        {"token": "cat-car", "name": "vehicle.car", "description": "car"},
        {"token": "cat-ped", "name": "human.pedestrian.adult", "description": "adult"},
    ]
    t["attribute"] = [{"token": "attr-moving", "name": "vehicle.moving", "description": ""}]
    t["visibility"] = [{"token": str(i), "level": lv, "description": ""} for i, lv in enumerate(
        ("v0-40", "v40-60", "v60-80", "v80-100"), start=1)]  # fmt: skip
    t["log"] = [{"token": "log-1", "logfile": LOGFILE, "vehicle": "n015", "date_captured": "2018-07-24",
                 "location": "singapore-onenorth"}]  # fmt: skip
    (root / "maps").mkdir(parents=True, exist_ok=True)
    Image.new("L", (4, 4)).save(root / "maps" / "mask.png")
    t["map"] = [{"token": "map-1", "log_tokens": ["log-1"], "category": "semantic_prior", "filename": "maps/mask.png"}]
    for ch, mod in (("CAM_FRONT", "camera"), ("CAM_BACK", "camera"), ("LIDAR_TOP", "lidar")):
        t["sensor"].append({"token": f"sensor-{ch}", "channel": ch, "modality": mod})
        t["calibrated_sensor"].append({
            "token": f"cs-{ch}", "sensor_token": f"sensor-{ch}", "translation": [1.7, 0.0, 1.5],
            "rotation": [0.5, -0.5, 0.5, -0.5], "camera_intrinsic": INTRINSIC if mod == "camera" else [],
        })  # fmt: skip
    jpeg = _jpeg()
    for idx, (name, (start, yaw, step)) in enumerate(scenes.items()):
        stoken = _tok(name)
        samples = [_tok(name, "s", k) for k in range(N_KEY)]
        t["scene"].append({"token": stoken, "name": name, "description": f"{name} description", "log_token": "log-1",
                           "nbr_samples": N_KEY, "first_sample_token": samples[0], "last_sample_token": samples[-1]})  # fmt: skip
        for k, s in enumerate(samples):
            ts = T0 + idx * 10**8 + k * 500_000
            t["sample"].append({"token": s, "timestamp": ts, "scene_token": stoken,
                                "prev": samples[k - 1] if k else "", "next": samples[k + 1] if k + 1 < N_KEY else ""})  # fmt: skip
            xy = (start[0] + k * step[0], start[1] + k * step[1])
            rows = [("CAM_FRONT", True, 12, xy), ("CAM_BACK", True, 30, (-999.0, -999.0)),
                    ("LIDAR_TOP", True, 0, (-999.0, -999.0))]  # fmt: skip
            if k + 1 < N_KEY:  # one CAM_FRONT sweep between keyframes, with a misleading pose
                rows.append(("CAM_FRONT", False, 250_012, (-999.0, -999.0)))
            for ch, key, dt, pxy in rows:
                sd = _tok(name, ch, k, int(key))
                folder = "samples" if key else "sweeps"
                ext = ".jpg" if ch.startswith("CAM") else ".pcd.bin"
                filename = f"{folder}/{ch}/{LOGFILE}__{ch}__{ts + dt}{ext}"
                t["ego_pose"].append({"token": sd, "timestamp": ts + dt, "translation": [pxy[0], pxy[1], 0.0],
                                      "rotation": _q(yaw if ch == "CAM_FRONT" and key else 0.3)})  # fmt: skip
                t["sample_data"].append({
                    "token": sd, "sample_token": s, "ego_pose_token": sd, "calibrated_sensor_token": f"cs-{ch}",
                    "filename": filename, "fileformat": "jpg" if ext == ".jpg" else "pcd",
                    "width": W if ext == ".jpg" else 0, "height": H if ext == ".jpg" else 0,
                    "timestamp": ts + dt, "is_key_frame": key, "prev": "", "next": "",
                })  # fmt: skip
                if ch == "CAM_FRONT" and key:
                    (root / folder / ch).mkdir(parents=True, exist_ok=True)
                    (root / filename).write_bytes(jpeg)
    # one car in scene-0001's first keyframe: centre (105, 210, 1), size [w, l, h] = [2, 4.5, 1.6], yaw 30 deg;
    # a pedestrian in its second keyframe.
    t["instance"] = [
        {"token": "inst-car", "category_token": "cat-car", "nbr_annotations": 1,
         "first_annotation_token": "ann-car", "last_annotation_token": "ann-car"},
        {"token": "inst-ped", "category_token": "cat-ped", "nbr_annotations": 1,
         "first_annotation_token": "ann-ped", "last_annotation_token": "ann-ped"},
    ]  # fmt: skip
    if "scene-0001" in scenes:
        t["sample_annotation"] = [
            {"token": "ann-car", "sample_token": _tok("scene-0001", "s", 0), "instance_token": "inst-car",
             "attribute_tokens": ["attr-moving"], "visibility_token": "4", "translation": [105.0, 210.0, 1.0],
             "size": [2.0, 4.5, 1.6], "rotation": _q(math.pi / 6), "num_lidar_pts": 10, "num_radar_pts": 1,
             "prev": "", "next": ""},
            {"token": "ann-ped", "sample_token": _tok("scene-0001", "s", 1), "instance_token": "inst-ped",
             "attribute_tokens": [], "visibility_token": "", "translation": [99.0, 205.0, 0.9],
             "size": [0.6, 0.7, 1.8], "rotation": _q(0.0), "num_lidar_pts": 3, "num_radar_pts": 0,
             "prev": "", "next": ""},
        ]  # fmt: skip
    write_tables(root, version, t)
    return t


def write_tables(root: Path, version: str, tables: dict[str, list]) -> None:
    (root / version).mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        (root / version / f"{name}.json").write_text(json.dumps(rows))


def keyframe(tables: dict[str, list], scene: str, k: int) -> dict:
    return next(sd for sd in tables["sample_data"] if sd["token"] == _tok(scene, "CAM_FRONT", k, 1))


@pytest.fixture
def dataroot(tmp_path: Path) -> tuple[Path, dict[str, list]]:
    root = tmp_path / "nuscenes"
    return root, make_dataroot(root)


# ------------------------------------------------------------------------------------- records


def test_records_hold_keyframes_poses_intrinsics(dataroot) -> None:
    root, tables = dataroot
    res = load_nuscenes(root, split="all")
    assert [r.name for r in res.records] == ["scene-0001", "scene-0002", "scene-0003"]
    assert res.image_root == root and res.split == "all" and res.skipped.rows == []
    r = res.records[0]
    assert (r.dataset, r.camera, len(r)) == ("nuscenes", "CAM_FRONT", N_KEY)
    assert r.image_paths[0] == keyframe(tables, "scene-0001", 0)["filename"]
    assert r.image_paths[0].startswith(f"samples/CAM_FRONT/{LOGFILE}__CAM_FRONT__")
    assert all((root / p).is_file() for p in r.image_paths)
    np.testing.assert_array_equal(np.diff(r.timestamps), 500_000)
    assert r.timestamps[0] == keyframe(tables, "scene-0001", 0)["timestamp"]
    np.testing.assert_allclose(r.translations[3], [100 - 1.5, 206.0, 0.0])  # the keyframe's pose, not the sweep's
    np.testing.assert_allclose(r.rotations[3], [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    np.testing.assert_allclose(r.intrinsics, INTRINSIC)
    assert DATASET_DIVISORS[r.dataset] == 3.125
    # the records survive the record file round trip (validated, image files checked)
    path = save_records(root / "records.npz", res.records, dataset="nuscenes", image_root=root)
    back = load_records(path)
    assert [b.name for b in back] == [x.name for x in res.records] and back[0].boxes.track_ids == [
        "inst-car",
        "inst-ped",
    ]
    assert r.metadata == {"token": _tok("scene-0001"), "description": "scene-0001 description", "log": LOGFILE,
                          "location": "singapore-onenorth"}  # fmt: skip


def test_boxes_size_order_and_yaw(dataroot) -> None:
    root, _ = dataroot
    r = load_nuscenes(root, split="all").records[0]
    b = r.boxes
    np.testing.assert_array_equal(np.diff(b.offsets)[:3], [1, 1, 0])
    np.testing.assert_allclose(b.centers[0], [105.0, 210.0, 1.0])
    np.testing.assert_allclose(b.sizes[0], [4.5, 2.0, 1.6])  # [w, l, h] on disk -> (length, width, height)
    np.testing.assert_allclose(b.yaws[0], math.pi / 6)
    assert b.categories == ["vehicle.car", "human.pedestrian.adult"] and b.track_ids == ["inst-car", "inst-ped"]
    # ego at (100, 200) facing +y: the car is 10 m ahead and 5 m to the right, heading 60 deg to the right.
    centers, _, yaws = r.boxes_in_ego(0)
    np.testing.assert_allclose(centers[0], [10.0, -5.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(yaws[0], -math.pi / 3)
    assert load_nuscenes(root, split="all", with_boxes=False).records[0].boxes is None


def test_windows_and_commands_by_hand(dataroot) -> None:
    root, _ = dataroot
    res = load_nuscenes(root, split="all")
    index = WindowIndex(res.records, WindowConfig.for_dataset("nuscenes"))
    # 15 keyframes, a window needs 8 + 6 = 14 -> 2 windows per scene, none across scenes
    assert len(index) == 6
    assert [w.scene for w in index] == ["scene-0001"] * 2 + ["scene-0002"] * 2 + ["scene-0003"] * 2
    m = np.arange(1, 7, dtype=np.float64)
    for w in index:
        (a, b), cmd = EXPECTED[w.scene]
        assert set(w.frame_indices.tolist()) <= set(range(N_KEY))
        np.testing.assert_array_equal(w.frame_indices, np.arange(8) + w.frame_indices[0])
        expected = np.broadcast_to(np.stack([a * m, b * m], axis=1), (8, 6, 2))
        np.testing.assert_allclose(w.positions, expected, atol=1e-5)
        np.testing.assert_array_equal(w.commands, int(cmd))
    assert {int(c) for w in index for c in w.commands} == {0, 1, 2}
    assert index[0].image_paths[0] == res.records[0].image_paths[0]


# ------------------------------------------------------------------------------------- splits


def test_official_split_lists() -> None:
    assert len(VAL_SCENES) == 150 and len(MINI_TRAIN_SCENES) == 8 and len(MINI_VAL_SCENES) == 2
    assert {"scene-0003", "scene-0012", "scene-1073"} <= VAL_SCENES and "scene-0001" not in VAL_SCENES
    # mini_val and two mini_train scenes are val scenes of the full split
    assert MINI_VAL_SCENES <= VAL_SCENES
    assert MINI_TRAIN_SCENES & VAL_SCENES == {"scene-0553", "scene-0796"}


def test_split_selection(dataroot, tmp_path: Path) -> None:
    root, _ = dataroot
    names = lambda res: [r.name for r in res.records]
    assert names(load_nuscenes(root, split="train")) == ["scene-0001", "scene-0002"]
    res = load_nuscenes(root, split="val")
    assert names(res) == ["scene-0003"] and res.split == "val"
    assert names(load_nuscenes(root, split=["scene-0002"])) == ["scene-0002"]
    listing = tmp_path / "my_split.txt"
    listing.write_text("# chosen scenes\nscene-0003\nscene-0001\n")
    res = load_nuscenes(root, split=listing)
    assert names(res) == ["scene-0001", "scene-0003"] and res.split == "my_split"
    (root / "v1.0-trainval" / "splits.json").write_text(json.dumps({"tiny": ["scene-0002"]}))
    assert names(load_nuscenes(root, split="tiny")) == ["scene-0002"]
    with pytest.raises(SourceError, match="scene-0999"):
        load_nuscenes(root, split=["scene-0999"])
    with pytest.raises(SourceError, match="needs version v1.0-mini"):
        load_nuscenes(root, split="mini_train")
    with pytest.raises(SourceError, match="neither a known split"):
        load_nuscenes(root, split="nonsense")


def test_mini_version_splits(tmp_path: Path) -> None:
    root = tmp_path / "mini"
    scenes = {"scene-0061": SCENES["scene-0001"], "scene-0103": SCENES["scene-0002"]}
    make_dataroot(root, version="v1.0-mini", scenes=scenes)
    for split, expected in (("train", "scene-0061"), ("mini_train", "scene-0061"), ("val", "scene-0103"),
                            ("mini_val", "scene-0103")):  # fmt: skip
        res = load_nuscenes(root, version="v1.0-mini", split=split)
        assert [r.name for r in res.records] == [expected]
    with pytest.raises(SourceError, match="v1.0-trainval"):
        load_nuscenes(tmp_path / "nowhere", version="v1.0-trainval")


# ------------------------------------------------------------------------------------- bad input


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:200])


IMAGE_DAMAGE = {
    "missing": (lambda p: p.unlink(), "image file is missing"),
    "empty": (lambda p: p.write_bytes(b""), "image file is empty"),
    "truncated": (_truncate, "truncated"),
    "not an image": (lambda p: p.write_bytes(b"<html>404</html>" * 10), "not a JPEG or PNG"),
    "wrong size": (lambda p: p.write_bytes(_jpeg(64, 36)), "the tables say 160x90"),
}


@pytest.mark.parametrize("damage", sorted(IMAGE_DAMAGE))
def test_bad_image(dataroot, damage: str) -> None:
    root, tables = dataroot
    fn, message = IMAGE_DAMAGE[damage]
    fn(root / keyframe(tables, "scene-0002", 4)["filename"])
    with pytest.raises(SourceError, match=rf"scene 'scene-0002', frame 4 \(samples/CAM_FRONT/.*{message}"):
        load_nuscenes(root, split="all")
    res = load_nuscenes(root, split="all", skip_bad=True)
    assert (res.skipped.frames, res.skipped.scenes) == (1, 0)
    assert res.skipped.rows[0][:2] == ("scene-0002", 4)
    r = res.records[1]
    assert len(r) == N_KEY - 1 and keyframe(tables, "scene-0002", 4)["filename"] not in r.image_paths
    # the dropped frame leaves a 1 s gap: a window index with a step tolerance refuses windows across it
    index = WindowIndex([r], WindowConfig.for_dataset("nuscenes", max_step_error_us=100_000))
    assert len(index) == 0
    assert len(load_nuscenes(root, split="all", check_images=False).records[1]) == N_KEY


def _edit(root: Path, tables: dict, fn) -> None:
    fn(tables)
    write_tables(root, "v1.0-trainval", tables)


def _drop_pose(t: dict) -> None:
    token = keyframe(t, "scene-0001", 2)["ego_pose_token"]
    t["ego_pose"] = [p for p in t["ego_pose"] if p["token"] != token]


def _drop_calib(t: dict) -> None:
    keyframe(t, "scene-0001", 2)["calibrated_sensor_token"] = "cs-gone"


def _nan_pose(t: dict) -> None:
    token = keyframe(t, "scene-0001", 2)["ego_pose_token"]
    next(p for p in t["ego_pose"] if p["token"] == token)["translation"] = [float("nan"), 0.0, 0.0]


def _null_rotation(t: dict) -> None:
    token = keyframe(t, "scene-0001", 2)["ego_pose_token"]
    next(p for p in t["ego_pose"] if p["token"] == token)["rotation"] = [None, 0.0, 0.0, 1.0]


def _duplicate_ts(t: dict) -> None:
    keyframe(t, "scene-0001", 2)["timestamp"] = keyframe(t, "scene-0001", 1)["timestamp"]


def _backwards_ts(t: dict) -> None:
    keyframe(t, "scene-0001", 2)["timestamp"] = keyframe(t, "scene-0001", 1)["timestamp"] - 1000


def _sample_without_camera(t: dict) -> None:
    keyframe(t, "scene-0001", 2)["is_key_frame"] = False


TABLE_DAMAGE = {
    "missing ego_pose row": (_drop_pose, "ego_pose .* is missing"),
    "missing calibrated_sensor row": (_drop_calib, "calibrated_sensor 'cs-gone' .* is missing"),
    "NaN pose": (_nan_pose, "ego pose is not finite"),
    "null rotation": (_null_rotation, "ego pose is not finite"),
    "duplicate timestamp": (_duplicate_ts, "duplicate timestamp"),
    "backwards timestamp": (_backwards_ts, "timestamp goes backwards"),
    "sample without camera": (_sample_without_camera, "sample has no CAM_FRONT keyframe"),
}


@pytest.mark.parametrize("damage", sorted(TABLE_DAMAGE))
def test_bad_table_rows(dataroot, damage: str) -> None:
    root, tables = dataroot
    fn, message = TABLE_DAMAGE[damage]
    _edit(root, tables, fn)
    with pytest.raises(SourceError, match=rf"scene 'scene-0001', frame 2 .*{message}"):
        load_nuscenes(root, split="all")
    res = load_nuscenes(root, split="all", skip_bad=True)
    assert (res.skipped.frames, res.skipped.scenes) == (1, 0) and res.skipped.rows[0][:2] == ("scene-0001", 2)
    r = res.records[0]
    assert len(r) == N_KEY - 1 and np.all(np.diff(r.timestamps) > 0) and np.isfinite(r.translations).all()
    assert "skipped 1 frame(s) and 0 scene(s)" == res.skipped.summary()


def test_scene_without_camera(dataroot) -> None:
    root, tables = dataroot
    _edit(root, tables, lambda t: t.update(sample_data=[
        sd for sd in t["sample_data"] if not (sd["token"].startswith(_tok("scene-0003")) and "CAM_FRONT" in sd["token"])
    ]))  # fmt: skip
    with pytest.raises(SourceError, match="scene 'scene-0003': no CAM_FRONT keyframe"):
        load_nuscenes(root, split="all")
    res = load_nuscenes(root, split="all", skip_bad=True)
    assert [r.name for r in res.records] == ["scene-0001", "scene-0002"]
    assert (res.skipped.frames, res.skipped.scenes) == (0, 1) and res.skipped.rows[0][:2] == ("scene-0003", None)
    # another camera is simply a different selection
    assert len(load_nuscenes(root, split="all", camera="CAM_BACK", check_images=False).records) == 3


def test_broken_sample_chain(dataroot) -> None:
    root, tables = dataroot
    _edit(
        root, tables, lambda t: t.update(sample=[s for s in t["sample"] if s["token"] != _tok("scene-0002", "s", 10)])
    )
    with pytest.raises(SourceError, match=r"scene 'scene-0002', frame 10: sample .* is missing"):
        load_nuscenes(root, split="all")
    res = load_nuscenes(root, split="all", skip_bad=True)
    assert len(res.records[1]) == 10 and res.skipped.rows == [("scene-0002", 10, res.skipped.rows[0][2])]


def test_missing_or_invalid_table(dataroot) -> None:
    root, _ = dataroot
    (root / "v1.0-trainval" / "ego_pose.json").write_text("[{")
    with pytest.raises(SourceError, match="ego_pose.json: nuScenes table 'ego_pose' is not valid JSON"):
        load_nuscenes(root, split="all")
    (root / "v1.0-trainval" / "ego_pose.json").unlink()
    with pytest.raises(SourceError, match="ego_pose.json: nuScenes table 'ego_pose' is missing"):
        load_nuscenes(root, split="all")


def test_prepare_with_a_scene_list_file_writes_to_its_stem(dataroot, tmp_path: Path, monkeypatch) -> None:
    """`vavam data prepare nuscenes --splits <scene-list file>`: outputs go to OUT/<file stem>/, for an absolute
    or a relative path; two splits landing in one folder are refused."""
    from vavam.data.prepare import prepare_nuscenes

    root, _ = dataroot
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "my_split.txt").write_text("scene-0001\nscene-0003\n")
    summary = prepare_nuscenes(root, tmp_path / "abs", splits=(str(tmp_path / "lists" / "my_split.txt"),),
                               progress=False)
    assert list(summary["splits"]) == ["my_split"]
    recs = load_records(tmp_path / "abs" / "my_split" / "records.npz", check_files=False)
    assert [r.name for r in recs] == ["scene-0001", "scene-0003"]
    monkeypatch.chdir(tmp_path)
    prepare_nuscenes(root, Path("rel"), splits=("lists/my_split.txt", "val"), progress=False)
    assert sorted(p.name for p in (tmp_path / "rel").iterdir()) == ["my_split", "prepare_summary.json", "val"]
    assert (tmp_path / "rel" / "my_split" / "records.npz").is_file()
    (tmp_path / "lists" / "val.txt").write_text("scene-0002\n")
    with pytest.raises(ValueError, match=r"'val' and 'lists/val.txt' would both be written to"):
        prepare_nuscenes(root, Path("clash"), splits=("val", "lists/val.txt"), progress=False)


def test_invalid_split_files_raise_naming_the_file(dataroot, tmp_path: Path) -> None:
    """A broken splits.json or scene-list file raises SourceError naming it (not a bare JSONDecodeError); a split
    entry that is not a list of names is refused (a string was read as its characters)."""
    root, _ = dataroot
    custom = root / "v1.0-trainval" / "splits.json"
    custom.write_text("{oops")
    with pytest.raises(SourceError, match=r"splits\.json: nuScenes custom split table is not valid JSON"):
        load_nuscenes(root, split="tiny")
    custom.write_text(json.dumps({"tiny": "scene-0001"}))
    with pytest.raises(SourceError, match=r"splits\.json\['tiny'\]: must be a JSON list of scene names"):
        load_nuscenes(root, split="tiny")
    listing = tmp_path / "mine.json"
    listing.write_text("[oops")
    with pytest.raises(SourceError, match=r"mine\.json: nuScenes scene list is not valid JSON"):
        load_nuscenes(root, split=listing)
