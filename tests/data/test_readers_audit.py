"""Audit of the nuScenes / nuPlan readers: frames with a wrong or missing timestamp.

Both fixtures are the real on-disk layouts of ``test_nuscenes_source`` (JSON tables + ``samples/`` JPEGs) and
``test_nuplan_source`` (SQLite log + ``sensor_blobs``). Expected values are worked out by hand:

- nuScenes ``scene-0001``: keyframe k at ``T0 + k * 0.5 s + 12 us``, ego at ``(100 - 0.5 k, 200 + 2 k)``.
- nuPlan scene 1: image k at ``T0 + k * 100 ms + 5 ms``, ego at ``(100 - 0.1 k, 200 + k)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_nuplan_source import IMG, LOG, LPC, PER_SCENE, T0 as NP_T0, image_file, image_ts, make_log, sql, tok
from test_nuscenes_source import N_KEY, T0 as NS_T0, keyframe, make_dataroot, write_tables

from vavam.data.sources import SourceError
from vavam.data.sources._tables import in_time_order
from vavam.data.sources.nuplan import load_nuplan
from vavam.data.sources.nuscenes import load_nuscenes


@pytest.fixture
def nuscenes_root(tmp_path: Path) -> tuple[Path, dict]:
    root = tmp_path / "nuscenes"
    return root, make_dataroot(root)


@pytest.fixture
def nuplan_log(tmp_path: Path) -> tuple[Path, Path]:
    return make_log(tmp_path / "nuplan-v1.1")


def _ns_ts(k: int) -> int:
    return NS_T0 + k * 500_000 + 12


# ------------------------------------------------------------------------------------- time order


@pytest.mark.parametrize(
    ("timestamps", "keep"),
    [
        ([10, 20, 95, 30, 40], [1, 1, 0, 1, 1]),  # one frame far ahead: only it goes
        ([50, 10, 20, 30], [0, 1, 1, 1]),  # the first frame far ahead
        ([10, 20, 15, 30], [1, 1, 0, 1]),  # two frames out of order with each other: the later goes
        ([10, 20, 20, 30], [1, 1, 0, 1]),  # duplicate: the later goes
        ([10, 20, 30], [1, 1, 1]),
        ([], []),
    ],
)
def test_in_time_order_keeps_the_longest_increasing_run(timestamps, keep) -> None:
    assert in_time_order(np.array(timestamps, dtype=np.int64)).tolist() == [bool(k) for k in keep]


def test_nuscenes_frame_whose_timestamp_jumps_ahead_is_dropped_alone(nuscenes_root) -> None:
    """Keyframe 2 of scene-0001 stamped 10 s late: before, it was kept (with the wrong time) and the 12 good
    keyframes after it were dropped as 'backwards'; now keyframe 2 alone is the bad frame."""
    root, tables = nuscenes_root
    keyframe(tables, "scene-0001", 2)["timestamp"] = _ns_ts(2) + 10_000_000
    write_tables(root, "v1.0-trainval", tables)
    with pytest.raises(SourceError, match=r"scene 'scene-0001', frame 2 \(samples/CAM_FRONT/.*jumps ahead"):
        load_nuscenes(root, split="all")
    res = load_nuscenes(root, split="all", skip_bad=True)
    assert [row[:2] for row in res.skipped.rows] == [("scene-0001", 2)]
    rec = res.records[0]
    kept = [k for k in range(N_KEY) if k != 2]
    assert rec.timestamps.tolist() == [_ns_ts(k) for k in kept]
    # each kept image keeps its own pose: x = 100 - 0.5 k, y = 200 + 2 k
    np.testing.assert_allclose(rec.translations[:, :2], [[100.0 - 0.5 * k, 200.0 + 2.0 * k] for k in kept])


def test_nuplan_image_whose_timestamp_jumps_ahead_is_dropped_alone(nuplan_log) -> None:
    """Image 3 stamped 1 s late (the time of image 13): before, it was kept in image 13's place, with the image
    and pose of 1 s earlier, while the good images 4 and 13 were dropped; now image 3 alone is the bad frame."""
    db, blobs = nuplan_log
    sql(db, "UPDATE image SET timestamp = ? WHERE token = ?", (image_ts(13), tok(IMG, 3)))
    with pytest.raises(SourceError, match=rf"scene '{LOG}/scene-0001', frame 12 \({image_file(3)}\): .*jumps ahead"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert [row[:2] for row in res.skipped.rows] == [(f"{LOG}/scene-0001", 12)]
    rec = res.records[0]
    kept = [k for k in range(PER_SCENE) if k != 3]
    assert rec.image_paths == [image_file(k) for k in kept]
    assert rec.timestamps.tolist() == [image_ts(k) for k in kept]
    np.testing.assert_allclose(rec.translations[:, :2], [[100.0 - 0.1 * k, 200.0 + 1.0 * k] for k in kept])


# ------------------------------------------------------------------------------------- missing timestamps


@pytest.mark.parametrize("frame", [0, 5])
@pytest.mark.parametrize("value", ["absent", None, "soon"])
def test_nuscenes_keyframe_without_a_timestamp_is_a_bad_frame(nuscenes_root, frame: int, value) -> None:
    """A keyframe row without a usable timestamp: before, a missing one became time 0 (silently kept as the
    first frame) and None / text raised a bare TypeError / ValueError; now the frame is reported by name."""
    root, tables = nuscenes_root
    row = keyframe(tables, "scene-0001", frame)
    if value == "absent":
        del row["timestamp"]
    else:
        row["timestamp"] = value
    write_tables(root, "v1.0-trainval", tables)
    with pytest.raises(SourceError, match=rf"scene 'scene-0001', frame {frame} .*has no valid timestamp"):
        load_nuscenes(root, split="all")
    res = load_nuscenes(root, split="all", skip_bad=True)
    assert [row[:2] for row in res.skipped.rows] == [("scene-0001", frame)]
    assert res.records[0].timestamps.tolist() == [_ns_ts(k) for k in range(N_KEY) if k != frame]


def test_nuplan_image_without_a_timestamp_names_log_and_file(nuplan_log) -> None:
    """A NULL image.timestamp raised a bare TypeError (with or without skip_bad); now the error names the log, the
    image file and the database, and skip_bad drops that image only."""
    db, blobs = nuplan_log
    sql(db, "UPDATE image SET timestamp = NULL WHERE token = ?", (tok(IMG, 3),))
    with pytest.raises(SourceError, match=rf"log '{LOG}', .*{image_file(3)}\) has no valid timestamp .*{db.name}"):
        load_nuplan(db, blobs)
    res = load_nuplan(db, blobs, skip_bad=True)
    assert len(res.skipped.rows) == 1 and res.skipped.rows[0][0] == LOG
    assert [len(r) for r in res.records] == [PER_SCENE - 1, PER_SCENE]
    assert res.records[0].image_paths == [image_file(k) for k in range(PER_SCENE) if k != 3]


def test_nuplan_lidar_pc_without_a_timestamp_matches_no_image(nuplan_log) -> None:
    """A NULL lidar_pc.timestamp raised a bare TypeError; the row is now left out of the matching. lidar_pc 3
    (T0 + 150 ms) is nearest to no image, so both scenes keep all their images."""
    db, blobs = nuplan_log
    sql(db, "UPDATE lidar_pc SET timestamp = NULL WHERE token = ?", (tok(LPC, 3),))
    res = load_nuplan(db, blobs)
    assert [len(r) for r in res.records] == [PER_SCENE, PER_SCENE] and res.skipped.rows == []
    assert res.records[0].timestamps[0] == NP_T0 + 5_000


def test_nuplan_image_without_a_file_name_says_so(nuplan_log) -> None:
    """A NULL filename_jpg was reported as 'image file cannot be read: <sensor_root> (Is a directory)'."""
    db, blobs = nuplan_log
    sql(db, "UPDATE image SET filename_jpg = NULL WHERE token = ?", (tok(IMG, 3),))
    with pytest.raises(SourceError, match=rf"scene '{LOG}/scene-0001', frame 3 .*has no filename_jpg"):
        load_nuplan(db, blobs)


def test_nuplan_chain_check_also_walks_a_loop_without_a_first_image() -> None:
    """Images whose next_token links close a loop (no image starts the chain) are still checked along it."""
    from types import SimpleNamespace

    from vavam.data.sources.nuplan import _check_chain

    tokens = [b"a", b"b", b"c", b"d"]
    # a -> b -> c -> d -> a, with c stamped before b: c is out of order along the chain
    frames = SimpleNamespace(tokens=tokens, next_tokens=[b"b", b"c", b"d", b"a"],
                             timestamps=np.array([100, 300, 200, 400], dtype=np.int64))
    problems: list[str | None] = [None] * 4
    _check_chain(frames, problems)
    assert [p is not None for p in problems] == [False, False, True, False]
    assert "goes backwards along the image chain" in problems[2]


@pytest.mark.parametrize("value, expected", [
    (1_533_151_603_547_590, 1_533_151_603_547_590), (1.5e15, 1_500_000_000_000_000), (" 42 ", 42),
    (1.5, None), ("x", None), (None, None), (True, None), (0, None), (-5, None),
])
def test_table_timestamps_take_whole_numbers_only(value, expected) -> None:
    """A timestamp stored as a whole float (SQLite REAL) or as text still places its frame; anything else is bad."""
    from vavam.data.sources._tables import table_timestamp

    assert table_timestamp(value) == expected
