"""nuPlan source: a miniature log database (SQLite, real schema) + sensor blobs -> records, windows, bad input.

The fixture writes ``splits/mini/<log>.db`` with the log, camera, image, ego_pose, lidar, lidar_pc,
scene, track, category and lidar_box tables (8-byte BLOB tokens, pickled camera geometry, µs
timestamps) and ``sensor_blobs/<log>/CAM_F0/<16 hex>.jpg`` images. Two scenes of 67 CAM_F0 images at
10 Hz each (lidar_pc at 20 Hz, images 5 ms after every second one), a CAM_L0 camera whose images must
be ignored. Poses, chosen for hand computation:

- scene 1 (frames 0-66): ego yaw 90 deg (facing world +y), moves (-0.1, +1.0) m per frame -> waypoint m
  (every 5 frames) is (5m, 0.5m) in the ego frame; 3 s = 30 frames ahead y = +3 m -> LEFT (the
  reference's 6-frame look-ahead gives y = 0.6 m -> STRAIGHT, the bug the windows fix).
- scene 2 (frames 67-133): yaw 0, moves (+1.0, -0.1) -> (5m, -0.5m); y = -3 m -> RIGHT.
"""

from __future__ import annotations

import io
import math
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vavam.data.frames import DATASET_DIVISORS
from vavam.data.geometry import quat_from_yaw
from vavam.data.records import load_records, save_records
from vavam.data.sources import SourceError
from vavam.data.sources.nuplan import find_log_dbs, load_nuplan
from vavam.data.windows import WindowConfig, WindowIndex
from vavam.types import Command

LOG = "2021.05.12.22.00.38_veh-35_01008_01518"
T0 = 1_620_858_198_150_622
PER_SCENE = 67  # 2 windows of 66 frames (7 * 5 + 30 + 1) per scene at subsampling 5
N_IMG = 2 * PER_SCENE
W, H = 192, 108  # small JPEGs; the camera table states this size
K = [[1545.0, 0.0, 960.0], [0.0, 1545.0, 560.0], [0.0, 0.0, 1.0]]

DDL = [
    (
        "CREATE TABLE log (token BLOB PRIMARY KEY, vehicle_name VARCHAR(64), date VARCHAR(64), timestamp INTEGER, "
        "logfile VARCHAR(64), location VARCHAR(64), map_version VARCHAR(64))"
    ),
    (
        "CREATE TABLE camera (token BLOB PRIMARY KEY, log_token BLOB NOT NULL, channel VARCHAR(64), model VARCHAR(64), "
        "translation BLOB, rotation BLOB, intrinsic BLOB, distortion BLOB, width FLOAT, height FLOAT)"
    ),
    (
        "CREATE TABLE image (token BLOB PRIMARY KEY, next_token BLOB, prev_token BLOB, ego_pose_token BLOB NOT NULL, "
        "camera_token BLOB NOT NULL, filename_jpg VARCHAR(128), timestamp INTEGER)"
    ),
    (
        "CREATE TABLE ego_pose (token BLOB PRIMARY KEY, timestamp INTEGER, x FLOAT, y FLOAT, z FLOAT, qw FLOAT, "
        "qx FLOAT, qy FLOAT, qz FLOAT, vx FLOAT, vy FLOAT, vz FLOAT, acceleration_x FLOAT, acceleration_y FLOAT, "
        "acceleration_z FLOAT, angular_rate_x FLOAT, angular_rate_y FLOAT, angular_rate_z FLOAT, epsg INTEGER, "
        "log_token BLOB NOT NULL)"
    ),
    (
        "CREATE TABLE lidar (token BLOB PRIMARY KEY, log_token BLOB NOT NULL, channel VARCHAR(64), model VARCHAR(64), "
        "translation BLOB, rotation BLOB)"
    ),
    (
        "CREATE TABLE lidar_pc (token BLOB PRIMARY KEY, next_token BLOB, prev_token BLOB, ego_pose_token BLOB NOT NULL, "
        "lidar_token BLOB NOT NULL, scene_token BLOB, filename VARCHAR(128), timestamp INTEGER)"
    ),
    (
        "CREATE TABLE scene (token BLOB PRIMARY KEY, log_token BLOB NOT NULL, name TEXT, goal_ego_pose_token BLOB, "
        "roadblock_ids TEXT)"
    ),
    "CREATE TABLE category (token BLOB PRIMARY KEY, name VARCHAR(64), description TEXT)",
    (
        "CREATE TABLE track (token BLOB PRIMARY KEY, category_token BLOB NOT NULL, width FLOAT, length FLOAT, "
        "height FLOAT)"
    ),
    (
        "CREATE TABLE lidar_box (token BLOB PRIMARY KEY, lidar_pc_token BLOB NOT NULL, track_token BLOB, "
        "next_token BLOB, prev_token BLOB, x FLOAT, y FLOAT, z FLOAT, width FLOAT, length FLOAT, height FLOAT, "
        "vx FLOAT, vy FLOAT, vz FLOAT, yaw FLOAT, confidence FLOAT)"
    ),
    (
        "CREATE TABLE scenario_tag (token BLOB PRIMARY KEY, lidar_pc_token BLOB NOT NULL, type TEXT, "
        "agent_track_token BLOB)"
    ),
    (
        "CREATE TABLE traffic_light_status (token BLOB PRIMARY KEY, lidar_pc_token BLOB NOT NULL, "
        "lane_connector_id INTEGER, status VARCHAR(8))"
    ),
]


def tok(kind: int, i: int) -> bytes:
    """8-byte token: table tag + index (real logs use 8 random bytes)."""
    return bytes([kind]) + i.to_bytes(7, "big")


IMG, POSE, CAM, LPC, SCENE, TRACK, CAT, BOX, LIDAR, LOGT = range(1, 11)


def image_ts(k: int) -> int:
    return T0 + k * 100_000 + 5_000


def ego_xy_yaw(k: int) -> tuple[float, float, float]:
    if k < PER_SCENE:
        return 100.0 - 0.1 * k, 200.0 + 1.0 * k, math.pi / 2
    j = k - PER_SCENE
    return 500.0 + 1.0 * j, -40.0 - 0.1 * j, 0.0


def image_file(k: int, channel: str = "CAM_F0") -> str:
    return f"{LOG}/{channel}/{tok(IMG, k if channel == 'CAM_F0' else 1000 + k).hex()}.jpg"


def make_log(root: Path) -> tuple[Path, Path]:
    """Write ``root/splits/mini/<LOG>.db`` and ``root/sensor_blobs``; return (db path, sensor root)."""
    db = root / "splits" / "mini" / f"{LOG}.db"
    blobs = root / "sensor_blobs"
    db.parent.mkdir(parents=True)
    (blobs / LOG / "CAM_F0").mkdir(parents=True)
    buf = io.BytesIO()
    Image.new("RGB", (W, H), (40, 80, 120)).save(buf, format="JPEG", quality=70)
    jpeg = buf.getvalue()
    con = sqlite3.connect(db)
    con.execute("PRAGMA synchronous = OFF")  # a test fixture needs no durability
    con.execute("PRAGMA journal_mode = MEMORY")
    for stmt in DDL:
        con.execute(stmt)
    log = tok(LOGT, 0)
    con.execute("INSERT INTO log VALUES (?,?,?,?,?,?,?)",
                (log, "veh-35", "2021-05-12", T0, LOG, "las_vegas", "nuplan-maps-v1.0"))  # fmt: skip
    cams = [(tok(CAM, 0), "CAM_F0", pickle.dumps(np.array(K))), (tok(CAM, 1), "CAM_L0", pickle.dumps(K))]
    for token, channel, intrinsic in cams:
        con.execute("INSERT INTO camera VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (token, log, channel, "model", pickle.dumps([1.5, 0.0, 1.6]), pickle.dumps([0.5, -0.5, 0.5, -0.5]),
                     intrinsic, pickle.dumps([-0.35, 0.17, 0.0, 0.0, -0.05]), W, H))  # fmt: skip
    con.execute("INSERT INTO lidar VALUES (?,?,?,?,?,?)", (tok(LIDAR, 0), log, "MergedPointCloud", "m", None, None))
    for s in range(2):
        con.execute("INSERT INTO scene VALUES (?,?,?,?,?)", (tok(SCENE, s), log, f"scene-{s + 1:04d}", None, ""))
    poses, images, pcs = [], [], []
    for k in range(N_IMG):
        x, y, yaw = ego_xy_yaw(k)
        q = quat_from_yaw(yaw)
        poses.append((tok(POSE, k), image_ts(k), x, y, 0.0, *q.tolist(), *[0.0] * 9, 32611, log))
        prev = tok(IMG, k - 1) if k else None
        nxt = tok(IMG, k + 1) if k + 1 < N_IMG else None
        images.append((tok(IMG, k), nxt, prev, tok(POSE, k), tok(CAM, 0), image_file(k), image_ts(k)))
        # a CAM_L0 image with the same pose (ignored: other camera; its file does not exist)
        images.append((tok(IMG, 1000 + k), None, None, tok(POSE, k), tok(CAM, 1), image_file(k, "CAM_L0"), image_ts(k)))
        (blobs / image_file(k)).write_bytes(jpeg)
    for j in range(2 * N_IMG):  # lidar_pc at 20 Hz; scene 1 owns the first half
        pose = tok(POSE, 5000 + j)
        poses.append((pose, T0 + j * 50_000, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, *[0.0] * 9, 32611, log))
        pcs.append((tok(LPC, j), None, None, pose, tok(LIDAR, 0), tok(SCENE, 0 if j < 2 * PER_SCENE else 1),
                    f"{LOG}/MergedPointCloud/{j:016x}.pcd", T0 + j * 50_000))  # fmt: skip
    con.executemany(f"INSERT INTO ego_pose VALUES ({','.join('?' * 20)})", poses)
    con.executemany("INSERT INTO image VALUES (?,?,?,?,?,?,?)", images)
    con.executemany("INSERT INTO lidar_pc VALUES (?,?,?,?,?,?,?,?)", pcs)
    con.executemany(
        "INSERT INTO category VALUES (?,?,?)", [(tok(CAT, 0), "vehicle", ""), (tok(CAT, 1), "pedestrian", "")]
    )
    con.executemany("INSERT INTO track VALUES (?,?,?,?,?)",
                    [(tok(TRACK, 0), tok(CAT, 0), 2.0, 5.0, 1.8), (tok(TRACK, 1), tok(CAT, 1), 0.6, 0.7, 1.7)])  # fmt: skip
    boxes = [  # (lidar_pc index, track, x, y, z, width, length, height, yaw)
        (0, 0, 103.0, 220.0, 1.0, 2.0, 5.0, 1.8, 0.3),  # image 0 (lidar_pc 0, 5 ms before it)
        (0, 1, 98.0, 202.0, 0.9, 0.6, 0.7, 1.7, -1.0),
        (1, 0, 103.0, 221.0, 1.0, 2.0, 5.0, 1.8, 0.3),  # lidar_pc 1 is nearest to no image
        (2, 0, 103.0, 222.0, 1.0, 2.0, 5.0, 1.8, 0.3),  # image 1
    ]
    con.executemany(f"INSERT INTO lidar_box VALUES ({','.join('?' * 16)})", [
        (tok(BOX, b), tok(LPC, pc), tok(TRACK, tr), None, None, x, y, z, w, ln, h, 0.0, 0.0, 0.0, yaw, 0.9)
        for b, (pc, tr, x, y, z, w, ln, h, yaw) in enumerate(boxes)
    ])  # fmt: skip
    con.commit()
    con.close()
    return db, blobs


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, Path]:
    return make_log(tmp_path / "nuplan-v1.1")


def sql(db: Path, statement: str, params: tuple = ()) -> None:
    con = sqlite3.connect(db)
    con.execute(statement, params)
    con.commit()
    con.close()


# ------------------------------------------------------------------------------------- records


def test_records_per_scene(log) -> None:
    db, blobs = log
    res = load_nuplan(db.parent, blobs)
    assert res.split == "mini" and res.image_root == blobs and res.skipped.rows == []
    assert [r.name for r in res.records] == [f"{LOG}/scene-0001", f"{LOG}/scene-0002"]
    r1, r2 = res.records
    assert (r1.dataset, r1.camera, len(r1), len(r2)) == ("nuplan", "CAM_F0", PER_SCENE, PER_SCENE)
    assert r1.image_paths[0] == image_file(0) and r2.image_paths[0] == image_file(PER_SCENE)
    assert r1.timestamps[0] == image_ts(0) and np.all(np.diff(r1.timestamps) == 100_000)
    np.testing.assert_allclose(r1.translations[10], [99.0, 210.0, 0.0])
    np.testing.assert_allclose(r1.rotations[10], [math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4)])
    np.testing.assert_allclose(r1.intrinsics, K)
    assert r1.metadata["log"] == LOG and r1.metadata["log_unmatched_images"] == 0
    assert DATASET_DIVISORS[r1.dataset] == 3.75
    back = load_records(save_records(blobs.parent / "records.npz", res.records, image_root=blobs))
    assert [b.name for b in back] == [r1.name, r2.name] and len(back[0].boxes.yaws) == len(r1.boxes.yaws)
    # the same from the .db path, a list of paths, and per log
    assert [r.name for r in load_nuplan(db, blobs).records] == [r.name for r in res.records]
    assert load_nuplan([db], blobs).split == ""
    (whole,) = load_nuplan(db, blobs, group="log").records
    assert whole.name == LOG and len(whole) == N_IMG


def test_boxes_from_nearest_lidar_pc(log) -> None:
    db, blobs = log
    r = load_nuplan(db, blobs).records[0]
    b = r.boxes
    np.testing.assert_array_equal(np.diff(b.offsets)[:3], [2, 1, 0])  # lidar_pc 1 (no image) is not used
    np.testing.assert_allclose(b.centers[:3], [[103, 220, 1], [98, 202, 0.9], [103, 222, 1]])
    np.testing.assert_allclose(b.sizes[0], [5.0, 2.0, 1.8])  # (length, width, height)
    np.testing.assert_allclose(b.yaws[:2], [0.3, -1.0])
    assert b.categories[:3] == ["vehicle", "pedestrian", "vehicle"]
    assert b.track_ids[:3] == [tok(TRACK, 0).hex(), tok(TRACK, 1).hex(), tok(TRACK, 0).hex()]
    # ego at (100, 200) facing +y: the car is 20 m ahead, 3 m to the right
    centers, _, yaws = r.boxes_in_ego(0)
    np.testing.assert_allclose(centers[0], [20.0, -3.0, 1.0], atol=1e-9)
    np.testing.assert_allclose(yaws[0], 0.3 - math.pi / 2)


def test_windows_and_commands_by_hand(log) -> None:
    db, blobs = log
    res = load_nuplan(db, blobs)
    index = WindowIndex(res.records, WindowConfig.for_dataset("nuplan"))
    assert len(index) == 4 and [w.scene for w in index] == [res.records[0].name] * 2 + [res.records[1].name] * 2
    m = np.arange(1, 7, dtype=np.float64)
    for w in index:
        a, b, cmd = (5.0, 0.5, Command.LEFT) if w.scene.endswith("0001") else (5.0, -0.5, Command.RIGHT)
        np.testing.assert_array_equal(w.frame_indices, w.frame_indices[0] + 5 * np.arange(8))
        np.testing.assert_array_equal(np.diff(w.timestamps_us), 500_000)
        np.testing.assert_allclose(w.positions, np.broadcast_to(np.stack([a * m, b * m], 1), (8, 6, 2)), atol=1e-4)
        np.testing.assert_array_equal(w.commands, int(cmd))
    old = WindowIndex(res.records, WindowConfig.for_dataset("nuplan", command_lookahead_frames=6))
    np.testing.assert_array_equal(old[0].commands, int(Command.STRAIGHT))  # the reference's 0.6 s look-ahead
    # per log: windows may cross the (continuous) scene cut, still 66 frames each: 134 - 66 + 1
    assert len(WindowIndex(load_nuplan(db, blobs, group="log").records, WindowConfig.for_dataset("nuplan"))) == 69


# ------------------------------------------------------------------------------------- bad input


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:150])


IMAGE_DAMAGE = {
    "missing": (lambda p: p.unlink(), "image file is missing"),
    "truncated": (_truncate, "truncated"),
    "empty": (lambda p: p.write_bytes(b""), "image file is empty"),
}


@pytest.mark.parametrize("damage", sorted(IMAGE_DAMAGE))
def test_bad_image(log, damage: str) -> None:
    db, blobs = log
    fn, message = IMAGE_DAMAGE[damage]
    fn(blobs / image_file(PER_SCENE + 7))
    with pytest.raises(SourceError, match=rf"scene '{LOG}/scene-0002', frame 7 \({LOG}/CAM_F0/.*{message}"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert (res.skipped.frames, res.skipped.scenes) == (1, 0) and res.skipped.rows[0][:2] == (f"{LOG}/scene-0002", 7)
    assert len(res.records[1]) == PER_SCENE - 1 and image_file(PER_SCENE + 7) not in res.records[1].image_paths
    assert len(load_nuplan(db, blobs, check_images=False).records[1]) == PER_SCENE


TABLE_DAMAGE = {
    "missing ego_pose row": ("DELETE FROM ego_pose WHERE token = ?", (tok(POSE, 3),), "ego_pose .* is missing"),
    "NaN pose": ("UPDATE ego_pose SET x = ? WHERE token = ?", (float("nan"), tok(POSE, 3)), "ego pose is not finite"),
    "null rotation": ("UPDATE ego_pose SET qw = NULL WHERE token = ?", (tok(POSE, 3),), "ego pose is not finite"),
    "non-unit rotation": ("UPDATE ego_pose SET qw = 3 WHERE token = ?", (tok(POSE, 3),), "is not unit"),
    "duplicate timestamp": (
        "UPDATE image SET timestamp = ? WHERE token = ?",
        (image_ts(2), tok(IMG, 3)),
        "duplicate timestamp",
    ),
    "missing lidar_pc rows": (
        "DELETE FROM lidar_pc WHERE timestamp BETWEEN ? AND ?",
        (image_ts(3) - 60_000, image_ts(3) + 60_000),
        "no lidar_pc within 50000 us",
    ),
}


@pytest.mark.parametrize("damage", sorted(TABLE_DAMAGE))
def test_bad_table_rows(log, damage: str) -> None:
    db, blobs = log
    statement, params, message = TABLE_DAMAGE[damage]
    sql(db, statement, params)
    with pytest.raises(SourceError, match=rf"scene '{LOG}/scene-0001', frame 3 .*{message}"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert (res.skipped.frames, res.skipped.scenes) == (1, 0) and res.skipped.rows[0][:2] == (f"{LOG}/scene-0001", 3)
    r = res.records[0]
    assert len(r) == PER_SCENE - 1 and np.all(np.diff(r.timestamps) > 0) and np.isfinite(r.translations).all()
    # the dropped frame leaves a 0.2 s step: a step tolerance refuses the windows across it
    index = WindowIndex([r], WindowConfig.for_dataset("nuplan", max_step_error_us=50_000))
    assert all(w.frame_indices[0] > 3 for w in index)


def test_backwards_timestamp_along_image_chain(log) -> None:
    db, blobs = log
    sql(db, "UPDATE image SET timestamp = ? WHERE token = ?", (image_ts(2) - 30_000, tok(IMG, 3)))
    # image 3 now sorts before image 2 (frame 2 in time order); the image chain 2 -> 3 shows it is wrong
    with pytest.raises(SourceError, match=rf"scene '{LOG}/scene-0001', frame 2 \({image_file(3)}\): .*goes backwards"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert res.skipped.frames == 1 and len(res.records[0]) == PER_SCENE - 1


def test_log_or_scene_without_camera(log) -> None:
    db, blobs = log
    sql(db, "DELETE FROM image WHERE camera_token = ? AND timestamp >= ?", (tok(CAM, 0), image_ts(PER_SCENE)))
    with pytest.raises(SourceError, match=f"scene '{LOG}/scene-0002': no CAM_F0 image"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert [r.name for r in res.records] == [f"{LOG}/scene-0001"] and (res.skipped.frames, res.skipped.scenes) == (0, 1)
    sql(db, "DELETE FROM camera WHERE channel = 'CAM_F0'")
    with pytest.raises(SourceError, match=f"scene '{LOG}': log has no CAM_F0 images"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert res.records == [] and res.skipped.rows[0][:2] == (LOG, None)


def test_unreadable_database_and_missing_tables(log, tmp_path: Path) -> None:
    db, blobs = log
    bad = tmp_path / "broken.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SourceError, match="broken.db: not a readable SQLite database"):
        load_nuplan(bad, blobs)
    with pytest.raises(SourceError, match="nuPlan log database is missing"):
        load_nuplan(tmp_path / "nope.db", blobs)
    (db.parent / "zz_broken.db").write_bytes(bad.read_bytes())  # a broken log beside a good one
    with pytest.raises(SourceError, match="zz_broken.db: not a readable SQLite database"):
        load_nuplan(db.parent, blobs)
    res = load_nuplan(db.parent, blobs, skip_bad=True)
    assert len(res.records) == 2 and res.skipped.rows[0][:2] == ("zz_broken", None)
    sql(db, "DROP TABLE ego_pose")
    with pytest.raises(SourceError, match=r"lacks table\(s\) \['ego_pose'\]"):
        load_nuplan(db, blobs)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_intrinsics_blob_goes_through_the_restricted_unpickler(log) -> None:
    db, blobs = log
    sql(db, "UPDATE camera SET intrinsic = ? WHERE channel = 'CAM_F0'", (pickle.dumps(_Evil()),))
    with pytest.warns(UserWarning, match="intrinsics unreadable"):
        res = load_nuplan(db, blobs)
    assert res.records[0].intrinsics is None and len(res.records) == 2


def test_box_with_null_values_is_dropped_and_counted(log) -> None:
    db, blobs = log
    sql(db, "UPDATE lidar_box SET x = NULL WHERE token = ?", (tok(BOX, 1),))  # the pedestrian of image 0
    r = load_nuplan(db, blobs).records[0]
    np.testing.assert_array_equal(np.diff(r.boxes.offsets)[:2], [1, 1])
    assert r.boxes.categories[:2] == ["vehicle", "vehicle"] and r.metadata["log_dropped_boxes"] == 1


def test_db_list_expands_every_folder(log, tmp_path: Path) -> None:
    """--db with several split folders, or a folder plus a .db file: every folder entry is expanded."""
    db, blobs = log
    other_log = "2021.06.01.10.00.00_veh-12_00001_00100"
    other = db.parent.parent / "extra" / f"{other_log}.db"
    other.parent.mkdir()
    other.write_bytes(db.read_bytes())
    sql(other, "UPDATE log SET logfile = ?", (other_log,))
    assert find_log_dbs([db.parent, other.parent]) == sorted([db, other])
    assert find_log_dbs([db.parent, other]) == sorted([db, other])
    assert find_log_dbs([db.parent, db]) == [db]  # the same log reached twice is read once
    res = load_nuplan([db.parent, other.parent], blobs, check_images=False)
    assert sorted({r.name.split("/")[0] for r in res.records}) == sorted([LOG, other_log])
    with pytest.raises(SourceError, match=r"nope: nuPlan log database is missing"):
        find_log_dbs([db.parent, tmp_path / "nope"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match=r"empty: no nuPlan log database"):
        find_log_dbs([db.parent, tmp_path / "empty"])


@pytest.mark.parametrize("damage", ["UPDATE lidar_pc SET scene_token = NULL", "DELETE FROM lidar_pc"])
def test_log_whose_images_lie_in_no_scene_is_reported(log, damage: str) -> None:
    """A log with CAM_F0 images but no lidar_pc giving a scene yielded no record and no error or skip row."""
    db, blobs = log
    sql(db, damage)
    with pytest.raises(SourceError, match=rf"scene '{LOG}': none of its {N_IMG} CAM_F0 images lies in a scene"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert res.records == [] and res.skipped.rows[0][:2] == (LOG, None)
    (whole,) = load_nuplan(db, blobs, group="log", with_boxes=False).records  # read per log, the frames are there
    assert len(whole) == N_IMG
