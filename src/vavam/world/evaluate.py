"""Closed-loop NeuroNCAP-style evaluation of a planner in the embedded world (``vavam world scenarios``).

:func:`evaluate_planner` runs ``runs`` jittered runs of ``layouts`` base layouts of each scenario type
(stationary, frontal, side) with any planner callable (``obs dict -> [6, 2]``, see
:mod:`vavam.world.planners`), scores them (:mod:`vavam.world.ncap`) and, given ``out``, writes:

    out/scores.json        aggregate: overall score and collision rate, per type score / collision rate
    out/scores.md          the same as a Markdown table (:func:`score_table`)
    out/runs.json          per run: type, layout, run, collided, collision time, impact / reference
                           speed, score, failure reason, trajectory (t, x, y, yaw, v) and plans
                           (t, the [6, 2] plan, by: "reference" in the priming steps, else "planner")
    out/videos/<type>-layout<L>-run<R>.mp4   front camera with the tracked plan drawn in (first
                           ``video_runs`` runs of each type)

A planner that raises, returns a bad plan or overruns ``plan_timeout_s`` fails that run only (score
0, reason in ``failure``); the evaluation goes on. Planners that need camera frames get
``obs["image"]`` (uint8 ``[H, W, 3]``) when ``images=True`` or a ``renderer_factory`` is given; a
planner with an ``observe(obs)`` method also sees the frames of the priming steps.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from vavam.io import atomic_write_json, atomic_write_text, json_safe

PLANNERS = ("constant-velocity", "emergency-brake", "expert", "http")
DEFAULT_KINDS = ("stationary", "frontal", "side")


class PlannerTimeout(TimeoutError):
    """A planner call took longer than allowed."""


class _TimedPlanner:
    """Wraps a planner so that a call longer than ``seconds`` raises :class:`PlannerTimeout`
    (SIGALRM; only in the main thread of a Unix process, elsewhere the call is not limited)."""

    def __init__(self, planner: Callable, seconds: float):
        self.planner, self.seconds = planner, float(seconds)
        if hasattr(planner, "reset"):
            self.reset = planner.reset
        if hasattr(planner, "observe"):
            self.observe = lambda obs: self._timed(planner.observe, obs)

    def _timed(self, fn, obs):
        if not hasattr(signal, "SIGALRM") or threading.current_thread() is not threading.main_thread():
            return fn(obs)

        def _alarm(signum, frame):
            raise PlannerTimeout(f"planner took longer than {self.seconds:g} s")

        old = signal.signal(signal.SIGALRM, _alarm)
        signal.setitimer(signal.ITIMER_REAL, self.seconds)
        try:
            return fn(obs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
            signal.signal(signal.SIGALRM, old)

    def __call__(self, obs: dict):
        return self._timed(self.planner, obs)


def make_planner(
    name: str, url: str = "http://127.0.0.1:9000", timeout_s: float = 60.0, token: str | None = None
) -> tuple[Callable, bool]:
    """A built-in planner by CLI name -> (planner, needs camera images)."""
    from vavam.world.planners import ConstantVelocityPlanner, EmergencyBrakePlanner, ExpertPlanner

    if name == "constant-velocity":
        return ConstantVelocityPlanner(), False
    if name == "emergency-brake":
        return EmergencyBrakePlanner(), False
    if name == "expert":
        return ExpertPlanner(), False
    if name == "http":
        from vavam.serve.client import ModelClient
        from vavam.world.http_planner import HTTPPlanner

        client = ModelClient(url, timeout=timeout_s, token=token)
        client.require_ready()
        return HTTPPlanner(client), True
    raise ValueError(f"unknown planner {name!r}; expected one of {PLANNERS}")


def _run_record(result, spec) -> dict:
    d = result.summary()
    d["designed_collision_time"] = float(spec.collision_time)
    d["trajectory"] = np.round(np.asarray(result.poses, dtype=np.float64), 5).tolist()
    d["plans"] = [  # the first priming_steps plans are the reference driver's, the planner's after them
        {"t": float(t), "plan": np.round(np.asarray(p, dtype=np.float64), 4).tolist(),
         "by": "reference" if k < spec.priming_steps else "planner"}
        for k, (t, p) in enumerate(result.plans)
    ]
    return d


def evaluate_planner(
    planner: Callable,
    name: str = "planner",
    runs: int = 10,
    layouts: int = 3,
    kinds: Sequence[str] = DEFAULT_KINDS,
    renderer_factory: Callable | None = None,
    image_size: tuple[int, int] = (288, 512),
    images: bool = False,
    out: str | Path | None = None,
    video_runs: int = 0,
    plan_timeout_s: float | None = None,
    progress: bool = True,
) -> dict:
    """Score ``planner`` on ``runs`` x ``layouts`` runs of each scenario type.

    Args:
        planner: ``planner(obs) -> [6, 2]`` ego-frame waypoints at 0.5 ... 3.0 s; optional
            ``reset()`` (before every run) and ``observe(obs)`` (priming steps).
        name: planner name for tables and files.
        runs: jittered runs per layout (run index = jitter seed).
        layouts: base layouts per type (0 .. layouts - 1).
        kinds: scenario types.
        renderer_factory: ``factory(town) -> Renderer`` giving the planner camera frames
            (``obs["image"]``); called once per layout town, renderers released at the end.
        image_size: (height, width) of the camera when ``images`` builds the renderers, and of videos.
        images: render camera frames for the planner with a default renderer of ``image_size``.
        out: folder for scores.json / scores.md / runs.json / videos (None: write nothing).
        video_runs: mp4s of the first ``video_runs`` runs of each type (needs ``out``).
        plan_timeout_s: fail a run whose planner call takes longer (None: no limit).
        progress: progress bar and printed table.

    Returns:
        ``{"planner", "score", "collision_rate", "types": {type: {"score", "collision_rate", "runs", "failures"}},
        "num_runs", "failures", "runs": [per-run summaries], "seconds", "runs_per_s", "videos"}``. A failed
        run scores 0 and counts in no collision rate (NaN where every run failed; :func:`~vavam.world.ncap.aggregate`).
    """
    from tqdm.auto import tqdm

    from vavam.world.camera import Camera
    from vavam.world.closedloop import _others, simulate
    from vavam.world.ncap import aggregate, collision_of, failed, nanmean
    from vavam.world.scenarios import SCENARIO_TYPES, _town, make_scenario

    kinds = list(kinds)
    bad = [k for k in kinds if k not in SCENARIO_TYPES]
    if bad:
        raise ValueError(f"unknown scenario types {bad}; expected some of {SCENARIO_TYPES}")
    repeated = sorted({k for k in kinds if kinds.count(k) > 1})
    if repeated:  # each run would be driven and counted once per mention: twice the runs the report says per type
        raise ValueError(f"kinds: scenario types {repeated} are given more than once (got {kinds})")
    if runs < 1 or layouts < 1 or not kinds:
        raise ValueError(f"need runs >= 1, layouts >= 1 and at least one type, got {runs}, {layouts}, {kinds}")
    if video_runs and out is None:
        raise ValueError("video_runs needs an output folder (out)")
    height, width = int(image_size[0]), int(image_size[1])
    if plan_timeout_s is not None and plan_timeout_s > 0:
        planner = _TimedPlanner(planner, plan_timeout_s)
    out = Path(out) if out is not None else None

    ctx = None
    renderers: dict[int, object] = {}
    video_renderers: dict[int, object] = {}

    def _ctx():
        nonlocal ctx
        if ctx is None:
            from vavam.world.render import create_context

            ctx = create_context()
        return ctx

    def planner_renderer(seed: int):
        if renderer_factory is None and not images:
            return None
        if seed not in renderers:
            if renderer_factory is not None:
                renderers[seed] = renderer_factory(_town(seed))
            else:
                from vavam.world.render import Renderer

                renderers[seed] = Renderer(_town(seed), Camera(height, width), ctx=_ctx())
        return renderers[seed]

    def video_renderer(seed: int):
        r = planner_renderer(seed)
        if r is not None and (r.camera.height, r.camera.width) == (height, width):
            return r
        if seed not in video_renderers:
            from vavam.world.render import Renderer

            video_renderers[seed] = Renderer(_town(seed), Camera(height, width), ctx=_ctx())
        return video_renderers[seed]

    specs = [(k, lay, r) for k in kinds for lay in range(layouts) for r in range(runs)]
    results, records, videos = [], [], []
    t0 = time.perf_counter()
    bar = tqdm(specs, desc=f"scenarios {name}", unit="run", disable=not progress, dynamic_ncols=True)
    try:
        for kind, layout, run in bar:
            spec = make_scenario(kind, layout, run)
            ref = simulate(spec, None)
            v_ref = ref.impact_speed if ref.collided else spec.ego_speed
            renderer = planner_renderer(spec.world_seed)
            index_in_type = layout * runs + run
            on_step, frames = None, []
            if index_in_type < video_runs:
                vr = video_renderer(spec.world_seed)
                from vavam.world.video import draw_plan

                def on_step(world, spec_, t, plan_world, vr=vr, frames=frames):
                    boxes, _, _ = _others(world, spec_, t)
                    pose = world.ego_to_world()
                    frames.append(draw_plan(vr.render(pose, boxes[:, :9]).rgb, vr.camera, pose, plan_world))

            try:
                result = simulate(spec, planner, reference_speed=v_ref, renderer=renderer, on_step=on_step)
            except Exception as err:  # noqa: BLE001 - anything escaping simulate (e.g. reset()) fails this run only
                from vavam.world.closedloop import RunResult

                result = RunResult(
                    kind, layout, run, False, None, 0.0, v_ref, 0.0, failure=f"{type(err).__name__}: {err}"
                )
            results.append(result)
            records.append(_run_record(result, spec))
            if frames and out is not None:
                from vavam.media import write_mp4

                path = out / "videos" / f"{kind}-layout{layout}-run{run}.mp4"
                write_mp4(path, frames, fps=10.0)
                videos.append(str(path))
            done = [r.summary() for r in results]
            bar.set_postfix(
                score=f"{np.mean([r['score'] for r in done]):.2f}",
                collided=f"{nanmean(collision_of(r) for r in done):.0%}",
                failed=sum(failed(r) for r in done),
            )
    finally:
        bar.close()
        for r in [*renderers.values(), *video_renderers.values()]:
            with contextlib.suppress(Exception):
                r.release()
        if ctx is not None:
            ctx.release()
    seconds = time.perf_counter() - t0
    summaries = [r.summary() for r in results]
    agg = aggregate(summaries)
    report = {
        "planner": name,
        "score": agg["score"],
        "collision_rate": agg["collision_rate"],
        "types": agg["types"],
        "num_runs": len(summaries),
        "failures": agg["failures"],
        "runs_per_type": runs * layouts,
        "layouts": layouts,
        "seconds": seconds,
        "runs_per_s": len(summaries) / seconds if seconds > 0 else math.inf,
        "runs": summaries,
        "videos": videos,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "scores.json", json_safe({k: v for k, v in report.items() if k != "runs"}))  # NaN: null
        atomic_write_json(out / "runs.json", json_safe(records))
        atomic_write_text(out / "scores.md", score_table({name: report}) + "\n")
    return report


def _fmt(x: float, pct: bool = False) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{100 * x:.0f}%" if pct else f"{x:.2f}"


def score_table(results_by_planner: dict[str, dict]) -> str:
    """Markdown table comparing planners: one row per scenario type and an ``overall`` row (mean over
    types); per planner two columns, mean NCAP score (0-5, higher is better) and collision rate, and a
    "failed" column for each planner with failed runs (they score 0 and count in no collision rate).

    ``results_by_planner`` maps a planner name to an :func:`evaluate_planner` result (or anything with
    ``score``, ``collision_rate`` and ``types``).
    """
    from vavam.eval.report import markdown_cell

    names = list(results_by_planner)
    kinds: list[str] = []
    for res in results_by_planner.values():
        for k in res.get("types", {}):
            if k not in kinds:
                kinds.append(k)
    kinds.sort(key=lambda k: DEFAULT_KINDS.index(k) if k in DEFAULT_KINDS else len(DEFAULT_KINDS))
    failed = [n for n in names if results_by_planner[n].get("failures")]  # a column only where runs failed
    header = ["type"] + [c for n in names for c in (f"{n} score", f"{n} collisions")] + [f"{n} failed" for n in failed]
    header = [markdown_cell(c) for c in header]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for k in kinds:
        row = [markdown_cell(k)]
        for n in names:
            t = results_by_planner[n].get("types", {}).get(k)
            row += [_fmt(t["score"]), _fmt(t["collision_rate"], True)] if t else ["–", "–"]
        row += [str(results_by_planner[n].get("types", {}).get(k, {}).get("failures", 0)) for n in failed]
        lines.append("| " + " | ".join(row) + " |")
    row = ["**overall**"]
    for n in names:
        res = results_by_planner[n]
        row += [f"**{_fmt(res.get('score', float('nan')))}**", _fmt(res.get("collision_rate", float("nan")), True)]
    row += [str(results_by_planner[n]["failures"]) for n in failed]
    lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def scenarios(
    planner: Literal["constant-velocity", "emergency-brake", "expert", "http"] = "constant-velocity",
    url: str = "http://127.0.0.1:9000",
    token: str | None = None,
    runs: int = 10,
    layouts: int = 3,
    kinds: list[str] = list(DEFAULT_KINDS),  # noqa: B006 - tyro reads the default
    out: Path = Path("runs/scenarios"),
    video_runs: int = 1,
    height: int = 288,
    width: int = 512,
    plan_timeout_s: float = 60.0,
    progress: bool = True,
) -> dict:
    """Run the NeuroNCAP-style hazard scenarios with a planner and write the score table.

    Writes ``scores.json``, ``scores.md``, ``runs.json`` and ``videos/*.mp4`` under ``out`` (see
    :mod:`vavam.world.evaluate`) and prints the table.

    Args:
        planner: constant-velocity, emergency-brake, expert (privileged) or http (a
            NeuroNCAP-compatible model server at ``url``, given the rendered front camera).
        url: model server address (http planner).
        token: that server's bearer token, if it was started with one.
        runs: jittered runs per layout.
        layouts: base layouts per scenario type.
        kinds: scenario types (stationary, frontal, side).
        out: output folder.
        video_runs: number of runs per type recorded as mp4 with the plan drawn in.
        height: camera image height (http planner and videos).
        width: camera image width (http planner and videos).
        plan_timeout_s: a planner call taking longer fails its run (the http client uses it too).
        progress: show a progress bar.
    """
    impl, needs_images = make_planner(planner, url, plan_timeout_s, token)
    report = evaluate_planner(
        impl,
        planner,
        runs=runs,
        layouts=layouts,
        kinds=kinds,
        image_size=(height, width),
        images=needs_images,
        out=out,
        video_runs=video_runs,
        plan_timeout_s=plan_timeout_s,
        progress=progress,
    )
    print(score_table({planner: report}))
    print(
        f"{report['num_runs']} runs ({report['failures']} failed) in {report['seconds']:.1f} s "
        f"({report['runs_per_s']:.2f} runs/s) -> {out}"
    )
    return report
