"""Token store: round trip, memmap windows, timestamp join, resume, crash safety, shards, npy conversion."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vavam.data.frames import FrameSource, discover_sources
from vavam.data.records import SceneRecord, save_records
from vavam.data.tokenize import (
    convert_npy_layout,
    merge_manifests,
    parse_shard,
    select_shard,
    tokenize,
    tokenize_sources,
)
from vavam.data.tokens import (
    MANIFEST,
    TokenStore,
    TokenStoreError,
    TokenStoreWriter,
    read_manifest,
    write_synthetic_store,
)

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from test_frames import make_images, make_video  # noqa: E402


class FakeTokenizer:
    """Deterministic stand-in: mean of each ``ds x ds`` patch of channel 0, quantised to ``codebook_size`` codes."""

    def __init__(self, downsample: int = 4, codebook_size: int = 256, fail_after: int | None = None) -> None:
        self.downsample = downsample
        self.codebook_size = codebook_size
        self.calls = 0
        self.fail_after = fail_after

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("simulated Ctrl-C inside the encoding loop")
        pooled = F.avg_pool2d(images[:, :1].float(), self.downsample)[:, 0]
        return ((pooled + 1) / 2 * (self.codebook_size - 1)).round().long().clamp(0, self.codebook_size - 1)


def make_sources(root: Path) -> list[FrameSource]:
    make_images(root / "imgs" / "a_scene", 5, h=16, w=24, seed=1)
    make_images(root / "imgs" / "b_scene", 3, h=16, w=24, seed=2)
    make_video(root / "vids" / "c_scene.mp4", 7, h=16, w=24)
    make_images(root / "imgs" / "d_scene", 4, h=16, w=24, seed=3)
    return discover_sources([str(root / "imgs" / "*"), root / "vids" / "c_scene.mp4"])


def expected_tokens(source: FrameSource, tok: FakeTokenizer) -> np.ndarray:
    images = torch.stack([f.image for f in source.frames()])
    return tok.encode(images).numpy().astype(np.uint16)


def store_arrays(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    store = TokenStore(root)
    return {s: (np.array(store.tokens(s)), store.timestamps(s).copy()) for s in store.scenes}


# ------------------------------------------------------------------------------ round trip


def test_round_trip_and_manifest(tmp_path):
    sources = make_sources(tmp_path)
    tok = FakeTokenizer()
    out = tmp_path / "store"
    path = tokenize_sources(sources, out, tok, batch_size=2, progress=False, fps=10.0)
    assert path == out / "manifest.json"
    store = TokenStore(out)
    assert store.scenes == ["a_scene", "b_scene", "c_scene", "d_scene"]
    assert store.grid == (4, 6) and store.image_size == (16, 24) and store.downsample == 4
    assert store.codebook_size == 256
    for src in sources:
        arr = store.tokens(src.name)
        assert isinstance(arr, np.memmap) and arr.dtype == np.uint16
        np.testing.assert_array_equal(arr, expected_tokens(src, FakeTokenizer()))
    assert store.timestamps("a_scene").tolist() == [0, 100_000, 200_000, 300_000, 400_000]
    assert store.timestamps("c_scene").tolist() == [i * 100_000 for i in range(7)]
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "vavam-token-store" and m["version"] == 1 and m["dtype"] == "uint16"
    e = m["scenes"]["c_scene"]
    assert e["num_frames"] == 7 and e["file"] == "scenes/c_scene.npy" and e["source"].endswith("c_scene.mp4")
    assert e["bytes"] == (out / e["file"]).stat().st_size
    assert m["tokenizer_hash"] and m["tokenizer"]["class"] == "FakeTokenizer"


def test_window_and_starts(tmp_path):
    store = write_synthetic_store(tmp_path / "s", num_scenes=2, num_frames=20, grid=(3, 4))
    full = np.array(store.tokens("scene_0001"))
    w = store.window("scene_0001", start=2, num_frames=4, stride=5)
    assert w.shape == (4, 3, 4) and not isinstance(w, np.memmap)
    np.testing.assert_array_equal(w, full[[2, 7, 12, 17]])
    assert store.window_starts("scene_0001", 4, 5) == range(0, 5)
    np.testing.assert_array_equal(store.window("scene_0001", 4, 4, 5), full[[4, 9, 14, 19]])
    with pytest.raises(IndexError, match="scene_0001.*needs frames 5..20.*has 20"):
        store.window("scene_0001", 5, 4, 5)


def _timed_store(root: Path, scenes: dict[str, tuple[np.ndarray, float | None]], fps: float | None) -> TokenStore:
    """A store of 1x1-token scenes with the given timestamps (µs) and scene rates, store rate ``fps``."""
    writer = TokenStoreWriter(root, (1, 1), codebook_size=16, fps=fps, resume=False)
    for name, (ts, rate) in scenes.items():
        writer.write_scene(name, np.zeros((len(ts), 1, 1), dtype=np.uint16), ts, fps=rate)
    return TokenStore(root)


def test_steady_window_starts_leave_out_a_missing_frame(tmp_path):
    tenth = 100_000
    gap = np.array([i * tenth for i in range(31) if i != 12], dtype=np.int64)  # 10 Hz, frame 12 missing: 30 frames
    n24 = np.ceil(np.arange(30) * 2.4 - 1e-9)  # first 24 fps frame at or after each 100 ms slot (OpenDV's 10 Hz)
    resampled = (n24 * 1e6 / 24).round().astype(np.int64)
    assert set((np.diff(resampled) // 1000).tolist()) == {83, 125}  # uneven steps (ms), none missing
    store = _timed_store(tmp_path / "s", {"gap": (gap, 10.0), "resampled": (resampled, 10.0),
                                          "store_rate": (gap, None)}, fps=10.0)
    # windows of 3 frames at stride 5 (starts 0..19) take the steps from s and s + 5; the step from frame i
    # lasts 600 ms for i = 7..11 (it crosses the missing frame), so starts 2..11 are left out
    expected = [0, 1, *range(12, 20)]
    assert store.steady_window_starts("gap", 3, 5).tolist() == expected
    assert store.steady_window_starts("store_rate", 3, 5).tolist() == expected  # the store's rate when the scene has none
    assert store.steady_window_starts("resampled", 3, 5).tolist() == list(range(20))
    assert store.steady_window_starts("gap", 1, 5).tolist() == list(range(30))  # one frame: no step
    # stride 1, 2 frames: only the step from frame 11 (to the frame recorded at 1.3 s) is uneven
    assert store.steady_window_starts("gap", 2, 1).tolist() == [s for s in range(29) if s != 11]
    unknown = _timed_store(tmp_path / "u", {"gap": (gap, None)}, fps=None)
    assert unknown.scene_fps("gap") is None
    assert unknown.steady_window_starts("gap", 3, 5).tolist() == list(range(20))  # rate unknown: nothing to check


def test_frames_resampled_from_a_24_fps_video_keep_their_10_hz_rate_and_windows(tmp_path):
    """OpenDV frames written with their timestamps.json (``data prepare opendv --frames``) from a 24 fps video
    step 125 / 83 ms: tokenized without a nominal rate, the scene records 10 fps (not 12, the median interval's)
    and keeps every 8-frame window at stride 5."""
    n24 = np.ceil(np.arange(44) * 2.4 - 1e-9)  # first 24 fps frame at or after each 100 ms slot
    stamps = (n24 * 1e6 / 24).round().astype(np.int64)
    make_images(tmp_path / "frames" / "v", len(stamps), h=16, w=24)
    (tmp_path / "frames" / "v" / "timestamps.json").write_text(json.dumps(stamps.tolist()))
    tokenize_sources(discover_sources([tmp_path / "frames" / "v"], fps=10.0), tmp_path / "tok", FakeTokenizer(),
                     progress=False)
    store = TokenStore(tmp_path / "tok")
    assert store.scene_fps("v") == pytest.approx(10.0, abs=0.1)  # 4.3 s: measured to about 1 %
    assert store.fps == store.scene_fps("v")
    assert store.steady_window_starts("v", 8, 5).tolist() == list(range(44 - 35))


def test_frame_index_at_join(tmp_path):
    store = write_synthetic_store(tmp_path / "s", num_scenes=1, num_frames=10, fps=10.0)
    idx = store.frame_index_at("scene_0000", [0, 149_000, 151_000, 900_000])
    assert idx.tolist() == [0, 1, 2, 9]
    assert int(store.frame_index_at("scene_0000", 310_000)) == 3
    assert store.frame_index_at("scene_0000", np.array([[0, 100_000]])).shape == (1, 2)
    with pytest.raises(ValueError, match=r"scene 'scene_0000': no frame within 10000 µs of timestamp 2000000"):
        store.frame_index_at("scene_0000", [0, 2_000_000], tolerance_us=10_000)
    with pytest.raises(ValueError, match="no frame within 50000"):  # default: half the frame interval
        store.frame_index_at("scene_0000", [-60_000])


# ------------------------------------------------------------------------------ resume and crash safety


def test_resume_skips_finished_scenes(tmp_path):
    sources = make_sources(tmp_path)
    out = tmp_path / "store"
    tokenize_sources(sources, out, FakeTokenizer(), batch_size=2, progress=False)
    before = store_arrays(out)
    tok = FakeTokenizer()
    tokenize_sources(sources, out, tok, batch_size=2, progress=False)
    assert tok.calls == 0
    # a scene whose file lost bytes is redone (verified by size)
    f = out / "scenes" / "b_scene.npy"
    f.write_bytes(f.read_bytes()[:-10])
    tok = FakeTokenizer()
    tokenize_sources(sources, out, tok, batch_size=2, progress=False)
    assert tok.calls == 2  # 3 frames of b_scene in batches of 2
    after = store_arrays(out)
    for k in before:
        np.testing.assert_array_equal(before[k][0], after[k][0])


def test_interrupted_scene_not_marked_done(tmp_path):
    sources = make_sources(tmp_path)
    out = tmp_path / "store"
    # a_scene (5 frames) takes 3 calls with batch 2, b_scene needs 2 more: fail in b_scene's 2nd batch
    with pytest.raises(KeyboardInterrupt):
        tokenize_sources(sources, out, FakeTokenizer(fail_after=4), batch_size=2, progress=False)
    m = read_manifest(out / "manifest.json")
    assert list(m["scenes"]) == ["a_scene"]
    assert not (out / "scenes" / "b_scene.npy").exists()
    assert not list((out / "scenes").glob(".*.tmp"))
    tok = FakeTokenizer()
    tokenize_sources(sources, out, tok, batch_size=2, progress=False)
    assert tok.calls == 2 + 4 + 2  # b, c (7 frames), d — a skipped
    clean = tmp_path / "clean"
    tokenize_sources(sources, clean, FakeTokenizer(), batch_size=2, progress=False)
    for k, (t, ts) in store_arrays(clean).items():
        got = store_arrays(out)[k]
        np.testing.assert_array_equal(got[0], t)
        np.testing.assert_array_equal(got[1], ts)


def test_killed_process_leaves_no_half_scene(tmp_path):
    """SIGKILL in the middle of a scene (no Python cleanup runs): the scene is not recorded; a rerun finishes it."""
    make_images(tmp_path / "imgs" / "a", 4, h=16, w=24, seed=1)
    make_images(tmp_path / "imgs" / "b", 6, h=16, w=24, seed=2)
    out = tmp_path / "store"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(HERE)!r})
        from test_tokens import FakeTokenizer
        from vavam.data.frames import discover_sources
        from vavam.data.tokenize import tokenize_sources

        tok = FakeTokenizer()  # same identity as the rerun's tokenizer
        encode = tok.encode

        def killer(images):
            if tok.calls == 3:  # a: 2 calls, b: killed in its 2nd batch
                os.kill(os.getpid(), signal.SIGKILL)
            return encode(images)

        tok.encode = killer
        tokenize_sources(discover_sources([{str(tmp_path / 'imgs' / '*')!r}]), {str(out)!r}, tok,
                         batch_size=2, progress=False)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    m = read_manifest(out / "manifest.json")
    assert list(m["scenes"]) == ["a"]
    tok = FakeTokenizer()
    tokenize_sources(discover_sources([str(tmp_path / "imgs" / "*")]), out, tok, batch_size=2, progress=False)
    assert tok.calls == 3
    assert TokenStore(out).scenes == ["a", "b"] and TokenStore(out).num_frames("b") == 6


def test_resume_refuses_other_tokenizer(tmp_path):
    sources = make_sources(tmp_path)
    out = tmp_path / "store"
    tokenize_sources(sources[:1], out, FakeTokenizer(), progress=False)
    with pytest.raises(TokenStoreError, match=r"manifest\.json: existing store has codebook_size=256"):
        tokenize_sources(sources, out, FakeTokenizer(codebook_size=512), progress=False)


# ------------------------------------------------------------------------------ shards


def test_shards_and_merge_equal_single_process(tmp_path):
    sources = make_sources(tmp_path)
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    tokenize_sources(sources, single, FakeTokenizer(), batch_size=3, progress=False)
    parts = [tokenize_sources(sources, sharded, FakeTokenizer(), batch_size=3, shard=f"{i}/3", progress=False)
             for i in range(3)]
    assert [p.name for p in parts] == [f"manifest.part-00{i}-of-003.json" for i in range(3)]
    assert sorted(read_manifest(parts[0])["scenes"]) == ["a_scene", "d_scene"]
    with pytest.raises(TokenStoreError, match="merge_manifests"):
        TokenStore(sharded)
    merge_manifests(sharded)
    merge_manifests(sharded)  # idempotent
    a, b = store_arrays(single), store_arrays(sharded)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k][0], b[k][0])
        np.testing.assert_array_equal(a[k][1], b[k][1])
    ma, mb = read_manifest(single / "manifest.json"), read_manifest(sharded / "manifest.json")
    assert ma == mb
    # a shard re-run after the merge skips everything
    tok = FakeTokenizer()
    tokenize_sources(sources, sharded, tok, shard="1/3", progress=False)
    assert tok.calls == 0


def test_shard_parsing_and_split():
    assert parse_shard("2/4") == (2, 4) and parse_shard(None) is None
    for bad in ("4/4", "a/b", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)
    names = [f"s{i}" for i in range(7)]
    parts = [select_shard(names[::-1], (i, 3)) for i in range(3)]
    assert sorted(sum(parts, [])) == sorted(names) and parts[0] == ["s0", "s3", "s6"]


# ------------------------------------------------------------------------------ conversion


def test_convert_opendv_npy_layout(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "tokens"
    expected = {}
    for chan, vid, n in (("chanA", "vid1", 5), ("chanB", "@vid2", 3)):
        folder = src / chan / vid
        folder.mkdir(parents=True)
        arrs = rng.integers(0, 16384, (n, 18, 32), dtype=np.uint16)
        for i in range(n):
            np.save(folder / f"t_{i + 1:06d}.npy", arrs[i])
        expected[f"{chan}/{vid}"] = arrs
    out = tmp_path / "store"
    convert_npy_layout(src, out, progress=False)
    store = TokenStore(out)
    assert store.scenes == ["chanA/vid1", "chanB/@vid2"] and store.grid == (18, 32) and store.image_size == (288, 512)
    for k, arrs in expected.items():
        np.testing.assert_array_equal(store.tokens(k), arrs)
    assert store.timestamps("chanA/vid1").tolist() == [0, 100_000, 200_000, 300_000, 400_000]
    assert (out / "scenes" / "chanB" / "@vid2.npy").is_file()
    # OpenDV windows: 8 frames every 5 files
    assert store.window_starts("chanA/vid1", 8, 5) == range(0)


def test_convert_nuscenes_with_scene_list(tmp_path):
    src = tmp_path / "tokens"
    (src / "samples" / "CAM_FRONT").mkdir(parents=True)
    names = {"scene-0001": [1535385095912404, 1535385096412404], "scene-0002": [1535385200012404]}
    for scene, stamps in names.items():
        for t in stamps:
            np.save(src / "samples" / "CAM_FRONT" / f"n008__CAM_FRONT__{t}.npy", np.full((18, 32), t % 7, np.uint16))
    spec = {s: [f"samples/CAM_FRONT/n008__CAM_FRONT__{t}.jpg" for t in ts] for s, ts in names.items()}
    (tmp_path / "scenes.json").write_text(json.dumps(spec))
    convert_npy_layout(src, tmp_path / "store", scenes_json=tmp_path / "scenes.json", progress=False)
    store = TokenStore(tmp_path / "store")
    assert store.scenes == ["scene-0001", "scene-0002"]
    assert store.timestamps("scene-0001").tolist() == names["scene-0001"]
    assert int(store.frame_index_at("scene-0001", 1535385096412000, tolerance_us=1000)) == 1


def test_convert_bad_frame_names_file(tmp_path):
    folder = tmp_path / "tokens" / "v"
    folder.mkdir(parents=True)
    np.save(folder / "t_000001.npy", np.zeros((18, 32), np.uint16))
    np.save(folder / "t_000002.npy", np.zeros((18, 31), np.uint16))
    with pytest.raises(TokenStoreError, match=r"t_000002\.npy: token grid 18x31"):
        convert_npy_layout(tmp_path / "tokens", tmp_path / "store", progress=False)
    np.save(folder / "t_000002.npy", np.zeros((18, 32), np.uint16))
    data = (folder / "t_000002.npy").read_bytes()
    (folder / "t_000002.npy").write_bytes(data[:100])
    with pytest.raises(TokenStoreError, match=r"t_000002\.npy: cannot read token file"):
        convert_npy_layout(tmp_path / "tokens", tmp_path / "store", progress=False)


# ------------------------------------------------------------------------------ bad inputs


def test_corrupt_manifest_names_file(tmp_path):
    write_synthetic_store(tmp_path / "s", 1, 3)
    (tmp_path / "s" / "manifest.json").write_text('{"format": "vavam-token-store", "scen')
    with pytest.raises(TokenStoreError, match=r"s/manifest\.json: not valid JSON"):
        TokenStore(tmp_path / "s")
    with pytest.raises(TokenStoreError, match=r"s/manifest\.json"):
        tokenize_sources([], tmp_path / "s", FakeTokenizer(), size=(16, 24), progress=False)
    (tmp_path / "s" / "manifest.json").write_text('{"format": "other"}')
    with pytest.raises(TokenStoreError, match=r"manifest\.json: not a token store manifest"):
        TokenStore(tmp_path / "s")
    with pytest.raises(TokenStoreError, match="manifest is missing"):
        TokenStore(tmp_path / "nowhere")


def test_truncated_scene_file_names_file(tmp_path):
    store = write_synthetic_store(tmp_path / "s", 1, 30)
    f = tmp_path / "s" / "scenes" / "scene_0000.npy"
    f.write_bytes(f.read_bytes()[:500])
    with pytest.raises(TokenStoreError, match=r"scene_0000\.npy"):
        TokenStore(tmp_path / "s").tokens("scene_0000")
    del store


def test_tokenize_bad_inputs_name_files(tmp_path):
    from vavam.data.frames import FrameError

    paths = make_images(tmp_path / "imgs" / "v", 3, h=16, w=24, ext=".jpg")
    paths[2].write_bytes(paths[2].read_bytes()[:200])
    with pytest.raises(FrameError, match=r"f_000003\.jpg"):
        tokenize_sources(discover_sources([tmp_path / "imgs" / "v"]), tmp_path / "s", FakeTokenizer(), progress=False)
    assert not (tmp_path / "s" / "scenes" / "v.npy").exists()
    make_images(tmp_path / "imgs" / "w", 2, h=20, w=24)
    # the store's image size is fixed (16x24 from its first run): a 20x24 scene is refused, naming the file
    (tmp_path / "imgs" / "v" / "f_000003.jpg").unlink()
    tokenize_sources(discover_sources([tmp_path / "imgs" / "v"]), tmp_path / "s", FakeTokenizer(), progress=False)
    with pytest.raises(FrameError, match=r"w/f_000001\.png \(frame 0\): wrong frame size"):
        tokenize_sources(discover_sources([tmp_path / "imgs" / "w"]), tmp_path / "s", FakeTokenizer(), progress=False)


def test_uint16_guard(tmp_path):
    sources = make_sources(tmp_path)
    with pytest.raises(ValueError, match="does not fit in uint16"):
        tokenize_sources(sources, tmp_path / "s", FakeTokenizer(codebook_size=70_000), progress=False)
    with pytest.raises(ValueError, match="does not fit in uint16"):
        TokenStoreWriter(tmp_path / "s2", (2, 2), codebook_size=65_537)
    w = TokenStoreWriter(tmp_path / "s3", (2, 2))
    with pytest.raises(ValueError, match="outside"):
        w.write_scene("x", np.full((1, 2, 2), 70_000), [0])


def test_scene_names_with_folders_and_bad_names(tmp_path):
    w = TokenStoreWriter(tmp_path / "s", (2, 2))
    w.write_scene("chan/vid", np.zeros((2, 2, 2), np.uint16), [0, 5])
    assert TokenStore(tmp_path / "s").scenes == ["chan/vid"]
    for bad in ("../x", "/abs", "a//b", ""):
        with pytest.raises(ValueError, match="invalid scene name"):
            w.write_scene(bad, np.zeros((1, 2, 2), np.uint16), [0])


def test_a_scene_name_cannot_overwrite_another_scenes_timestamps(tmp_path):
    """Scene ``a.timestamps`` would write its tokens to ``scenes/a.timestamps.npy``, scene ``a``'s timestamps file."""
    w = TokenStoreWriter(tmp_path / "s", (2, 2))
    w.write_scene("a", np.zeros((3, 2, 2), np.uint16), [0, 100_000, 200_000])
    with pytest.raises(ValueError, match=r"invalid scene name 'a.timestamps'.*timestamps file of scene 'a'"):
        w.write_scene("a.timestamps", np.ones((3, 2, 2), np.uint16), [0, 1, 2])
    store = TokenStore(tmp_path / "s")
    assert store.timestamps("a").tolist() == [0, 100_000, 200_000]
    assert store.scenes == ["a"]


# ------------------------------------------------------------------------------ real tokenizer


def _vq_tiny():
    try:
        import vavam

        torch.manual_seed(0)
        return vavam.build_model(vavam.presets.vq_tiny()).eval()
    except (ImportError, AttributeError) as exc:  # pragma: no cover - before the tokenizer lands
        pytest.skip(f"vq_tiny not available: {exc}")


def test_real_vq_tiny_round_trip(tmp_path):
    model = _vq_tiny()
    make_images(tmp_path / "imgs" / "v", 3, h=16, w=32)
    sources = discover_sources([tmp_path / "imgs" / "v"])
    tokenize_sources(sources, tmp_path / "s", model, batch_size=2, progress=False)
    store = TokenStore(tmp_path / "s")
    assert store.grid == (16 // model.downsample, 32 // model.downsample)
    with torch.inference_mode():
        ref = model.encode(torch.stack([f.image for f in sources[0].frames()])).numpy()
    np.testing.assert_array_equal(store.tokens("v"), ref)
    from vavam.tokenizer import tokenizer_identity

    assert store.tokenizer == tokenizer_identity(model)


def test_cli_function_with_preset(tmp_path):
    _vq_tiny()
    make_images(tmp_path / "frames" / "c" / "v1", 2, h=16, w=32)
    make_video(tmp_path / "vids" / "v2.mp4", 4, h=32, w=64)
    path = tokenize([str(tmp_path / "frames" / "*" / "*"), str(tmp_path / "vids" / "v2.mp4")], tmp_path / "s",
                    tokenizer="preset:vq_tiny", divisor=None, height=16, width=32, fps=None, batch_size=4,
                    num_workers=0, progress=False)
    store = TokenStore(path.parent)
    assert store.scenes == ["v1", "v2"] and store.num_frames("v2") == 4
    # v2 is a 10 fps video; v1, an image folder without timestamps and no fps given, has an unknown rate,
    # so the store has no one rate either (recorded as null, never guessed)
    assert store.entry("v2")["fps"] == 10.0 and store.entry("v1")["fps"] is None and store.fps is None


# ------------------------------------------------------------------------------ regressions


def test_cli_records_each_scenes_true_frame_rate(tmp_path):
    """`vavam tokenize` without --fps records the real rate (video stream, frame timestamps), never a made-up 10;
    a rate that cannot be known is null."""
    _vq_tiny()
    make_video(tmp_path / "clips" / "drive.mp4", 12, h=16, w=32, fps=30)
    names = [f"n015__CAM_FRONT__{1532402927000000 + k * 500_000}.png" for k in range(4)]  # 2 Hz keyframes
    make_images(tmp_path / "samples" / "CAM_FRONT", 4, h=16, w=32, names=names)
    make_images(tmp_path / "plain", 3, h=16, w=32)  # no sidecar, no timestamped names
    kw = dict(tokenizer="preset:vq_tiny", height=16, width=32, num_workers=0, progress=False)

    def store(sources: list[Path], out: str, **more) -> TokenStore:
        return TokenStore(tokenize([str(p) for p in sources], tmp_path / out, **kw, **more).parent)

    video = store([tmp_path / "clips" / "drive.mp4"], "v")
    assert video.num_frames("drive") == 12 and video.entry("drive")["fps"] == 30.0 and video.fps == 30.0
    assert store([tmp_path / "samples" / "CAM_FRONT"], "n").fps == 2.0
    old = json.loads((tmp_path / "n" / "manifest.json").read_text())  # as an older version wrote it: 10 guessed
    old["fps"] = old["scenes"]["CAM_FRONT"]["fps"] = 10.0
    del old["scenes"]["CAM_FRONT"]["fingerprint"]
    (tmp_path / "n" / "manifest.json").write_text(json.dumps(old))
    tokens_file = tmp_path / "n" / "scenes" / "CAM_FRONT.npy"
    before = os.stat(tokens_file)
    corrected = store([tmp_path / "samples" / "CAM_FRONT"], "n")
    assert corrected.fps == 2.0 and corrected.entry("CAM_FRONT")["fps"] == 2.0  # a re-run corrects the rate ...
    after = os.stat(tokens_file)  # ... without re-encoding: a rewrite would replace the file (atomic rename)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert corrected.entry("CAM_FRONT").get("fingerprint")  # and the old entry now has its fingerprint
    plain = store([tmp_path / "plain"], "p")
    assert plain.entry("plain")["fps"] is None and plain.fps is None
    # --fps resamples videos and times unstamped frames; real frame timestamps still give their own rate
    mixed = store([tmp_path / "clips" / "drive.mp4", tmp_path / "plain", tmp_path / "samples" / "CAM_FRONT"], "m",
                  fps=10.0)
    assert mixed.num_frames("drive") == 4 and mixed.entry("drive")["fps"] == 10.0
    assert mixed.entry("plain")["fps"] == 10.0 and mixed.entry("CAM_FRONT")["fps"] == 2.0
    assert mixed.fps is None  # no single rate: a consumer must not derive one stride for the whole store


def test_resume_redoes_a_scene_whose_frames_changed(tmp_path):
    """A resumed run redoes a scene whose frame list / timestamps changed (a dropped image restored, ...)."""
    files = make_images(tmp_path / "imgs" / "s", 5, h=16, w=24)
    stamps = [k * 500_000 for k in range(5)]
    out = tmp_path / "store"

    def run(keep: list[int]) -> int:
        source = FrameSource.from_files("s", [files[k] for k in keep], [stamps[k] for k in keep], fps=2.0)
        tok = FakeTokenizer()
        tokenize_sources([source], out, tok, batch_size=8, progress=False, fps=2.0)
        return tok.calls

    assert run([0, 1, 3, 4]) == 1  # frame 2 dropped (its image was missing)
    assert run([0, 1, 2, 3, 4]) == 1  # restored: tokenized again, not kept as 4 frames
    store = TokenStore(out)
    assert store.num_frames("s") == 5 and store.timestamps("s").tolist() == stamps
    assert run([0, 1, 2, 3, 4]) == 0  # unchanged: skipped
    manifest = json.loads((out / "manifest.json").read_text())  # a store written before fingerprints ...
    del manifest["scenes"]["s"]["fingerprint"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert run([0, 1, 2, 3, 4]) == 0  # ... is compared by its timestamps
    assert run([0, 2, 3, 4]) == 1 and TokenStore(out).timestamps("s").tolist() == [0, 1_000_000, 1_500_000, 2_000_000]


def test_convert_nuplan_token_names_need_an_index(tmp_path):
    """nuPlan token files are named by random 16-hex image tokens: no order can be read from the names; with our
    records as the index, frames follow the records (order, timestamps, scene names)."""
    log = "2021.05.12.22.00.38_veh-35_01008_01518"
    hexes = ["ffff000000000a99", "0000000000000b12", "1234567890abcd05", "77aa00000000000c"]  # capture order
    folder = tmp_path / "tokens" / log / "CAM_F0"
    folder.mkdir(parents=True)
    for k, h in enumerate(hexes):
        np.save(folder / f"{h}.npy", np.full((18, 32), k, np.uint16))
    with pytest.raises(ValueError, match=rf"{log}/CAM_F0: file names are random 16-hex tokens.*--index"):
        convert_npy_layout(tmp_path / "tokens", tmp_path / "bad", progress=False)
    stamps = [1_620_857_000_000_000 + k * 100_000 for k in range(4)]
    rec = SceneRecord(f"{log}/scene-0001", stamps, np.zeros((4, 3)), np.tile([1.0, 0, 0, 0], (4, 1)), camera="CAM_F0",
                      dataset="nuplan", image_paths=[f"{log}/CAM_F0/{h}.jpg" for h in hexes])
    save_records(tmp_path / "records.npz", [rec], dataset="nuplan")
    convert_npy_layout(tmp_path / "tokens", tmp_path / "store", index=tmp_path / "records.npz", progress=False)
    store = TokenStore(tmp_path / "store")
    assert store.scenes == [rec.name] and [int(t[0, 0]) for t in store.tokens(rec.name)] == [0, 1, 2, 3]
    assert store.timestamps(rec.name).tolist() == stamps and store.fps == 10.0


def test_convert_nuscenes_samples_keep_scenes_and_cameras_apart(tmp_path):
    """nuScenes samples/<CAMERA>/ folders mix every scene: refused without an index; with the authors' pickle or
    our records, one scene per record, CAM_FRONT only, 2 Hz."""
    src, log = tmp_path / "tokens", "n015-2018-07-24-11-22-45+0800"
    frames: dict[str, list[tuple[str, int]]] = {}
    for cam in ("CAM_FRONT", "CAM_BACK"):
        (src / "samples" / cam).mkdir(parents=True)
        for s, t0 in ((1, 1_532_402_927_000_000), (2, 1_532_403_027_000_000)):
            for k in range(3):
                rel = f"samples/{cam}/{log}__{cam}__{t0 + k * 500_000}.npy"
                np.save(src / rel, np.full((18, 32), 10 * s + k + (0 if cam == "CAM_FRONT" else 100), np.uint16))
                if cam == "CAM_FRONT":
                    frames.setdefault(f"scene-000{s}", []).append((rel.replace(".npy", ".jpg"), t0 + k * 500_000))
    with pytest.raises(ValueError, match=r"samples/CAM_\w+: nuScenes names.*every scene of every log.*--index"):
        convert_npy_layout(src, tmp_path / "bad", progress=False)
    entries = [{"scene": {"name": s}, "CAM_FRONT": {"file_path": p, "timestamp": t, "ego_to_world_tran": [0, 0, 0],
                                                    "ego_to_world_rot": [1, 0, 0, 0]}}
               for s, fr in frames.items() for p, t in reversed(fr)]  # the reference sorts the list itself
    with open(tmp_path / "nuscenes_train_data_cleaned.pkl", "wb") as f:
        pickle.dump(entries, f)
    convert_npy_layout(src, tmp_path / "store", index=tmp_path / "nuscenes_train_data_cleaned.pkl", progress=False)
    store = TokenStore(tmp_path / "store")
    assert store.scenes == ["scene-0001", "scene-0002"] and store.fps == 2.0
    assert [int(t[0, 0]) for t in store.tokens("scene-0002")] == [20, 21, 22]
    assert store.timestamps("scene-0001").tolist() == [t for _, t in frames["scene-0001"]]
    records = [SceneRecord(s, [t for _, t in fr], np.zeros((3, 3)), np.tile([1.0, 0, 0, 0], (3, 1)),
                           dataset="nuscenes", image_paths=[p for p, _ in fr]) for s, fr in frames.items()]
    save_records(tmp_path / "records.npz", records, dataset="nuscenes")
    convert_npy_layout(src, tmp_path / "store2", index=tmp_path / "records.npz", progress=False)
    a, b = store_arrays(tmp_path / "store"), store_arrays(tmp_path / "store2")
    assert a.keys() == b.keys() and all(np.array_equal(a[k][i], b[k][i]) for k in a for i in (0, 1))
    (src / frames["scene-0002"][1][0]).with_suffix(".npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"scene 'scene-0002', frame 1: token file .* is missing"):
        convert_npy_layout(src, tmp_path / "store3", index=tmp_path / "records.npz", progress=False)


def test_convert_follows_symlinked_folders(tmp_path):
    """The authors' flat_tokens/<video_id> are symlinks to tokens/<channel>/<video_id>; a link loop ends."""
    video = tmp_path / "tokens" / "Chan" / "@vid1"
    video.mkdir(parents=True)
    for k in range(1, 4):
        np.save(video / f"t_{k:06d}.npy", np.full((18, 32), k, np.uint16))
    flat = tmp_path / "flat_tokens"
    flat.mkdir()
    os.symlink(video, flat / "@vid1")
    os.symlink(flat, video / "loop")
    convert_npy_layout(flat, tmp_path / "store", progress=False)
    store = TokenStore(tmp_path / "store")
    assert store.scenes == ["@vid1"] and [int(t[0, 0]) for t in store.tokens("@vid1")] == [1, 2, 3]
    assert store.timestamps("@vid1").tolist() == [0, 100_000, 200_000] and store.fps == 10.0


# ------------------------------------------------------------------------------ resume: rates, timing, old entries


def _manifest(root: Path) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _strip_fingerprints(root: Path) -> None:
    """Make a store look as a version before fingerprints wrote it."""
    manifest = _manifest(root)
    for entry in manifest["scenes"].values():
        entry.pop("fingerprint", None)
        entry.pop("frames_fingerprint", None)
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_stand_in_timestamps_are_not_fps_timestamps():
    """Image folders without timestamps: the fingerprint tells timestamps given by --fps 10 from the identical
    stand-ins of a run without --fps; the frames fingerprint (the frames alone) does not."""
    files = [Path(f"/x/v/f_{k}.png") for k in range(3)]
    given, stand_in = FrameSource.from_files("v", files, fps=10.0), FrameSource.from_files("v", files, fps=None)
    assert given.timestamps_us.tolist() == stand_in.timestamps_us.tolist() == [0, 100_000, 200_000]
    assert (given.timestamps_from, stand_in.timestamps_from) == ("index", "stand-in")
    assert (given.known_fps(), stand_in.known_fps()) == (10.0, None)
    assert given.fingerprint() != stand_in.fingerprint() != FrameSource.from_files("v", files, fps=5.0).fingerprint()
    assert given.frames_fingerprint() == stand_in.frames_fingerprint()


def test_resume_without_fps_keeps_a_recorded_rate(tmp_path, capsys):
    """A store of image folders without timestamps, made with --fps 10 (or by an older version, which recorded 10),
    resumed without --fps keeps its rate and timestamps (the stand-ins say nothing), saying so; it was silently
    set to null, so `--mix` refused the store."""
    for i, name in enumerate(["v1", "v2"]):
        make_images(tmp_path / "frames" / name, 6, h=16, w=24, seed=i)
    out = tmp_path / "store"

    def run(fps: float | None) -> int:
        tok = FakeTokenizer()
        tokenize_sources(discover_sources([str(tmp_path / "frames" / "*")], fps=fps), out, tok, progress=False)
        return tok.calls

    assert run(10.0) == 2 and TokenStore(out).fps == 10.0
    for old_version in (False, True):
        if old_version:
            _strip_fingerprints(out)
        capsys.readouterr()
        assert run(None) == 0
        store = TokenStore(out)
        assert store.fps == 10.0 and [store.entry(n)["fps"] for n in store.scenes] == [10.0, 10.0]
        assert store.timestamps("v1").tolist() == [k * 100_000 for k in range(6)]
        assert "2 scene(s) keep their recorded frame rate (10 fps)" in capsys.readouterr().err
    assert _manifest(out)["scenes"]["v1"].get("frames_fingerprint")  # the old entries got their frames fingerprint


def test_another_fps_rewrites_timestamps_without_reencoding(tmp_path, capsys):
    """Only --fps changed (same image files): the timestamps file and rate are rewritten in place, not the tokens,
    and the message says what changed (the whole store was re-encoded)."""
    make_images(tmp_path / "frames" / "v", 6, h=16, w=24)
    out = tmp_path / "store"

    def run(fps: float | None, sidecar: list[int] | None = None) -> int:
        if sidecar is not None:
            (tmp_path / "frames" / "v" / "timestamps.json").write_text(json.dumps(sidecar))
        tok = FakeTokenizer()
        tokenize_sources(discover_sources([str(tmp_path / "frames" / "v")], fps=fps), out, tok, progress=False)
        return tok.calls

    assert run(10.0) == 1
    tokens = out / "scenes" / "v.npy"
    before, tokens_before = os.stat(tokens), np.load(tokens)
    capsys.readouterr()
    assert run(5.0) == 0
    store = TokenStore(out)
    assert store.fps == 5.0 and store.entry("v")["fps"] == 5.0
    assert store.timestamps("v").tolist() == [k * 200_000 for k in range(6)]
    assert store.entry("v")["last_timestamp_us"] == 1_000_000
    err = capsys.readouterr().err
    assert "scene 'v'" in err and "same frames" in err and "frame index / 10 fps -> frame index / 5 fps" in err
    assert "frame rate 10 fps -> 5 fps" in err and "tokens kept" in err
    after = os.stat(tokens)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    np.testing.assert_array_equal(np.load(tokens), tokens_before)
    assert run(5.0) == 0 and capsys.readouterr().err == ""  # now current: nothing to do, nothing said
    stamps = [1_000_000 + k * 250_000 for k in range(6)]  # real timestamps added: 4 Hz
    assert run(None, sidecar=stamps) == 0
    assert TokenStore(out).timestamps("v").tolist() == stamps and TokenStore(out).fps == 4.0
    assert "frame index / 5 fps -> a timestamps.json/.txt sidecar" in capsys.readouterr().err


def test_old_entries_get_fingerprints_so_a_changed_video_is_redone(tmp_path, capsys):
    """An entry written before fingerprints that passes the timestamp check records its fingerprint, so a later
    change is seen: for a video (no timestamps before decoding) it was never checked at all."""
    video = make_video(tmp_path / "vids" / "drive.mp4", 6, h=16, w=24)
    out = tmp_path / "store"

    def run() -> int:
        tok = FakeTokenizer()
        tokenize_sources(discover_sources([video]), out, tok, progress=False)
        return tok.calls

    assert run() == 1
    _strip_fingerprints(out)
    manifest = _manifest(out)
    manifest["scenes"]["drive"]["fps"] = None  # an older version's rate: corrected from the recorded timestamps
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert run() == 0
    entry = TokenStore(out).entry("drive")
    assert entry.get("fingerprint") and entry.get("frames_fingerprint") and entry["fps"] == 10.0
    make_video(video, 9, h=16, w=24)  # the video was replaced
    capsys.readouterr()
    assert run() == 1 and TokenStore(out).num_frames("drive") == 9
    assert "scene 'drive'" in capsys.readouterr().err


def _part(root: Path, shard: tuple[int, int], rates: dict[str, float | None]) -> None:
    writer = TokenStoreWriter(root, (2, 2), codebook_size=16, tokenizer={"name": "t"}, shard=shard,
                              fps_from_scenes=True)
    for name, rate in rates.items():
        step = 1e6 / (rate or 10.0)
        writer.write_scene(name, np.zeros((3, 2, 2), np.uint16), [round(k * step) for k in range(3)], fps=rate)


@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ([{"a": 2.0}, {"b": 2.0}], 2.0),
        ([{"a": 2.0}, {"b": 1.99}, {"c": 2.0}], 2.0),  # within 2 %: one rate (the median)
        ([{"a": 2.0}, {"b": 10.0}], None),
        ([{"a": 2.0, "b": 10.0}, {"c": 2.0}], None),
        ([{"a": 2.0}, {"b": None}], None),  # a rate unknown: none for the store
    ],
)
def test_merge_manifests_rate_of_the_scenes(tmp_path, parts, expected):
    """merge_manifests: scenes of one rate give the store that rate, differing (or unknown) rates null."""
    for i, rates in enumerate(parts):
        _part(tmp_path, (i, len(parts)), rates)
    merge_manifests(tmp_path, remove_parts=True)
    assert TokenStore(tmp_path).fps == expected


def test_merge_manifests_rate_after_a_scene_is_dropped(tmp_path):
    """The rate is that of the scenes merged: a scene dropped at the merge (its files deleted: stale) no longer
    makes the store's rates differ."""
    _part(tmp_path, (0, 1), {"a": 4.0, "b": 2.0})
    merge_manifests(tmp_path, remove_parts=True)
    assert TokenStore(tmp_path).fps is None
    (tmp_path / "scenes" / "a.npy").unlink()
    merge_manifests(tmp_path)
    assert TokenStore(tmp_path).scenes == ["b"] and TokenStore(tmp_path).fps == 2.0


def test_a_first_merge_refuses_shards_that_left_nothing(tmp_path):
    """4 scenes over 8 shards, only shards 0 and 5 run: the merge used to write a 1-scene manifest.json, exit 0,
    as if complete (shard 5 took no scene and wrote no file, so a missing shard could not be told from an empty
    one). Empty shards now leave a marker; a first merge names the shards that left nothing."""
    sources = make_sources(tmp_path)
    out = tmp_path / "store"
    for i in (0, 5):
        tokenize_sources(sources, out, FakeTokenizer(), shard=f"{i}/8", progress=False)
    assert (out / "manifest.part-005-of-008.empty").is_file()
    with pytest.raises(TokenStoreError, match=r"6 shard\(s\) left no manifest part \(1/8, 2/8, 3/8, 4/8, 6/8, "
                                              r"7/8\): run them .* --allow-missing"):
        merge_manifests(out)
    assert not (out / MANIFEST).exists()
    from vavam.cli import main

    assert main(["tokenize", "merge", "--root", str(out), "--allow-missing"]) == 0
    assert TokenStore(out).scenes == ["a_scene"]
    for i in (1, 2, 3, 4, 6, 7):  # the rest finish: the parts merge into the complete store
        tokenize_sources(sources, out, FakeTokenizer(), shard=f"{i}/8", progress=False)
    merge_manifests(out, remove_parts=True)
    assert TokenStore(out).scenes == ["a_scene", "b_scene", "c_scene", "d_scene"]
    assert not list(out.glob("manifest.part-*"))  # parts and empty markers removed


def test_sharded_resume_redoes_and_retimes_then_merges(tmp_path, capsys):
    """Sharded store, merged; then scene a loses a frame (redone) and scene c's rate changes (retimed, no
    re-encoding) in a re-run of shard 0 alone: the merge has the right frame counts, timestamps and rates."""
    files = {n: make_images(tmp_path / "imgs" / n, 5, h=16, w=24, seed=i) for i, n in enumerate("abc")}
    out = tmp_path / "store"

    def sources(drop_a: bool = False, c_step: int = 500_000) -> list[FrameSource]:
        keep = {n: [k for k in range(5) if not (drop_a and n == "a" and k == 2)] for n in files}
        return [FrameSource.from_files(n, [files[n][k] for k in keep[n]],
                                       [k * (c_step if n == "c" else 500_000) for k in keep[n]])
                for n in files]

    for i in range(2):  # shard 0: a, c; shard 1: b
        tokenize_sources(sources(), out, FakeTokenizer(), shard=f"{i}/2", progress=False)
    merge_manifests(out, remove_parts=True)
    assert TokenStore(out).fps == 2.0
    tok = FakeTokenizer()
    capsys.readouterr()
    tokenize_sources(sources(drop_a=True, c_step=250_000), out, tok, batch_size=64, shard="0/2", progress=False)
    assert tok.calls == 1  # a only
    err = capsys.readouterr().err
    assert "scene 'a'" in err and "tokenizing it again" in err
    assert "scene 'c'" in err and "frame rate 2 fps -> 4 fps" in err
    merge_manifests(out, remove_parts=True)
    store = TokenStore(out)
    assert {n: store.num_frames(n) for n in store.scenes} == {"a": 4, "b": 5, "c": 5}
    assert store.timestamps("a").tolist() == [0, 500_000, 1_500_000, 2_000_000]
    assert store.timestamps("c").tolist() == [k * 250_000 for k in range(5)]
    assert [store.entry(n)["fps"] for n in "abc"] == [2.0, 2.0, 4.0] and store.fps is None
    tokenize_sources(sources(drop_a=True), out, tok, shard="0/2", progress=False)  # c back to 2 Hz
    merge_manifests(out, remove_parts=True)
    assert tok.calls == 1 and TokenStore(out).fps == 2.0 and TokenStore(out).entry("c")["fps"] == 2.0


# ------------------------------------------------------------------------------ convert: names, --index options


def test_convert_16_digit_names_are_microsecond_timestamps(tmp_path):
    """Frames named by 16-digit µs timestamps (1532402927000000.npy) are ordered by them; they were refused as
    nuPlan's random 16-hex tokens (which hold a letter a-f)."""
    folder = tmp_path / "tok" / "scene1"
    folder.mkdir(parents=True)
    stamps = [1_532_402_927_000_000 + k * 100_000 for k in (2, 0, 3, 1)]
    for t in stamps:
        np.save(folder / f"{t}.npy", np.full((18, 32), (t // 100_000) % 100, np.uint16))
    convert_npy_layout(tmp_path / "tok", tmp_path / "store", progress=False)
    store = TokenStore(tmp_path / "store")
    assert store.timestamps("scene1").tolist() == sorted(stamps) and store.fps == 10.0
    assert [int(t[0, 0]) for t in store.tokens("scene1")] == [(t // 100_000) % 100 for t in sorted(stamps)]
    hexes = tmp_path / "hex" / "log" / "CAM_F0"  # a 16-hex token that happens to be all digits among others
    hexes.mkdir(parents=True)
    for h in ("0000000000000012", "00000000000000ab"):
        np.save(hexes / f"{h}.npy", np.zeros((18, 32), np.uint16))
    with pytest.raises(ValueError, match=r"log/CAM_F0: file names are random 16-hex tokens.*--index"):
        convert_npy_layout(tmp_path / "hex", tmp_path / "bad", progress=False)


def _nuscenes_tokens(root: Path, steps: dict[str, int]) -> list[dict]:
    """CAM_FRONT token files of scenes with the given keyframe step (µs) and the authors' pickle entries for them."""
    (root / "samples" / "CAM_FRONT").mkdir(parents=True)
    entries = []
    for s, (scene, step) in enumerate(steps.items()):
        for k in range(4):
            t = 1_532_402_927_000_000 + s * 100_000_000 + k * step
            rel = f"samples/CAM_FRONT/n015__CAM_FRONT__{t}.jpg"
            np.save(root / rel.replace(".jpg", ".npy"), np.full((18, 32), k, np.uint16))
            entries.append({"scene": {"name": scene}, "CAM_FRONT": {
                "file_path": rel, "timestamp": t, "ego_to_world_tran": [0, 0, 0], "ego_to_world_rot": [1, 0, 0, 0]}})
    return entries


def test_convert_index_pickle_errors_name_the_file_and_flags(tmp_path):
    """A pickle of two splits without --split names the file and the flag (it said `<pickle data>: ...; pass
    split=`); options that do not apply to the index are refused, not silently ignored."""
    entries = _nuscenes_tokens(tmp_path / "tokens", {"scene-0001": 500_000})
    pkl = tmp_path / "nuscenes_data_cleaned.pkl"
    pkl.write_bytes(pickle.dumps({"train": entries, "val": entries}))
    src = tmp_path / "tokens"
    for camera in (None, "CAM_FRONT"):
        with pytest.raises(ValueError, match=rf"--index {pkl}: holds splits \['train', 'val'\]; pass --split"):
            convert_npy_layout(src, tmp_path / "o", index=pkl, camera=camera, progress=False)
    with pytest.raises(ValueError, match=rf"--index {pkl}: no split 'test'.*--split"):
        convert_npy_layout(src, tmp_path / "o", index=pkl, split="test", progress=False)
    with pytest.raises(ValueError, match=r"--index .*\(split 'train'\): entry 0 is not in the reference format for "
                                         r"camera 'CAM_F0'"):
        convert_npy_layout(src, tmp_path / "o", index=pkl, split="train", camera="CAM_F0", progress=False)
    convert_npy_layout(src, tmp_path / "ok", index=pkl, split="val", progress=False)
    assert TokenStore(tmp_path / "ok").scenes == ["scene-0001"]
    rec = SceneRecord("scene-0001", [e["CAM_FRONT"]["timestamp"] for e in entries], np.zeros((4, 3)),
                      np.tile([1.0, 0, 0, 0], (4, 1)), image_paths=[e["CAM_FRONT"]["file_path"] for e in entries])
    save_records(tmp_path / "records.npz", [rec], dataset="nuscenes")
    with pytest.raises(ValueError, match=r"--camera and --split: --index .*records\.npz is a records file"):
        convert_npy_layout(src, tmp_path / "o", index=tmp_path / "records.npz", camera="CAM_FRONT", split="train",
                           progress=False)
    with pytest.raises(ValueError, match=r"--timestamps name-us: with --index .* applies to folders"):
        convert_npy_layout(src, tmp_path / "o", index=tmp_path / "records.npz", timestamps="name-us", progress=False)
    with pytest.raises(ValueError, match=r"--number-base 0: with --index .* applies to frames numbered"):  # was ignored
        convert_npy_layout(src, tmp_path / "o", index=tmp_path / "records.npz", number_base=0, progress=False)
    with pytest.raises(ValueError, match=r"--camera / --split .* there is no --index"):
        convert_npy_layout(src, tmp_path / "o", split="train", progress=False)


def test_convert_index_fps_is_the_stores_nominal_rate(tmp_path):
    """nuScenes keyframes jitter: scenes measured at 2.0 and 1.9 fps (5 % apart) give a store without one rate,
    which --mix refuses; --fps 2 names the nominal rate (scenes keep theirs). An --fps far from the scenes'
    rate is refused (it was ignored)."""
    entries = _nuscenes_tokens(tmp_path / "tokens", {"scene-0001": 500_000, "scene-0002": 526_316})
    pkl = tmp_path / "nuscenes_train_data_cleaned.pkl"
    pkl.write_bytes(pickle.dumps(entries))
    convert_npy_layout(tmp_path / "tokens", tmp_path / "measured", index=pkl, progress=False)
    assert TokenStore(tmp_path / "measured").fps is None
    convert_npy_layout(tmp_path / "tokens", tmp_path / "nominal", index=pkl, fps=2.0, progress=False)
    store = TokenStore(tmp_path / "nominal")
    assert store.fps == 2.0 and [store.entry(s)["fps"] for s in store.scenes] == [2.0, 1.9]
    with pytest.raises(ValueError, match=rf"--fps 10: the scenes of --index {pkl} run at 1.95 fps"):
        convert_npy_layout(tmp_path / "tokens", tmp_path / "bad", index=pkl, fps=10.0, progress=False)


def test_convert_another_fps_rewrites_timestamps_only(tmp_path, capsys):
    """convert resumed with another --fps (same token files): timestamps and rate rewritten, the scene not converted
    again; an entry of an older version (no fingerprints) gets them."""
    folder = tmp_path / "tokens" / "chan" / "vid"
    folder.mkdir(parents=True)
    for i in range(4):
        np.save(folder / f"t_{i + 1:06d}.npy", np.full((18, 32), i, np.uint16))
    out = tmp_path / "store"
    convert_npy_layout(tmp_path / "tokens", out, progress=False)
    _strip_fingerprints(out)
    scene_file = out / "scenes" / "chan" / "vid.npy"
    before = os.stat(scene_file)
    convert_npy_layout(tmp_path / "tokens", out, progress=False)
    assert _manifest(out)["scenes"]["chan/vid"].get("frames_fingerprint")
    capsys.readouterr()
    convert_npy_layout(tmp_path / "tokens", out, fps=5.0, progress=False)
    store = TokenStore(out)
    assert store.fps == 5.0 and store.timestamps("chan/vid").tolist() == [0, 200_000, 400_000, 600_000]
    assert "frame numbers / 10 fps -> frame numbers / 5 fps, frame rate 10 fps -> 5 fps" in capsys.readouterr().err
    after = os.stat(scene_file)
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
