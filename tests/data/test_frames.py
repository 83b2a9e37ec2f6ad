"""Frame reading: image folders, videos (PyAV), resize rule, timestamps, and errors naming the file."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from vavam.data.frames import (
    FrameError,
    FrameSource,
    discover_sources,
    preprocess_frame,
    rate_from_timestamps,
    read_image,
    resized_shape,
)


def make_images(
    folder: Path, n: int, h: int = 32, w: int = 48, names=None, seed: int = 0, ext: str = ".png"
) -> list[Path]:
    """``n`` random RGB images (PNG is lossless, so pixels are known exactly)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        name = names[i] if names else f"f_{i + 1:06d}{ext}"
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / name)
        paths.append(folder / name)
    return paths


def make_video(path: Path, n: int, h: int = 32, w: int = 48, fps: int = 10, codec: str = "mpeg4") -> Path:
    """A small video with PyAV (``n`` frames at ``fps``)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.time_base = Fraction(1, fps)
        for i in range(n):
            arr = np.full((h, w, 3), (i * 20) % 256, dtype=np.uint8) + rng.integers(0, 8, (h, w, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


# ------------------------------------------------------------------------------ resize / normalise


def test_divisor_rule_truncates():
    assert resized_shape(900, 1600, 3.125) == (288, 512)
    assert resized_shape(1080, 1920, 3.75) == (288, 512)
    assert resized_shape(900, 1599, 3.125) == (288, 511)  # int() truncation, as the reference
    assert resized_shape(50, 100, 3.0) == (16, 33)


def test_preprocess_range_and_identity():
    img = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    x = preprocess_frame(img)
    assert x.shape == (3, 20, 30) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.from_numpy(img).permute(2, 0, 1).float() / 127.5 - 1)
    y = preprocess_frame(img, divisor=2.0)
    assert y.shape == (3, 10, 15) and y.min() >= -1 and y.max() <= 1
    z = preprocess_frame(np.full((40, 60, 3), 200, np.uint8), size=(8, 12))
    torch.testing.assert_close(z, torch.full((3, 8, 12), 200 / 127.5 - 1))


def test_preprocess_wrong_size_names_frame():
    with pytest.raises(FrameError, match=r"cam/x\.jpg \(frame 3\).*wrong frame size"):
        preprocess_frame(np.zeros((10, 10, 3), np.uint8), expected=(8, 8), where="cam/x.jpg (frame 3)")


# ------------------------------------------------------------------------------ image folders


def test_image_folder_natural_order_and_fps_timestamps(tmp_path):
    names = ["f_10.png", "f_2.png", "f_1.png"]
    make_images(tmp_path / "v", 3, names=names)
    src = FrameSource.from_image_folder(tmp_path / "v", fps=5.0)
    assert [f.name for f in src.files] == ["f_1.png", "f_2.png", "f_10.png"]
    assert src.timestamps_us.tolist() == [0, 200_000, 400_000]
    frames = list(src.frames())
    assert [f.index for f in frames] == [0, 1, 2]
    expected = preprocess_frame(read_image(tmp_path / "v" / "f_1.png"))
    torch.testing.assert_close(frames[0].image, expected)


@pytest.mark.parametrize("kind", ["json_list", "json_dict", "txt"])
def test_image_folder_sidecar_timestamps(tmp_path, kind):
    paths = make_images(tmp_path / "v", 3)
    ts = [1000, 51_000, 99_000]
    if kind == "json_list":
        (tmp_path / "v" / "timestamps.json").write_text(json.dumps(ts))
    elif kind == "json_dict":
        (tmp_path / "v" / "timestamps.json").write_text(json.dumps({p.name: t for p, t in zip(paths, ts)}))
    else:
        (tmp_path / "v" / "timestamps.txt").write_text("".join(f"{p.name},{t}\n" for p, t in zip(paths, ts)))
    assert FrameSource.from_image_folder(tmp_path / "v").timestamps_us.tolist() == ts


def test_sidecar_count_mismatch_names_file(tmp_path):
    make_images(tmp_path / "v", 3)
    (tmp_path / "v" / "timestamps.json").write_text("[1, 2]")
    with pytest.raises(FrameError, match="timestamps.json: 2 timestamps for 3"):
        FrameSource.from_image_folder(tmp_path / "v")


@pytest.mark.parametrize("content", ['["a", 2, 3]', "[null, 2, 3]", '{"f_000001.png": "x", "f_000002.png": 2, '
                                     '"f_000003.png": 3}'])
def test_sidecar_value_that_is_no_number_names_file(tmp_path, content):
    make_images(tmp_path / "v", 3)
    (tmp_path / "v" / "timestamps.json").write_text(content)
    with pytest.raises(FrameError, match=r"timestamps.json: timestamp of f_000001.png is .*not a number of µs"):
        FrameSource.from_image_folder(tmp_path / "v")


@pytest.mark.parametrize("ts", [[300_000, 200_000, 400_000], [100_000, 100_000, 200_000]])
def test_sidecar_out_of_frame_order_names_file_and_frames(tmp_path, ts):
    make_images(tmp_path / "v", 3)
    (tmp_path / "v" / "timestamps.json").write_text(json.dumps(ts))
    with pytest.raises(FrameError, match=r"timestamps.json: timestamps must increase .* f_000002.png .* f_000001.png"):
        FrameSource.from_image_folder(tmp_path / "v")


def slot_resampled_us(source_fps: float, seconds: float, fps: float = 10.0) -> np.ndarray:
    """Times of the first frame of a ``source_fps`` video in each ``1/fps`` slot (the OpenDV resampling rule)."""
    kept, last = [], -1
    for k in range(int(seconds * source_fps)):
        slot = int(np.floor(k / source_fps * fps + 1e-9))
        if slot > last:
            kept.append(round(k / source_fps * 1e6))
            last = slot
    return np.asarray(kept, dtype=np.int64)


@pytest.mark.parametrize("source_fps", [24.0, 25.0, 23.976, 30.0])
@pytest.mark.parametrize("seconds", [60.0, 60.1])
def test_rate_of_frames_resampled_to_10_hz_from_any_video_rate(source_fps, seconds):
    """24 / 25 fps videos resampled to 10 Hz alternate long and short intervals (125 / 83 ms): their rate is
    10 Hz, not the median interval's 12 or 8.3 Hz (which made the steady-window rule drop every window)."""
    ts = slot_resampled_us(source_fps, seconds)
    assert rate_from_timestamps(ts) == pytest.approx(10.0, abs=0.01)
    files = [Path(f"f_{i + 1:06d}.jpg") for i in range(len(ts))]
    assert FrameSource.from_files("v", files, timestamps_us=ts).known_fps() == pytest.approx(10.0, abs=0.01)


def test_rate_ignores_missing_frames_and_keeps_exact_median_rates():
    ts = np.arange(200, dtype=np.int64) * 100_000
    assert rate_from_timestamps(np.delete(ts, np.arange(3, 200, 8))) == 10.0  # a frame missing every 0.8 s
    keyframes = 1_535_385_095_912_404 + np.cumsum([0, 500_100, 499_900, 550_000, 450_000, 500_000, 1_000_000])
    assert rate_from_timestamps(keyframes) == 2.0  # jitter and a missing keyframe: the median interval


def test_nuscenes_names_give_timestamps(tmp_path):
    names = [f"n008-2018__CAM_FRONT__15353850959{i}2404.jpg" for i in range(3)]
    make_images(tmp_path / "CAM_FRONT", 3, names=names)
    src = FrameSource.from_image_folder(tmp_path / "CAM_FRONT")
    assert src.timestamps_us.tolist() == [int(f"15353850959{i}2404") for i in range(3)]


def test_truncated_jpeg_names_file(tmp_path):
    paths = make_images(tmp_path / "v", 3, ext=".jpg", h=64, w=64)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    src = FrameSource.from_image_folder(tmp_path / "v")
    with pytest.raises(FrameError, match=r"f_000002\.jpg.*truncated or corrupt"):
        list(src.frames())


def test_not_an_image_names_file(tmp_path):
    make_images(tmp_path / "v", 2)
    (tmp_path / "v" / "f_000003.png").write_bytes(b"not a png")
    with pytest.raises(FrameError, match=r"f_000003\.png"):
        list(FrameSource.from_image_folder(tmp_path / "v").frames())


def test_wrong_size_frame_in_folder_names_file(tmp_path):
    make_images(tmp_path / "v", 2, h=32, w=48)
    make_images(tmp_path / "v", 1, h=30, w=48, names=["f_000003.png"])
    with pytest.raises(FrameError, match=r"f_000003\.png \(frame 2\): wrong frame size: source is 48x30"):
        list(FrameSource.from_image_folder(tmp_path / "v").frames(divisor=2.0))
    # explicit size resizes everything
    assert len(list(FrameSource.from_image_folder(tmp_path / "v").frames(size=(16, 24)))) == 3


def test_threaded_decoding_same_frames(tmp_path):
    make_images(tmp_path / "v", 11)
    src = FrameSource.from_image_folder(tmp_path / "v")
    a = torch.stack([f.image for f in src.frames(divisor=2.0)])
    b = torch.stack([f.image for f in src.frames(divisor=2.0, num_workers=2)])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


# ------------------------------------------------------------------------------ videos


def test_video_frames_and_pts_timestamps(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 12, fps=10)
    src = FrameSource.from_video(path)
    frames = list(src.frames(size=(16, 24)))
    assert len(frames) == 12
    assert [f.timestamp_us for f in frames] == [i * 100_000 for i in range(12)]
    assert frames[0].image.shape == (3, 16, 24)
    # frame content follows the ramp written (i*20 grey + small noise)
    means = [float((f.image.mean() + 1) * 127.5) for f in frames]
    assert abs(means[3] - 63.5) < 6


def test_video_resample_fps(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 12, fps=10)
    frames = list(FrameSource.from_video(path, fps=5.0).frames())
    assert [f.timestamp_us for f in frames] == [0, 200_000, 400_000, 600_000, 800_000, 1_000_000]
    assert [f.index for f in frames] == list(range(6))


@pytest.mark.parametrize("fps", [2.0, 5.0, 30.0])
def test_video_frame_count_hint_is_the_resampled_count(tmp_path, fps):
    # vavam eval quality plans its windows from the hint: one too many (5 Hz: 7 for 6) or a count above the video's
    # own frames (30 Hz from a 10 Hz video: 37 for 12) planned windows that were then silently dropped
    path = make_video(tmp_path / "clip.mp4", 12, fps=10)
    src = FrameSource.from_video(path, fps=fps)
    assert src.num_frames_hint == len(list(src.frames(size=(16, 24))))


def test_truncated_mp4_names_file(tmp_path):
    path = make_video(tmp_path / "clip.mp4", 12)
    data = path.read_bytes()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(FrameError, match=r"bad\.mp4"):
        list(FrameSource.from_video(bad).frames())


def test_garbage_video_names_file(tmp_path):
    bad = tmp_path / "junk.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(FrameError, match=r"junk\.mp4.*cannot open video"):
        FrameSource.from_video(bad)


# ------------------------------------------------------------------------------ discovery


def test_discover_sources_glob_and_names(tmp_path):
    make_images(tmp_path / "frames" / "chanA" / "vid1", 2)
    make_images(tmp_path / "frames" / "chanB" / "vid2", 2)
    make_video(tmp_path / "videos" / "vid3.mp4", 3)
    found = discover_sources([str(tmp_path / "frames" / "*" / "*"), tmp_path / "videos" / "vid3.mp4"])
    assert [s.name for s in found] == ["vid1", "vid2", "vid3"]
    assert [s.kind for s in found] == ["images", "images", "video"]
    found2 = discover_sources([tmp_path / "frames"], recursive=True, name_depth=2)
    assert [s.name for s in found2] == ["chanA/vid1", "chanB/vid2"]
    with pytest.raises(FrameError, match=r"frames: folder holds no images .*--recursive"):
        discover_sources([tmp_path / "frames"])  # a tree of image folders needs recursive (the CLI's --recursive)


def test_discover_duplicate_names(tmp_path):
    make_images(tmp_path / "a" / "vid", 1)
    make_images(tmp_path / "b" / "vid", 1)
    with pytest.raises(ValueError, match="name_depth"):
        discover_sources([tmp_path / "a" / "vid", tmp_path / "b" / "vid"])


def test_discover_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        discover_sources([tmp_path / "nope"])
