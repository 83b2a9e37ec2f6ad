"""Tokenizer speed: encode and decode images/s at 288x512 for VQ-16 and vq_tiny, fp32 and bf16 autocast.

Random weights (speed does not depend on them). Prints one JSON line per measurement::

    python benchmarks/bench_tokenizer.py
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import torch

import vavam

HEIGHT, WIDTH = 288, 512
BATCH = int(os.environ.get("VAVAM_BENCH_TOKENIZER_BATCH", "1"))
ITERS = int(os.environ.get("VAVAM_BENCH_TOKENIZER_ITERS", "2"))


def _time(fn: Callable[[], object], iters: int) -> float:
    """Seconds per call of ``fn``, after one warm-up call (best of ``iters``)."""
    fn()
    best = float("inf")
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run() -> list[dict]:
    """Measure encode/decode throughput -> rows {name, config, metric, value, unit}."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows: list[dict] = []
    for preset in ("vq16", "vq_tiny"):
        torch.manual_seed(0)
        model = vavam.build_model(getattr(vavam.presets, preset)()).to(device).eval()
        images = (torch.rand(BATCH, 3, HEIGHT, WIDTH, device=device) * 2 - 1).contiguous()
        ids = model.encode(images)
        for precision in ("fp32", "bf16"):
            autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")

            def encode() -> None:
                with autocast:
                    model.encode(images)
                if device == "cuda":
                    torch.cuda.synchronize()

            def decode() -> None:
                with autocast:
                    model.decode(ids)
                if device == "cuda":
                    torch.cuda.synchronize()

            for op, fn in (("encode", encode), ("decode", decode)):
                seconds = _time(fn, ITERS)
                rows.append(
                    {
                        "name": f"tokenizer_{op}",
                        "config": {
                            "preset": preset,
                            "precision": precision,
                            "batch": BATCH,
                            "image_hw": [HEIGHT, WIDTH],
                            "device": device,
                            "threads": torch.get_num_threads(),
                        },
                        "metric": f"{op}_throughput",
                        "value": round(BATCH / seconds, 4),
                        "unit": "images/s",
                    }
                )
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
