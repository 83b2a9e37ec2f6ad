"""VaViM generation speed: tokens/s of ``generate_frames`` with and without the KV cache.

Models (random weights, greedy decoding, CPU unless CUDA is available):
- ``vavim_tiny`` (width 64, 2 layers, 4 x 6 grid, 4 frames): 2 context frames -> 2 new frames;
- ``w256_l2_18x32`` (width 256, 2 layers, head dim 128, 1025 codes, 18 x 32 grid, 8 frames):
  1 context frame -> 1 new frame (576 sequential steps).

Prints one JSON line per measurement: {name, config, metric, value, unit}.
"""

from __future__ import annotations

import json
import os
import time

import torch

from vavam import presets
from vavam.config import VideoConfig
from vavam.video import VideoGPT, generate_frames


def _configs() -> list[tuple[str, VideoConfig, int, int, int, int]]:
    """(name, config, h, w, context frames, new frames)."""
    w256 = VideoConfig(width=256, num_layers=2, head_dim=128, vocab_size=1025, num_frames=8, tokens_per_frame=576, init_std=0.02)
    return [("vavim_tiny", presets.vavim_tiny(), 4, 6, 2, 2), ("w256_l2_18x32", w256, 18, 32, 1, 1)]


@torch.no_grad()
def run() -> list[dict]:
    """Measure generation throughput; returns result rows."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # intra-op threads on a shared CPU mostly measure contention; default 1
        torch.set_num_threads(int(os.environ.get("VAVAM_BENCH_THREADS", "1")))
        device_name = f"cpu threads={torch.get_num_threads()}"
    else:
        device_name = torch.cuda.get_device_name()
    rows = []
    for name, config, h, w, t0, frames in _configs():
        torch.manual_seed(0)
        model = VideoGPT(config).to(device).eval()
        context = torch.randint(0, config.vocab_size - 1, (1, t0, h, w), device=device)
        speeds = {}
        for use_cache in (True, False):
            generate_frames(model, context[:, :1, :1], 1, use_cache=use_cache)  # warm-up (tiny grid)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            generate_frames(model, context, frames, use_cache=use_cache)
            if device == "cuda":
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            speeds[use_cache] = frames * h * w / elapsed
            rows.append(
                {
                    "name": "video.generate_frames",
                    "config": f"{name} ctx={t0} new={frames} batch=1 {device_name} kv_cache={use_cache}",
                    "metric": "tokens_per_s",
                    "value": round(speeds[use_cache], 1),
                    "unit": "tokens/s",
                }
            )
        rows.append(
            {
                "name": "video.generate_frames",
                "config": f"{name} {device_name}",
                "metric": "kv_cache_speedup",
                "value": round(speeds[True] / speeds[False], 2),
                "unit": "x",
            }
        )
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
