"""Resumable multi-stage jobs: each stage runs in its own folder and is marked done atomically.

A stage is done when ``<run>/<stage>/DONE.json`` exists (written last, atomically, with the stage's
summary). A re-run skips done stages and returns their stored summaries; a stage that was
interrupted has no marker, so its folder is cleared and the stage starts again cleanly. A stage that
runs (again) makes every later stage run again: their outputs were made from its earlier output. Their
markers are renamed ``OUTDATED.json`` before it starts, so an interruption at any point cannot leave a
later stage marked done on top of a newer input. Files a stage writes outside its folder (``outputs``, e.g.
the quickstart's top-level report) are removed at the same moment: nothing made from older inputs stays in
view while the stages that would remake it have not run.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Callable

from vavam.io import atomic_write_json, read_json

DONE_FILE = "DONE.json"
OUTDATED_FILE = "OUTDATED.json"  # a finished stage's marker once a stage before it has run again


@dataclass
class Stage:
    """One step of a job: ``fn(folder) -> summary dict`` (JSON-able); ``outputs``: files it writes outside its
    folder (relative to the run folder), removed whenever it is to run again."""

    name: str
    fn: Callable[[Path], dict[str, Any]]
    description: str = ""
    outputs: tuple[str, ...] = ()


def stage_done(run_dir: Path, name: str) -> bool:
    """True when stage ``name`` of ``run_dir`` finished."""
    return (Path(run_dir) / name / DONE_FILE).is_file()


def _check_inside(name: str, what: str, folder: bool) -> None:
    """Refuse a stage name (``folder``: one plain path component) or an output path that would not lie inside the
    run folder: both are deleted when the stage is to run again (``..`` used to clear the run folder's parent)."""
    if not isinstance(name, str):
        raise ValueError(f"{what}: must be a string")
    parts = PurePath(name).parts
    if folder:
        bad = name in ("", ".", "..") or "/" in name or "\\" in name
    else:
        bad = not parts or PurePath(name).is_absolute() or ".." in parts
    if bad:
        kind = "a plain folder name" if folder else "a relative path inside the run folder"
        raise ValueError(f"{what}: must be {kind} (not empty, '.', '..' or an absolute path)")


def run_stages(run_dir: Path, stages: list[Stage], log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Run ``stages`` in order under ``run_dir``, skipping finished ones (up to the first that runs: every
    stage after it runs again). Returns summaries by stage name."""
    run_dir = Path(run_dir)
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ValueError(f"stage names must be unique: {names}")
    for stage in stages:  # a stage's folder is cleared with rmtree: it must be a folder inside run_dir
        _check_inside(stage.name, f"stage name {stage.name!r}", folder=True)
        if isinstance(stage.outputs, str):  # ("report.md") is a string: its letters would be deleted as files
            raise ValueError(f"stage {stage.name!r}: outputs must be a tuple of paths, "
                             f"got the string {stage.outputs!r}")
        for name in stage.outputs:
            _check_inside(name, f"stage {stage.name!r}: output {name!r}", folder=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    summaries: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(stages, 1):
        folder = run_dir / stage.name
        marker = folder / DONE_FILE
        prefix = f"[{i}/{len(stages)}] {stage.name}"
        if marker.is_file():
            summaries[stage.name] = read_json(marker)["summary"]
            log(f"{prefix}: done earlier, skipped")
            continue
        for redo in stages[i - 1:]:  # this stage and every later one run again: their outside files go now
            for name in redo.outputs:
                (run_dir / name).unlink(missing_ok=True)
        stale = [later.name for later in stages[i:] if (run_dir / later.name / DONE_FILE).is_file()]
        if stale:
            log(f"{prefix}: runs again, so the later stages made from its earlier output will too: {', '.join(stale)}")
            for name in stale:  # an atomic rename: the stage is no longer done, and says why
                (run_dir / name / DONE_FILE).replace(run_dir / name / OUTDATED_FILE)
        if folder.exists():
            log(f"{prefix}: " + ("clearing its outdated earlier output" if (folder / OUTDATED_FILE).is_file()
                                 else "clearing an unfinished earlier attempt"))
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        log(f"{prefix}: {stage.description or 'running'}")
        start = time.perf_counter()
        summary = stage.fn(folder) or {}
        seconds = time.perf_counter() - start
        atomic_write_json(marker, {"stage": stage.name, "seconds": round(seconds, 3), "summary": summary})
        # what a later run reads back when it skips the stage (lists for tuples, str keys): a fresh run and a resumed
        # one must hand the same summaries to later stages and to the caller
        summaries[stage.name] = read_json(marker)["summary"]
        log(f"{prefix}: finished in {seconds:.1f} s")
    return summaries
