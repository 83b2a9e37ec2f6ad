"""The quickstart's report: what ran, what it learned on held-out towns, against which baselines."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from vavam import presets
from vavam.eval.report import Section, Table, write_report
from vavam.io import read_json, read_loss_log
from vavam.quickstart.plan import QuickstartPlan
from vavam.stages import DONE_FILE

STAGES = ("world", "tokenizer", "tokens", "video", "action", "eval", "report")


def _video_training(plan: QuickstartPlan) -> str:
    """How the run trained VaViM, in words: steps and the changes to the released recipe it used."""
    extras = []
    if plan.video_permute_codes:
        extras.append(f"the codes of {plan.video_permute_codes:.0%} of the windows relabelled by a random permutation")
    if plan.video_self_forcing:
        extras.append("the last frame of each window fed as its own greedy generation (self-forcing)")
    if plan.video_ema:
        extras.append(f"the weights averaged over the last steps (EMA {plan.video_ema:g})")
    return (f"`{plan.video_preset}` trained for {plan.video_steps} steps"
            + (", with " + "; ".join(extras) if extras else "") + " (README: VaViM in the quickstart).")


def _fmt(value: Any, spec: str, missing: str) -> str:
    """``value`` formatted with ``spec``, or ``missing`` (why there is no number) for None / NaN / absent values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _small(value: Any) -> str:
    """The format of a number quoted to 3 decimals, or to 3 significant digits where those decimals would show a
    non-zero number as 0.000 (a Fréchet distance of 2e-9 and one of 5e-12 both read "0.000")."""
    small = isinstance(value, (int, float)) and math.isfinite(value) and 0 < abs(value) < 0.0005
    return ".3g" if small else ".3f"


def _has_missing(tables: list[Table]) -> bool:
    """Whether a table cell will show "–" (None or NaN)."""
    return any(v is None or (isinstance(v, float) and math.isnan(v)) for t in tables for row in t.rows for v in row)


def _loss_curve(stage: Path) -> tuple[list[float], list[float]]:
    """Per-step training loss of a VaViM / VaVAM stage folder: ``metrics.jsonl`` (one line per step, cut back to the
    checkpoint on resume, so the whole run); else the CSV log of the first Lightning run (``logs/version_0``)."""
    jsonl = stage / "metrics.jsonl"
    rows = read_loss_log(jsonl) if jsonl.is_file() else []
    if rows:
        return [float(r["step"]) for r in rows], [float(r["loss"]) for r in rows]
    return _curve(stage / "logs" / "version_0" / "metrics.csv", "train/loss")


def _curve(csv_path: Path, column: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    if not csv_path.is_file():
        return steps, values
    with open(csv_path, newline="") as f:
        for row in csv.DictReader(f):
            if row.get(column) not in (None, ""):
                steps.append(float(row.get("step") or len(steps)))
                values.append(float(row[column]))
    return steps, values


def _plot_curves(out: Path, path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = [
        ("VaViM next-token loss", "cross-entropy (nats per token)", _loss_curve(out / "video")),
        ("VaVAM flow-matching loss", "velocity MSE (model units)", _loss_curve(out / "action")),
    ]
    curves = [(name, unit, c) for name, unit, c in curves if c[0]]
    if not curves:
        return False
    fig, axes = plt.subplots(1, len(curves), figsize=(4.5 * len(curves), 3), squeeze=False)
    for ax, (name, unit, (x, y)) in zip(axes[0], curves):
        ax.plot(x, y, color="tab:blue", alpha=0.3, linewidth=0.8, label="per step")
        k = max(1, len(y) // 50)  # running mean over ~2 % of the run: readable through per-step noise
        if k > 1:
            smooth = np.convolve(y, np.ones(k) / k, mode="valid")
            ax.plot(x[k - 1 :], smooth, color="tab:blue", linewidth=1.5, label=f"mean of {k} steps")
            ax.legend(fontsize=7)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(unit, fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _frame_montage(world: Path, path: Path, count: int = 4, frame: int = 4) -> bool:
    """Frame ``frame`` of the first ``count`` held-out scenes side by side into ``path`` (an earlier copy removed
    when there is none). The world stage keeps every scene's frames in ``frames/<scene>/`` and names the
    held-out ones in ``heldout.npz``."""
    from PIL import Image

    from vavam.data.records import load_records

    records = load_records(world / "heldout.npz", check_files=False) if (world / "heldout.npz").is_file() else []
    frames = [world / r.image_paths[min(frame, len(r) - 1)] for r in records if len(r)][:count]
    frames = [p for p in frames if p.is_file()]
    if not frames:
        path.unlink(missing_ok=True)
        return False
    images = [np.asarray(Image.open(p).convert("RGB")) for p in frames]
    Image.fromarray(np.concatenate(images, axis=1)).save(path)
    return True


def _stage_seconds(out: Path) -> dict[str, float]:
    seconds = {}
    for stage in STAGES:
        marker = out / stage / DONE_FILE
        if marker.is_file():
            seconds[stage] = float(read_json(marker)["seconds"])
    return seconds


CLOSED_LOOP_VIDEO = "closed_loop_vavam.mp4"
# every file the report writes at the top of the run folder (the report stage's ``outputs``: removed as soon as an
# earlier stage runs again, so that no picture of older models stays beside newer ones)
STAGE_PICTURES = (("eval", "next_frames.png"), ("eval", "trajectories.png"), ("eval", "probe_examples.png"),
                  ("tokenizer", "reconstructions.png"))
TRAINING_CURVES, HELDOUT_FRAMES = "training_curves.png", "heldout_frames.png"
OUTPUTS = ("report.md", "report.html", *(name for _, name in STAGE_PICTURES), CLOSED_LOOP_VIDEO, TRAINING_CURVES,
           HELDOUT_FRAMES)


def _closed_loop_video(out: Path, closed_loop: dict[str, Any]) -> str | None:
    """Copy the first closed-loop video the evaluation recorded to ``out/closed_loop_vavam.mp4`` and return that
    name; None, and an earlier report's copy removed, when it recorded none (a video left in the folder by an
    earlier evaluation is not this run's). A recorded path that no longer exists (the run folder moved) is
    looked up at the same place under ``out/eval``."""
    target = out / CLOSED_LOOP_VIDEO
    for result in closed_loop.values():
        for recorded in (result.get("videos") or []) if isinstance(result, dict) else []:
            path = Path(recorded)
            if not path.is_file() and "closed_loop" in path.parts:  # the last one: --out may hold the word too
                last = len(path.parts) - 1 - path.parts[::-1].index("closed_loop")
                path = out / "eval" / Path(*path.parts[last:])
            if path.suffix == ".mp4" and path.is_file():
                shutil.copy(path, target)
                return target.name
    target.unlink(missing_ok=True)
    return None


def write_quickstart_report(out: Path, plan: QuickstartPlan, seed: int) -> dict[str, Any]:
    """Write ``out/report.md`` and ``out/report.html``; return their paths and the headline lines."""
    res = read_json(out / "eval" / "results.json")
    tok = read_json(out / "tokenizer" / DONE_FILE)["summary"]
    world = read_json(out / "world" / DONE_FILE)["summary"]
    # the stages' pictures, copied beside the report; a copy an earlier report made of a picture the stage's
    # latest run did not draw is removed (it showed other models)
    for stage, name in STAGE_PICTURES:
        if (out / stage / name).is_file():
            shutil.copy(out / stage / name, out / name)
        else:
            (out / name).unlink(missing_ok=True)
    video = _closed_loop_video(out, res.get("closed_loop") or {})

    def figure(name: str) -> list[str]:  # only pictures that exist: no broken links
        return [name] if (out / name).is_file() else []
    has_curves = _plot_curves(out, out / TRAINING_CURVES)
    has_frames = _frame_montage(out / "world", out / HELDOUT_FRAMES)

    down = presets.get(plan.tokenizer_preset).downsample  # pixels per token side
    nt, nf, ol, cf, cl = res["next_token"], res["next_frame"], res["open_loop"], res["command_following"], res["closed_loop"]
    by_change = nf.get("by_change") or []  # absent from results of older runs
    by_persistence = nf.get("by_persistence") or []  # absent from results of older runs
    checks = [
        ("VaViM held-out cross-entropy ≤ 0.8 × per-position baseline", nt["ratio_to_per_position"] <= 0.8,
         f"ratio {nt['ratio_to_per_position']:.3f}"),
        ("greedy next frame beats copying the last frame", nf["greedy_accuracy"] > nf["copy_last_frame_accuracy"],
         f"{nf['greedy_accuracy']:.3f} vs {nf['copy_last_frame_accuracy']:.3f}"),
        (f"VaVAM minADE@{ol['num_samples']} ≤ 0.8 × best baseline", ol["ratio_to_best_baseline"] <= 0.8,
         f"ratio {ol['ratio_to_best_baseline']:.3f}"),
        ("LEFT minus RIGHT lateral offset at 3 s ≥ 1 m at intersections",
         cf.get("left_minus_right_m") is not None and cf["left_minus_right_m"] >= 1.0,
         _fmt(cf.get("left_minus_right_m"), ".2f", "not measured (no held-out frame at an intersection)")
         + (" m" if _fmt(cf.get("left_minus_right_m"), "", "") else "")
         + f" over {cf['windows']} frames"),
        ("closed-loop table lists VaVAM beside the baselines", "VaVAM" in cl, ", ".join(cl)),
    ]
    seconds = _stage_seconds(out)
    total = sum(seconds.values())
    split_meta = {k: v for k, v in world.items() if isinstance(v, dict)}
    data_lines = []
    for split, meta in split_meta.items():
        scenes = meta.get("scenes")
        parts = []
        for k, v in meta.items():
            if isinstance(v, (dict, list)):
                continue
            share = (f" ({100 * v / scenes:.0f} % of scenes)" if k in ("hazard scenes", "scenes with a turn")
                     and isinstance(v, (int, float)) and scenes else "")
            parts.append(f"{k} {v}{share}")
        data_lines.append(f"- {split}: " + ", ".join(parts))
    nan = float("nan")
    gf = res["generated_frames"]
    fd, fd_copy = gf.get("frechet_tokenizer_features"), gf.get("frechet_tokenizer_features_copy")
    no_fd = ("not computed (needs more than 2 windows)" if "frechet_tokenizer_features" in gf
             else "not recorded (a run made before this measure)")
    no_cf = "not measured (no held-out frame at an intersection)"
    ol_tables = [Table(["planner", "minADE", "FDE", "L2@1s", "L2@2s", "L2@3s", "collision rate", "windows"],
                       [[k, *(v["all"][m] for m in ("min_ade", "fde", "l2@1s", "l2@2s", "l2@3s")),
                         v["all"].get("collision_rate", nan), v["all"]["count"]] for k, v in ol["rows"].items()]),
                 Table(["planner", *(f"{c} ({next(iter(ol['rows'].values()))[c]['count']} windows)"
                                     for c in ("right", "left", "straight"))],
                       [[k, v["right"]["min_ade"], v["left"]["min_ade"], v["straight"]["min_ade"]]
                        for k, v in ol["rows"].items()])]
    cl_tables = [_closed_loop_table(cl)]

    sections = [
        Section("Targets", "Measured on held-out towns never seen in training.",
                [Table(["target", "met", "measured"], [[c, "yes" if ok else "no", m] for c, ok, m in checks])]),
        Section("Data", "Front-camera frames rendered by the embedded world (training and held-out towns):\n"
                + "\n".join(data_lines)
                + "\n\nHazard scenes drive through a stationary, frontal or side hazard; scenes with a turn have a "
                "LEFT or RIGHT command (an intersection) at some frame.",
                figures=[HELDOUT_FRAMES] if has_frames else []),
        Section("Tokenizer", f"`{plan.tokenizer_preset}`, {plan.tokenizer_steps} steps. PSNR on frames held out "
                "from the training towns (the tokenizer never sees the held-out towns) "
                f"{_fmt(tok.get('initial_psnr'), '.1f', 'not recorded')} dB at initialisation → "
                f"{_fmt(tok.get('final_psnr'), '.1f', 'not recorded')} dB; codebook usage "
                f"{_fmt(tok.get('codebook_usage'), '.1f', 'not recorded')} %. Originals above, reconstructions below.",
                figures=figure("reconstructions.png")),
        Section("VaViM: next-token prediction",
                f"Cross-entropy in nats per token over {nt['windows']} held-out windows of {plan.height // down}×{plan.width // down}"
                " tokens" + (f" × {nt['frames']} frames" if "frames" in nt else "")
                + "; the baselines are token frequencies of the training set. " + _video_training(plan),
                [Table(["model", "cross-entropy", "perplexity"],
                       [[k, v["cross_entropy"], v["perplexity"]] for k, v in nt["rows"].items()])]),
        Section("VaViM: generating the next frame",
                f"Greedy (top-1) generation of the last frame of {nf['windows']} held-out windows from the "
                + (f"{nf['context_frames']} frames before it. " if "context_frames" in nf else "frames before it. ")
                + f"Token accuracy {nf['greedy_accuracy']:.3f} against {nf['copy_last_frame_accuracy']:.3f} for copying the "
                f"last context frame"
                + (f" (greedy generation alone gets {nf['greedy_only']} tokens right, copying alone "
                   f"{nf['copy_only']}: two-sided sign test p = {nf['sign_test_p']:.2f})" if "greedy_only" in nf else "")
                + (f"; given the frame's true earlier tokens instead of its own (teacher-forced), VaViM gets "
                   f"{nf['teacher_forced_accuracy']:.3f} of the tokens right" if "teacher_forced_accuracy" in nf else "")
                + ". Fréchet distance of tokenizer-encoder features (channel mean and std) to the true frames: "
                + (f"{_fmt(fd, _small(fd), no_fd)} (copying the last frame: {_fmt(fd_copy, _small(fd_copy), no_fd)})"
                   if _fmt(fd, "", "") or _fmt(fd_copy, "", "") else no_fd)
                + "; not comparable to published FID. "
                "Per row: last context frame, true next frame, generated next frame (decoded)."
                + (f" The {'first ' if by_persistence else ''}table groups the windows by the share of tokens their "
                   "last context frame kept from the frame before (how little the scene changed): copying is hard "
                   "to beat where it changed little."
                   + (" – : no window in that group." if any(not g["windows"] for g in by_change) else "")
                   if by_change else "")
                + _persistence_text(by_persistence, with_change=bool(by_change)),
                ([_change_table(by_change)] if by_change else [])
                + ([_persistence_table(by_persistence)] if by_persistence else []),
                figures=figure("next_frames.png")),
        *_probe_sections(res.get("probe"), figure("probe_examples.png")),
        Section("VaVAM: open-loop planning",
                f"{ol['windows']} held-out windows; K = {ol['num_samples']} samples"
                + (f" of {ol['euler_steps']} Euler steps" if "euler_steps" in ol else "") + "; errors in metres. "
                + ("VaVAM reads the ego speed, as the constant-velocity baseline does (the distance driven over the "
                   "last 0.5 s); the released models do not. " if ol.get("ego_speed") else
                   "VaVAM sees only the frames and the command (as the released models); the constant-velocity "
                   "baseline is given the ego speed. ")
                + ("Its flow generates the deviation from the constant-velocity trajectory, which it adds back "
                   "(`speed_prior`). " if ol.get("speed_prior") else "")
                + "Collision rate: share of planned trajectories whose ego box overlaps another vehicle's future box. "
                "The second table: minADE by the command of the window."
                + (" – : not measured (no window with that command, or no boxes for the collision rate)."
                   if _has_missing(ol_tables) else ""),
                ol_tables, figures=figure("trajectories.png")),
        Section("VaVAM: following the command",
                f"On {cf['windows']} held-out frames at intersections, the same frames planned with LEFT and with RIGHT: "
                "mean lateral offset (positive: left) at 3 s "
                + (f"{_fmt(cf.get('lateral_at_3s_left_m'), '.2f', no_cf)} m (LEFT) vs "
                   f"{_fmt(cf.get('lateral_at_3s_right_m'), '.2f', no_cf)} m (RIGHT)."
                   if _fmt(cf.get("lateral_at_3s_left_m"), "", "") and _fmt(cf.get("lateral_at_3s_right_m"), "", "")
                   else no_cf + ".")),
        Section("Closed loop: hazard scenarios (NCAP score, 0–5)",
                "Stationary, frontal and side hazards of the embedded world, scored with the NeuroNCAP formula. "
                "Collision rate: share of runs that collided (failed runs left out); a failed run scores 0."
                + (" – : not measured (no run of that type, or every run failed)."
                   if _has_missing(cl_tables) else ""),
                cl_tables, figures=[video] if video else []),
        Section("Training", f"Plan for a {plan.budget_min:g}-minute budget, seed {seed}. Stage wall times (s): "
                + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + f"; total {total:.0f} s.",
                figures=[TRAINING_CURVES] if has_curves else []),
    ]
    md, html = write_report(out, "vavam quickstart", sections,
                            intro="The whole system trained and evaluated on the embedded driving world on a CPU.")
    headline = [f"{c}: {'met' if ok else 'NOT met'} ({m})" for c, ok, m in checks]
    return {"report_md": str(md), "report_html": str(html), "headline": headline}


def _change_table(by_change: list[dict]) -> Table:
    """Greedy, copying and (results that have it) teacher-forced accuracy per group of last-step change."""
    forced = all("teacher_forced" in g for g in by_change)
    keys = ["generated", "copy"] + (["teacher_forced"] if forced else [])
    head = ["tokens kept in the last context step", "windows", "greedy", "copy"] + (["teacher-forced"] if forced else [])
    return Table(head, [[g["kept"], g["windows"], *(g[k] for k in keys)] for g in by_change])


def _persistence_text(groups: list[dict], with_change: bool = True) -> str:
    """What the persistence table shows, with its last group (tokens unchanged over the whole context) quoted."""
    if not groups:
        return ""
    last = groups[-1]
    text = (f" The {'second ' if with_change else ''}table groups the generated tokens by how many context steps "
            "their position kept its token (0: it changed in the last step): copying's accuracy there is the chance that a token stays, "
            "beside VaViM's mean probability of the copied token given the true earlier tokens.")
    if last["tokens"]:
        text += (f" Tokens unchanged over all {last['steps']} steps of the context stay "
                 f"{last['copy']:.0%} of the time; VaViM gives the copied token {last['copy_prob']:.0%} on average.")
    if any(not g["tokens"] for g in groups):
        text += " – : no token in that group."
    return text


def _persistence_table(groups: list[dict]) -> Table:
    """Share of tokens, copying, VaViM's probability of the copied token, greedy and teacher-forced accuracy per
    number of steps the token stayed."""
    total = sum(g["tokens"] for g in groups) or 1
    head = ["steps the token stayed", "share of tokens", "copy", "VaViM P(copied token)", "greedy", "teacher-forced"]
    return Table(head, [[g["steps"], g["tokens"] / total, g["copy"], g["copy_prob"], g["generated"],
                         g["teacher_forced"]] for g in groups])


def _probe_sections(pr: dict | None, figures: list[str]) -> list[Section]:
    """The semantic-probe section (absent in runs made before the probe existed); ``figures``: its example picture
    when it exists."""
    if not pr:
        return []
    rows = [[name, r["miou"], r.get("pixel_accuracy", float("nan"))] for name, r in pr["rows"].items()]
    per_class = list(next(iter(pr["rows"].values())).get("iou", {}))
    tables = [Table(["features", "mIoU", "pixel accuracy"], rows)]
    if per_class:
        tables.append(Table(["features", *per_class],
                            [[name, *(r["iou"].get(c, float("nan")) for c in per_class)]
                             for name, r in pr["rows"].items()]))
    text = (f"Hummingbird-style in-context segmentation of held-out frames from VaViM's middle-block features: "
            f"a memory of patch features of {pr['memory_images']} training-town frames, k = 30 nearest neighbours, "
            f"softmax temperature 0.02; {pr['query_images']} held-out queries. The untrained row is the same "
            "architecture at initialisation. Per row: frame, ground truth, prediction.")
    if _has_missing(tables):
        text += " – : the class is absent from the queries and the predictions (no IoU)."
    return [Section("VaViM: semantic probe on world labels", text, tables, figures)]


def _closed_loop_table(cl: dict) -> Table:
    kinds = sorted({k for v in cl.values() for k in v.get("types", {})})
    rows = []
    for name, v in cl.items():
        types = v.get("types", {})
        rows.append([name, v.get("score", float("nan"))] + [types.get(k, {}).get("score", float("nan")) for k in kinds]
                    + [v.get("collision_rate", float("nan")), v.get("failures", 0)])
    return Table(["planner", "NCAP score"] + kinds + ["collision rate", "failed runs"], rows, digits=2)
