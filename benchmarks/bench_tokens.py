"""Token store throughput: writing scenes, reading random windows through memory maps, indexing VaViM windows.

``run() -> list[dict]`` (keys name, config, metric, value, unit); ``python benchmarks/bench_tokens.py``
prints one JSON line per measurement. Sizes are small (CPU, shared machine); compare ratios within a run.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from vavam.data.tokens import TokenStore, TokenStoreWriter


def _write(root: Path, num_scenes: int, num_frames: int, grid: tuple[int, int], seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    arrays = [rng.integers(0, 16384, size=(num_frames, *grid), dtype=np.uint16) for _ in range(num_scenes)]
    ts = (np.arange(num_frames) * 100_000).astype(np.int64)
    t0 = time.perf_counter()
    writer = TokenStoreWriter(root, grid, image_size=(grid[0] * 16, grid[1] * 16), downsample=16,
                              codebook_size=16384, tokenizer={"name": "bench"}, fps=10.0, resume=False)
    for k, arr in enumerate(arrays):
        writer.write_scene(f"scene_{k:05d}", arr, ts, source="bench")
    return time.perf_counter() - t0


def _read_windows(store: TokenStore, num_windows: int, num_frames: int, stride: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    scenes = store.scenes
    picks = []
    for _ in range(num_windows):
        s = scenes[int(rng.integers(len(scenes)))]
        starts = store.window_starts(s, num_frames, stride)
        picks.append((s, int(rng.integers(len(starts)))))
    t0 = time.perf_counter()
    total = 0
    for s, start in picks:
        total += int(store.window(s, start, num_frames, stride)[0, 0, 0])
    return time.perf_counter() - t0


def run(
    num_scenes: int = 50, num_frames: int = 2000, grid: tuple[int, int] = (18, 32), num_windows: int = 20000
) -> list[dict]:
    """Write a synthetic store (``num_scenes`` x ``num_frames`` x grid uint16), then read random 8-frame windows."""
    tmp = Path(tempfile.mkdtemp(prefix="vavam-bench-tokens-"))
    rows: list[dict] = []
    try:
        root = tmp / "store"
        config = {"num_scenes": num_scenes, "num_frames": num_frames, "grid": list(grid)}
        seconds = _write(root, num_scenes, num_frames, grid)
        mb = num_scenes * num_frames * grid[0] * grid[1] * 2 / 1e6
        rows.append({"name": "token_store_write", "config": config, "metric": "throughput",
                     "value": round(mb / seconds, 1), "unit": "MB/s"})
        rows.append({"name": "token_store_write", "config": config, "metric": "frames_per_s",
                     "value": round(num_scenes * num_frames / seconds), "unit": "frames/s"})
        for frames, stride in ((8, 5), (8, 1)):
            store = TokenStore(root)  # fresh object: memmaps opened during the timed loop
            secs = _read_windows(store, num_windows, frames, stride)
            rows.append({"name": "token_store_window_read",
                         "config": {**config, "window_frames": frames, "stride": stride, "num_windows": num_windows},
                         "metric": "windows_per_s", "value": round(num_windows / secs), "unit": "windows/s"})
        # baseline: the reference's one-.npy-per-frame layout (8 np.load calls per window)
        per_frame = tmp / "per_frame" / "vid"
        per_frame.mkdir(parents=True)
        arr = np.array(TokenStore(root).tokens(store.scenes[0])[:400])
        for i, frame in enumerate(arr):
            np.save(per_frame / f"t_{i + 1:06d}.npy", frame)
        files = sorted(per_frame.iterdir())
        rng = np.random.default_rng(1)
        n = max(1, num_windows // 10)
        starts = rng.integers(0, len(files) - 35, size=n)
        t0 = time.perf_counter()
        for s0 in starts:
            np.stack([np.load(files[s0 + 5 * j]) for j in range(8)])
        secs = time.perf_counter() - t0
        rows.append({"name": "npy_per_frame_window_read (reference layout)",
                     "config": {"window_frames": 8, "stride": 5, "num_windows": int(n), "files": len(files)},
                     "metric": "windows_per_s", "value": round(n / secs), "unit": "windows/s"})
        rows += _window_index(tmp / "many")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def _window_index(root: Path, num_scenes: int = 2000, num_frames: int = 40) -> list[dict]:
    """VaViM's training-window index over many short scenes: counting frames only, and checking every window's
    steps against the scene's rate (it reads each scene's timestamps file), the cost of a run's start."""
    import warnings

    from vavam.train.video import VideoWindowDataset

    writer = TokenStoreWriter(root, (1, 1), codebook_size=16, tokenizer={"name": "bench"}, fps=10.0, resume=False)
    ts = (np.arange(num_frames) * 100_000).astype(np.int64)
    for k in range(num_scenes):
        writer.write_scene(f"scene_{k:05d}", np.zeros((num_frames, 1, 1), dtype=np.uint16), ts)
    rows = []
    config = {"num_scenes": num_scenes, "num_frames": num_frames, "window_frames": 8, "stride": 5}
    for steady in (False, True):
        store = TokenStore(root)  # fresh object: timestamps are read in the timed call
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            VideoWindowDataset(store, 8, 5, steady=steady)
        secs = time.perf_counter() - t0
        rows.append({"name": "video_window_index" + (" (steps checked)" if steady else " (frames counted)"),
                     "config": config, "metric": "scenes_per_s", "value": round(num_scenes / secs), "unit": "scenes/s"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
