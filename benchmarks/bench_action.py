"""VaVAM sampling speed: ``sample_trajectory`` ms per call, K = 5 samples batched vs 5 separate calls.

Models (random weights, 10 Euler steps, CPU unless CUDA is available):
- ``vavam_tiny`` (video width 64, expert 16, 2 layers, 4 frames of 4 x 6);
- ``w256_l2_18x32`` (video width 256, expert 64, 2 layers, 4 context frames of 18 x 32 = 2304 visual tokens).

The batched call computes the visual stream once and runs the 5 samples as 5 action groups; the
separate calls recompute the visual stream each time (the reference's way of drawing K samples).
Prints one JSON line per measurement: {name, config, metric, value, unit}.
"""

from __future__ import annotations

import json
import os
import time

import torch

from vavam import presets
from vavam.action import VideoActionModel
from vavam.config import ActionConfig, VideoConfig

K = 5


def _configs() -> list[tuple[str, ActionConfig, int, int, int]]:
    """(name, config, h, w, context frames)."""
    video = VideoConfig(width=256, num_layers=2, head_dim=128, vocab_size=1025, num_frames=8, tokens_per_frame=576, init_std=0.02)
    w256 = ActionConfig(video=video, width=64, train_frames=8, init_std=0.01)
    return [("vavam_tiny", presets.vavam_tiny(), 4, 6, 4), ("w256_l2_18x32", w256, 18, 32, 4)]


def _time(fn, repeats: int, device: str) -> float:
    fn()  # warm-up
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeats * 1000.0


@torch.no_grad()
def run() -> list[dict]:
    """Measure sampling latency; returns result rows."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":  # intra-op threads on a shared CPU mostly measure contention; default 1
        torch.set_num_threads(int(os.environ.get("VAVAM_BENCH_THREADS", "1")))
        device_name = f"cpu threads={torch.get_num_threads()}"
    else:
        device_name = torch.cuda.get_device_name()
    rows = []
    for name, config, h, w, t0 in _configs():
        torch.manual_seed(0)
        model = VideoActionModel(config).to(device).eval()
        tokens = torch.randint(0, config.video.vocab_size - 1, (1, t0, h, w), device=device)
        command = torch.tensor([2], device=device)
        noise = torch.randn(1, K, config.horizon, config.action_dim, device=device)
        repeats = 5 if name == "vavam_tiny" else 2
        one = _time(lambda: model.sample_trajectory(tokens, command, 1, noise=noise[:, :1]), repeats, device)
        batched = _time(lambda: model.sample_trajectory(tokens, command, K, noise=noise), repeats, device)
        separate = _time(
            lambda: [model.sample_trajectory(tokens, command, 1, noise=noise[:, i : i + 1]) for i in range(K)],
            repeats,
            device,
        )
        base = f"{name} ctx={t0} steps=10 batch=1 {device_name}"
        rows += [
            {"name": "action.sample_trajectory", "config": f"{base} K=1", "metric": "latency", "value": round(one, 2), "unit": "ms/call"},
            {"name": "action.sample_trajectory", "config": f"{base} K={K} batched", "metric": "latency", "value": round(batched, 2), "unit": "ms/call"},
            {"name": "action.sample_trajectory", "config": f"{base} K={K} as {K} calls", "metric": "latency", "value": round(separate, 2), "unit": "ms"},
            {"name": "action.sample_trajectory", "config": f"{base} K={K}", "metric": "batched_speedup", "value": round(separate / batched, 2), "unit": "x"},
        ]
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
