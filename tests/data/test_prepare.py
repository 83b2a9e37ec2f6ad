"""``vavam data prepare``: OpenDV end to end into a token store; nuScenes / nuPlan through stand-in loaders."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from vavam.data.frames import FrameError, FrameSource
from vavam.data.prepare import encode_sources, prepare_nuplan, prepare_nuscenes, prepare_opendv
from vavam.data.records import SceneRecord, load_records
from vavam.data.sources import SkipLog, SourceError, SourceResult
from vavam.data.tokens import TokenStore

H, W = 32, 64  # vq_tiny downsamples by 8 -> 4 x 8 tokens


def make_video(path: Path, n: int, fps: int, seed: int = 0) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 96, 54, "yuv420p"
        for i in range(n):
            arr = rng.integers(0, 256, (54, 96, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def tiny_tokenizer():
    import vavam

    torch.manual_seed(0)  # the same random weights as "preset:vq_tiny"
    return vavam.build_model(vavam.presets.vq_tiny()).eval()


@pytest.fixture(scope="module")
def opendv(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("opendv_raw")
    make_video(root / "videos" / "Chan_A" / "-vidA.mp4", 40, 20, seed=1)  # 2 s at 20 fps
    make_video(root / "videos" / "Chan_B" / "vidB.mp4", 30, 10, seed=2)  # 3 s at 10 fps
    make_video(root / "videos" / "Chan_B" / "vidV.mp4", 20, 10, seed=3)  # 2 s at 10 fps
    rows = [
        {"videoid": "-vidA", "youtuber": "Chan A", "split": "Train", "start_discard": 0.5, "end_discard": 0.3},
        {"videoid": "vidB", "youtuber": "Chan B", "split": "Train", "start_discard": 0, "end_discard": 1},
        {"videoid": "vidV", "youtuber": "Chan B", "split": "Val", "start_discard": 0.2, "end_discard": 0},
    ]
    (root / "meta.json").write_text(json.dumps(rows))
    return root


def test_prepare_opendv_end_to_end(opendv, tmp_path):
    out = tmp_path / "prepared"
    summary = prepare_opendv(
        opendv / "meta.json",
        opendv / "videos",
        out,
        tokenizer="preset:vq_tiny",
        height=H,
        width=W,
        batch_size=4,
        progress=False,
    )
    # by hand: @vidA keeps [0.5, 1.7) at 10 fps -> 12 frames; vidB [0, 2.0) -> 20; vidV [0.2, 2.0) -> 18
    train = TokenStore(out / "train" / "tokens")
    assert sorted(train.scenes) == ["@vidA", "vidB"]
    assert train.num_frames("@vidA") == 12 and train.num_frames("vidB") == 20
    assert train.timestamps("@vidA").tolist() == [500_000 + 100_000 * k for k in range(12)]
    assert train.grid == (4, 8)
    val = TokenStore(out / "val" / "tokens")
    assert list(val.scenes) == ["vidV"] and val.num_frames("vidV") == 18
    assert json.loads((out / "train.json").read_text()) == ["@vidA", "vidB"]
    assert json.loads((out / "val.json").read_text()) == ["vidV"]
    assert summary["splits"]["train"]["kept"] == 2 and summary["splits"]["train"]["skipped"] == []
    assert json.loads((out / "prepare_summary.json").read_text())["dataset"] == "opendv"
    # tokens equal a direct encoding of the same decoded frames
    from vavam.data.sources.opendv import load_opendv

    (src,) = load_opendv(opendv / "meta.json", opendv / "videos", split="val")
    images = torch.stack([f.image for f in src.frames(size=(H, W))])
    expected = tiny_tokenizer().encode(images).numpy()
    assert np.array_equal(np.asarray(val.tokens("vidV")).astype(np.int64), expected)
    # the sources also go straight into the generic tokenize_sources, with the same result
    from vavam.data.tokenize import tokenize_sources

    tokenize_sources([src], tmp_path / "generic", tiny_tokenizer(), size=(H, W), progress=False)
    generic = TokenStore(tmp_path / "generic")
    assert np.array_equal(np.asarray(generic.tokens("vidV")), np.asarray(val.tokens("vidV")))
    assert generic.timestamps("vidV").tolist() == val.timestamps("vidV").tolist()
    # resumable: a second run finds every scene done and leaves the store alone
    before = (out / "train" / "tokens" / "manifest.json").read_text()
    prepare_opendv(
        opendv / "meta.json",
        opendv / "videos",
        out,
        tokenizer="preset:vq_tiny",
        height=H,
        width=W,
        splits=("train",),
        progress=False,
    )
    assert (out / "train" / "tokens" / "manifest.json").read_text() == before


def test_prepare_opendv_frames_without_tokenizer(opendv, tmp_path):
    out = tmp_path / "frames_only"
    prepare_opendv(
        opendv / "meta.json", opendv / "videos", out, splits=("val",), frames=True, height=H, width=W, progress=False
    )
    jpgs = sorted((out / "frames512" / "Chan_B" / "vidV").glob("f_*.jpg"))
    assert len(jpgs) == 18 and jpgs[0].name == "f_000001.jpg"
    assert not (out / "val" / "tokens").exists()


def test_prepare_opendv_bad_videos(opendv, tmp_path):
    videos = tmp_path / "videos"
    (videos / "Chan_A").mkdir(parents=True)
    (videos / "Chan_A" / "-vidA.mp4").write_bytes((opendv / "videos" / "Chan_A" / "-vidA.mp4").read_bytes())
    whole = make_video(tmp_path / "cut.mkv", 30, 10).read_bytes()
    (videos / "Chan_A" / "cut.mkv").write_bytes(whole[: len(whole) // 2])  # decodes ~1.5 s of 3 s
    rows = [
        {"videoid": "-vidA", "youtuber": "Chan A", "split": "Train", "start_discard": 0.5, "end_discard": 0.3},
        {"videoid": "cut", "youtuber": "Chan A", "split": "Train", "start_discard": 0, "end_discard": 0},
        {"videoid": "gone", "youtuber": "Chan A", "split": "Train", "start_discard": 0, "end_discard": 0},
    ]
    meta = tmp_path / "meta.json"
    meta.write_text(json.dumps(rows))
    with pytest.raises(SourceError, match="'gone'.*missing"):
        prepare_opendv(
            meta,
            videos,
            tmp_path / "o1",
            splits=("train",),
            tokenizer="preset:vq_tiny",
            height=H,
            width=W,
            progress=False,
        )
    rows.pop()
    meta.write_text(json.dumps(rows))
    with pytest.raises(SourceError, match="'cut'.*truncated"):
        prepare_opendv(
            meta,
            videos,
            tmp_path / "o2",
            splits=("train",),
            tokenizer="preset:vq_tiny",
            height=H,
            width=W,
            progress=False,
        )
    rows.append({"videoid": "gone", "youtuber": "Chan A", "split": "Train", "start_discard": 0, "end_discard": 0})
    meta.write_text(json.dumps(rows))
    out = tmp_path / "o3"
    summary = prepare_opendv(
        meta,
        videos,
        out,
        splits=("train",),
        tokenizer="preset:vq_tiny",
        height=H,
        width=W,
        skip_bad=True,
        progress=False,
    )
    assert list(TokenStore(out / "train" / "tokens").scenes) == ["@vidA"]
    assert json.loads((out / "train.json").read_text()) == ["@vidA"]
    entry = summary["splits"]["train"]
    assert entry["skipped_summary"] == "skipped 0 frame(s) and 2 scene(s)"
    assert {row["scene"] for row in entry["skipped"]} == {"cut", "gone"}


# ------------------------------------------------------------------------------ nuScenes / nuPlan (stand-ins)


def _images(folder: Path, names: list[str], h: int, w: int, seed: int, corrupt: int | None = None) -> list[str]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, name in enumerate(names):
        if i == corrupt:
            (folder / name).write_bytes(b"\xff\xd8 broken jpeg")
        else:
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / name)
    return names


def _record(
    name: str,
    root: Path,
    sub: str,
    n: int,
    hz: float,
    h: int,
    w: int,
    seed: int,
    corrupt: int | None = None,
    camera: str = "CAM_FRONT",
) -> SceneRecord:
    ts = 1_600_000_000_000_000 + seed * 10**9 + np.round(np.arange(n) * 1e6 / hz).astype(np.int64)
    stem = name.replace("/", "_")
    names = _images(root / sub, [f"{stem}__{camera}__{t}.png" for t in ts], h, w, seed, corrupt)
    trans = np.zeros((n, 3))
    trans[:, 0] = np.arange(n) * 2.0
    rots = np.tile([1.0, 0, 0, 0], (n, 1))
    return SceneRecord(name, ts, trans, rots, camera=camera, image_paths=[f"{sub}/{x}" for x in names])


def _install(monkeypatch, module: str, func: str, impl) -> list:
    calls: list = []

    def loader(*args, **kwargs):
        calls.append((args, kwargs))
        return impl(*args, **kwargs)

    fake = types.ModuleType(module)
    setattr(fake, func, loader)
    monkeypatch.setitem(sys.modules, module, fake)
    return calls


def test_prepare_nuscenes_with_a_stand_in_loader(tmp_path, monkeypatch):
    root = tmp_path / "nuscenes"

    def load_nuscenes(
        dataroot, version="v1.0-trainval", split="train", camera="CAM_FRONT", skip_bad=False, check_images=True
    ):
        if split == "train":
            recs = [
                _record("scene-0001", root, "samples/CAM_FRONT", 5, 2.0, 100, 200, 1),
                _record("scene-0002", root, "samples/CAM_FRONT", 3, 2.0, 100, 200, 2),
            ]
        else:
            recs = [_record("scene-0103", root, "samples/CAM_FRONT", 4, 2.0, 100, 200, 3)]
        return SourceResult(recs, image_root=Path(dataroot), split=split)

    calls = _install(monkeypatch, "vavam.data.sources.nuscenes", "load_nuscenes", load_nuscenes)
    out = tmp_path / "out"
    # divisor 3.125 on 200x100 images -> int(64), int(32): the tokenizer sees 64x32 (WxH)
    summary = prepare_nuscenes(
        root,
        out,
        version="v1.0-mini",
        splits=("train", "val"),
        tokenizer="preset:vq_tiny",
        batch_size=2,
        progress=False,
        check_images=False,
        skip_bad=True,
    )
    assert calls[0][1] == {
        "version": "v1.0-mini",
        "split": "train",
        "camera": "CAM_FRONT",
        "skip_bad": True,
        "check_images": False,
    }
    records = load_records(out / "train" / "records.npz")
    assert [r.name for r in records] == ["scene-0001", "scene-0002"]
    store = TokenStore(out / "train" / "tokens")
    assert store.image_size == (32, 64) and store.grid == (4, 8)
    assert store.timestamps("scene-0001").tolist() == records[0].timestamps.tolist()
    assert store.num_frames("scene-0002") == 3
    # tokens equal the direct encoding of the resized images
    src = FrameSource.from_files("x", [root / p for p in records[1].image_paths], records[1].timestamps)
    images = torch.stack([f.image for f in src.frames(divisor=3.125)])
    assert np.array_equal(np.asarray(store.tokens("scene-0002")).astype(np.int64), tiny_tokenizer().encode(images))
    assert [r.name for r in load_records(out / "val" / "records.npz")] == ["scene-0103"]
    assert summary["splits"]["val"]["kept_scenes"] == 1


def test_prepare_nuscenes_corrupt_image_skips_the_scene(tmp_path, monkeypatch):
    root = tmp_path / "nuscenes"

    def load_nuscenes(
        dataroot, version="v1.0-trainval", split="train", camera="CAM_FRONT", skip_bad=False, check_images=True
    ):
        recs = [
            _record("scene-0001", root, "samples/CAM_FRONT", 4, 2.0, 100, 200, 1, corrupt=2),
            _record("scene-0002", root, "samples/CAM_FRONT", 3, 2.0, 100, 200, 2),
        ]
        return SourceResult(recs, image_root=Path(dataroot), split=split)

    _install(monkeypatch, "vavam.data.sources.nuscenes", "load_nuscenes", load_nuscenes)
    with pytest.raises(FrameError, match=r"scene-0001__CAM_FRONT__\d+\.png.*cannot decode"):
        prepare_nuscenes(root, tmp_path / "o1", splits=("train",), tokenizer="preset:vq_tiny", progress=False)
    out = tmp_path / "o2"
    summary = prepare_nuscenes(root, out, splits=("train",), tokenizer="preset:vq_tiny", progress=False, skip_bad=True)
    assert list(TokenStore(out / "train" / "tokens").scenes) == ["scene-0002"]
    assert [r.name for r in load_records(out / "train" / "records.npz")] == ["scene-0002"]
    assert summary["splits"]["train"]["skipped"][0]["scene"] == "scene-0001"


def test_prepare_nuplan_with_a_stand_in_loader(tmp_path, monkeypatch):
    root = tmp_path / "sensor_blobs"
    root.mkdir()

    def load_nuplan(db_paths_or_folder, sensor_root, camera="CAM_F0", skip_bad=False, check_images=True):
        recs = [_record("2021.05.12.log/scene0", root, "log/CAM_F0", 6, 10.0, 120, 240, 4, camera="CAM_F0")]
        log = SkipLog()
        log.add("2021.05.12.log/scene0", 6, "image file missing")
        return SourceResult(recs, image_root=Path(sensor_root), skipped=log)

    calls = _install(monkeypatch, "vavam.data.sources.nuplan", "load_nuplan", load_nuplan)
    out = tmp_path / "out"
    summary = prepare_nuplan([tmp_path / "a.db"], root, out, split="mini", tokenizer="preset:vq_tiny", progress=False)
    assert calls[0][0] == (tmp_path / "a.db", root) and calls[0][1]["camera"] == "CAM_F0"
    store = TokenStore(out / "mini" / "tokens")  # 240x120 / 3.75 -> 64x32
    assert store.image_size == (32, 64) and store.num_frames("2021.05.12.log/scene0") == 6
    (rec,) = load_records(out / "mini" / "records.npz")
    assert rec.camera == "CAM_F0" and len(rec) == 6
    assert summary["splits"]["mini"]["skipped_summary"] == "skipped 1 frame(s) and 0 scene(s)"
    # records only (no tokenizer) and explicit sizes
    prepare_nuplan([tmp_path / "a.db"], root, tmp_path / "records_only", split="mini", progress=False)
    assert (tmp_path / "records_only" / "mini" / "records.npz").is_file()
    assert not (tmp_path / "records_only" / "mini" / "tokens").exists()


def test_prepare_nuplan_names_a_missing_sensor_root(tmp_path):
    """A wrong --sensor-root reported every frame as missing (or, with --skip-bad, wrote an empty split) without
    naming the folder; it is refused up front, before the databases are read or anything is written."""
    with pytest.raises(FileNotFoundError, match=r"^--sensor-root .*nope: no such folder \(nuPlan's sensor_blobs"):
        prepare_nuplan([tmp_path / "a.db"], tmp_path / "nope", tmp_path / "out", split="mini", skip_bad=True,
                       progress=False)
    assert not (tmp_path / "out").exists()


def test_prepare_nuplan_refuses_a_bad_shard_before_making_the_split_folder(tmp_path, monkeypatch):
    """--shard was parsed only when the first scene was tokenized, after OUT/<split>/ was made (left empty)."""
    root = tmp_path / "sensor_blobs"
    root.mkdir()

    def load_nuplan(db_paths_or_folder, sensor_root, camera="CAM_F0", skip_bad=False, check_images=True):
        recs = [_record("2021.05.12.log/scene0", root, "log/CAM_F0", 2, 10.0, 120, 240, 4, camera="CAM_F0")]
        return SourceResult(recs, image_root=Path(sensor_root))

    _install(monkeypatch, "vavam.data.sources.nuplan", "load_nuplan", load_nuplan)
    with pytest.raises(ValueError, match=r"shard must look like 'i/N' \(e.g. 0/4\), got 'half'"):
        prepare_nuplan([tmp_path / "a.db"], root, tmp_path / "out", split="mini", tokenizer="preset:vq_tiny",
                       shard="half", progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ValueError, match=r"--height 30 --width 64: not positive multiples of the tokenizer's"):
        prepare_nuplan([tmp_path / "a.db"], root, tmp_path / "out", split="mini", tokenizer="preset:vq_tiny",
                       height=30, width=64, progress=False)
    assert not (tmp_path / "out").exists()


def test_encode_sources_shard_and_skip(tmp_path):
    root = tmp_path / "imgs"
    recs = [_record(f"s{i}", root, f"s{i}", 2, 2.0, 32, 64, i, corrupt=0 if i == 1 else None) for i in range(4)]
    sources = [FrameSource.from_files(r.name, [root / p for p in r.image_paths], r.timestamps) for r in recs]
    log = SkipLog()
    tok = tiny_tokenizer()
    path, failed = encode_sources(
        sources, tmp_path / "store", tok, shard="1/2", skip_bad=True, skipped=log, progress=False
    )
    assert path.name == "manifest.part-001-of-002.json" and failed == ["s1"] and log.scenes == 1
    part = json.loads(path.read_text())
    assert sorted(part["scenes"]) == ["s3"]  # shard 1 of 2 = s1, s3 of the sorted names; s1 failed


def test_prepare_names_its_own_resize_options(tmp_path, monkeypatch):
    """A frame size the tokenizer cannot cut named `--dataset`, which `data prepare` does not have (a hint written
    for `vavam tokenize`); now each command names its own options."""
    root = tmp_path / "nuscenes"

    def load_nuscenes(dataroot, version="v1.0-trainval", split="train", camera="CAM_FRONT", skip_bad=False,
                      check_images=True):
        return SourceResult([_record("scene-0001", root, "samples/CAM_FRONT", 3, 2.0, 100, 200, 1)],
                            image_root=Path(dataroot), split=split)

    _install(monkeypatch, "vavam.data.sources.nuscenes", "load_nuscenes", load_nuscenes)
    with pytest.raises(ValueError, match=r"image size 66x33 \(WxH\) is not divisible by the tokenizer's downsampling 8 "
                                         r"\(resize with --height/--width or --divisor\)$"):
        prepare_nuscenes(root, tmp_path / "out", splits=("train",), tokenizer="preset:vq_tiny", divisor=3.0,
                         progress=False, check_images=False)
