"""``vavam data prepare --shard``: records of the merged shards equal the unsharded run's; dataroots stored absolute."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_prepare import _install, _record

from vavam.data.prepare import prepare_nuscenes
from vavam.data.records import load_records, read_records_header
from vavam.data.sources import SourceResult
from vavam.data.tokens import TokenStore


def _stand_in_nuscenes(monkeypatch, root: Path) -> None:
    """Four CAM_FRONT scenes under ``root``; scene-0002 has a corrupt image (its tokenization fails)."""

    def load_nuscenes(dataroot, version="v1.0-trainval", split="train", camera="CAM_FRONT", skip_bad=False,
                      check_images=True):
        recs = [_record(f"scene-000{i}", root, "samples/CAM_FRONT", 3, 2.0, 100, 200, i,
                        corrupt=1 if i == 2 else None) for i in range(1, 5)]
        return SourceResult(recs, image_root=Path(dataroot), split=split)

    _install(monkeypatch, "vavam.data.sources.nuscenes", "load_nuscenes", load_nuscenes)


@pytest.mark.parametrize("order", [("1/2", "0/2"), ("0/2", "1/2")], ids=["failing-shard-first", "failing-shard-last"])
def test_sharded_prepare_drops_a_scene_that_failed_in_a_shard(tmp_path, monkeypatch, capsys, order):
    """A scene whose tokenization failed in one shard stayed in records.npz (only the unsharded path dropped it),
    so training stopped on the scene missing from the token store; once every shard has finished, the records
    (and the merged store) are those of the unsharded run, and the output names the dropped scene and why."""
    root = tmp_path / "nuscenes"
    _stand_in_nuscenes(monkeypatch, root)
    common = dict(splits=("train",), tokenizer="preset:vq_tiny", progress=False, skip_bad=True, check_images=False)
    whole = tmp_path / "whole"
    prepare_nuscenes(root, whole, **common)
    sharded = tmp_path / "sharded"
    # scene-0002 is in shard 1 of 2 (scene-0002, scene-0004); the second shard to run finishes the split
    prepare_nuscenes(root, sharded, shard=order[0], **common)
    assert "records are provisional until shard(s) " + order[1] in capsys.readouterr().out
    summary = prepare_nuscenes(root, sharded, shard=order[1], **common)
    said = capsys.readouterr().out
    expected = load_records(whole / "train" / "records.npz")
    got = load_records(sharded / "train" / "records.npz")
    assert [r.name for r in expected] == ["scene-0001", "scene-0003", "scene-0004"]
    assert [r.name for r in got] == [r.name for r in expected]
    for a, b in zip(got, expected):
        assert np.array_equal(a.timestamps, b.timestamps) and a.image_paths == b.image_paths
    assert (read_records_header(sharded / "train" / "records.npz")["metadata"]
            == read_records_header(whole / "train" / "records.npz")["metadata"])
    # records and the merged store agree scene for scene, as in the unsharded run
    store = TokenStore(sharded / "train" / "tokens")
    assert sorted(store.scenes) == sorted(TokenStore(whole / "train" / "tokens").scenes) == [r.name for r in got]
    entry = summary["splits"]["train"]
    assert entry["kept_scenes"] == 3 and [row["scene"] for row in entry["skipped"]] == ["scene-0002"]
    assert "dropped 1 scene(s)" in said and "scene-0002: cannot tokenize" in said


def test_records_store_the_dataroot_absolute(tmp_path, monkeypatch):
    """A relative dataroot was stored as typed, so the records broke when read from another directory."""
    root = tmp_path / "nuscenes"
    _stand_in_nuscenes(monkeypatch, root)
    monkeypatch.chdir(tmp_path)
    prepare_nuscenes(Path("nuscenes"), Path("out"), splits=("train",), progress=False, check_images=False)
    path = tmp_path / "out" / "train" / "records.npz"
    header = read_records_header(path)
    assert header["image_root"] == os.path.abspath(root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert len(load_records(path, check_files=True)) == 4  # every image file found from another directory
    # an older file holding the relative dataroot is read as before (relative to the working directory)
    old = tmp_path / "old.npz"
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    arrays["header"] = np.frombuffer(json.dumps({**header, "image_root": "nuscenes"}).encode("utf-8"), np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    old.write_bytes(buf.getvalue())
    assert read_records_header(old)["image_root"] == "nuscenes"
    monkeypatch.chdir(tmp_path)
    assert len(load_records(old, check_files=True)) == 4


def test_sharded_opendv_prepare_writes_the_split_list_when_its_last_shard_ends(tmp_path):
    """A sharded OpenDV prepare wrote no split list at all (only unsharded runs did); the shard that finds every
    shard finished now merges the store and writes the list of the videos in it, as the unsharded run does."""
    from test_prepare import H, W, make_video

    from vavam.data.prepare import prepare_opendv

    videos = tmp_path / "videos"
    make_video(videos / "Chan_A" / "vidA.mp4", 20, 10, seed=1)
    make_video(videos / "Chan_B" / "vidB.mp4", 20, 10, seed=2)
    make_video(videos / "Chan_B" / "vidC.mp4", 20, 10, seed=3)
    rows = [{"videoid": v, "youtuber": c, "split": "Train", "start_discard": 0, "end_discard": 0}
            for v, c in (("vidA", "Chan A"), ("vidB", "Chan B"), ("vidC", "Chan B"))]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(rows))
    common = dict(splits=("train",), tokenizer="preset:vq_tiny", height=H, width=W, progress=False)
    prepare_opendv(meta, videos, tmp_path / "whole", **common)
    sharded = tmp_path / "sharded"
    first = prepare_opendv(meta, videos, sharded, shard="1/2", **common)
    assert not (sharded / "train.json").exists() and first["splits"]["train"]["shards_pending"] == ["0/2"]
    last = prepare_opendv(meta, videos, sharded, shard="0/2", **common)
    assert last["splits"]["train"]["shards_pending"] == []
    whole_list = json.loads((tmp_path / "whole" / "train.json").read_text())
    assert json.loads((sharded / "train.json").read_text()) == whole_list
    assert sorted(TokenStore(sharded / "train" / "tokens").scenes) == ["vidA", "vidB", "vidC"]


def test_sharded_opendv_frames_are_each_shards_share(tmp_path, monkeypatch):
    """With --frames every shard extracted every video, each extraction first deleting the video's frames, so
    concurrent shards replaced each other's frames; each now extracts the share it tokenizes, and the shards'
    frames together are the unsharded run's, file for file."""
    from test_prepare import H, W, make_video

    import vavam.data.sources.opendv as opendv
    from vavam.data.prepare import prepare_opendv

    videos = tmp_path / "videos"
    for k, v in enumerate(("vidA", "vidB", "vidC")):
        make_video(videos / "Chan" / f"{v}.mp4", 20, 10, seed=k)
    rows = [{"videoid": v, "youtuber": "Chan", "split": "Train", "start_discard": 0, "end_discard": 0}
            for v in ("vidA", "vidB", "vidC")]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(rows))
    common = dict(splits=("train",), tokenizer="preset:vq_tiny", height=H, width=W, progress=False, frames=True)
    prepare_opendv(meta, videos, tmp_path / "whole", **common)
    written = []
    real = opendv.write_opendv_frames
    monkeypatch.setattr(opendv, "write_opendv_frames",
                        lambda src, *a, **k: written.append(src.name) or real(src, *a, **k))
    sharded = tmp_path / "sharded"
    prepare_opendv(meta, videos, sharded, shard="0/2", **common)
    assert written == ["vidA", "vidC"]  # its share: sorted names from 0 in steps of 2
    prepare_opendv(meta, videos, sharded, shard="1/2", **common)
    assert written == ["vidA", "vidC", "vidB"]
    whole = tmp_path / "whole" / "frames512"
    files = sorted(p.relative_to(whole) for p in whole.rglob("*.*"))
    assert files and files == sorted(p.relative_to(sharded / "frames512") for p in (sharded / "frames512").rglob("*.*"))
    for f in files:
        assert (sharded / "frames512" / f).read_bytes() == (whole / f).read_bytes()
    assert sorted(TokenStore(sharded / "train" / "tokens").scenes) == ["vidA", "vidB", "vidC"]
    assert json.loads((sharded / "train.json").read_text()) == json.loads((whole.parent / "train.json").read_text())
