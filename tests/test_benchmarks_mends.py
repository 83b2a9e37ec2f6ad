"""Benchmarks measure what they report: small checks of the fixes in benchmarks/ (the benchmarks are not tests)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

BENCH_DIR = Path(__file__).resolve().parents[1] / "benchmarks"


def _bench(name: str):
    path = BENCH_DIR / f"bench_{name}.py"
    spec = importlib.util.spec_from_file_location(f"_mends_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_index_size_counts_every_array_of_the_index():
    from vavam.data.windows import WindowConfig, WindowIndex

    bench = _bench("index")
    index = WindowIndex(bench.synthetic_records(3, 200), WindowConfig.for_dataset("nuplan"))
    arrays = [v for v in vars(index).values() if isinstance(v, np.ndarray)]
    assert index.frame_speeds.nbytes > 0
    assert bench._index_nbytes(index) == sum(a.nbytes for a in arrays)


def test_window_build_rows_find_windows_for_every_dataset():
    rows = _bench("windows").run(num_scenes=3, frames_per_scene=200, repeats=1)
    counts = {r["config"]["subsampling"]: r["value"] for r in rows
              if r["name"] == "window_index_build" and r["metric"] == "windows"}
    assert set(counts) == {5, 1}  # nuPlan and nuScenes
    assert all(n > 0 for n in counts.values()), counts


def test_http_calls_are_timed_with_a_full_context():
    pytest.importorskip("httpx")
    import torch

    from vavam import presets

    bench = _bench("serve")
    with torch.no_grad():
        agent = bench._agent(presets.vq_tiny(), presets.vavam_tiny(), "cpu")
    seen: list[int] = []
    original = agent._sample

    def sample(context, *args, **kwargs):
        seen.append(context.shape[1])
        return original(context, *args, **kwargs)

    agent._sample = sample
    timings = bench._bench_http(agent, 2)
    assert len(timings) == 2
    assert seen[1:] == [agent.context_frames] * 2, seen  # the calls after the warm-up
