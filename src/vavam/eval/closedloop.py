"""Closed-loop evaluation of VaVAM in the embedded world (``vavam eval closedloop CHECKPOINT``).

The world's NeuroNCAP-style hazard scenarios (stationary / frontal / side, :mod:`vavam.world.evaluate`)
are driven by VaVAM, either in-process (a :class:`~vavam.serve.agent.VaVAMAgent` called directly) or
through the NeuroNCAP-compatible model server (``through_server``: a server started on a free
loopback port, or an already running one at ``url``), next to the world's baselines (constant
velocity, emergency brake, privileged expert). The two VaVAM paths run the same agent code on the
same frames: with a seed they give the same plans, hence the same scores.

Per planner and scenario type: NCAP score (0-5), collision rate, mean and max lateral deviation of
the ego's rear axle from its route (the lane centreline the expert follows; mean over runs of each
run's mean / max), and progress (distance made good along the route, divided by the distance the
unreacting reference would cover over the whole scenario at its start speed; a crash ends a run, so
it lowers progress). Runs are averaged per layout, then over layouts, then over types (as NeuroNCAP).

Writes under ``out``: ``closedloop.md`` and ``closedloop.json`` (the table), and per planner a folder
with the world's ``scores.json`` / ``runs.json`` / ``scores.md`` and, for VaVAM, ``videos/*.mp4``
(front camera with the planned trajectory drawn in).

The server path sends every frame through ``/infer`` as NeuroNCAP does, including the priming steps
(whose plan is ignored); the in-process path lets the agent ``observe`` those frames. Both leave the
same frames in the history.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import tyro

from vavam.io import atomic_write_json, atomic_write_text, json_safe, read_json

DEFAULT_KINDS = ("stationary", "frontal", "side")
VAVAM = "VaVAM"
BASELINES = ("constant velocity", "emergency brake", "expert (privileged)")


# ------------------------------------------------------------------ planners


def _position(obs: dict) -> tuple[float, float] | None:
    """The ego's planar world position (m) of an observation: its ``ego_to_world`` translation, as the server
    reads NeuroNCAP's ``ego2world``."""
    pose = obs.get("ego_to_world")
    return None if pose is None else (float(pose[0][3]), float(pose[1][3]))


class AgentPlanner:
    """A :class:`~vavam.serve.agent.VaVAMAgent` as a world planner (in-process)."""

    def __init__(self, agent):
        self.agent = agent
        self.latencies: list[float] = []

    def reset(self) -> None:
        self.agent.reset()

    def observe(self, obs: dict) -> None:
        """Priming steps: the frame joins the history, no plan is made."""
        if obs.get("image") is not None:
            self.agent.observe(obs["image"], int(obs["timestamp_us"]), position=_position(obs))

    def __call__(self, obs: dict) -> np.ndarray:
        if obs.get("image") is None:
            raise ValueError("the VaVAM planner needs the camera frame (run with a renderer)")
        t0 = time.perf_counter()
        plan = self.agent.plan(obs["image"], int(obs["timestamp_us"]), int(obs["command"]), speed=float(obs["speed"]),
                               position=_position(obs))
        self.latencies.append(time.perf_counter() - t0)
        return plan


class ServerPlanner:
    """A NeuroNCAP-compatible model server as a world planner, called as NeuroNCAP calls it: every step,
    priming steps included (their plan is discarded)."""

    def __init__(self, client):
        from vavam.world.http_planner import HTTPPlanner

        self.http = HTTPPlanner(client)
        self.client = client
        self.latencies: list[float] = []

    def reset(self) -> None:
        self.http.reset()

    def observe(self, obs: dict) -> None:
        self.http.observe(obs)

    def __call__(self, obs: dict) -> np.ndarray:
        t0 = time.perf_counter()
        plan = self.http(obs)
        self.latencies.append(time.perf_counter() - t0)
        return plan


# ------------------------------------------------------------------ route metrics


def _route(spec, step_m: float = 0.25, ahead_m: float = 250.0) -> tuple[np.ndarray, np.ndarray]:
    """The ego's route of ``spec`` as points ``[N, 2]`` (world frame) and their arc lengths ``[N]``,
    from 10 m behind the start of the rear axle."""
    from vavam.world.driver import path_point
    from vavam.world.scenarios import _town

    net = _town(spec.world_seed).network
    path = list(spec.ego_path)
    total = float(sum(net.lanes[lane].length for lane in path))
    s0 = float(spec.ego_s_rear)
    arcs = np.arange(max(0.0, s0 - 10.0), min(total, s0 + ahead_m), step_m)
    pts = np.array([path_point(net, path, float(s))[:2] for s in arcs], dtype=np.float64)
    return pts, arcs - s0


def _project(points: np.ndarray, route: np.ndarray, arcs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance of each point ``[M, 2]`` to the polyline ``route`` and the arc length of its projection."""
    a, b = route[:-1], route[1:]  # [S, 2]
    ab = b - a
    seg_len2 = np.maximum((ab**2).sum(1), 1e-12)
    ap = points[:, None, :] - a[None]  # [M, S, 2]
    u = np.clip((ap * ab[None]).sum(-1) / seg_len2[None], 0.0, 1.0)  # [M, S]
    closest = a[None] + u[..., None] * ab[None]
    d = np.linalg.norm(points[:, None, :] - closest, axis=-1)  # [M, S]
    j = d.argmin(1)
    rows = np.arange(len(points))
    seg = np.sqrt(seg_len2)
    return d[rows, j], arcs[j] + u[rows, j] * seg[j]


def route_metrics(spec, poses: np.ndarray) -> dict[str, float]:
    """Deviation from the route and progress along it of one run (``poses [N, 5]``: t, x, y, yaw, v)."""
    poses = np.asarray(poses, dtype=np.float64).reshape(-1, 5)
    if len(poses) == 0:
        return {"mean_deviation": math.nan, "max_deviation": math.nan, "progress_m": math.nan, "progress": math.nan}
    route, arcs = _route(spec)
    dist, along = _project(poses[:, 1:3], route, arcs)
    progress_m = float(along[-1] - along[0])
    reference_m = float(spec.ego_speed) * float(spec.duration)
    return {
        "mean_deviation": float(dist.mean()),
        "max_deviation": float(dist.max()),
        "progress_m": progress_m,
        "progress": progress_m / reference_m if reference_m > 0 else math.nan,
    }


METRICS = ("score", "collision_rate", "mean_deviation", "max_deviation", "progress")


def summarize(records: Sequence[dict]) -> dict[str, Any]:
    """Per-run records (``type``, ``layout``, ``run``, ``score``, ``collided``, ``trajectory``, ``failure``) ->
    per type and overall means of :data:`METRICS` (runs -> layouts -> types) and the count of failed runs.

    A failed run (its planner raised or returned a bad plan) scores 0 and is left out of the other
    metrics, which it never drove to the end (as :func:`vavam.world.ncap.aggregate`).
    """
    from vavam.world.ncap import aggregate, failed
    from vavam.world.scenarios import make_scenario

    def route(r: dict) -> dict[str, float]:  # a failed run's trajectory is left out: NaN
        spec = make_scenario(r["type"], int(r["layout"]), int(r["run"]))
        got = route_metrics(spec, np.asarray([] if failed(r) else r.get("trajectory", []), dtype=np.float64))
        return {m: got[m] for m in METRICS if m in got}

    result = aggregate(records, route)
    return {**{m: result.get(m, math.nan) for m in METRICS}, "failures": result["failures"], "types": result["types"]}


# ------------------------------------------------------------------ tables


def closedloop_rows(results: dict[str, dict]) -> list[tuple[str, str, dict]]:
    """``(planner, type, metrics)`` per planner: one row per scenario type, then its ``overall`` row."""
    rows = []
    for name, res in results.items():
        rows += [(name, kind, t) for kind, t in res["types"].items()]
        rows.append((name, "overall", res))
    return rows


def closedloop_table(results: dict[str, dict]) -> str:
    """Markdown table: per planner, one row per scenario type and an overall row."""
    from vavam.eval.report import markdown_cell

    head = "| planner | type | NCAP score ↑ | collision rate ↓ | mean dev. (m) | max dev. (m) | progress | failed runs |"
    lines = [head, "|---|---|---:|---:|---:|---:|---:|---:|"]

    def fmt(x: float, pct: bool = False) -> str:
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return "–"
        return f"{100 * x:.0f}%" if pct else f"{x:.2f}"

    for name, kind, t in closedloop_rows(results):
        b = "**" if kind == "overall" else ""
        lines.append(f"| {b}{markdown_cell(name)}{b} | {b}{markdown_cell(kind)}{b} | {b}{fmt(t['score'])}{b} | "
                     f"{fmt(t['collision_rate'], True)} | {fmt(t['mean_deviation'])} | {fmt(t['max_deviation'])} | "
                     f"{fmt(t['progress'], True)} | {t.get('failures', 0)} |")
    return "\n".join(lines)


def closedloop_section(results: dict[str, dict], title: str, out: Path) -> Any:
    """The closed-loop table (and VaVAM's videos, relative to ``out``) as a report :class:`Section`."""
    import os

    from vavam.eval.report import Section, Table

    def pct(x: Any) -> Any:
        return 100.0 * x if isinstance(x, (int, float)) and not math.isnan(x) else float("nan")

    rows = [[name, kind, t["score"], pct(t["collision_rate"]), t["mean_deviation"], t["max_deviation"],
             pct(t["progress"]), t.get("failures", 0)] for name, kind, t in closedloop_rows(results)]
    table = Table(["planner", "type", "NCAP score ↑", "collision rate % ↓", "mean dev. (m)", "max dev. (m)",
                   "progress %", "failed runs"], rows, digits=2)
    videos = [os.path.relpath(v, out) for res in results.values() for v in res.get("videos", []) or []
              if str(v).endswith(".mp4")][:2]
    text = ("NeuroNCAP-style hazard scenarios in the embedded world (stationary, frontal, side); the NCAP score is "
            "0–5 per run (5: no collision). A failed run (the planner raised or returned a bad plan) scores 0 and "
            "counts in no other column.")
    return Section(title, text, [table], videos)


def _latency(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ms = 1000 * np.asarray(values)
    return {"calls": len(values), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def _slug(name: str) -> str:
    return name.split()[0].lower().replace("(", "").replace(")", "")


# ------------------------------------------------------------------ evaluation


def evaluate_vavam(
    agent,
    through_server: bool = False,
    url: str | None = None,
    token: str | None = None,
    runs: int = 10,
    layouts: int = 3,
    kinds: Sequence[str] = DEFAULT_KINDS,
    out: str | Path = Path("runs/closedloop"),
    video_runs: int = 1,
    video_size: tuple[int, int] = (288, 512),
    baselines: bool = True,
    progress: bool = True,
) -> dict[str, Any]:
    """Score ``agent`` (a :class:`~vavam.serve.agent.VaVAMAgent`) and, with ``baselines``, the world's
    baselines on ``runs`` x ``layouts`` runs of each of ``kinds``; write the table under ``out``.

    ``through_server``: call the agent through the model server (started here on a free loopback
    port around ``agent``, unless ``url`` names a running one; ``token`` is its bearer token). The
    world renders the planner's camera at the agent's image size; videos are ``video_size``.

    Returns ``{"planners": {name: {score, collision_rate, mean_deviation, max_deviation, progress,
    types: {...}, latency, failures, num_runs}}, "mode", "table", "files"}``.
    """
    from vavam.world import ConstantVelocityPlanner, EmergencyBrakePlanner, ExpertPlanner
    from vavam.world.camera import Camera
    from vavam.world.evaluate import evaluate_planner
    from vavam.world.render import Renderer

    out = Path(out)
    height, width = agent.options.image_size
    planners: dict[str, tuple[Any, Any]] = {}
    if baselines:
        planners.update({
            "constant velocity": (ConstantVelocityPlanner(), None),
            "emergency brake": (EmergencyBrakePlanner(), None),
            "expert (privileged)": (ExpertPlanner(), None),
        })

    def renderer_factory(town):
        return Renderer(town, Camera(height, width))

    external = through_server and url is not None  # a server started elsewhere, with options of its own
    server = client = None
    try:
        if through_server:
            from vavam.serve.client import ModelClient

            if url is None:
                from vavam.serve.server import BackgroundServer, create_app

                server = BackgroundServer(create_app(agent, token=token)).start()
                url = server.url
            client = ModelClient(url, token=token, timeout=600.0)
            client.require_ready()
            vavam_planner: Any = ServerPlanner(client)
        else:
            vavam_planner = AgentPlanner(agent)
        planners[VAVAM] = (vavam_planner, renderer_factory)
        results: dict[str, dict] = {}
        for name, (planner, factory) in planners.items():
            folder = out / _slug(name)
            report = evaluate_planner(
                planner, name, runs=runs, layouts=layouts, kinds=kinds, renderer_factory=factory,
                image_size=tuple(video_size), out=folder, video_runs=video_runs if name == VAVAM else 0,
                progress=progress,
            )
            records = read_json(folder / "runs.json")
            results[name] = {
                **summarize(records),
                "num_runs": report["num_runs"],
                "failures": report["failures"],
                "first_failure": next((r["failure"] for r in records if r.get("failure")), None),
                "seconds": report["seconds"],
                "videos": report["videos"],
                "latency": _latency(getattr(planner, "latencies", [])),
                "folder": str(folder),
            }
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
    mode = "server" if through_server else "in-process"
    table = closedloop_table(results)
    summary = {
        "mode": mode,
        "url": url if through_server else None,
        "runs": runs,
        "layouts": layouts,
        "kinds": list(kinds),
        "image_size": [height, width],
        "agent": ({"server": url, "image_size": [height, width],
                   "note": "planned by the server at this url: its checkpoint and options are not known here; "
                           "image_size is the camera size the world sent it"} if external
                  else {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(agent.options).items()}),
        "planners": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "closedloop.json", json_safe(summary))  # NaN (e.g. every run failed): null
    atomic_write_text(out / "closedloop.md", f"Closed loop ({mode}, {runs} runs x {layouts} layouts per type)\n\n{table}\n")
    from vavam.eval.report import save_evaluation

    title = f"Closed loop ({mode}, {runs} runs x {layouts} layouts per type)"
    save_evaluation(out, "closedloop", "Closed loop", summary, [closedloop_section(results, title, out)])
    return {**summary, "table": table, "files": [str(out / "closedloop.md"), str(out / "closedloop.json")]}


def eval_closedloop(
    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")],
    tokenizer: Path | None = None,
    through_server: bool = False,
    url: str | None = None,
    token: str | None = None,
    runs: int = 10,
    layouts: int = 3,
    kinds: list[str] = list(DEFAULT_KINDS),  # noqa: B006 - tyro reads the default
    out: Path = Path("runs/closedloop"),
    video_runs: int = 1,
    video_height: int = 288,
    video_width: int = 512,
    num_samples: int = 1,
    reduction: Literal["first", "mean", "medoid"] = "first",
    num_steps: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: Literal["fp32", "bf16"] = "fp32",
    image_height: int | None = None,
    image_width: int | None = None,
    baselines: bool = True,
    trust_code: bool = False,
    progress: bool = True,
) -> dict:
    """Closed-loop NCAP evaluation of a VaVAM checkpoint in the embedded world, with baselines.

    Writes ``closedloop.md`` / ``closedloop.json`` (per type: NCAP score, collision rate, mean and
    max deviation from the route, progress, failed runs), per-planner run records and mp4s of VaVAM runs
    with the planned trajectory drawn in, under ``out``; prints the table. Failed VaVAM runs are named
    (the first one's reason); when every one failed the command exits with status 1.

    Args:
        checkpoint: a released VaVAM ``.pt`` or our checkpoint folder.
        tokenizer: the tokenizer (our folders record theirs; released checkpoints need it named).
        through_server: plan through the NeuroNCAP-compatible server instead of in-process.
        url: a running server to use with ``--through-server`` (default: start one on loopback).
        token: bearer token of that server.
        runs: jittered runs per layout.
        layouts: base layouts per scenario type.
        kinds: scenario types (stationary, frontal, side).
        out: output folder.
        video_runs: mp4s of the first runs of each type (VaVAM only).
        video_height: video frame height.
        video_width: video frame width.
        num_samples: trajectories sampled per call (K).
        reduction: first, mean or medoid of the K samples.
        num_steps: Euler steps (default: the checkpoint's).
        seed: noise seed (each call's noise comes from the seed and the frame time).
        device: torch device.
        dtype: fp32 or bf16 autocast.
        image_height: model input height (default: the checkpoint's).
        image_width: model input width (default: the checkpoint's).
        baselines: also score constant velocity, emergency brake and the privileged expert.
        trust_code: allow TorchScript tokenizer files.
        progress: progress bars.
    """
    from vavam.checks import image_size_arg
    from vavam.serve.server import load_agent

    if (url is not None or token is not None) and not through_server:  # it planned in-process, ignoring them
        raise ValueError(f"{'--url' if url is not None else '--token'} is for planning through a server: add "
                         "--through-server")
    size = image_size_arg(image_height, image_width)
    agent = load_agent(checkpoint, tokenizer, device=device, dtype=dtype, num_samples=num_samples, reduction=reduction,
                       seed=seed, num_steps=num_steps, image_size=size, trust_code=trust_code)
    result = evaluate_vavam(agent, through_server=through_server, url=url, token=token, runs=runs, layouts=layouts,
                            kinds=kinds, out=out, video_runs=video_runs, video_size=(video_height, video_width),
                            baselines=baselines, progress=progress)
    print(result["table"])
    print(f"-> {out}")
    vavam_result = result["planners"][VAVAM]
    failures, num_runs = vavam_result["failures"], vavam_result["num_runs"]
    if failures:
        message = (f"VaVAM: {failures} of {num_runs} runs failed (they score 0 and count in no other column); "
                   f"first: {vavam_result['first_failure']}")
        if failures == num_runs:
            raise SystemExit(message)
        print(message, file=sys.stderr)
    return result
