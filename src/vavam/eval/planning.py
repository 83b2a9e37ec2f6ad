"""Open-loop planning evaluation of VaVAM over every window of a split (``vavam eval openloop``).

For each window the model plans from its context frames under the window's command (that of the
last context frame); K samples give minADE@K and the best sample's FDE and L2 at 1 / 2 / 3 s (the best
sample is chosen with the ground truth; L2@t is the point error at t, UniAD's convention, not the
average up to t of ST-P3 / VAD). Where the records carry other agents' boxes (the world, nuScenes,
nuPlan), every planned trajectory is checked for a collision with their future boxes
(:mod:`vavam.eval.collision`); the collision rate averages over all K plans of a window. Baselines in the
same table: constant velocity (speed from the previous context frame's ground-truth trajectory) and
the mean trajectory per command of a training split. Under ``torch.distributed`` each rank takes
every ``world_size``-th window and the sums are reduced, so every window counts once. A window's K noise
draws come from a generator seeded by ``(seed, its index in the split)``, so the numbers do not depend on
the batch size or the number of ranks (``torchrun ... vavam.cli eval openloop`` gives one process's result).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vavam.eval.collision import CollisionClasses, future_boxes, planned_collisions
from vavam.eval.openloop import (
    MeanTrajectoryBaseline,
    OpenLoopAccumulator,
    all_reduce_sum,
    check_trajectories,
    constant_velocity_trajectory,
    speed_from_previous_frame,
)
from vavam.train.distributed import finish_distributed, process_rank_and_world

COMMAND_NAMES = ("right", "left", "straight")
METRIC_COLUMNS = (("minADE", "min_ade"), ("FDE", "fde"), ("L2@1s", "l2@1s"), ("L2@2s", "l2@2s"),
                  ("L2@3s", "l2@3s"), ("collision rate", "collision_rate"))


def _raise_if_any_rank_failed(error: Exception | None, world: int) -> None:
    """Raise on every rank when any rank's share of the windows failed (a NaN plan, a bad window).

    Alone, the failing rank would leave the others waiting in the next all-reduce until the process
    group's timeout; the ranks first agree on how many failed, then the failing ones re-raise their own
    error (it names the window) and the others say which ranks failed.
    """
    if world > 1:
        flags = torch.zeros(world, dtype=torch.float64)  # [world]: 1 where that rank failed
        flags[torch.distributed.get_rank()] = float(error is not None)
        failed = all_reduce_sum(flags)
        if error is None and failed.any():
            ranks = ", ".join(str(r) for r in failed.nonzero().flatten().tolist())
            raise RuntimeError(f"open-loop evaluation failed on rank(s) {ranks} of {world}; "
                               "their error names the window")
    if error is not None:
        raise error


def _window_name(item: dict[str, Any]) -> str:
    """How errors name a window: its scene and last context frame (what the item carries of them)."""
    parts = []
    if "scene" in item:
        parts.append(f"scene {item['scene']!r}")
    if "frame_indices" in item:
        parts.append(f"frame {int(item['frame_indices'][-1])}")
    return " ".join(parts) or "unnamed window"


def window_noise(seed: int, index: int, num_samples: int, horizon: int, action_dim: int = 2) -> torch.Tensor:
    """The flow's starting noise of one window, float32 ``[K, H, action_dim]`` (model units), from a generator
    seeded by ``(seed, index)``: the same however the windows are batched or split over ranks."""
    from vavam.train.resume import step_generator

    return torch.randn((num_samples, horizon, action_dim), generator=step_generator(seed, index))


def fit_mean_baseline(dataset) -> MeanTrajectoryBaseline:
    """The per-command mean trajectory of a training window dataset (last context frame of each window)."""
    positions, commands = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        positions.append(torch.as_tensor(item["positions"][-1]))
        commands.append(torch.as_tensor(item["commands"][-1]))
    return MeanTrajectoryBaseline().fit(torch.stack(positions), torch.stack(commands))


@torch.no_grad()
def evaluate_open_loop(
    vam,
    dataset,
    records: dict[str, Any] | None = None,
    mean_baseline: MeanTrajectoryBaseline | None = None,
    num_samples: int = 5,
    batch_size: int = 16,
    seed: int = 0,
    limit: int | None = None,
    num_examples: int = 6,
    progress: bool = False,
    collision_classes: CollisionClasses = "agents",
) -> dict[str, Any]:
    """Open-loop metrics of ``vam`` (None: baselines only) over the windows of ``dataset``.

    Args:
        vam: a VideoActionModel (``sample_trajectory(tokens [B,T,h,w], commands [B], num_samples, noise=[B,K,H,2],
            speed=[B] m/s)`` -> ``[B, K, H, 2]``, ``config.horizon`` / ``config.action_dim``), or None.
        dataset: items with ``tokens [T,h,w]``, ``positions [T,6,2]``, ``commands [T]``, ``scene``,
            ``frame_indices [T]`` and optionally ``speeds [T]`` (e.g. :class:`vavam.data.windows.TokenWindowDataset`).
        records: scene name -> SceneRecord with boxes, for the collision rate (None: not computed).
        mean_baseline: fitted per-command mean trajectories (None: that row is left out).
        num_samples: K (>= 1).
        batch_size: windows per forward pass (>= 1).
        seed: seed of the sampling noise (each window's from ``(seed, window index)``: independent of
            ``batch_size`` and of the number of ranks).
        limit: evaluate ``limit`` (>= 1) windows spread evenly over the dataset (None: all).
        num_examples: windows kept (on rank 0) for figures.
        progress: show a progress bar.
        collision_classes: boxes a plan may not overlap: ``"agents"`` (road users; static objects such as
            cones and barriers left out, as ST-P3 / UniAD) or ``"all"`` (:mod:`vavam.eval.collision`).

    Returns:
        ``{"windows", "num_samples", "rows": {planner: {group: metrics}}, "_examples": [...]}``.
    """
    from vavam.checks import check_positive_int

    check_positive_int(num_samples, "num_samples")
    check_positive_int(batch_size, "batch_size")
    if limit is not None:
        check_positive_int(limit, "limit")
    if len(dataset) and torch.as_tensor(dataset[0]["positions"]).shape[0] < 2:
        raise ValueError("the constant-velocity baseline needs at least 2 context frames per window")
    rank, world = process_rank_and_world()
    chosen = np.arange(len(dataset))
    if limit is not None and limit < len(dataset):
        chosen = np.unique(np.linspace(0, len(dataset) - 1, limit).round().astype(np.int64))
    mine = chosen[rank::world].tolist()
    planners = (["VaVAM"] if vam is not None else []) + ["constant velocity"]
    if mean_baseline is not None:
        planners.append("mean trajectory per command")
    accs = {name: OpenLoopAccumulator() for name in planners}
    examples: list[dict[str, Any]] = []
    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(mine), desc="open loop", unit="window")
    def one_batch(indices: list[int]) -> None:
        """Plan a batch of windows (dataset indices) with every planner and add their errors."""
        items = [dataset[j] for j in indices]
        tokens = torch.stack([torch.as_tensor(it["tokens"]) for it in items])
        positions = torch.stack([torch.as_tensor(it["positions"]) for it in items]).float()
        commands = torch.stack([torch.as_tensor(it["commands"]) for it in items])
        gt, cmd = positions[:, -1], commands[:, -1]
        boxes = None
        if records is not None:
            boxes = [future_boxes(records[it["scene"]], int(it["frame_indices"][-1]), classes=collision_classes)
                     if it["scene"] in records else None for it in items]
        plans: dict[str, torch.Tensor] = {}
        if vam is not None:
            speed = None  # m/s at the last context frame, for models that read it
            if "speeds" in items[0]:
                speed = torch.stack([torch.as_tensor(it["speeds"]) for it in items])[:, -1]
            noise = torch.stack([window_noise(seed, j, num_samples, vam.config.horizon, vam.config.action_dim)
                                 for j in indices])  # [B, K, H, 2]
            plans["VaVAM"] = vam.sample_trajectory(tokens, cmd, num_samples=num_samples, noise=noise,
                                                   speed=speed).float()
        last_speed = speed_from_previous_frame(positions[:, -2])
        plans["constant velocity"] = constant_velocity_trajectory(last_speed)[:, None].float()
        if mean_baseline is not None:
            plans["mean trajectory per command"] = mean_baseline.predict(cmd)[:, None]
        names = [_window_name(it) for it in items]
        for name, pred in plans.items():
            check_trajectories(pred, gt, names, f"{name} plans")  # before the collision check reads them
            coll = None if boxes is None else torch.from_numpy(planned_collisions(pred.numpy(), boxes))
            accs[name].update(pred, gt, cmd, coll, windows=names, what=f"{name} plans", checked=True)
        if vam is not None and rank == 0 and len(examples) < num_examples:
            for k in range(min(len(items), num_examples - len(examples))):
                examples.append({"gt": gt[k].numpy(), "pred": plans["VaVAM"][k].numpy(), "command": int(cmd[k]),
                                 "scene": items[k]["scene"], "frame": int(items[k]["frame_indices"][-1])})
        if bar is not None:
            bar.update(len(items))

    failure: Exception | None = None
    try:
        for start in range(0, len(mine), batch_size):
            one_batch(mine[start : start + batch_size])
    except Exception as error:  # noqa: BLE001 -- every rank must learn of it before the next collective
        failure = error
    if bar is not None:
        bar.close()
    _raise_if_any_rank_failed(failure, world)
    for acc in accs.values():
        acc.reduce()
    windows = torch.tensor([float(len(mine))], dtype=torch.float64)
    if world > 1:
        windows = all_reduce_sum(windows)
    return {"windows": int(windows.item()), "num_samples": num_samples,
            "rows": {name: acc.compute() for name, acc in accs.items()}, "_examples": examples}


def open_loop_tables(result: dict[str, Any]) -> list:
    """The report's two tables: every metric per planner, and minADE per command."""
    from vavam.eval.report import Table

    rows = result["rows"]
    overall = Table(["planner", *(c for c, _ in METRIC_COLUMNS), "windows"],
                    [[name, *(r["all"][key] for _, key in METRIC_COLUMNS), r["all"]["count"]] for name, r in rows.items()])
    per_command = Table(["planner", *(f"minADE {c} ({next(iter(rows.values()))[c]['count']})" for c in COMMAND_NAMES)],
                        [[name, *(r[c]["min_ade"] for c in COMMAND_NAMES)] for name, r in rows.items()])
    return [overall, per_command]


def plot_examples_bev(examples: list[dict[str, Any]], path: Path) -> bool:
    """Bird's-eye view of ground truth vs the K sampled plans of a few windows (matplotlib PNG); False, and
    nothing written, when there is no example."""
    if not examples:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(examples)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.6), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        for k, traj in enumerate(np.asarray(ex["pred"])):
            ax.plot(-traj[:, 1], traj[:, 0], "-o", ms=2, color="tab:blue", alpha=0.5,
                    label="VaVAM samples" if k == 0 else None)
        gt = np.asarray(ex["gt"])
        ax.plot(-gt[:, 1], gt[:, 0], "-o", ms=3, color="black", label="ground truth")
        ax.plot([0], [0], "^", color="tab:red")
        ax.set_title(f"command: {COMMAND_NAMES[ex['command']]}", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("right (m)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("forward (m)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def overlay_examples_on_frames(examples: list[dict[str, Any]], records: dict[str, Any], image_root: Path | None,
                               path: Path) -> bool:
    """The plans drawn on each example's current camera frame (needs image paths); False if none could be drawn."""
    from PIL import Image

    from vavam.media import hstack, write_png
    from vavam.viz import draw_trajectories

    tiles = []
    for ex in examples:
        rec = records.get(ex["scene"])
        if rec is None or rec.image_paths is None:
            continue
        image_path = Path(rec.image_paths[ex["frame"]])
        if not image_path.is_absolute() and image_root is not None:
            image_path = Path(image_root) / image_path
        if not image_path.is_file():
            continue
        image = np.asarray(Image.open(image_path).convert("RGB"))
        scale = max(1, 256 // image.shape[1])
        tiles.append(draw_trajectories(image, ex["pred"], ground_truth=ex["gt"], upscale=scale))
    if not tiles:
        return False
    write_png(path, hstack(tiles))
    return True


def eval_openloop(
    action: Path,
    records: Path,
    tokens: Path,
    out: Path,
    train_records: Path | None = None,
    train_tokens: Path | None = None,
    num_samples: int = 5,
    batch_size: int = 16,
    limit: int | None = None,
    seed: int = 0,
    image_root: Path | None = None,
    device: Literal["cpu", "cuda"] = "cpu",
    progress: bool = True,
    subsampling: int = 1,
    collision_classes: CollisionClasses = "agents",
) -> dict[str, Any]:
    """Open-loop planning: minADE@K, FDE, L2@1/2/3 s and collision rate of a VaVAM, with baselines.

    Args:
        action: VaVAM checkpoint (our folder or the authors' ``.pt``).
        records: scene records (``.npz``) of the evaluated split; windows are the model's context frames
            (8 for the released models) + 3 s.
        tokens: token store of the same scenes.
        out: output folder (``evaluation.json``, ``report.md`` / ``.html``, figures).
        train_records: scene records (``.npz``) of a training split, for the mean-trajectory-per-command
            baseline (give --train-tokens too).
        train_tokens: token store of the training split's scenes (with --train-records).
        num_samples: K samples per window (published: 5; at least 1).
        batch_size: windows per forward pass (at least 1).
        limit: evaluate LIMIT windows spread evenly over the split (default: all; at least 1).
        seed: seed of the sampling noise.
        image_root: folder the records' image paths are relative to (for the overlays on frames); default the
            records header's ``image_root``, else the records file's folder.
        device: where the model runs. Under ``torchrun`` (several processes) each rank takes every N-th window,
            ``cuda`` means ``cuda:LOCAL_RANK``, and rank 0 writes the report (the numbers equal one process's).
        progress: show a progress bar.
        subsampling: record frames per 0.5 s (1 for 2 Hz records such as nuScenes keyframes, 5 for 10 Hz
            ones such as nuPlan's), as in ``vavam train action``; the training split must have the same rate.
        collision_classes: boxes a plan may not overlap for the collision rate: ``agents`` (road users: vehicles,
            cyclists, pedestrians; cones, barriers and other static objects left out, as ST-P3 / UniAD) or ``all``.
    """
    import vavam
    from vavam.checks import check_positive_int
    from vavam.data.records import load_records, read_records_header
    from vavam.eval.report import Section, save_evaluation
    from vavam.io import recorded_grid
    from vavam.train.action import make_window_dataset
    from vavam.train.video import check_store_fits, open_token_store

    check_positive_int(subsampling, "--subsampling")
    check_positive_int(num_samples, "--num-samples")
    check_positive_int(batch_size, "--batch-size")
    if limit is not None:
        check_positive_int(limit, "--limit")
    for name, path in (("action", action), ("records", records), ("tokens", tokens)):
        if not Path(path).exists():
            raise FileNotFoundError(f"--{name} {path}: not found")
    if (train_records is None) != (train_tokens is None):
        raise ValueError("--train-records and --train-tokens go together (the mean-trajectory baseline needs both)")
    rank, device = _join_launch(device)
    vam = vavam.load_action_model(action, device=device)
    frames = vam.config.train_frames
    store = open_token_store(Path(tokens), "--tokens")
    check_store_fits(store, "--tokens", vam.config.video.tokens_per_frame, vam.config.video.vocab_size,
                     f"the VaVAM of --action {action}", recorded_grid(action))
    dataset = make_window_dataset(Path(records), store, frames, subsampling)
    scene_records = {r.name: r for r in load_records(records, check_files=False)}
    mean_baseline = None
    if train_records is not None:
        mean_baseline = fit_mean_baseline(make_window_dataset(Path(train_records), Path(train_tokens), frames,
                                                              subsampling, flags=("--train-records", "--train-tokens")))
    result = evaluate_open_loop(vam, dataset, scene_records, mean_baseline, num_samples=num_samples,
                                batch_size=batch_size, seed=seed, limit=limit, progress=progress,
                                collision_classes=collision_classes)
    public = {k: v for k, v in result.items() if not k.startswith("_")}
    public.update({"action": str(action), "records": str(records), "context_frames": frames, "seed": seed,
                   "subsampling": subsampling, "collision_classes": collision_classes})
    if rank != 0:  # rank 0 writes the report
        finish_distributed()
        return public
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    if result["_examples"]:
        plot_examples_bev(result["_examples"], out / "trajectories_bev.png")
        figures.append("trajectories_bev.png")
        # as load_records resolves them: the header's image_root (a prepared split's dataroot), else the file's
        # folder (the folder alone missed every nuScenes / nuPlan frame, whose paths are relative to the dataroot)
        root = image_root if image_root is not None else (read_records_header(records).get("image_root")
                                                          or Path(records).parent)
        if overlay_examples_on_frames(result["_examples"], scene_records, root, out / "trajectories_frames.png"):
            figures.append("trajectories_frames.png")
    has_boxes = any(r.boxes is not None for r in scene_records.values())
    text = (f"{result['windows']} windows of {frames} context frames; K = {num_samples} samples; errors in metres. "
            "minADE: the smallest average displacement error over the K samples. FDE and L2@t are read off that "
            "best-of-K sample, which is chosen with the ground truth; L2@t is the point error at time t (UniAD's "
            "convention), not the average of the errors up to t that ST-P3 and VAD report. "
            + ("Collision rate: share of planned trajectories whose ego box overlaps another agent's future box, "
               "over all K plans of a window (not only the best one), averaged over the windows with boxes; "
               + ("boxes of road users only (static objects such as cones and barriers left out)."
                  if collision_classes == "agents" else "every annotated box.")
               if has_boxes else "The records carry no agent boxes: no collision rate."))
    if mean_baseline is None:
        text += " (No training split given: no mean-trajectory baseline.)"
    section = Section("Open-loop planning", text, open_loop_tables(result), figures)
    save_evaluation(out, "openloop", "Open-loop planning", public, [section])
    print(section.tables[0].markdown())
    print(f"report: {out / 'report.html'}")
    finish_distributed()
    return public


def _join_launch(device: str) -> tuple[int, str]:
    """(this process's rank, its device) for ``eval openloop``: under a launcher with several processes
    (``torchrun``), join (or start) the process group; ``cuda`` becomes ``cuda:LOCAL_RANK``. (0, ``device``)
    otherwise."""
    from vavam.train.distributed import environment_world, join_launch_group

    env = environment_world()
    if env is None or env[2] == 1:
        return process_rank_and_world()[0], device
    rank, local_rank, _ = env
    return rank, str(join_launch_group(device, local_rank)[0])
