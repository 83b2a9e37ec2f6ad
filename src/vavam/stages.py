"""Resumable multi-stage jobs: each stage runs in its own folder and is marked done atomically.

A stage is done when ``<run>/<stage>/DONE.json`` exists (written last, atomically, with the stage's
summary). A re-run skips done stages and returns their stored summaries; a stage that was
interrupted has no marker, so its folder is cleared and the stage starts again cleanly.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from vavam.io import atomic_write_json, read_json

DONE_FILE = "DONE.json"


@dataclass
class Stage:
    """One step of a job: ``fn(folder) -> summary dict`` (JSON-able)."""

    name: str
    fn: Callable[[Path], dict[str, Any]]
    description: str = ""


def stage_done(run_dir: Path, name: str) -> bool:
    """True when stage ``name`` of ``run_dir`` finished."""
    return (Path(run_dir) / name / DONE_FILE).is_file()


def run_stages(run_dir: Path, stages: list[Stage], log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order under ``run_dir``, skipping finished ones. Returns summaries by stage name."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique: {names}")
    summaries: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(stages, 1):
        folder = run_dir / stage.name
        marker = folder / DONE_FILE
        prefix = f"[{i}/{len(stages)}] {stage.name}"
        if marker.is_file():
            summaries[stage.name] = read_json(marker)["summary"]
            log(f"{prefix}: done earlier, skipped")
            continue
        if folder.exists():
            log(f"{prefix}: clearing an unfinished earlier attempt")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        log(f"{prefix}: {stage.description or 'running'}")
        start = time.perf_counter()
        summary = stage.fn(folder) or {}
        seconds = time.perf_counter() - start
        atomic_write_json(marker, {"stage": stage.name, "seconds": round(seconds, 3), "summary": summary})
        summaries[stage.name] = summary
        log(f"{prefix}: finished in {seconds:.1f} s")
    return summaries
