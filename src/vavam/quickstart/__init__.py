"""``vavam quickstart``: the whole system, end to end, on a CPU, in minutes, with a report.

Stages (each resumable, in ``<out>/<stage>/``; deleting a stage's folder redoes it and every stage after
it, :mod:`vavam.stages`):

1. ``world``      driving data from the embedded world: training towns and held-out towns;
2. ``tokenizer``  train the VQ tokenizer on the training frames;
3. ``tokens``     tokenize every scene into token stores;
4. ``video``      train VaViM by next-token prediction;
5. ``action``     train VaVAM's action expert by flow matching, VaViM frozen;
6. ``eval``       next-token, next frame, open loop, command following, generated frames, closed loop;
7. ``report``     ``<out>/report.md`` and ``<out>/report.html``.

Sizes follow the time budget by the rule in :mod:`vavam.quickstart.plan`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import numpy as np

from vavam.checks import check_seed
from vavam.io import atomic_write_json, read_json
from vavam.quickstart.plan import DEFAULT_BUDGET_MIN, SCENES_PER_TOWN, QuickstartPlan
from vavam.quickstart.report import OUTPUTS as REPORT_OUTPUTS
from vavam.stages import Stage, run_stages, stage_done

SPLITS = ("train", "heldout")
WORLD_WORKERS = 4  # rendering processes (the output does not depend on the number)


RESUME_HINT = "run the same vavam quickstart command again: finished stages are kept, this one starts over"


def _log(message: str) -> None:
    print(f"[quickstart] {message}", flush=True)


def _stages(out: Path, plan: QuickstartPlan, seed: int) -> list[Stage]:
    world_dir, tok_dir, tokens_dir, video_dir = out / "world", out / "tokenizer", out / "tokens", out / "video"

    def world(folder: Path) -> dict:
        from vavam.data.records import load_records, save_records
        from vavam.world.export import generate

        summary = generate(
            out=folder, num_scenes=plan.train_scenes + plan.heldout_scenes, duration_s=plan.scene_seconds, rate_hz=2.0,
            height=plan.height, width=plan.width, seed=seed, hazard_share=plan.hazard_share, labels=True, depth=False,
            held_out_towns=max(1, plan.heldout_scenes // SCENES_PER_TOWN), scenes_per_town=SCENES_PER_TOWN, progress=True,
            workers=min(WORLD_WORKERS, os.cpu_count() or 1),
        )
        records = load_records(folder / "records.npz", image_root=folder)
        counts = {}
        for split in SPLITS:
            chosen = [r for r in records if r.metadata.get("split") == split]
            save_records(folder / f"{split}.npz", chosen, image_root=str(folder))
            hazards = sum(1 for r in chosen if r.metadata.get("hazard"))
            turns = sum(int(np.isin(np.asarray(r.metadata.get("commands", [])), [0, 1]).any()) for r in chosen)
            counts[split] = {"scenes": len(chosen), "frames": int(sum(len(r) for r in chosen)),
                             "hazard scenes": hazards, "scenes with a turn": turns}
        train_frames = folder / "train_frames"  # the tokenizer trains on training towns only (hard links)
        for r in records:
            if r.metadata.get("split") == "train":
                (train_frames / r.name).mkdir(parents=True)
                for frame in sorted((folder / "frames" / r.name).iterdir()):
                    os.link(frame, train_frames / r.name / frame.name)
        return {"frames_per_s": summary.get("frames_per_s"), "seconds": summary.get("seconds"), **counts}

    def tokenizer(folder: Path) -> dict:
        from vavam.train.tokenizer import train_tokenizer

        return train_tokenizer(
            out=folder, preset=plan.tokenizer_preset, steps=plan.tokenizer_steps, batch_size=plan.tokenizer_batch,
            image_size=(plan.height, plan.width), data=str(world_dir / "train_frames"), seed=seed,
            val_frames=64, ckpt_every=plan.tokenizer_steps, eval_every=0, precision=plan.tokenizer_precision,
            progress=True, resume_hint=RESUME_HINT,
        )

    def tokens(folder: Path) -> dict:
        import vavam
        from vavam.data.frames import FrameSource
        from vavam.data.records import load_records
        from vavam.data.tokenize import tokenize_sources

        tok = vavam.load_tokenizer(tok_dir / "tokenizer")
        summary = {}
        for split in SPLITS:
            records = load_records(world_dir / f"{split}.npz", image_root=world_dir)
            sources = [FrameSource.from_files(r.name, [world_dir / p for p in r.image_paths], r.timestamps)
                       for r in records]
            tokenize_sources(sources, folder / split, tok, batch_size=64, fps=2.0, progress=True)
            summary[split] = {"scenes": len(sources), "frames": int(sum(len(r) for r in records))}
        return summary

    def video(folder: Path) -> dict:
        from vavam.train.video import train_video

        return train_video(
            out=folder, tokens=tokens_dir / "train", preset=plan.video_preset, steps=plan.video_steps,
            batch_size=plan.video_batch, lr=plan.video_lr, width=plan.video_width, val_tokens=tokens_dir / "heldout",
            val_every=plan.video_steps, seed=seed, precision=plan.video_precision, progress=True,
            permute_codes=plan.video_permute_codes, self_forcing=plan.video_self_forcing, ema=plan.video_ema,
            resume_hint=RESUME_HINT,
        )

    def action(folder: Path) -> dict:
        from vavam.train.action import train_action

        return train_action(
            out=folder, video=video_dir / "model", records=world_dir / "train.npz",
            tokens=tokens_dir / "train", preset=plan.action_preset, steps=plan.action_steps,
            batch_size=plan.action_batch, lr=plan.action_lr, width=plan.action_width, ema=plan.action_ema,
            ego_speed=plan.action_ego_speed, speed_prior=plan.action_speed_prior, action_scaling=plan.action_scaling,
            tokenizer=tok_dir / "tokenizer", seed=seed, precision=plan.action_precision, progress=True,
            resume_hint=RESUME_HINT,
        )

    def evaluate(folder: Path) -> dict:
        from vavam.quickstart.run_eval import run_all

        return run_all(out, folder, plan, seed)

    def report(folder: Path) -> dict:
        from vavam.quickstart.report import write_quickstart_report

        return write_quickstart_report(out, plan, seed)

    return [
        Stage("world", world, "rendering driving scenes in training and held-out towns"),
        Stage("tokenizer", tokenizer, f"training the {plan.tokenizer_preset} tokenizer ({plan.tokenizer_steps} steps)"),
        Stage("tokens", tokens, "tokenizing every scene"),
        Stage("video", video, f"training VaViM ({plan.video_preset}, {plan.video_steps} steps)"),
        Stage("action", action, f"training VaVAM's action expert ({plan.action_steps} steps)"),
        Stage("eval", evaluate, "evaluating on held-out towns (open and closed loop)"),
        Stage("report", report, "writing the report", outputs=REPORT_OUTPUTS),
    ]


def quickstart(out: Path = Path("runs/quickstart"), budget: float = DEFAULT_BUDGET_MIN, seed: int = 0) -> int:
    """Train and evaluate the whole system on the embedded world, then write a report.

    Args:
        out: run folder; a re-run skips finished stages (delete it to start over). A folder that holds folders
            named like the stages or files named like the report's but no ``plan.json`` (not a quickstart run) is
            refused, not used; so is a run of another budget or seed with a finished stage (one without starts over).
        budget: time budget in minutes on 2 CPU cores; data, steps and sizes scale with it (see the README); at
            most about 597 minutes (the embedded world's 7,800 scenes).
        seed: seed of the world, the initialisations and the sampling (0 to 2^32 - 1).
    """
    out = Path(out)
    plan = QuickstartPlan.from_budget(budget)
    # the range every stage accepts (the trainers seed numpy): a seed outside it failed in the world stage (< 0) or
    # the VaViM stage (>= 2^32), minutes in, after plan.json had tied the folder to it
    check_seed(seed)
    seed = int(seed)  # a numpy integer would not go into plan.json
    plan_file = out / "plan.json"
    planned = {"seed": seed, **dataclasses.asdict(plan)}
    if plan_file.is_file():
        if read_json(plan_file) != planned:
            done = [s.name for s in _stages(out, plan, seed) if stage_done(out, s.name)]
            if done:
                raise SystemExit(f"{out} holds a run with another budget or seed, or of an older plan rule "
                                 f"({plan_file}; finished stages: {', '.join(done)}); choose another --out")
            # nothing of the earlier plan finished (e.g. it stopped in the world stage): nothing is lost by starting
            # over with this one, and every unfinished stage is cleared before it runs
            _log(f"{out}: no stage of its earlier run (another budget or seed) finished; starting over with this one")
            atomic_write_json(plan_file, planned)
    else:
        # without plan.json, folders named like the stages are not this run's: run_stages would take a finished
        # one as done (whatever budget and seed made it) and delete an unfinished one (whatever it holds); files
        # named like the report's it would delete before the first stage
        names = [s.name for s in _stages(out, plan, seed)] + list(REPORT_OUTPUTS)
        taken = [name for name in names if (out / name).exists()] if out.is_dir() else []
        if taken:
            raise SystemExit(f"{out} holds {', '.join(taken)} but no plan.json: it is not a quickstart run folder "
                             "(or one whose budget and seed are unknown); choose another --out")
        try:
            atomic_write_json(plan_file, planned)
        except OSError as exc:  # a file in the way, no permission, ...: one line, not a traceback
            raise SystemExit(f"cannot write the run folder {out}: {exc}; choose another --out") from exc
    _log(f"budget {budget:g} min, seed {seed}: {plan.train_scenes}+{plan.heldout_scenes} scenes at "
         f"{plan.height}x{plan.width}, steps tokenizer {plan.tokenizer_steps} / VaViM {plan.video_steps} / "
         f"VaVAM {plan.action_steps}")
    start = time.perf_counter()
    try:
        summaries = run_stages(out, _stages(out, plan, seed), log=_log)
    except KeyboardInterrupt:
        _log(f"interrupted: the finished stages in {out} are kept; run the same command again to continue "
             "(the interrupted stage starts over)")
        return 130
    headline = summaries["report"]
    _log(f"done in {time.perf_counter() - start:.0f} s (this invocation)")
    # in out, not at the path stored when the report was written: the folder may have moved since
    _log(f"report: {out / Path(headline['report_html']).name}")
    for line in headline["headline"]:
        _log("  " + line)
    return 0
