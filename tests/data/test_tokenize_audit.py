"""Audit of tokenization and token stores: a killed shard's part, frame order of name / given timestamps,
videos whose timestamps run backwards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from test_frames import make_images  # pytest puts this folder on sys.path (rootdir-relative test modules)
from test_tokens import FakeTokenizer, make_sources

from vavam.data.frames import FrameError, FrameSource
from vavam.data.tokenize import tokenize_sources
from vavam.data.tokens import MANIFEST, TokenStore, TokenStoreError, merge_manifests


def test_first_merge_refuses_the_part_of_a_killed_shard(tmp_path):
    """Shard 0/2 (a_scene, c_scene) dies in its first scene, shard 1/2 (b_scene, d_scene) finishes: the killed
    shard's part already existed (written when its writer started), so the merge used to write a manifest.json
    of b_scene and d_scene only, silently. It now refuses, naming the shard; the re-run finishes it."""
    sources = make_sources(tmp_path)
    out = tmp_path / "store"
    tokenize_sources(sources, out, FakeTokenizer(), shard="1/2", progress=False)
    with pytest.raises(KeyboardInterrupt):
        tokenize_sources(sources, out, FakeTokenizer(fail_after=1), shard="0/2", batch_size=2, progress=False)
    assert (out / "manifest.part-000-of-002.json").is_file()
    with pytest.raises(TokenStoreError, match=r"1 shard\(s\) did not finish \(0/2; .*manifest\.part-000-of-002"):
        merge_manifests(out)
    assert not (out / MANIFEST).exists()
    merge_manifests(out, allow_missing=True)  # what is there, when asked for
    assert TokenStore(out).scenes == ["b_scene", "d_scene"]
    (out / MANIFEST).unlink()
    tokenize_sources(sources, out, FakeTokenizer(), shard="0/2", progress=False)  # the re-run finishes shard 0
    merge_manifests(out, remove_parts=True)
    store = TokenStore(out)
    assert store.scenes == ["a_scene", "b_scene", "c_scene", "d_scene"]
    assert [store.num_frames(s) for s in store.scenes] == [5, 3, 7, 4]
    assert "complete" not in json.loads((out / MANIFEST).read_text())


def test_a_shard_whose_every_scene_failed_is_finished(tmp_path):
    """--skip-bad and every scene of a shard bad: the shard finished (its scenes were reported), so it leaves an
    empty marker and the merge does not ask to run it again."""
    good = make_images(tmp_path / "imgs" / "a", 3, h=16, w=24)
    bad_file = tmp_path / "imgs" / "b" / "000.png"
    bad_file.parent.mkdir(parents=True)
    bad_file.write_bytes(b"not a png")
    sources = [FrameSource.from_files("a", good, [0, 100_000, 200_000]), FrameSource.from_files("b", [bad_file], [0])]
    out = tmp_path / "store"
    failed: list[str] = []
    tokenize_sources(sources, out, FakeTokenizer(), shard="1/2", progress=False,
                     on_bad_scene=lambda name, exc: failed.append(name))
    assert failed == ["b"] and (out / "manifest.part-001-of-002.empty").is_file()
    tokenize_sources(sources, out, FakeTokenizer(), shard="0/2", progress=False)
    merge_manifests(out)
    assert TokenStore(out).scenes == ["a"]


def _nuscenes_folder(root: Path, stamps: list[tuple[str, int]]) -> Path:
    """Images named ``<log>__CAM_FRONT__<µs>.png`` in one folder."""
    folder = root / "CAM_FRONT"
    make_images(folder, len(stamps), h=16, w=24, names=[f"{log}__CAM_FRONT__{us}.png" for log, us in stamps])
    return folder


def test_name_timestamps_out_of_file_order_are_refused_before_decoding(tmp_path):
    """Two nuScenes logs in one folder: the files sort by log name (n008 before n015) but n015 was recorded earlier,
    so the timestamps go back in time at the 3rd frame. The scene used to be decoded and encoded whole, then refused
    by the store with "scene 'CAM_FRONT': timestamps are not non-decreasing" (a ValueError that --skip-bad does not
    skip, naming no file); it is now a FrameError naming the two frames, raised before anything is decoded."""
    a, b = "n008-2018-08-01-15-16-36-0400", "n015-2018-07-18-11-07-57+0800"
    folder = _nuscenes_folder(tmp_path, [(a, 1533151603512404), (a, 1533151604012404), (b, 1531883530412470)])
    with pytest.raises(FrameError, match=rf"scene 'CAM_FRONT': frames do not go forward in time by their names: "
                                         rf".*{re.escape(b)}__CAM_FRONT__1531883530412470\.png is at "
                                         rf"1531883530412470 µs and the frame before it, "
                                         rf".*{re.escape(a)}__CAM_FRONT__1533151604012404\.png"):
        FrameSource.from_image_folder(folder)
    good = _nuscenes_folder(tmp_path / "one_log", [(a, 1533151603512404), (a, 1533151604012404)])
    assert FrameSource.from_image_folder(good).timestamps_us.tolist() == [1533151603512404, 1533151604012404]


def test_given_timestamps_that_go_back_are_refused_naming_the_frames(tmp_path):
    """from_files with timestamps that decrease (a list in the wrong order): refused up front, naming the frames;
    equal timestamps stay allowed (the store's rule is non-decreasing)."""
    files = make_images(tmp_path / "s", 3, h=16, w=24)
    with pytest.raises(FrameError, match=r"scene 's': frames do not go forward in time .*f_000003\.png is at 100 µs"):
        FrameSource.from_files("s", files, [0, 200, 100])
    assert FrameSource.from_files("s", files, [0, 100, 100]).timestamps_us.tolist() == [0, 100, 100]


class _FakeFrame:
    def __init__(self, pts: int) -> None:
        self.pts = pts

    def to_ndarray(self, format: str) -> np.ndarray:  # noqa: A002 - PyAV's name
        assert format == "rgb24"
        return np.full((16, 24, 3), self.pts % 256, dtype=np.uint8)


class _FakeContainer:
    """Stands in for a PyAV container whose one video stream decodes frames with the given pts (time base 1 ms)."""

    def __init__(self, pts: list[int]) -> None:
        from fractions import Fraction
        from types import SimpleNamespace

        self.pts = pts
        stream = SimpleNamespace(frames=len(pts), time_base=Fraction(1, 1000), average_rate=Fraction(10),
                                 thread_type="")
        self.streams = SimpleNamespace(video=[stream])

    def decode(self, stream):
        return iter(_FakeFrame(p) for p in self.pts)

    def close(self) -> None:
        pass


# a video whose stream restarts at 0 after 3 frames (two recordings concatenated without re-timing)
RESTART_PTS = [0, 100, 200, 0, 100, 200, 300]


@pytest.mark.parametrize("fps", [None, 10.0])
def test_video_timestamps_going_back_raise_naming_file_and_frame(tmp_path, monkeypatch, fps):
    """Kept at its own rate, the video used to be decoded and encoded whole, then refused by the store ("timestamps
    are not non-decreasing", a ValueError naming no file, not skipped by --skip-bad); resampled to 10 fps, its
    frames 3..5 fell into past slots and were dropped silently and frame 6 (of the second recording) was kept as
    if it followed frame 2: [0, 100, 200, 300] ms. Both raise a FrameError naming the file and frame 3 now."""
    import av

    monkeypatch.setattr(av, "open", lambda path: _FakeContainer(RESTART_PTS))
    video = tmp_path / "drive.mp4"
    source = FrameSource(name="drive", path=video, kind="video", fps=fps, timestamps_from="pts")
    with pytest.raises(FrameError, match=r"drive\.mp4 \(frame 3\): timestamp 0 µs is before the previous frame's "
                                         r"200000 µs"):
        list(source.frames())


def test_video_timestamp_jitter_is_not_a_restart(tmp_path, monkeypatch):
    """Resampled to 10 fps, a frame a few ms before the previous one (timestamp jitter) is no error: it is dropped
    as a frame of a slot already taken."""
    import av

    monkeypatch.setattr(av, "open", lambda path: _FakeContainer([0, 100, 98, 200, 300]))
    source = FrameSource(name="drive", path=tmp_path / "drive.mp4", kind="video", fps=10.0, timestamps_from="pts")
    assert [f.timestamp_us for f in source.frames()] == [0, 100_000, 200_000, 300_000]
