"""Window index construction speed: ~1M frames over ~1000 scenes (nuPlan-like, 10 Hz, subsampling 5; and
nuScenes-like, 2 Hz keyframes, subsampling 1).

Also times the record file round trip (save + load with validation) and batched window gathers.
Prints JSON lines ``{name, config, metric, value, unit}``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np


def _records(num_scenes: int, frames_per_scene: int, hz: float = 10.0, seed: int = 0) -> list:
    from vavam.data.geometry import quat_from_yaw
    from vavam.data.records import SceneRecord

    rng = np.random.default_rng(seed)
    out = []
    for s in range(num_scenes):
        n = frames_per_scene
        yaw = np.cumsum(rng.normal(scale=0.01, size=n))
        speed = 10.0 / hz
        xy = np.cumsum(np.stack([np.cos(yaw), np.sin(yaw)], 1) * speed, axis=0)
        trans = np.concatenate([xy, np.zeros((n, 1))], axis=1)
        ts = s * 10**10 + np.arange(n, dtype=np.int64) * int(1e6 / hz)
        out.append(
            SceneRecord(
                name=f"log-{s:05d}",
                timestamps=ts,
                translations=trans,
                rotations=quat_from_yaw(yaw),
                camera="CAM_F0",
                dataset="nuplan",
            )
        )
    return out


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def run(num_scenes: int = 1000, frames_per_scene: int = 1000, repeats: int = 3) -> list[dict]:
    """Benchmarks; returns rows ``{name, config, metric, value, unit}``."""
    from vavam.data.records import load_records, save_records
    from vavam.data.windows import WindowConfig, WindowIndex

    records = _records(num_scenes, frames_per_scene)
    frames = num_scenes * frames_per_scene
    rows = []
    for dataset in ("nuplan", "nuscenes"):
        cfg = WindowConfig.for_dataset(dataset)
        # each dataset at its own frame rate (nuScenes: 2 Hz keyframes): on the 10 Hz records every nuScenes
        # window fails the 0.5 s step check, and the build would find none
        hz = 10.0 if dataset == "nuplan" else 2.0
        recs = records if dataset == "nuplan" else _records(num_scenes, frames_per_scene, hz=hz)
        config = {"scenes": num_scenes, "frames": frames, "hz": hz, "subsampling": cfg.subsampling}
        index = WindowIndex(recs, cfg)
        if dataset == "nuplan":
            gather_index = index  # gathers and the record file below use the 10 Hz (nuPlan) records
        sec = _best(lambda cfg=cfg, recs=recs: WindowIndex(recs, cfg), repeats)
        rows.append(
            {
                "name": "window_index_build",
                "config": config,
                "metric": "frames_per_s",
                "value": frames / sec,
                "unit": "frames/s",
            }
        )
        rows.append({"name": "window_index_build", "config": config, "metric": "seconds", "value": sec, "unit": "s"})
        rows.append(
            {"name": "window_index_build", "config": config, "metric": "windows", "value": len(index), "unit": "count"}
        )
    batch = 4096
    rng = np.random.default_rng(0)
    ids = rng.integers(0, len(gather_index), size=batch)
    sec = _best(lambda: gather_index.batch(ids), repeats)
    rows.append(
        {
            "name": "window_batch_gather",
            "config": {"batch": batch},
            "metric": "windows_per_s",
            "value": batch / sec,
            "unit": "windows/s",
        }
    )
    sec = _best(lambda: [gather_index[int(i)] for i in ids[:512]], repeats)
    rows.append(
        {
            "name": "window_getitem",
            "config": {"items": 512},
            "metric": "windows_per_s",
            "value": 512 / sec,
            "unit": "windows/s",
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "records.npz"
        sec = _best(lambda: save_records(path, records, dataset="nuplan"), 1)
        rows.append(
            {
                "name": "records_save",
                "config": {"frames": frames},
                "metric": "frames_per_s",
                "value": frames / sec,
                "unit": "frames/s",
            }
        )
        sec = _best(lambda: load_records(path), 1)
        rows.append(
            {
                "name": "records_load_validate",
                "config": {"frames": frames},
                "metric": "frames_per_s",
                "value": frames / sec,
                "unit": "frames/s",
            }
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
