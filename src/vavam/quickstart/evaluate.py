"""The quickstart's evaluations on held-out towns: next-token, next frame, open loop, commands, video.

Each function returns a JSON-able dict (and writes its figures into ``folder``) so the report can
quote it. All randomness comes from explicit generators seeded by the caller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from vavam.data.tokens import TokenStore
from vavam.eval.nexttoken import evaluate_next_token, store_windows
from vavam.eval.quality import frechet_distance_from_features
from vavam.types import Command


@torch.no_grad()
def next_token(vim, train_store: TokenStore, heldout_store: TokenStore, batch_size: int = 8) -> dict[str, Any]:
    """Cross-entropy (nats/token) and perplexity of VaViM on held-out windows, with two frequency baselines."""
    windows = store_windows(heldout_store, vim.config.num_frames)
    res = evaluate_next_token(vim, {"heldout": windows}, train_store, batch_size)["heldout"]  # baselines: scene by scene
    rows = {"VaViM" if k == "model" else k: v for k, v in res.items()}
    return {"windows": len(windows), "frames": vim.config.num_frames, "rows": rows,
            "ratio_to_per_position": rows["VaViM"]["cross_entropy"] / rows["per-position frequency"]["cross_entropy"]}


@torch.no_grad()
def next_frame(vim, heldout_store: TokenStore, limit: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Greedy generation of the last frame of held-out windows from the others; token accuracy vs copying.

    ``limit``: a seeded random subset of that many windows (default: every non-overlapping held-out window).
    """
    from vavam.video import generate_frames

    windows = store_windows(heldout_store, vim.config.num_frames, 1, limit, seed)
    context, truth = windows[:, :-1], windows[:, -1]
    generated = torch.cat([generate_frames(vim, context[i : i + 8], 1, top_k=1)[:, 0] for i in range(0, len(context), 8)])
    copy = context[:, -1]
    forced, copy_prob = teacher_forced_last_frame(vim, windows, reference=copy)
    return {
        "windows": len(windows),
        "context_frames": context.shape[1],
        "greedy_accuracy": float((generated == truth).float().mean()),
        "copy_last_frame_accuracy": float((copy == truth).float().mean()),
        "teacher_forced_accuracy": float((forced == truth).float().mean()),
        **paired_wins(generated, copy, truth),
        "by_change": accuracy_by_change(context, truth, generated, teacher_forced=forced),
        "by_persistence": accuracy_by_persistence(context, truth, generated, forced, copy_prob),
        "_generated": generated,
        "_context": context,
        "_truth": truth,
    }


def paired_wins(generated: torch.Tensor, copy: torch.Tensor, truth: torch.Tensor) -> dict[str, Any]:
    """How far apart greedy generation and copying are on the same tokens: the tokens only one of them gets
    right, and the two-sided sign test of those two counts (how likely so uneven a split is if neither were
    better).

    Args:
        generated, copy, truth: long ``[N, h, w]`` (or any one shape).

    Returns:
        ``greedy_only`` / ``copy_only`` (counts of tokens only that prediction gets right) and ``sign_test_p``
        (1.0 when both are 0).
    """
    from scipy.stats import binomtest

    if not generated.shape == copy.shape == truth.shape:
        raise ValueError(f"generated {tuple(generated.shape)}, copy {tuple(copy.shape)} and truth "
                         f"{tuple(truth.shape)} must have one shape")
    greedy_only = int(((generated == truth) & (copy != truth)).sum())
    copy_only = int(((copy == truth) & (generated != truth)).sum())
    p = binomtest(greedy_only, greedy_only + copy_only).pvalue if greedy_only + copy_only else 1.0
    return {"greedy_only": greedy_only, "copy_only": copy_only, "sign_test_p": float(p)}


def accuracy_by_change(context: torch.Tensor, truth: torch.Tensor, generated: torch.Tensor,
                       edges: tuple[float, ...] = (0.5, 0.7),
                       teacher_forced: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """Generated and copied next frames' token accuracy, by how much the scene changed in the last context step.

    A window's change is the share of tokens its last context frame keeps from the frame before (1: nothing
    moved); windows are grouped by that share at ``edges``. Copying is hard to beat where little changes
    and easy where much does, so the groups show where a model gains or loses against it.

    Args:
        context: long ``[N, T-1, h, w]`` (``T-1 >= 2``); truth, generated: long ``[N, h, w]``.
        teacher_forced: long ``[N, h, w]``, the model's predictions given the true earlier tokens (optional).
        edges: increasing shares strictly between 0 and 1 where one group ends and the next begins (a window
            on an edge goes to the upper group; the last group includes 1).

    Returns:
        One dict per group, lowest share first: ``kept`` (the group's range of that share, as text),
        ``windows``, ``generated``, ``copy`` and, when given, ``teacher_forced`` (mean token accuracy; NaN for
        an empty group).
    """
    _check_frames(context, "the last step's change", truth=truth, generated=generated, teacher_forced=teacher_forced)
    if list(edges) != sorted(set(edges)) or not all(0 < e < 1 for e in edges):
        raise ValueError(f"edges: expected increasing shares strictly between 0 and 1, got {edges}")
    kept = (context[:, -1] == context[:, -2]).flatten(1).float().mean(1)  # [N]
    generated_acc = (generated == truth).flatten(1).float().mean(1)  # [N]
    copy_acc = (context[:, -1] == truth).flatten(1).float().mean(1)  # [N]
    forced_acc = None if teacher_forced is None else (teacher_forced == truth).flatten(1).float().mean(1)  # [N]
    # [N] group index g: edges[g-1] <= kept < edges[g] (the top group takes kept = 1)
    group_of = torch.bucketize(kept, torch.tensor(edges, dtype=kept.dtype), right=True)
    bounds = [0.0, *edges, 1.0]
    rows = []
    for g, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        member = group_of == g
        n = int(member.sum())
        row = {"kept": _share_range(lo, hi), "windows": n}
        for key, acc in (("generated", generated_acc), ("copy", copy_acc), ("teacher_forced", forced_acc)):
            if acc is not None:
                row[key] = float(acc[member].mean()) if n else float("nan")
        rows.append(row)
    return rows


def _check_frames(context: torch.Tensor, measure: str, **frames: torch.Tensor | None) -> None:
    """Refuse a context that is not ``[N, T-1 >= 2, h, w]`` (``measure`` says what needs two steps) or a frame
    tensor (given by name; None skipped) that is not one ``[h, w]`` per window: it would broadcast into wrong
    accuracies."""
    if context.dim() != 4 or context.shape[1] < 2:
        raise ValueError(f"context: expected [N, T-1 >= 2, h, w] to measure {measure}, got {tuple(context.shape)}")
    for name, value in frames.items():
        if value is not None and value.shape != context[:, -1].shape:
            raise ValueError(f"{name}: expected {tuple(context[:, -1].shape)} (the context's frame shape, one per "
                             f"window), got {tuple(value.shape)}")


def _share_range(lo: float, hi: float) -> str:
    """A group of shares ``lo <= x < hi`` as text (the top group ``hi = 1`` includes 1)."""
    if hi == 1.0:
        return "all" if lo == 0.0 else f"≥ {lo:.0%}"
    return f"< {hi:.0%}" if lo == 0.0 else f"{lo:.0%} to < {hi:.0%}"


def accuracy_by_persistence(context: torch.Tensor, truth: torch.Tensor, generated: torch.Tensor,
                            teacher_forced: torch.Tensor, copy_prob: torch.Tensor) -> list[dict[str, Any]]:
    """Next-frame tokens grouped by how many context steps their position kept its token, with VaViM's
    (teacher-forced) probability of the copied token beside the share copying gets right.

    A token's persistence is the number of consecutive steps, counted back from the last context frame, over
    which its position's token did not change (0: it changed in the last step; ``T-2``: the whole context
    showed the same token). Within a group, copying's accuracy is the observed chance that the token stays;
    a calibrated model's mean probability of the copied token would match it; where that chance is high, a
    model that underweights the copied token picks other codes more often and loses tokens to copying.

    Args:
        context: long ``[N, T-1, h, w]`` (``T-1 >= 2``); truth, generated, teacher_forced: long ``[N, h, w]``.
        copy_prob: float ``[N, h, w]``, the model's probability of the last context frame's token at each
            position given the true earlier tokens.

    Returns:
        One dict per persistence ``0 .. T-2`` (in order): ``steps``, ``tokens`` (count), ``copy``,
        ``copy_prob`` (mean), ``generated``, ``teacher_forced`` (mean token accuracy; NaN for an empty group).
    """
    _check_frames(context, "how long tokens stayed", truth=truth, generated=generated, teacher_forced=teacher_forced,
                  copy_prob=copy_prob)
    kept = context[:, 1:] == context[:, :-1]  # [N, T-2, h, w]: step s kept the token at this position
    # [N, h, w]: leading run of kept steps counted back from the last one
    steps = kept.flip(1).long().cumprod(1).sum(1)
    copy = context[:, -1]
    rows = []
    for k in range(context.shape[1]):
        member = steps == k
        n = int(member.sum())
        row: dict[str, Any] = {"steps": k, "tokens": n}
        for key, value in (("copy", (copy == truth).float()), ("copy_prob", copy_prob.float()),
                           ("generated", (generated == truth).float()),
                           ("teacher_forced", (teacher_forced == truth).float())):
            row[key] = float(value[member].mean()) if n else float("nan")
        rows.append(row)
    return rows


@torch.no_grad()
def teacher_forced_last_frame(vim, windows: torch.Tensor, batch_size: int = 8,
                              reference: torch.Tensor | None = None
                              ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """VaViM's top-1 prediction of each token of the last frame given every true token before it.

    Args:
        windows: long ``[N, T, h, w]``.
        reference: long ``[N, h, w]`` (optional): also return the model's probability of these tokens
            (e.g. the last context frame's, to compare with copying).

    Returns:
        long ``[N, h, w]``: the argmax at the position before each last-frame token; with ``reference`` also
        float ``[N, h, w]``, the softmax probability of each reference token there.
    """
    n, _, h, w = windows.shape
    if reference is not None and reference.shape != (n, h, w):
        raise ValueError(f"reference: expected {(n, h, w)} (one token per last-frame position), "
                         f"got {tuple(reference.shape)}")
    preds, probs = [], []
    for i in range(0, n, batch_size):
        logits = vim(windows[i : i + batch_size])[:, -h * w - 1 : -1]  # [b, h·w, V]; position j predicts token j + 1
        preds.append(logits.argmax(-1).reshape(-1, h, w))
        if reference is not None:
            ref = reference[i : i + batch_size].reshape(-1, h * w, 1)  # [b, h·w, 1]
            probs.append(logits.float().softmax(-1).gather(-1, ref).reshape(-1, h, w))
    pred = torch.cat(preds) if preds else windows[:, -1].clone()
    if reference is None:
        return pred
    return pred, (torch.cat(probs) if probs else torch.zeros(n, h, w))


def _stack(items: list[dict], key: str) -> torch.Tensor:
    return torch.stack([torch.as_tensor(it[key]) for it in items])


@torch.no_grad()
def open_loop(vam, train_set, heldout_set, num_samples: int = 5, batch_size: int = 16, seed: int = 0,
              records: dict | None = None) -> dict[str, Any]:
    """minADE@K, FDE, L2@1/2/3 s (and, given ``records`` with boxes, the collision rate) of VaVAM on
    held-out windows (last context frame), with the constant-velocity and per-command-mean baselines."""
    from vavam.eval.planning import evaluate_open_loop, fit_mean_baseline

    result = evaluate_open_loop(vam, heldout_set, records, fit_mean_baseline(train_set), num_samples=num_samples,
                                batch_size=batch_size, seed=seed)
    rows = result["rows"]
    best_baseline = min(rows["constant velocity"]["all"]["min_ade"], rows["mean trajectory per command"]["all"]["min_ade"])
    return {**result, "euler_steps": vam.config.num_inference_steps,
            "ratio_to_best_baseline": rows["VaVAM"]["all"]["min_ade"] / best_baseline}


@torch.no_grad()
def command_following(vam, heldout_set, num_samples: int = 5, seed: int = 0) -> dict[str, Any]:
    """At intersections (held-out frames whose true command is left or right), the mean lateral offset at
    3 s when the SAME frames are given the LEFT command and the RIGHT command."""
    items = [item for item in (heldout_set[i] for i in range(len(heldout_set)))  # each item read once
             if int(item["commands"][-1]) != Command.STRAIGHT]
    if not items:
        return {"windows": 0, "left_minus_right_m": float("nan")}
    tokens = _stack(items, "tokens")
    speeds = _stack(items, "speeds")[:, -1]  # [N] m/s at the last context frame
    lateral = {}
    for name, command in (("left", Command.LEFT), ("right", Command.RIGHT)):
        generator = torch.Generator().manual_seed(seed)
        traj = torch.cat([
            vam.sample_trajectory(tokens[i : i + 16], torch.full((len(tokens[i : i + 16]),), int(command)),
                                  num_samples=num_samples, generator=generator, speed=speeds[i : i + 16])
            for i in range(0, len(tokens), 16)
        ])
        lateral[name] = float(traj[:, :, -1, 1].mean())
    return {"windows": len(items), "lateral_at_3s_left_m": lateral["left"], "lateral_at_3s_right_m": lateral["right"],
            "left_minus_right_m": lateral["left"] - lateral["right"]}


@torch.no_grad()
def generated_frames(tokenizer, frames: dict[str, torch.Tensor], folder: Path, max_rows: int = 4) -> dict[str, Any]:
    """Decode generated vs true next frames; Fréchet distance of tokenizer-encoder features (mean and std
    per channel, :class:`vavam.eval.features.VQEncoderFeatures`; not FID).

    Writes ``folder/next_frames.png``: per row, the last context frame, the true next frame, the generated one.
    """
    from PIL import Image

    from vavam.types import unit_to_uint8

    def decode(ids: torch.Tensor) -> torch.Tensor:
        return torch.cat([tokenizer.decode(ids[i : i + 16]) for i in range(0, len(ids), 16)])

    gen, true, ctx = decode(frames["_generated"]), decode(frames["_truth"]), decode(frames["_context"][:, -1])

    from vavam.eval.features import VQEncoderFeatures

    extractor = VQEncoderFeatures(tokenizer)  # the same features as `vavam eval quality --extractor vq`

    def feats(images: torch.Tensor) -> torch.Tensor:
        unit = ((images.float().clamp(-1, 1) + 1) / 2).clamp(0, 1)  # [-1, 1] -> [0, 1]
        return torch.cat([extractor(unit[i : i + 16]) for i in range(0, len(unit), 16)]).double()  # [N, 2C]

    fd = frechet_distance_from_features(feats(gen), feats(true)) if len(gen) > 2 else float("nan")
    fd_copy = frechet_distance_from_features(feats(ctx), feats(true)) if len(gen) > 2 else float("nan")
    rows = [torch.cat([ctx[i], true[i], gen[i]], dim=-1) for i in range(min(max_rows, len(gen)))]  # [3, H, 3W]
    grid = unit_to_uint8(torch.cat(rows, dim=-2)).permute(1, 2, 0).numpy()
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(folder / "next_frames.png")
    return {"frechet_tokenizer_features": fd, "frechet_tokenizer_features_copy": fd_copy,
            "note": "Fréchet distance of tokenizer-encoder features (channel mean and std): not comparable to published FID",
            "figure": "next_frames.png"}
