"""Regression tests of the tokenization audit (frames, tokenize, prepare): each failed before its fix."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from vavam.data.frames import FrameError, FrameSource, discover_sources, preprocess_frame
from vavam.data.tokenize import tokenize, tokenize_sources

from test_frames import make_images, make_video
from test_prepare import tiny_tokenizer

# ------------------------------------------------------------------------------ helpers


def write_video_at(path: Path, pts_ms: list[int], h: int = 32, w: int = 48) -> Path:
    """A small mpeg4 video whose frames are stamped ``pts_ms`` (milliseconds; time base 1/1000)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.time_base = Fraction(1, 1000)
        for i, t in enumerate(pts_ms):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), (i * 30) % 256, np.uint8), format="rgb24")
            frame.pts = t
            frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def scene_rates(manifest: Path) -> tuple[float | None, dict[str, tuple[float | None, int]]]:
    m = json.loads(Path(manifest).read_text())
    return m["fps"], {k: (v["fps"], v["num_frames"]) for k, v in m["scenes"].items()}


# ------------------------------------------------------------------------------ preprocessing


def test_normalisation_is_bit_identical_to_the_reference_transform():
    # reference (token_creator.py): to_dtype(float32, scale=True) = x.to(float32).mul_(1 / 255), then 2x - 1.
    # x / 127.5 - 1 differed by 1 ulp on 111 of the 256 grey levels.
    levels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    img = np.stack([levels, levels[::-1], levels.T], axis=-1)
    x = torch.from_numpy(img).permute(2, 0, 1)
    ref = 2.0 * x.to(torch.float32).mul_(1.0 / 255) - 1.0
    got = preprocess_frame(img)
    assert torch.equal(got, ref)
    assert got[0, 0, 0].item() == -1.0 and got[0, 15, 15].item() == 1.0


# ------------------------------------------------------------------------------ video resampling


def test_video_slower_than_fps_records_its_own_rate(tmp_path):
    # A 5 fps video "resampled" to 10 fps keeps its 10 frames 0.2 s apart (no frame is repeated); the store used
    # to record 10 fps for it (windows of 5 frames then span 5 s, not 2.5 s). It records the rate of its frames,
    # and a resumed run keeps it.
    path = make_video(tmp_path / "v" / "clip.mp4", 10, fps=5)
    src = FrameSource.from_video(path, fps=10.0)
    assert src.known_fps() is None  # not known before decoding: the video is slower than 10 fps
    assert FrameSource.from_video(path, fps=2.0).known_fps() == 2.0
    tok = tiny_tokenizer()
    manifest = tokenize_sources([src], tmp_path / "store", tok, size=(32, 48), progress=False)
    assert scene_rates(manifest) == (5.0, {"clip": (5.0, 10)})
    ts = np.load(tmp_path / "store" / "scenes" / "clip.timestamps.npy")
    assert ts.tolist() == [200_000 * i for i in range(10)]
    manifest = tokenize_sources([FrameSource.from_video(path, fps=10.0)], tmp_path / "store", tok, size=(32, 48),
                                progress=False)
    assert scene_rates(manifest) == (5.0, {"clip": (5.0, 10)})


def test_video_resampled_at_its_own_rate_keeps_frames_stamped_early(tmp_path):
    # A 10 fps video whose timestamps jitter by 1-2 ms: with --fps 10 a frame stamped 1 ms before its slot fell in
    # the slot before (already taken) and was dropped, 3 of 8 frames lost (and 10 fps recorded for ~5 fps frames).
    pts = [0, 99, 201, 299, 400, 502, 598, 700]
    path = write_video_at(tmp_path / "jitter.mp4", pts)
    src = FrameSource.from_video(path, fps=10.0)
    frames = list(src.frames())
    assert [f.timestamp_us for f in frames] == [t * 1000 for t in pts]
    assert [f.index for f in frames] == list(range(8))
    assert src.num_frames_hint == 8
    # a 30 fps video still gives every third frame at 10 fps (frames exactly on the slot starts)
    path30 = make_video(tmp_path / "v30.mp4", 12, fps=30)
    got = [f.timestamp_us for f in FrameSource.from_video(path30, fps=10.0).frames()]
    assert got == [0, 100_000, 200_000, 300_000]


# ------------------------------------------------------------------------------ bad flags


@pytest.mark.parametrize("batch_size", [0, -1])
def test_batch_size_must_be_positive(tmp_path, batch_size):
    # 0 / -1 made one encoder batch of a whole scene (every frame of a video decoded and held at once)
    make_images(tmp_path / "imgs" / "a", 3)
    src = FrameSource.from_image_folder(tmp_path / "imgs" / "a")
    with pytest.raises(ValueError, match=r"--batch-size"):
        tokenize_sources([src], tmp_path / "store", tiny_tokenizer(), batch_size=batch_size, size=(32, 48),
                         progress=False)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(("kwargs", "flag"), [
    ({"divisor": float("nan")}, "--divisor"),
    ({"divisor": 0.0}, "--divisor"),
    ({"divisor": -2.0}, "--divisor"),
    ({"height": 0, "width": 0}, "--height"),
    ({"height": 32, "width": -16}, "--width"),
])
def test_resize_flags_are_checked_naming_the_flag(tmp_path, kwargs, flag):
    # they failed at the first frame, naming the image (or "cannot convert float NaN to integer") as a bad scene,
    # which `vavam data prepare --skip-bad` then skipped: every scene dropped from the records
    make_images(tmp_path / "imgs" / "a", 2)
    with pytest.raises(ValueError, match=flag):
        tokenize([str(tmp_path / "imgs" / "a")], tmp_path / "store", "preset:vq_tiny", progress=False, **kwargs)
    assert not (tmp_path / "store").exists()


def test_recursive_folder_without_scenes_is_refused(tmp_path):
    # `--recursive` on a folder holding no image folder nor video gave no scene (and an empty store), silently
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.txt").write_text("x")
    with pytest.raises(FrameError, match=r"empty: no image folder nor video file .*--recursive"):
        discover_sources([tmp_path / "empty"], recursive=True)
    make_images(tmp_path / "full" / "a", 1)
    assert [s.name for s in discover_sources([tmp_path / "full"], recursive=True)] == ["a"]


@pytest.mark.parametrize("fps", [-10.0, 0.0, float("nan")])
def test_convert_refuses_a_bad_fps(tmp_path, fps):
    # `vavam tokenize convert --fps -10` sorted the frames by negative times (every scene reversed, silently);
    # 0 / NaN wrote INT64_MIN timestamps and a NaN rate into the manifest
    from vavam.data.tokenize import convert_npy_layout

    folder = tmp_path / "tokens" / "chan" / "vid"
    folder.mkdir(parents=True)
    for i in range(1, 5):
        np.save(folder / f"t_{i:06d}.npy", np.full((2, 3), i, np.uint16))
    with pytest.raises(ValueError, match=r"--fps"):
        convert_npy_layout(tmp_path / "tokens", tmp_path / "store", fps=fps, codebook_size=16, progress=False)
    assert not (tmp_path / "store").exists()
    manifest = convert_npy_layout(tmp_path / "tokens", tmp_path / "store", fps=10.0, codebook_size=16, progress=False)
    entry = json.loads(Path(manifest).read_text())["scenes"]["chan/vid"]
    assert np.load(tmp_path / "store" / entry["file"])[:, 0, 0].tolist() == [1, 2, 3, 4]
    assert np.load(tmp_path / "store" / entry["timestamps_file"]).tolist() == [0, 100_000, 200_000, 300_000]


@pytest.mark.parametrize("shard", [(2, 2), (0, 0), (-1, 2)])
def test_tuple_shard_is_checked_like_a_string(tmp_path, shard):
    # tokenize_sources(shard=(2, 2)) took names[2::2] (nothing) and wrote manifest.part-002-of-002.json, a part
    # no "i/N" run can write; (0, 0) died on a zero slice step
    make_images(tmp_path / "imgs" / "a", 2)
    make_images(tmp_path / "imgs" / "b", 2)
    sources = [FrameSource.from_image_folder(tmp_path / "imgs" / n) for n in "ab"]
    with pytest.raises(ValueError, match=r"shard"):
        tokenize_sources(sources, tmp_path / "store", tiny_tokenizer(), size=(32, 48), shard=shard, progress=False)
    assert not (tmp_path / "store").exists()
    # the two shards of (i, 2) partition the scenes
    got = []
    for i in range(2):
        part = tokenize_sources(sources, tmp_path / "ok", tiny_tokenizer(), size=(32, 48), shard=(i, 2), progress=False)
        got += sorted(json.loads(Path(part).read_text())["scenes"])
    assert got == ["a", "b"]
