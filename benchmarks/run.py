"""Run vavam's benchmarks and print one JSON line per measurement.

Each ``benchmarks/bench_*.py`` defines ``run() -> list[dict]`` with keys name, config, metric,
value, unit. Usage::

    python benchmarks/run.py                 # all benchmarks
    python benchmarks/run.py tokenizer video # only bench_tokenizer.py and bench_video.py
    python benchmarks/run.py --out results.jsonl

Machines are noisy: compare ratios measured in one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIRED = ("name", "config", "metric", "value", "unit")


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("only", nargs="*", help="benchmark names (bench_<name>.py) to run; default all")
    parser.add_argument("--out", type=Path, help="also append the JSON lines to this file")
    args = parser.parse_args(argv)
    files = sorted(HERE.glob("bench_*.py"))
    if args.only:
        files = [f for f in files if f.stem.removeprefix("bench_") in args.only]
        if not files:
            parser.error(f"no benchmark named {args.only}")
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    rows = []
    import torch

    threads = torch.get_num_threads()
    for path in files:
        torch.set_num_threads(threads)  # a module that pins its own thread count must not change the next one's
        for row in _load(path).run():
            missing = [k for k in REQUIRED if k not in row]
            if missing:
                raise ValueError(f"{path.name}: result {row} lacks {missing}")
            row = {**row, "time": stamp, "host": platform.node()}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
