"""What the machine has and can do fast: whether a requested device exists, whether bf16 autocast helps or
hurts on it.

On a CPU, bf16 matrix products are fast only with native bf16 instructions (AVX-512 BF16 or AMX);
without them PyTorch falls back to slow conversion loops. Measured on 2 AVX2 cores (AMD EPYC, torch
2.13): a 1024 x 1024 matmul ran at 75 GFLOP/s in float32 and 0.9 GFLOP/s in bf16, and a
``vq_mini`` training step took 20 s under bf16 autocast instead of 2 s in float32. On a CPU with
AVX-512 BF16 the same bf16 matmuls run about 2x faster than float32.
"""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import torch

__all__ = ["check_device", "cpu_has_native_bf16", "native_bf16_from_cpuinfo", "bf16_is_fast",
           "warn_if_slow_bf16"]

_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")


def check_device(device: str, flag: str = "--device") -> None:
    """Refuse a device this machine does not have, naming ``flag`` (``auto`` always passes).

    Raises:
        ValueError: not a torch device name, CUDA asked of a torch without CUDA or beyond the visible GPUs,
            or MPS where there is none.
    """
    if device == "auto":
        return
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"{flag} {device!r}: not a device name (cpu, cuda, cuda:N, auto where offered)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "has no CUDA support" if torch.version.cuda is None else "sees no GPU"
            raise ValueError(f"{flag} {device}: no CUDA device here (torch {torch.__version__} {why}); "
                             "use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{flag} {device}: only {torch.cuda.device_count()} GPU(s) visible")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{flag} {device}: no MPS device here; use --device cpu")


def native_bf16_from_cpuinfo(text: str) -> bool | None:
    """Native bf16 according to the text of ``/proc/cpuinfo``: x86 ``avx512_bf16`` / ``amx_bf16``, ARM
    ``bf16``; None when the text lists no CPU flags at all."""
    flags: set[str] = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return None
    return any(f in flags for f in _NATIVE_BF16_FLAGS) or "bf16" in flags


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has native bf16 arithmetic (flags in ``/proc/cpuinfo``; where they cannot be
    read, a 256^3 matmul timing decides: bf16 must be at least as fast as float32)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        native = native_bf16_from_cpuinfo(cpuinfo.read_text(errors="replace"))
        if native is not None:
            return native
    return _bf16_matmul_not_slower()


def _bf16_matmul_not_slower(size: int = 256, repeats: int = 5) -> bool:
    import time

    def best(dtype: torch.dtype) -> float:
        a = torch.randn(size, size).to(dtype)
        a @ a  # warm-up
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ a
            times.append(time.perf_counter() - t)
        return min(times)

    return best(torch.bfloat16) <= best(torch.float32)


def bf16_is_fast(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 autocast speeds ``device`` up: CUDA devices with bf16 support, CPUs with native bf16."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return cpu_has_native_bf16()
    return True  # other accelerators: trust the caller


def warn_if_slow_bf16(precision: str, device: str | torch.device = "cpu", what: str = "training") -> None:
    """Warn (once per call site) when ``precision`` asks for bf16 on a device where it is slow."""
    if "bf16" not in str(precision) or bf16_is_fast(device):
        return
    if torch.device(device).type == "cpu":
        message = (f"{what} with precision {precision!r} on a CPU without native bf16 (no avx512_bf16 / amx_bf16): "
                   f"bf16 runs 10-80x slower than float32 here; pass precision '32' (--precision 32)")
    else:  # a GPU without bf16 (or none visible) used to be called "a CPU without native bf16"
        message = (f"{what} with precision {precision!r} on device {str(device)!r}, which has no bf16 support here "
                   f"(no CUDA device visible, or compute capability below 8.0); pass precision '32' (--precision 32)")
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    print(f"[vavam] warning: {message}", file=sys.stderr)
