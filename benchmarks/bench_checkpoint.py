"""Checkpoint loading: time and peak memory of ``vavam.io.load_checkpoint`` on a folder of ~400 MB of weights.

Each measurement runs in a fresh Python process (its peak RSS from ``/proc/self/status``: Linux only), after
``import torch``; the memory
reported is the peak RSS above that process's RSS before loading, in units of the weights' size. For a ratio in
one run it also measures the way the loader used to read a folder (the file's bytes, hashed, then tensors built
from them).

``run() -> list[dict]`` (keys name, config, metric, value, unit); ``python benchmarks/bench_checkpoint.py``
prints one JSON line per measurement.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import hashlib, json, sys, time
import torch
from vavam import io
def peak_kb():  # this process's peak RSS (ru_maxrss counts the parent's at the fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
folder, how = sys.argv[1], sys.argv[2]
base = peak_kb()
t0 = time.perf_counter()
if how == "load_checkpoint":
    state, _, _ = io.load_checkpoint(folder)
else:  # the bytes, their hash, then the tensors built from them
    from safetensors.torch import load
    data = open(f"{folder}/{io.MODEL_FILE}", "rb").read()
    hashlib.sha256(data).hexdigest()
    state = load(data)
    del data
seconds = time.perf_counter() - t0
peak = peak_kb()
weights = sum(v.numel() * v.element_size() for v in state.values())
print(json.dumps({"seconds": seconds, "extra_kb": peak - base, "weights_kb": weights / 1024}))
"""


def _measure(folder: Path, how: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(folder), how], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(megabytes: int = 400) -> list[dict]:
    """Save a float32 checkpoint folder of about ``megabytes`` MB, then load it both ways."""
    import torch

    from vavam import io
    from vavam.presets import vavim_tiny

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        n = megabytes // 40  # tensors of 1024 x 10240 float32 = 40 MiB
        gen = torch.Generator().manual_seed(0)
        state = {f"w{i}": torch.randn(1024, 10240, generator=gen) for i in range(n)}
        io.save_checkpoint(Path(tmp) / "ckpt", state, vavim_tiny(), {})  # the loader does not match them
        del state
        config = f"{n * 40} MiB float32, sha256 checked"
        for how in ("load_checkpoint", "bytes_then_tensors"):
            m = _measure(Path(tmp) / "ckpt", how)
            rows.append({"name": f"checkpoint_load/{how}", "config": config, "metric": "peak_memory_over_weights",
                         "value": round(m["extra_kb"] / m["weights_kb"], 3), "unit": "x"})
            rows.append({"name": f"checkpoint_load/{how}", "config": config, "metric": "seconds",
                         "value": round(m["seconds"], 3), "unit": "s"})
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
