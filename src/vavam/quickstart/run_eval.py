"""The quickstart's ``eval`` stage: load what the earlier stages trained and evaluate it on held-out towns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vavam.io import atomic_write_json
from vavam.quickstart import evaluate as ev
from vavam.quickstart.plan import QuickstartPlan


def _public(d: dict) -> dict:
    """Drop the private (``_``-prefixed) entries that hold tensors for figures."""
    return {k: v for k, v in d.items() if not k.startswith("_")}


def run_all(out: Path, folder: Path, plan: QuickstartPlan, seed: int) -> dict[str, Any]:
    """Every evaluation of the quickstart; results in ``folder/results.json``, figures beside it."""
    import vavam
    from vavam.data.tokens import TokenStore
    from vavam.train.action import make_window_dataset

    torch.manual_seed(seed)
    tok = vavam.load_tokenizer(out / "tokenizer" / "tokenizer")
    vim = vavam.load_video_model(out / "video" / "model")
    vam = vavam.load_action_model(out / "action" / "model")
    train_store, heldout_store = TokenStore(out / "tokens" / "train"), TokenStore(out / "tokens" / "heldout")
    frames = vam.config.train_frames
    train_set = make_window_dataset(out / "world" / "train.npz", out / "tokens" / "train", frames)
    heldout_set = make_window_dataset(out / "world" / "heldout.npz", out / "tokens" / "heldout", frames)

    from tqdm.auto import tqdm

    from vavam.data.records import load_records
    from vavam.eval.planning import plot_examples_bev

    records = {r.name: r for r in load_records(out / "world" / "heldout.npz", check_files=False)}
    results: dict[str, Any] = {}
    # the stage's parts, in order; one bar over them gives the stage's progress and ETA (closed loop adds its own)
    parts = ["next-token cross-entropy", "greedy next frame", "open-loop planning", "command following",
             "semantic probe on world labels", "closed-loop hazard scenarios"]
    bar = tqdm(total=len(parts), desc="eval", unit="part", dynamic_ncols=True)

    def start(part: str) -> None:
        print(f"[eval] {part}", flush=True)
        bar.set_postfix_str(part)

    with bar:
        start(parts[0])
        results["next_token"] = ev.next_token(vim, train_store, heldout_store)
        bar.update()
        start(parts[1])
        nf = ev.next_frame(vim, heldout_store, seed=seed)
        results["next_frame"] = _public(nf)
        results["generated_frames"] = ev.generated_frames(tok, nf, folder)
        bar.update()
        start(parts[2])
        ol = ev.open_loop(vam, train_set, heldout_set, num_samples=plan.num_samples, seed=seed, records=records)
        results["open_loop"] = {**_public(ol), "ego_speed": bool(vam.config.ego_speed),
                                "speed_prior": bool(vam.config.speed_prior)}
        plot_examples_bev(ol["_examples"], folder / "trajectories.png")
        bar.update()
        start(parts[3])
        results["command_following"] = ev.command_following(vam, heldout_set, num_samples=plan.num_samples,
                                                            seed=seed)
        bar.update()
        start(parts[4])
        results["probe"] = probe(vim, tok, out / "world", folder, seed)
        bar.update()
        start(parts[5])
        results["closed_loop"] = closed_loop(tok, vam, plan, seed, folder)
        bar.update()
    atomic_write_json(folder / "results.json", results)
    return {"results": str(folder / "results.json")}


def probe(vim, tok, world: Path, folder: Path, seed: int, samples: int = 96) -> dict[str, Any]:
    """Hummingbird segmentation probe of VaViM's middle block on single frames with the world's labels (memory: training towns,
    queries: held-out towns), beside the same architecture untrained; figure ``probe_examples.png``."""
    import vavam
    from vavam.eval.probe import run_probe, save_examples_figure
    from vavam.eval.probe_data import WorldProbeData

    memory = WorldProbeData(world, "train", "segmentation", window=1, max_samples=2 * samples)
    queries = WorldProbeData(world, "heldout", "segmentation", window=1, max_samples=samples)
    torch.manual_seed(seed)
    untrained = vavam.build_model(vim.config).eval()
    rows = {}
    for name, model in (("VaViM", vim), ("VaViM untrained", untrained)):
        res = run_probe(model, tok, memory, queries, task="segmentation", k=30, seed=seed, progress=False)
        if name == "VaViM":
            save_examples_figure(folder / "probe_examples.png", res.pop("_examples"), "segmentation",
                                 memory.class_names)
        rows[name] = _public(res)
    return {"memory_images": len(memory), "query_images": len(queries), "rows": rows}


def closed_loop(tok, vam, plan: QuickstartPlan, seed: int, folder: Path) -> dict[str, Any]:
    """NCAP scores of VaVAM and the built-in baselines on the world's hazard scenarios."""
    from vavam.world import ConstantVelocityPlanner, EmergencyBrakePlanner, ExpertPlanner
    from vavam.world.camera import Camera
    from vavam.world.evaluate import evaluate_planner

    common = {"runs": plan.closed_loop_runs, "layouts": plan.closed_loop_layouts}
    planners = {
        "constant velocity": (ConstantVelocityPlanner(), None),
        "emergency brake": (EmergencyBrakePlanner(), None),
        "expert (privileged)": (ExpertPlanner(), None),
    }
    from vavam.world.render import Renderer

    def renderer_factory(town):
        return Renderer(town, Camera(plan.height, plan.width))

    from vavam.eval.closedloop import AgentPlanner
    from vavam.serve.agent import AgentOptions, VaVAMAgent

    vavam_planner = AgentPlanner(VaVAMAgent(tok, vam, AgentOptions(
        num_samples=plan.num_samples, reduction="medoid", seed=seed, image_size=(plan.height, plan.width),
        neuroncap_rule=False)))
    planners["VaVAM"] = (vavam_planner, renderer_factory)
    tables = {}
    for name, (planner, factory) in planners.items():
        tables[name] = evaluate_planner(planner, name, renderer_factory=factory, image_size=(plan.height, plan.width),
                                        out=folder / "closed_loop" / name.split()[0].lower(),
                                        video_runs=1 if name == "VaVAM" else 0, **common)
    return tables
