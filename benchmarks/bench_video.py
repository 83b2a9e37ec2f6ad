"""VaViM speed: the machine's matmul peak, training-step throughput as a fraction of it, generation with and
without the KV cache, prefill time.

Model (issue 3, "Speed"): 4 layers, width 768, head dim 128 (6 heads), vocabulary 16385, one window of
8 frames x 18 x 32 = 4608 tokens, batch 1, random weights.

- ``peak``: best GFLOP/s of a square matmul (n = 2048 and 4096) in fp32 and bf16, measured in this run, with
  ``torch.get_num_threads()`` threads (``VAVAM_BENCH_THREADS`` overrides).
- ``train_step``: forward + next-token loss (``vavam.train.video.next_token_loss``) + backward, fp32 and bf16
  autocast. FLOPs counted analytically:
  ``6·N·T`` for the matmul parameters (N = 12·d²·L block weights + V·d tied readout; the embedding lookups are
  not matmuls) plus ``6·L·T²·d`` for causal attention (QKᵀ and A·V: 4·T²·d forward for full attention, half of it
  causal, x3 for forward + backward). Fraction = achieved / peak of the same dtype.
- ``generation``: prefill time (4 and 8 frames into an empty cache), per-token time of cached decoding after a
  4-frame context, per-token time of recomputation (the whole 4-frame + prefix sequence per token), their ratio,
  and ``generate_frames`` tokens/s (cached, 1 new frame after 4).

Timings are best-of-repeats (the machine is shared; best-of estimates the uncontended speed, for the peak as
for the step, so the fraction compares like with like). ``VAVAM_BENCH_QUICK=1``: 2 frames, fewer repeats.
``VAVAM_BENCH_PROFILE=1``: also print a torch.profiler table of one step per dtype to stderr.
Prints one JSON line per measurement: {name, config, metric, value, unit}.
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from vavam.config import VideoConfig
from vavam.eval.flops import video_train_flops
from vavam.video import VideoGPT, generate_frames

QUICK = os.environ.get("VAVAM_BENCH_QUICK", "") not in ("", "0")
PROFILE = os.environ.get("VAVAM_BENCH_PROFILE", "") not in ("", "0")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def setup_threads() -> str:
    """Thread count: ``VAVAM_BENCH_THREADS`` or torch's default; returns a description for the config field."""
    if "VAVAM_BENCH_THREADS" in os.environ:
        torch.set_num_threads(int(os.environ["VAVAM_BENCH_THREADS"]))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"cpu threads={torch.get_num_threads()} load1={load:.2f}"


def best_time(fn, repeats: int, warmup: int = 1) -> float:
    """Best wall time of ``fn()`` over ``repeats`` calls after ``warmup`` calls (seconds)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _matmul_time(n: int, dtype: torch.dtype, repeats: int) -> float:
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g).to(dtype), torch.randn(n, n, generator=g).to(dtype)
    out = torch.empty(n, n, dtype=dtype)
    return best_time(lambda: torch.mm(a, b, out=out), repeats)


def matmul_peak(dtype: torch.dtype, sizes=(2048, 4096), repeats: int = 3) -> tuple[float, int]:
    """Best GFLOP/s of ``a @ b`` (square, ``2·n³`` FLOPs) over ``sizes``; returns (GFLOP/s, best n)."""
    best, best_n = 0.0, sizes[0]
    for n in sizes:
        gflops = 2 * n**3 / _matmul_time(n, dtype, repeats if n <= 2048 else max(1, repeats - 1)) / 1e9
        if gflops > best:
            best, best_n = gflops, n
    return best, best_n


def bench_config(frames: int = 8) -> VideoConfig:
    """4 layers, width 768, head dim 128, vocabulary 16385, 8 frames of 576 tokens (the issue's size)."""
    return VideoConfig(width=768, num_layers=4, head_dim=128, vocab_size=16385, num_frames=8, tokens_per_frame=576)


def _profile(step, label: str) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(f"--- profile {label}", file=sys.stderr)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15), file=sys.stderr)


def bench_train(device_name: str) -> list[dict]:
    from vavam.train.video import next_token_loss

    frames = 2 if QUICK else 8
    repeats = 1 if QUICK else 2
    config = bench_config()
    torch.manual_seed(0)
    model = VideoGPT(config).train()
    tokens = torch.randint(0, 16384, (1, frames, 18, 32))
    n_tokens = frames * 576
    flops = video_train_flops(config, n_tokens, seq_len=n_tokens)
    base = f"L=4 d=768 dh=128 V=16385 tokens={frames}x576 batch=1 {device_name}"
    rows = []
    for label, dtype in DTYPES.items():

        def step(dtype=dtype):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
                loss = next_token_loss(model(tokens), tokens)
            loss.backward()
            model.zero_grad(set_to_none=True)

        peak_before, n_peak = matmul_peak(dtype)
        t = best_time(step, repeats)
        peak_after, _ = matmul_peak(dtype)
        peak = max(peak_before, peak_after)
        achieved = flops / t / 1e9
        if PROFILE:
            _profile(step, f"train step {label}")
        rows += [
            {"name": "video.peak", "config": f"matmul n={n_peak} {label} {device_name}", "metric": "gflops",
             "value": round(peak, 1), "unit": "GFLOP/s"},
            {"name": "video.train_step", "config": f"{base} {label}", "metric": "step_time", "value": round(t, 3),
             "unit": "s"},
            {"name": "video.train_step", "config": f"{base} {label}", "metric": "tokens_per_s",
             "value": round(n_tokens / t, 1), "unit": "tokens/s"},
            {"name": "video.train_step", "config": f"{base} {label} flops=6*N*T+6*L*T^2*d={flops / 1e12:.3f}T",
             "metric": "achieved_gflops", "value": round(achieved, 1), "unit": "GFLOP/s"},
            {"name": "video.train_step", "config": f"{base} {label} peak={peak:.0f}GFLOP/s", "metric": "fraction_of_peak",
             "value": round(achieved / peak, 3), "unit": "fraction"},
        ]
    return rows


def _full_last_logits(model: VideoGPT, seq: torch.Tensor) -> torch.Tensor:
    x = model.run_blocks(model.embed(seq, 0, 576))
    return model.readout(model.final_norm(x[:, -1]))


@torch.no_grad()
def bench_generation(device_name: str) -> list[dict]:
    config = bench_config()
    torch.manual_seed(0)
    model = VideoGPT(config).eval()
    window = torch.randint(0, 16384, (1, 8, 18, 32))
    flat = window.reshape(1, -1)
    ctx = 2 if QUICK else 4
    n_ctx = ctx * 576
    base = f"L=4 d=768 dh=128 V=16385 batch=1 fp32 {device_name}"
    rows = []

    def prefill(n):
        cache = model.new_kv_cache(1)
        model.decode_step(flat[:, :n], cache, 576)
        return cache

    prefill_frames = (2,) if QUICK else (4, 8)
    for f in prefill_frames:
        t = best_time(lambda f=f: prefill(f * 576), 1 if QUICK else 2)
        rows.append({"name": "video.prefill", "config": f"{base} frames={f}", "metric": "prefill_time",
                     "value": round(t, 3), "unit": "s"})

    # cached: one token at a time after the context
    steps = 16 if QUICK else 48
    cache = prefill(n_ctx)
    model.decode_step(flat[:, n_ctx : n_ctx + 1], cache, 576)  # warm-up
    start = time.perf_counter()
    for j in range(steps):
        model.decode_step(flat[:, n_ctx + 1 + j : n_ctx + 2 + j], cache, 576)
    cached = (time.perf_counter() - start) / steps
    # recomputation: the whole sequence up to the new token, for every token
    n_rec = 2 if QUICK else 3
    _full_last_logits(model, flat[:, : n_ctx + 1])  # warm-up
    start = time.perf_counter()
    for j in range(n_rec):
        _full_last_logits(model, flat[:, : n_ctx + 1 + j])
    uncached = (time.perf_counter() - start) / n_rec
    rows += [
        {"name": "video.generation", "config": f"{base} ctx_frames={ctx} kv_cache=True", "metric": "time_per_token",
         "value": round(cached * 1e3, 2), "unit": "ms"},
        {"name": "video.generation", "config": f"{base} ctx_frames={ctx} kv_cache=True", "metric": "tokens_per_s",
         "value": round(1 / cached, 1), "unit": "tokens/s"},
        {"name": "video.generation", "config": f"{base} ctx_frames={ctx} kv_cache=False", "metric": "time_per_token",
         "value": round(uncached * 1e3, 2), "unit": "ms"},
        {"name": "video.generation", "config": f"{base} ctx_frames={ctx} kv_cache=False", "metric": "tokens_per_s",
         "value": round(1 / uncached, 2), "unit": "tokens/s"},
        {"name": "video.generation", "config": f"{base} ctx_frames={ctx}", "metric": "kv_cache_speedup_per_token",
         "value": round(uncached / cached, 1), "unit": "x"},
    ]
    if not QUICK:  # end to end: one new frame (576 sequential tokens) after 4 frames, greedy
        t = best_time(lambda: generate_frames(model, window[:, :4], 1), 1, warmup=0)
        rows.append({"name": "video.generate_frames", "config": f"{base} ctx_frames=4 new=1 kv_cache=True",
                     "metric": "tokens_per_s", "value": round(576 / t, 1), "unit": "tokens/s"})
    return rows


def run() -> list[dict]:
    """All VaViM speed measurements (result rows)."""
    device_name = setup_threads()
    rows = bench_train(device_name)
    rows += bench_generation(setup_threads())
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row), flush=True)
