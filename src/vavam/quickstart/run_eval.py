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


def plot_trajectories(examples: list[dict], path: Path) -> None:
    """Bird's-eye view of ground truth vs the K sampled trajectories of a few held-out windows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = {0: "right", 1: "left", 2: "straight"}
    n = len(examples)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 3.6), squeeze=False)
    for ax, ex in zip(axes[0], examples):
        for k, traj in enumerate(ex["pred"]):
            ax.plot(-traj[:, 1], traj[:, 0], "-o", ms=2, color="tab:blue", alpha=0.5, label="VaVAM samples" if k == 0 else None)
        gt = ex["gt"]
        ax.plot(-gt[:, 1], gt[:, 0], "-o", ms=3, color="black", label="ground truth")
        ax.plot([0], [0], "^", color="tab:red")
        ax.set_title(f"command: {names[ex['command']]}", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
        ax.set_xlabel("right (m)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("forward (m)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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

    results: dict[str, Any] = {}
    print("[eval] next-token cross-entropy", flush=True)
    results["next_token"] = ev.next_token(vim, train_store, heldout_store)
    print("[eval] greedy next frame", flush=True)
    nf = ev.next_frame(vim, heldout_store, seed=seed)
    results["next_frame"] = _public(nf)
    results["generated_frames"] = ev.generated_frames(tok, nf, folder)
    print("[eval] open-loop planning", flush=True)
    ol = ev.open_loop(vam, train_set, heldout_set, num_samples=plan.num_samples, seed=seed)
    results["open_loop"] = _public(ol)
    plot_trajectories([{k: (v.numpy() if torch.is_tensor(v) else v) for k, v in e.items()} for e in ol["_examples"]],
                      folder / "trajectories.png")
    results["command_following"] = ev.command_following(vam, heldout_set, num_samples=plan.num_samples, seed=seed)
    print("[eval] closed-loop hazard scenarios", flush=True)
    results["closed_loop"] = closed_loop(tok, vam, plan, seed, folder)
    atomic_write_json(folder / "results.json", results)
    return {"results": str(folder / "results.json")}


def closed_loop(tok, vam, plan: QuickstartPlan, seed: int, folder: Path) -> dict[str, Any]:
    """NCAP scores of VaVAM and the built-in baselines on the world's hazard scenarios."""
    from vavam.world import ConstantVelocityPlanner, EmergencyBrakePlanner, ExpertPlanner
    from vavam.world.camera import Camera
    from vavam.world.evaluate import evaluate_planner

    common = dict(runs=plan.closed_loop_runs, layouts=plan.closed_loop_layouts)
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
