"""OpenDV-YouTube source: metadata formats, exact trimming (checked by hand), splits, frames, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from vavam.data.frames import FrameSource
from vavam.data.sources import SourceError
from vavam.data.sources.opendv import (
    OpenDVVideoSource,
    find_opendv_videos,
    load_opendv,
    opendv_video_id,
    read_opendv_metadata,
    write_opendv_frames,
    write_split_lists,
    youtube_id,
)

SIZE = 64


def make_video(path: Path, n: int, fps: int, first_pts: int = 0) -> Path:
    """``n`` frames at ``fps``; frame ``i`` shows ``16*(i%16)+8`` on its left half and ``16*(i//16)+8`` on its right.

    ``first_pts``: pts of frame 0 (in frames), for a stream whose timestamps start later than 0.
    """
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 2_000_000
        for i in range(n):
            arr = np.empty((SIZE, SIZE, 3), np.uint8)
            arr[:, : SIZE // 2] = 16 * (i % 16) + 8
            arr[:, SIZE // 2 :] = 16 * (i // 16) + 8
            frame = av.VideoFrame.from_ndarray(arr, format="rgb24")
            frame.pts = first_pts + i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def frame_number(image) -> int:
    """Source frame index shown by a decoded frame (float [3, H, W] in [-1, 1])."""
    px = (image[0] + 1) * 127.5
    lo = round((float(px[SIZE // 2, SIZE // 4]) - 8) / 16)
    hi = round((float(px[SIZE // 2, 3 * SIZE // 4]) - 8) / 16)
    return 16 * hi + lo


def official_rows() -> list[dict]:
    return [
        {
            "ID": 1,
            "videoid": "-abc_DEF12",
            "youtuber": "Road Trips",
            "split": "Train",
            "subset": "Mini",
            "start_discard": 1.5,
            "end_discard": 2,
            "duration": "00:06",
            "length": 6,
        },
        {
            "ID": 2,
            "videoid": "q-9Z",
            "youtuber": "Other",
            "split": "Val",
            "subset": "Full",
            "start_discard": 0.55,
            "end_discard": 1.2,
            "duration": "0:03",
            "length": 3,
        },
        {
            "ID": 3,
            "videoid": "plain10",
            "youtuber": "Other",
            "split": "Train",
            "subset": "Full",
            "start_discard": 0,
            "end_discard": 0,
            "duration": "0:04",
            "length": 4,
        },
    ]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Videos in the official layout + the three metadata forms."""
    root = tmp_path_factory.mktemp("opendv")
    make_video(root / "videos" / "Road_Trips" / "-abc_DEF12.mp4", 180, 30)  # 6 s at 30 fps
    make_video(root / "videos" / "Other" / "q-9Z.mp4", 75, 25)  # 3 s at 25 fps
    make_video(root / "videos" / "Other" / "plain10.mkv", 40, 10)  # 4 s at 10 fps
    (root / "OpenDV-YouTube.json").write_text(json.dumps(official_rows()))
    headers = {
        "ID": "ID",
        "videoid": "VideoID",
        "youtuber": "Youtuber",
        "split": "Train / Val",
        "subset": "Mini / Full Set",
        "start_discard": "Discarded Length at the Begininning (second)",
        "end_discard": "Discarded Length at the Ending (second)",
        "duration": "Duration",
    }
    with open(root / "OpenDV-YouTube.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(headers.values())
        for r in official_rows():
            w.writerow([r[k] for k in headers])
    # VaViM metadata.csv: tab separated, '@' for a leading '-', no channel column.
    lines = ["video_id\tdiscard_start\tdiscard_end\tsplit\tcontainer\tduration"]
    for r in official_rows():
        lines.append(
            f"{opendv_video_id(r['videoid'])}\t{r['start_discard']}\t{r['end_discard']}\t"
            f"{r['split'].lower()}\t{'mkv' if r['videoid'] == 'plain10' else 'mp4'}\t{r['length']}"
        )
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root


# ------------------------------------------------------------------------------ metadata


def test_ids_roundtrip():
    assert opendv_video_id("-abc-d") == "@abc-d" and youtube_id("@abc-d") == "-abc-d"
    assert opendv_video_id("ab-c") == "ab-c" and youtube_id("ab-c") == "ab-c"


@pytest.mark.parametrize("name", ["OpenDV-YouTube.json", "OpenDV-YouTube.csv", "metadata.csv"])
def test_metadata_formats_agree(dataset, name):
    videos = read_opendv_metadata(dataset / name)
    assert [v.video_id for v in videos] == ["@abc_DEF12", "q-9Z", "plain10"]
    assert [v.split for v in videos] == ["train", "val", "train"]
    assert [(v.discard_start, v.discard_end) for v in videos] == [(1.5, 2.0), (0.55, 1.2), (0.0, 0.0)]
    assert [v.duration for v in videos] == [6.0, 3.0, 4.0]
    assert videos[0].youtube_id == "-abc_DEF12"
    if name != "metadata.csv":
        assert [v.channel for v in videos] == ["Road_Trips", "Other", "Other"]  # spaces -> _
        assert [v.subset for v in videos] == ["Mini", "Full", "Full"]
    else:
        assert [v.channel for v in videos] == ["", "", ""] and videos[2].container == "mkv"


def test_find_videos_by_id(dataset):
    found = find_opendv_videos(dataset / "videos")
    assert sorted(found) == ["@abc_DEF12", "plain10", "q-9Z"]
    assert found["@abc_DEF12"].name == "-abc_DEF12.mp4"


# ------------------------------------------------------------------------------ trimming


def test_trim_30fps_by_hand(dataset):
    # 6 s at 30 fps, discard 1.5 s / 2 s -> keep t in [1.5, 4.0): 10 fps slots 15..39 = 25 frames,
    # source frames 45, 48, ..., 117 (one every 3rd), timestamps 1.5 s, 1.6 s, ..., 3.9 s.
    (src,) = load_opendv(dataset / "OpenDV-YouTube.json", dataset / "videos", split="train", subset="Mini")
    assert isinstance(src, OpenDVVideoSource) and src.name == "@abc_DEF12"
    assert (src.trim_start_s, src.trim_end_s, src.num_frames_hint) == (1.5, 4.0, 25)
    frames = list(src.frames())
    assert [f.timestamp_us for f in frames] == [1_500_000 + 100_000 * k for k in range(25)]
    assert [frame_number(f.image) for f in frames] == list(range(45, 120, 3))
    assert [f.index for f in frames] == list(range(25))


def test_trim_25fps_by_hand(dataset):
    # 3 s at 25 fps (frames every 0.04 s), discard 0.55 s / 1.2 s -> keep t in [0.55, 1.8). The first
    # frame of each 0.1 s slot: 0.56, 0.60, 0.72, 0.80, 0.92, 1.00, 1.12, 1.20, 1.32, 1.40, 1.52, 1.60, 1.72.
    (src,) = load_opendv(dataset / "OpenDV-YouTube.json", dataset / "videos", split="val")
    frames = list(src.frames())
    times = [0.56, 0.60, 0.72, 0.80, 0.92, 1.00, 1.12, 1.20, 1.32, 1.40, 1.52, 1.60, 1.72]
    assert [f.timestamp_us for f in frames] == [round(t * 1e6) for t in times]
    assert [frame_number(f.image) for f in frames] == [round(t * 25) for t in times]


def test_trim_reference_mode(dataset):
    # The authors' ffmpeg span: [start, min(D, D - end + start)) = [1.5, 5.5) -> 40 frames.
    (src,) = load_opendv(
        dataset / "metadata.csv", dataset / "videos", split="train", trim="reference", video_ids=["-abc_DEF12"]
    )
    assert (src.trim_start_s, src.trim_end_s) == (1.5, 5.5)
    frames = list(src.frames())
    assert len(frames) == 40 and frames[-1].timestamp_us == 5_400_000


def test_no_trim_10fps_keeps_every_frame_and_resizes(dataset):
    (src,) = load_opendv(dataset / "metadata.csv", dataset / "videos", split="train", video_ids=["plain10"])
    frames = list(src.frames(size=(16, 32)))
    assert len(frames) == 40 and frames[0].image.shape == (3, 16, 32)
    assert [f.timestamp_us for f in frames] == [100_000 * k for k in range(40)]


# ------------------------------------------------------------------------------ splits and frames


def test_splits_and_split_lists(dataset, tmp_path):
    train = load_opendv(dataset / "OpenDV-YouTube.csv", dataset / "videos", split="Train")
    val = load_opendv(dataset / "OpenDV-YouTube.csv", dataset / "videos", split="val")
    assert [s.name for s in train] == ["@abc_DEF12", "plain10"] and [s.name for s in val] == ["q-9Z"]
    assert train.split == "Train" and train.skipped.rows == []
    paths = write_split_lists(read_opendv_metadata(dataset / "metadata.csv"), tmp_path)
    assert json.loads(paths["train"].read_text()) == ["@abc_DEF12", "plain10"]
    assert json.loads(paths["val"].read_text()) == ["q-9Z"]


def test_write_frames_authors_layout(dataset, tmp_path):
    (src,) = load_opendv(dataset / "OpenDV-YouTube.json", dataset / "videos", split="val")
    folder = write_opendv_frames(src, tmp_path / "frames512")
    assert folder == tmp_path / "frames512" / "Other" / "q-9Z"
    names = sorted(p.name for p in folder.glob("*.jpg"))
    assert names == [f"f_{k:06d}.jpg" for k in range(1, 14)]
    from PIL import Image

    with Image.open(folder / "f_000001.jpg") as im:
        assert im.size == (512, 288)
    back = FrameSource.from_image_folder(folder)
    assert back.timestamps_us.tolist() == [
        round(t * 1e6) for t in (0.56, 0.60, 0.72, 0.80, 0.92, 1.00, 1.12, 1.20, 1.32, 1.40, 1.52, 1.60, 1.72)
    ]


# ------------------------------------------------------------------------------ bad input


def _meta(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "meta.json"
    path.write_text(json.dumps(rows))
    return path


def _row(vid: str, split: str = "Train", start=0.5, end=0.5, channel="C") -> dict:
    return {"videoid": vid, "youtuber": channel, "split": split, "start_discard": start, "end_discard": end}


def test_missing_video_raises_or_is_skipped(tmp_path):
    make_video(tmp_path / "videos" / "C" / "good.mp4", 30, 10)
    meta = _meta(tmp_path, [_row("good"), _row("-gone")])
    with pytest.raises(SourceError, match=r"'@gone'.*video file is missing"):
        load_opendv(meta, tmp_path / "videos")
    got = load_opendv(meta, tmp_path / "videos", skip_bad=True)
    assert [s.name for s in got] == ["good"]
    assert got.skipped.scenes == 1 and got.skipped.rows[0][0] == "@gone"
    assert "skipped 0 frame(s) and 1 scene(s)" == got.skipped.summary()


def test_corrupt_and_truncated_videos(tmp_path):
    videos = tmp_path / "videos" / "C"
    videos.mkdir(parents=True)
    (videos / "junk.mp4").write_bytes(b"\x00not a video" * 100)
    good = make_video(tmp_path / "full.mp4", 60, 10).read_bytes()
    (videos / "cutmp4.mp4").write_bytes(good[: len(good) // 2])  # moov atom lost: unreadable
    whole = make_video(tmp_path / "full.mkv", 60, 10).read_bytes()
    (videos / "cutmkv.mkv").write_bytes(whole[: len(whole) * 6 // 10])  # header says 6 s, data stops near 3 s
    meta = _meta(tmp_path, [_row("junk"), _row("cutmp4"), _row("cutmkv")])
    for vid in ("junk", "cutmp4"):
        with pytest.raises(SourceError, match=rf"'{vid}'.*cannot open video"):
            load_opendv(meta, tmp_path / "videos", video_ids=[vid])
    (src,) = load_opendv(meta, tmp_path / "videos", video_ids=["cutmkv"])  # opens fine ...
    with pytest.raises(SourceError, match=r"'cutmkv'.*truncated"):  # ... but ends early
        list(src.frames())
    got = load_opendv(meta, tmp_path / "videos", skip_bad=True)
    assert [s.name for s in got] == ["cutmkv"] and got.skipped.scenes == 2


def test_nothing_left_after_trimming(tmp_path):
    make_video(tmp_path / "videos" / "C" / "short.mp4", 20, 10)  # 2 s
    meta = _meta(tmp_path, [_row("short", start=1.0, end=1.0)])
    with pytest.raises(SourceError, match=r"'short'.*nothing left after trimming"):
        load_opendv(meta, tmp_path / "videos")
    assert len(load_opendv(meta, tmp_path / "videos", skip_bad=True).skipped.rows) == 1


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"videoid": "a", "split": "Train", "start_discard": -1, "end_discard": 0}, r"row 1: .*discard_start"),
        ({"videoid": "a", "split": "Train", "start_discard": "soon", "end_discard": 0}, r"row 1: .*bad discard_start"),
        ({"videoid": "a", "start_discard": 0, "end_discard": 0}, r"row 1: .*no split"),
        ({"youtuber": "x", "split": "Train", "start_discard": 0, "end_discard": 0}, r"row 1: no video id"),
    ],
)
def test_bad_metadata_rows(tmp_path, row, message):
    (tmp_path / "videos").mkdir()
    meta = _meta(tmp_path, [row])
    with pytest.raises(SourceError, match=message):
        load_opendv(meta, tmp_path / "videos")
    got = load_opendv(meta, tmp_path / "videos", skip_bad=True)
    assert len(got) == 0 and got.skipped.scenes == 1


def test_duplicate_ids_and_unreadable_metadata(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(SourceError, match=r"row 2: video 'a' is listed twice"):
        load_opendv(_meta(tmp_path, [_row("a"), _row("a")]), tmp_path / "videos")
    with pytest.raises(SourceError, match="metadata file is missing"):
        load_opendv(tmp_path / "nope.json", tmp_path / "videos")
    (tmp_path / "broken.json").write_text("[{")
    with pytest.raises(SourceError, match="not valid JSON"):
        load_opendv(tmp_path / "broken.json", tmp_path / "videos")


# ------------------------------------------------------------------------------ regressions


def test_prepare_split_names_are_lower_cased(tmp_path):
    """--splits Train (the official sheet's spelling): OUT/train.json lists the video, no OUT/Train.json."""
    from vavam.data.prepare import prepare_opendv

    make_video(tmp_path / "videos" / "C" / "v1.mp4", 30, 10)
    meta = _meta(tmp_path, [_row("v1", start=0, end=0)])
    summary = prepare_opendv(meta, tmp_path / "videos", tmp_path / "o", splits=("Train",), progress=False)
    assert json.loads((tmp_path / "o" / "train.json").read_text()) == ["v1"]
    assert not (tmp_path / "o" / "Train.json").exists() and list(summary["splits"]) == ["train"]
    videos = read_opendv_metadata(meta)
    assert json.loads(write_split_lists(videos, tmp_path / "w", splits=["VAL", "Train"])["train"].read_text()) == ["v1"]
    assert sorted(p.name for p in (tmp_path / "w").iterdir()) == ["train.json", "val.json"]


def test_missing_discard_values_get_the_extractor_defaults(tmp_path, capsys):
    """A row without discard values gets 90 s (start) / 60 s (end), as the official extractor (datasets.md §3.2)."""
    from vavam.data.prepare import prepare_opendv

    (tmp_path / "videos" / "C").mkdir(parents=True)
    (tmp_path / "videos" / "C" / "long.mp4").write_bytes(b"not decoded: check_videos=False")
    meta = _meta(tmp_path, [{"videoid": "long", "youtuber": "C", "split": "Train", "duration": "0:03:00"},
                            {"videoid": "half", "youtuber": "C", "split": "Train", "start_discard": 1.0}])
    long, half = read_opendv_metadata(meta)
    assert (long.discard_start, long.discard_end, long.defaulted) == (90.0, 60.0, ("discard_start", "discard_end"))
    assert (half.discard_start, half.discard_end, half.defaulted) == (1.0, 60.0, ("discard_end",))
    (src,) = load_opendv(meta, tmp_path / "videos", check_videos=False, video_ids=["long"])
    assert (src.trim_start_s, src.trim_end_s) == (90.0, 120.0)
    make_video(tmp_path / "videos" / "C" / "short.mp4", 30, 10)  # 3 s: nothing is left after the defaults
    meta = _meta(tmp_path, [{"videoid": "short", "youtuber": "C", "split": "Train"}])
    with pytest.raises(SourceError, match=r"'short'.*nothing left after trimming.*discard_start 90 s"):
        load_opendv(meta, tmp_path / "videos")
    summary = prepare_opendv(meta, tmp_path / "videos", tmp_path / "o", splits=("train",), skip_bad=True,
                             progress=False)
    assert summary["splits"]["train"]["discard_defaults"] == {"short": ["discard_start", "discard_end"]}
    assert "using the official extractor's defaults 90 s (start) / 60 s (end)" in capsys.readouterr().out


def make_webm(path: Path, video_s: float, audio_s: float) -> Path:
    """A 10 fps VP8 webm of ``video_s`` seconds (frame ``i`` is grey ``8 i``) with ``audio_s`` seconds of Opus
    silence (none for 0); skips the test when PyAV lacks libvpx / libopus."""
    import av

    if not {"libvpx", "libopus"} <= set(av.codecs_available):
        pytest.skip("PyAV built without libvpx / libopus")
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libvpx", rate=10)
        video.width = video.height = SIZE
        video.pix_fmt = "yuv420p"
        audio = container.add_stream("libopus", rate=48000) if audio_s else None
        n_video, n_audio, v, a = round(video_s * 10), round(audio_s * 48000), 0, 0
        while v < n_video or (audio is not None and a < n_audio):  # interleaved by time, as a muxer writes them
            if v < n_video and (audio is None or a >= n_audio or v / 10 <= a / 48000):
                frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), (v * 8) % 256, np.uint8), format="rgb24")
                frame.pts, v = v, v + 1
                for packet in video.encode(frame):
                    container.mux(packet)
            else:
                frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.int16), format="s16", layout="mono")
                frame.sample_rate, frame.pts, a = 48000, a, a + 960
                for packet in audio.encode(frame):
                    container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode() if stream is not None else ():
                container.mux(packet)
    return path


def test_webm_with_audio_longer_than_video_is_not_truncated(tmp_path):
    """The end cut uses the video stream's own end, not the container's (audio-inclusive) duration."""
    make_webm(tmp_path / "videos" / "C" / "wa.webm", 3.0, 4.0)
    meta = _meta(tmp_path, [_row("wa", start=0.5, end=0)])
    (src,) = load_opendv(meta, tmp_path / "videos")
    assert src.trim_end_s == pytest.approx(3.0)
    stamps = [f.timestamp_us for f in src.frames()]
    assert len(stamps) == 25 and stamps[0] == 500_000 and stamps[-1] == 2_900_000


@pytest.mark.parametrize("audio_s", [4.0, 0.0])
def test_webm_cut_short_by_a_few_frames_is_truncated(tmp_path, audio_s):
    """A webm whose data stops ~0.3 s (3 frames) before its declared end is refused as truncated: the probe allows
    1.5 frames, as the decoder does (it allowed 0.5 s, so such files passed with their last frames missing)."""
    import av

    full = make_webm(tmp_path / "full.webm", 4.0, audio_s)
    with av.open(str(full)) as container:  # byte offset of the first packet of the last 0.3 s
        cut = min(p.pos for p in container.demux() if p.pts is not None and p.pos is not None and p.pos > 0
                  and float(p.pts * p.stream.time_base) >= 3.7 - 1e-6)
    cut_path = tmp_path / "videos" / "C" / "cut.webm"
    cut_path.parent.mkdir(parents=True)
    cut_path.write_bytes(full.read_bytes()[:cut])
    meta = _meta(tmp_path, [_row("cut", start=0, end=0)])
    with pytest.raises(SourceError, match=r"'cut'.*cut\.webm: video ends at 3\.[56]00 s, before the end of the kept "
                                          r"span \(4\.0\d\d s.*truncated\?"):
        (src,) = load_opendv(meta, tmp_path / "videos")
        list(src.frames(size=(16, 16)))


def test_mkv_whose_timestamps_start_late_is_not_truncated(tmp_path):
    """Matroska declares its end timestamp as the duration: a file whose timestamps start at 1.5 s (cut with stream
    copy) is 6 s long, not 7.5 s, and is not truncated; one cut short still is."""
    path = make_video(tmp_path / "videos" / "C" / "late.mkv", 60, 10, first_pts=15)  # pts 1.5 s ... 7.4 s
    meta = _meta(tmp_path, [_row("late", start=1.0, end=1.0), _row("latecut", start=1.0, end=1.0)])
    (src,) = load_opendv(meta, tmp_path / "videos", video_ids=["late"])
    assert (src.trim_start_s, src.trim_end_s) == (1.0, pytest.approx(5.0))
    frames = list(src.frames())  # stream times [1, 5) s = presentation times [2.5, 6.5) s
    assert [frame_number(f.image) for f in frames] == list(range(10, 50))
    assert [f.timestamp_us for f in frames] == [2_500_000 + 100_000 * k for k in range(40)]
    whole = path.read_bytes()
    (path.parent / "latecut.mkv").write_bytes(whole[: len(whole) * 6 // 10])
    (cut,) = load_opendv(meta, tmp_path / "videos", video_ids=["latecut"])
    with pytest.raises(SourceError, match=r"'latecut'.*truncated"):
        list(cut.frames())


def test_write_frames_with_vavim_metadata_uses_the_video_folder_as_channel(dataset, tmp_path):
    """The VaViM metadata.csv has no channel column: the frames still go to frames512/<channel>/<video id>/, the
    channel being the folder of the video file (videos/<channel>/<id>.mp4), as in the authors' extraction."""
    (src,) = load_opendv(dataset / "metadata.csv", dataset / "videos", split="val")
    assert src.video.channel == "" and src.extra["channel"] == "Other"
    folder = write_opendv_frames(src, tmp_path / "frames512", size=(16, 32))
    assert folder == tmp_path / "frames512" / "Other" / "q-9Z"
    assert len(list(folder.glob("f_*.jpg"))) == 13


def test_requested_video_ids_must_be_in_the_metadata(dataset):
    """A video id that the metadata does not list (a typo) is refused, naming it, instead of selecting nothing."""
    message = r"metadata\.csv: 1 requested OpenDV video\(s\) not in the metadata.*plain1\b"
    with pytest.raises(SourceError, match=message):
        load_opendv(dataset / "metadata.csv", dataset / "videos", split="train", video_ids=["plain1"])
    # listed but of the other split: filtered, not an error; a single id may be given as a string
    assert len(load_opendv(dataset / "metadata.csv", dataset / "videos", split="train", video_ids=["q-9Z"])) == 0
    (src,) = load_opendv(dataset / "metadata.csv", dataset / "videos", split="train", video_ids="plain10")
    assert src.name == "plain10"
