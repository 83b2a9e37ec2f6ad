"""Window index construction at dataset scale: a synthetic 10,000,000-frame index.

10,000 scenes x 1,000 frames at 10 Hz (nuPlan / OpenDV-like, subsampling 5; about 278 h of driving)
by default. Times :class:`vavam.data.windows.WindowIndex` construction (best of ``repeats``) and
measures the peak memory the construction allocates on top of its inputs (``tracemalloc``, which
numpy reports its buffers to) and the size of the finished index.

Prints JSON lines ``{name, config, metric, value, unit}``; ``python benchmarks/bench_index.py
--scenes 1000`` runs a smaller version.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
import tracemalloc

import numpy as np


def synthetic_records(num_scenes: int, frames_per_scene: int, hz: float = 10.0, seed: int = 0) -> list:
    """``num_scenes`` records of ``frames_per_scene`` frames: gently curving drives at 10 m/s.

    Built in one vectorised pass; each record holds views into shared arrays.
    """
    from vavam.data.records import SceneRecord

    rng = np.random.default_rng(seed)
    n = frames_per_scene
    yaw = np.cumsum(rng.normal(scale=0.01, size=(num_scenes, n)), axis=1)
    step = 10.0 / hz
    trans = np.zeros((num_scenes, n, 3))
    trans[..., 0] = np.cumsum(np.cos(yaw) * step, axis=1)
    trans[..., 1] = np.cumsum(np.sin(yaw) * step, axis=1)
    rots = np.zeros((num_scenes, n, 4))
    rots[..., 0] = np.cos(yaw / 2)
    rots[..., 3] = np.sin(yaw / 2)
    ts = np.arange(n, dtype=np.int64) * round(1e6 / hz)
    return [
        SceneRecord(
            name=f"log-{s:06d}",
            timestamps=ts + s * 10**10,
            translations=trans[s],
            rotations=rots[s],
            camera="CAM_F0",
            dataset="nuplan",
        )
        for s in range(num_scenes)
    ]


def _index_nbytes(index) -> int:
    """Bytes of every array the finished index holds (per-frame targets, speeds, window starts, ...)."""
    return int(sum(a.nbytes for a in vars(index).values() if isinstance(a, np.ndarray)))


def run(num_scenes: int = 10_000, frames_per_scene: int = 1_000, repeats: int = 2) -> list[dict]:
    """Benchmarks; returns rows ``{name, config, metric, value, unit}``."""
    from vavam.data.windows import WindowConfig, WindowIndex

    t0 = time.perf_counter()
    records = synthetic_records(num_scenes, frames_per_scene)
    make_s = time.perf_counter() - t0
    frames = num_scenes * frames_per_scene
    cfg = WindowConfig.for_dataset("nuplan")
    config = {"scenes": num_scenes, "frames": frames, "hz": 10, "subsampling": cfg.subsampling}
    rows = [{"name": "index_records_make", "config": config, "metric": "seconds", "value": make_s, "unit": "s"}]

    best = float("inf")
    index = None
    for _ in range(repeats):
        index = None
        gc.collect()
        t0 = time.perf_counter()
        index = WindowIndex(records, cfg)
        best = min(best, time.perf_counter() - t0)
    assert index is not None
    windows = len(index)
    size = _index_nbytes(index)
    del index
    gc.collect()
    tracemalloc.start()
    WindowIndex(records, cfg)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rows += [
        {"name": "index_build_10m", "config": config, "metric": "seconds", "value": best, "unit": "s"},
        {
            "name": "index_build_10m",
            "config": config,
            "metric": "frames_per_s",
            "value": frames / best,
            "unit": "frames/s",
        },
        {"name": "index_build_10m", "config": config, "metric": "windows", "value": windows, "unit": "count"},
        {"name": "index_build_10m", "config": config, "metric": "peak_alloc_mb", "value": peak / 2**20, "unit": "MiB"},
        {"name": "index_build_10m", "config": config, "metric": "index_mb", "value": size / 2**20, "unit": "MiB"},
    ]
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    for row in run(args.scenes, args.frames, args.repeats):
        print(json.dumps(row), flush=True)
