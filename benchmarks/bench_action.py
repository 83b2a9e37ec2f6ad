"""VaVAM speed: planning cost ratios at ``vavam_s`` size and training steps/s (issue 4, "Fast planning").

Sampling (random weights, fp32, batch 1, 8 context frames of 18 x 32 = 4608 visual tokens, 10 Euler steps):

- ``prefill``: VaViM's per-layer keys/values over the context alone (``model.visual_kv``), the part every
  ``sample_trajectory`` call computes once;
- ``sample K=1`` and ``sample K=5``: ``sample_trajectory`` end to end (prefill + 10 steps of the 6·K action
  tokens against the cache). Ratios: K=5 / K=1 (target ≤ 1.5) and K=1 / prefill (target ≤ 1.3).
  The three are measured interleaved (prefill, K=1, K=5, prefill, ...), best-of. On a shared machine a load
  burst of a few seconds changes one 10-30 s call by more than the ratios measure, so the benchmark also times
  what a call adds to the prefill (the same ``sample_trajectory`` with the prefill result handed in: KV-cache
  set-up + 10 Euler steps), best-of-5, and reports the ratios composed from those parts too.

Training (``steps_per_s``): one optimiser step of the expert with VaViM frozen, measured directly (no
Lightning): ``model.flow_loss`` (VaViM stream without autograd, Beta time sampling, MSE of velocities over all
frames) + backward + clip 1.0 + muP AdamW step (``build_optimizer`` with ``expert_width_multipliers``), fp32.
Sizes: ``vavam_tiny`` (4 frames of 4 x 6, batch 8) and ``vavam_s`` (8 frames of 18 x 32, batch 1).

``VAVAM_BENCH_QUICK=1``: ``vavam_s`` widths with 4 layers instead of 24, fewer repeats.
Prints one JSON line per measurement: {name, config, metric, value, unit}.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import torch

from vavam import presets
from vavam.action import VideoActionModel

QUICK = os.environ.get("VAVAM_BENCH_QUICK", "") not in ("", "0")
K = 5


def _device_name() -> str:
    if "VAVAM_BENCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["VAVAM_BENCH_THREADS"]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"cpu threads={torch.get_num_threads()} load1={load:.2f}"


def _vavam_s():
    config = presets.vavam_s()
    if QUICK:
        config = dataclasses.replace(config, video=dataclasses.replace(config.video, num_layers=4))
    return config


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def bench_sampling(device_name: str) -> list[dict]:
    config = _vavam_s()
    torch.manual_seed(0)
    model = VideoActionModel(config).eval()
    with torch.no_grad():  # a non-zero readout, so the samples are not trivially the noise
        model.expert.readout.weight.normal_(0, 0.02)
    tokens = torch.randint(0, 16384, (1, 8, 18, 32))
    command = torch.tensor([2])
    noise = torch.randn(1, K, config.horizon, config.action_dim, generator=torch.Generator().manual_seed(0))

    def sample(k: int):
        return model.sample_trajectory(tokens, command, k, 10, noise=noise[:, :k])

    cases = {"prefill": lambda: model.visual_kv(tokens), "K=1": lambda: sample(1), f"K={K}": lambda: sample(K)}
    cases["K=1"]()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(1 if QUICK else 2):
        for name, fn in cases.items():
            times[name].append(_timed(fn))
    best = {name: min(v) for name, v in times.items()}

    # the same calls with the prefill result handed in: what sample_trajectory adds to the prefill (KV-cache
    # set-up + 10 Euler steps of the 6·K action tokens). Cheap, so measured best-of-5 (robust to load bursts).
    visual = model.visual_kv(tokens)
    model.visual_kv = lambda _tokens: visual  # instance override; sample_trajectory calls self.visual_kv
    extra = {k: min(_timed(lambda k=k: sample(k)) for _ in range(5)) for k in (1, K)}
    del model.visual_kv
    prefill = best["prefill"]

    layers = config.video.num_layers
    base = f"vavam_s L={layers} d=768 e=192 ctx=8x576 steps=10 batch=1 fp32 {device_name}"

    def row(config_suffix, metric, value, unit):
        return {"name": "action.sample", "config": f"{base} {config_suffix}", "metric": metric, "value": value,
                "unit": unit}

    rows = [row(name, "latency", round(best[name], 3), "s") for name in cases]
    rows += [row(f"K={k} without prefill (cache set-up + 10 steps)", "latency", round(extra[k], 4), "s") for k in extra]
    rows += [
        row(f"K={K} vs K=1 end to end (best-of)", "cost_ratio", round(best[f"K={K}"] / best["K=1"], 3), "x"),
        row("K=1 vs video prefill alone end to end (best-of)", "cost_ratio", round(best["K=1"] / prefill, 3), "x"),
        row(f"K={K} vs K=1 = (prefill + extra_K) / (prefill + extra_1)", "cost_ratio",
            round((prefill + extra[K]) / (prefill + extra[1]), 3), "x"),
        row("K=1 vs video prefill alone = (prefill + extra_1) / prefill", "cost_ratio",
            round((prefill + extra[1]) / prefill, 3), "x"),
    ]
    return rows


def _train_step_time(config, batch: int, h: int, w: int, repeats: int) -> float:
    """Best time of one expert optimiser step (VaViM frozen), fp32."""
    from vavam.train.action import expert_width_multipliers
    from vavam.train.optim import build_optimizer

    torch.manual_seed(0)
    model = VideoActionModel(config)
    model.video.eval().requires_grad_(False)
    model.expert.train()
    model.mup_width_multipliers = lambda: {f"expert.{k}": v for k, v in expert_width_multipliers(model.expert).items()}
    opt = build_optimizer(model, 0.0194, weight_decay=1e-7)
    frames = config.train_frames
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, config.video.vocab_size - 1, (batch, frames, h, w), generator=g)
    commands = torch.randint(0, 3, (batch, frames), generator=g)
    positions = torch.randn(batch, frames, config.horizon, 2, generator=g) * 10

    def step():
        loss = model.flow_loss(tokens, commands, positions, generator=g)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.expert.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()  # warm-up (optimiser state allocation)
    return min(_timed(step) for _ in range(repeats))


def bench_training(device_name: str) -> list[dict]:
    rows = []
    sizes = [("vavam_tiny", presets.vavam_tiny(), 8, (4, 6)), ("vavam_s", _vavam_s(), 1, (18, 32))]
    for name, config, batch, (h, w) in sizes:
        repeats = 10 if name == "vavam_tiny" else (1 if QUICK else 2)
        best = _train_step_time(config, batch, h, w, repeats)
        rows.append({
            "name": "action.train_step",
            "config": f"{name} L={config.video.num_layers} d={config.video.width} e={config.width} "
                      f"frames={config.train_frames}x{h * w} batch={batch} fp32 frozen VaViM {device_name}",
            "metric": "steps_per_s", "value": round(1 / best, 3), "unit": "steps/s",
        })
    return rows


def run() -> list[dict]:
    """VaVAM sampling ratios and training throughput (result rows)."""
    rows = bench_sampling(_device_name())
    rows += bench_training(_device_name())
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
