"""Dataset export from the embedded driving world (``vavam world generate``).

``generate(out, num_scenes, ...)`` drives the expert through ``num_scenes`` scenes and writes them in
the common scene-record format (:mod:`vavam.data.records`). Everything is a function of the
arguments: the same seed and settings give the same frames (byte for byte) and the same records.

On-disk layout of ``DIR``::

    DIR/meta.json                 settings, seed, counts, image size, rate, label table, splits
    DIR/records.npz               all complete scenes (``save_records``; image paths relative to DIR;
                                  per-scene ``metadata``: commands, speeds, split, town, hazard kind)
    DIR/frames/<scene>/000000.png front-camera frames, RGB, one PNG per frame (rate_hz)
    DIR/labels/<scene>.npy        uint8 [T, H, W] semantic label ids (``--labels``; table in meta.json)
    DIR/depth/<scene>.npy         float16 [T, H, W] metric depth along the optical axis (``--depth``;
                                  sky = camera far plane, 1000 m)
    DIR/scenes/<scene>.npz        the scene's own record: written last, it marks the scene complete

Frames are PNG (lossless, compression level 1): the tokenizer trains on these pixels and must not learn
JPEG block artefacts; level 1 costs little CPU and PNG output is deterministic, so a dataset can be
checked byte for byte. Scenes are named ``scene-000000`` ... in generation order.

Scenes and splits. Expert drives share towns: ``num_towns = max(held_out_towns + 1,
ceil(num_scenes / scenes_per_town))`` towns, scenes assigned to towns in contiguous blocks (one
renderer per town is reused); the last ``held_out_towns`` towns form the ``heldout`` split, the rest
``train``. In each split, ``round(hazard_share * n)`` scenes (chosen at random, seeded) are hazard
scenes instead: the privileged expert drives through a NeuroNCAP-style scenario (stationary,
frontal or side; at most 8 s), each in a scenario town of its own (layout indices >= 100, so never one
of the benchmark layouts of ``vavam world scenarios``, nor another scene's town). Towns of the two
splits are therefore disjoint; ``meta.json`` lists them (``towns``: world seed per split).

Writing is atomic per scene: frames go to ``frames/.<scene>.tmp`` and are renamed when complete;
label/depth arrays and the scene record are written with :func:`vavam.io.atomic_write`, the scene
record last. Re-running with the same settings resumes: complete scenes are skipped, partial ones are
removed and generated again. ``records.npz`` is rewritten (atomically) every ~30 s and at the end,
listing complete scenes only.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vavam.io import atomic_write, atomic_write_json

FRAME_EXT = "png"
PNG_LEVEL = 1
HAZARD_LAYOUT_BASE = 100  # benchmark layouts are 0 .. 99
HAZARD_LAYOUT_SPAN = 7800  # layout seeds 7919 * (k + 1) + 31 * layout stay distinct below 7919
SPLITS = ("train", "heldout")
RECORDS_EVERY_S = 30.0


@dataclass
class ScenePlan:
    """What scene ``index`` is (a pure function of the generation settings)."""

    index: int
    name: str
    split: str
    kind: str  # "drive" or a hazard scenario type
    town_seed: int  # world seed of the town (scenario layout seed for hazard scenes)
    world_seed: int  # traffic / route seed (drives); scenario run index (hazards)
    layout: int = -1


def plan_scenes(
    num_scenes: int, seed: int, hazard_share: float, held_out_towns: int, scenes_per_town: int
) -> tuple[list[ScenePlan], dict[str, list[int]]]:
    """The scene list and the town seeds per split (see the module docstring)."""
    from vavam.world.scenarios import SCENARIO_TYPES, make_scenario

    if num_scenes < 1:
        raise ValueError(f"num_scenes must be >= 1, got {num_scenes}")
    if not 0.0 <= hazard_share <= 1.0:
        raise ValueError(f"hazard_share must be in [0, 1], got {hazard_share}")
    if held_out_towns < 0:
        raise ValueError(f"held_out_towns must be >= 0, got {held_out_towns}")
    if scenes_per_town < 1:
        raise ValueError(f"scenes_per_town must be >= 1, got {scenes_per_town}")
    if num_scenes > HAZARD_LAYOUT_SPAN:
        raise ValueError(f"at most {HAZARD_LAYOUT_SPAN} scenes per dataset, got {num_scenes}")
    n_towns = max(held_out_towns + 1, math.ceil(num_scenes / scenes_per_town))
    if n_towns > num_scenes:
        raise ValueError(
            f"held_out_towns={held_out_towns} needs at least {held_out_towns + 1} scenes "
            f"(one training town besides the held-out ones), got num_scenes={num_scenes}"
        )
    town_seeds = [int(seed) * 100_003 + 1_000_000 + j for j in range(n_towns)]
    town_of = [i * n_towns // num_scenes for i in range(num_scenes)]
    split_of = ["heldout" if t >= n_towns - held_out_towns else "train" for t in town_of]
    rng = np.random.default_rng([int(seed), 0x6E7])
    hazard = np.zeros(num_scenes, dtype=bool)
    for split in SPLITS:
        idx = np.array([i for i in range(num_scenes) if split_of[i] == split], dtype=np.int64)
        k = round(hazard_share * len(idx))
        if k:
            hazard[rng.choice(idx, size=k, replace=False)] = True
    towns: dict[str, list[int]] = {s: [] for s in SPLITS}
    plans = []
    for i in range(num_scenes):
        name = f"scene-{i:06d}"
        if hazard[i]:
            r = np.random.default_rng([int(seed), 0x4A2, i])
            kind = SCENARIO_TYPES[int(r.integers(len(SCENARIO_TYPES)))]
            layout = HAZARD_LAYOUT_BASE + (int(seed) * 7877 + i) % HAZARD_LAYOUT_SPAN
            run = int(r.integers(1_000_000))
            town_seed = make_scenario(kind, layout, run).world_seed  # side layouts may live in a fallback town
            plans.append(ScenePlan(i, name, split_of[i], kind, town_seed, run, layout))
        else:
            t = town_seeds[town_of[i]]
            plans.append(ScenePlan(i, name, split_of[i], "drive", t, int(seed) * 100_003 + i))
        if plans[-1].town_seed not in towns[split_of[i]]:
            towns[split_of[i]].append(plans[-1].town_seed)
    return plans, towns


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path, format="PNG", compress_level=PNG_LEVEL)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array, allow_pickle=False)


def _scene_done(out: Path, name: str) -> bool:
    return (out / "scenes" / f"{name}.npz").is_file() and (out / "frames" / name).is_dir()


def _collect_records(out: Path, plans: list[ScenePlan]) -> list:
    from vavam.data.records import load_records

    recs = []
    for p in plans:
        if _scene_done(out, p.name):
            recs.extend(load_records(out / "scenes" / f"{p.name}.npz", check_files=False, validate=False))
    return recs


def _write_records(out: Path, plans: list[ScenePlan], meta: dict) -> int:
    from vavam.data.records import save_records

    recs = _collect_records(out, plans)
    if recs:
        save_records(out / "records.npz", recs, dataset="vavam-world", metadata={"generator": meta["generator"]})
    return len(recs)


@dataclass(frozen=True)
class _RenderSettings:
    duration_s: float
    rate_hz: float
    height: int
    width: int
    labels: bool
    depth: bool


def _town_chunks(plans: list[ScenePlan]) -> list[list[ScenePlan]]:
    """Consecutive scenes of one town go together (one town model and renderer per chunk)."""
    chunks: list[list[ScenePlan]] = []
    for p in plans:
        if chunks and p.kind == "drive" and chunks[-1][-1].kind == "drive" and chunks[-1][-1].town_seed == p.town_seed:
            chunks[-1].append(p)
        else:
            chunks.append([p])
    return chunks


def _exit_with_parent(parent_pid: int, poll_s: float = 0.5) -> None:
    """Worker initializer: end this worker as soon as the process that started it is gone.

    A parent killed by a signal (SIGTERM from ``kill`` or a scheduler, SIGKILL) runs no clean-up, and its
    workers would otherwise keep rendering their chunk (up to minutes) into the output folder, racing a
    re-run that resumes there. A daemon thread polls the parent's pid (reparenting changes ``getppid``).
    """
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _render_chunk(out: Path, plans: list[ScenePlan], settings: _RenderSettings) -> int:
    """Worker entry point: render ``plans`` into ``out``; returns the number of frames written."""
    return sum(frames for _, frames in _render_scenes(out, plans, settings))


def _render_scenes(out: Path, plans: list[ScenePlan], settings: _RenderSettings):
    """Render and write each scene of ``plans`` (atomically, record last); yields ``(plan, frames)``."""
    from vavam.data.records import save_records
    from vavam.world.camera import Camera
    from vavam.world.episode import record_episode, record_hazard_episode
    from vavam.world.render import Renderer, create_context
    from vavam.world.scenarios import make_scenario
    from vavam.world.sim import World, WorldConfig
    from vavam.world.town import generate_town

    st = settings
    ctx = create_context()
    camera = Camera(st.height, st.width)
    config = WorldConfig()
    town = renderer = None
    pool = ThreadPoolExecutor(max_workers=2)
    try:
        for p in plans:
            frames_dir = out / "frames" / p.name
            if frames_dir.exists():  # a scene that was renamed but never got its record
                shutil.rmtree(frames_dir)
            if p.kind == "drive":
                if town is None or town.seed != p.town_seed:
                    if renderer is not None:
                        renderer.release()
                    town = generate_town(p.town_seed, config.network)
                    renderer = Renderer(town, camera, ctx=ctx)
                ep = record_episode(
                    p.world_seed, st.duration_s, st.rate_hz, st.height, st.width, st.labels, st.depth, config,
                    renderer=renderer, world=World(p.world_seed, config, town=town),
                )  # fmt: skip
            else:
                spec = make_scenario(p.kind, p.layout, p.world_seed)
                ep = record_hazard_episode(
                    spec, min(st.duration_s, spec.duration), st.rate_hz, st.height, st.width, st.labels, st.depth,
                    ctx=ctx,
                )  # fmt: skip
            tmp = out / "frames" / f".{p.name}.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
            names = [f"{k:06d}.{FRAME_EXT}" for k in range(len(ep))]
            list(pool.map(_write_png, [tmp / n for n in names], ep.images))
            tmp.rename(frames_dir)
            extra = {"split": p.split, "kind": p.kind, "town_seed": p.town_seed, "scene_index": p.index}
            if st.labels:
                _save_npy(out / "labels" / f"{p.name}.npy", ep.labels.astype(np.uint8))
                extra["labels_path"] = f"labels/{p.name}.npy"
            if st.depth:
                _save_npy(out / "depth" / f"{p.name}.npy", ep.depths.astype(np.float16))
                extra["depth_path"] = f"depth/{p.name}.npy"
            rec = ep.to_scene_record([f"frames/{p.name}/{n}" for n in names], name=p.name)
            rec.metadata.update(extra)
            rec.metadata["route_commands"] = ep.route_commands.tolist()
            save_records(out / "scenes" / f"{p.name}.npz", [rec], dataset="vavam-world")
            yield p, len(ep)
    finally:
        pool.shutdown()
        if renderer is not None:
            renderer.release()
        ctx.release()


def generate(
    out: Path,
    num_scenes: int = 100,
    duration_s: float = 20.0,
    rate_hz: float = 10.0,
    height: int = 288,
    width: int = 512,
    seed: int = 0,
    hazard_share: float = 0.2,
    labels: bool = False,
    depth: bool = False,
    held_out_towns: int = 1,
    scenes_per_town: int = 4,
    progress: bool = True,
    workers: int = 1,
) -> dict:
    """Generate a driving dataset from the embedded world (frames, poses, commands; resumable).

    Writes ``num_scenes`` expert drives (a ``hazard_share`` of them through hazard scenarios) as
    scene records + PNG frames under ``out``; layout in the :mod:`vavam.world.export` docstring.

    Args:
        out: output folder (created; re-running with the same settings resumes).
        num_scenes: number of scenes.
        duration_s: seconds per scene (hazard scenes: at most the scenario's 8 s).
        rate_hz: frame rate; must divide the 10 Hz simulation rate (10, 5, 2, 1 ...).
        height: image height in pixels.
        width: image width in pixels.
        seed: dataset seed; everything follows from it.
        hazard_share: share of hazard scenes in each split, in [0, 1].
        labels: also write semantic label maps (``labels/<scene>.npy``, uint8).
        depth: also write depth maps (``depth/<scene>.npy``, float16 metres).
        held_out_towns: number of towns whose scenes form the ``heldout`` split.
        scenes_per_town: expert scenes per town (more: fewer towns, faster).
        progress: show a progress bar and print the generation speed.
        workers: processes rendering in parallel (each town's scenes stay in one process); the
            output is the same byte for byte whatever the number. Workers are spawned, so a script
            calling this with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.

    Returns:
        summary dict: out, scenes, generated, skipped, frames, frames_generated, seconds,
        frames_per_s, splits (scene counts), records, meta.
    """
    from tqdm.auto import tqdm

    from vavam.data.records import save_records
    from vavam.world.meshes import LABELS

    if not (math.isfinite(duration_s) and duration_s > 0 and math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"--duration-s and --rate-hz must be positive finite numbers, got {duration_s}, {rate_hz}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers must be a positive integer, got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    if height < 8 or width < 8:
        raise ValueError(f"image size must be at least 8x8, got {height}x{width}")
    steps = 10.0 / rate_hz
    if abs(steps - round(steps)) > 1e-6 or round(steps) < 1:
        raise ValueError(f"rate_hz={rate_hz} must divide the 10 Hz simulation rate (10, 5, 2.5, 2, 1 ...)")
    out = Path(out)
    plans, towns = plan_scenes(num_scenes, seed, hazard_share, held_out_towns, scenes_per_town)
    generator = {
        "num_scenes": int(num_scenes),
        "duration_s": float(duration_s),
        "rate_hz": float(rate_hz),
        "height": int(height),
        "width": int(width),
        "seed": int(seed),
        "hazard_share": float(hazard_share),
        "labels": bool(labels),
        "depth": bool(depth),
        "held_out_towns": int(held_out_towns),
        "scenes_per_town": int(scenes_per_town),
    }
    meta_path = out / "meta.json"
    if meta_path.is_file():
        old = json.loads(meta_path.read_text()).get("generator")
        if old != generator:
            raise ValueError(
                f"{out} holds a dataset generated with other settings ({old}); use another folder "
                f"or the same settings to resume"
            )
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "format": "vavam-world-dataset",
        "version": 1,
        "generator": generator,
        "seed": int(seed),
        "image_size": [int(height), int(width)],
        "rate_hz": float(rate_hz),
        "frame_format": FRAME_EXT,
        "label_names": {str(k): v for k, v in LABELS.items()},
        "towns": towns,
        "complete": False,
    }
    atomic_write_json(meta_path, meta)
    for sub in ("frames", "scenes", "labels", "depth"):
        (out / sub).mkdir(exist_ok=True)
    for tmp in (out / "frames").glob(".*.tmp"):  # leftovers of an interrupted run
        shutil.rmtree(tmp, ignore_errors=True)

    todo = [p for p in plans if not _scene_done(out, p.name)]
    skipped = len(plans) - len(todo)
    frames_per_drive = math.ceil(duration_s * rate_hz - 1e-9)
    settings = _RenderSettings(float(duration_s), float(rate_hz), int(height), int(width), bool(labels), bool(depth))
    n_frames_new = 0
    t_start = time.perf_counter()
    last_records = t_start
    bar = tqdm(total=len(todo), desc="world generate", unit="scene", disable=not progress, dynamic_ncols=True)

    def done(scenes: int, frames: int, p: ScenePlan) -> None:
        nonlocal n_frames_new, last_records
        n_frames_new += frames
        bar.set_postfix(fps=f"{n_frames_new / max(time.perf_counter() - t_start, 1e-9):.1f}", split=p.split, kind=p.kind)
        bar.update(scenes)
        if time.perf_counter() - last_records > RECORDS_EVERY_S:
            _write_records(out, plans, meta)
            last_records = time.perf_counter()

    try:
        chunks = _town_chunks(todo)
        if workers > 1 and len(chunks) > 1:
            mp = multiprocessing.get_context("spawn")  # fresh worker processes: no inherited GL state
            with ProcessPoolExecutor(max_workers=min(workers, len(chunks)), mp_context=mp,
                                     initializer=_exit_with_parent, initargs=(os.getpid(),)) as ex:
                futures = {ex.submit(_render_chunk, out, chunk, settings): chunk for chunk in chunks}
                for fut in as_completed(futures):
                    chunk = futures[fut]
                    done(len(chunk), fut.result(), chunk[-1])
        elif todo:
            for p, frames in _render_scenes(out, todo, settings):
                done(1, frames, p)
    finally:
        bar.close()
    seconds = time.perf_counter() - t_start
    recs = _collect_records(out, plans)
    save_records(out / "records.npz", recs, dataset="vavam-world", metadata={"generator": generator})
    by_name = {r.name: r for r in recs}
    splits = {}
    for split in SPLITS:
        sp = [p for p in plans if p.split == split]
        n_haz = sum(p.kind != "drive" for p in sp)
        splits[split] = {
            "scenes": [p.name for p in sp],
            "num_scenes": len(sp),
            "num_frames": int(sum(len(by_name[p.name]) for p in sp if p.name in by_name)),
            "hazard_scenes": n_haz,
            "hazard_share": (n_haz / len(sp)) if sp else 0.0,
        }
    meta.update(
        {
            "num_scenes": len(recs),
            "num_frames": int(sum(len(r) for r in recs)),
            "frames_per_drive": frames_per_drive,
            "splits": splits,
            "scenes": [asdict(p) for p in plans],
            "complete": len(recs) == len(plans),
        }
    )
    atomic_write_json(meta_path, meta)
    summary = {
        "out": str(out),
        "scenes": len(recs),
        "generated": len(todo),
        "skipped": skipped,
        "frames": meta["num_frames"],
        "frames_generated": n_frames_new,
        "seconds": seconds,
        "frames_per_s": n_frames_new / seconds if n_frames_new else 0.0,
        "splits": {s: splits[s]["num_scenes"] for s in SPLITS},
        "records": str(out / "records.npz"),
        "meta": str(meta_path),
    }
    if progress:
        print(
            f"world generate: {len(todo)} scenes generated ({skipped} skipped), {n_frames_new} frames "
            f"{height}x{width} in {seconds:.1f} s = {summary['frames_per_s']:.1f} frames/s -> {out}"
        )
    return summary
