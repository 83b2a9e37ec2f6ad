"""Open-loop planning metrics: minADE over K samples, best-sample ADE / FDE, L2 at 1 / 2 / 3 s.

All trajectories are ``[..., 6, 2]`` metres in the ego frame of the current frame (x forward,
y left), waypoint ``i`` at ``0.5 * (i + 1)`` s. The "best" sample of a window is the one with the
smallest ADE against the ground truth (as for minADE, so it is chosen with hindsight); FDE and L2@t are read
off that sample. L2@t is the point error at time t (UniAD's convention), not the average of the errors up
to t that ST-P3 and VAD report.

:class:`OpenLoopAccumulator` sums per command and over all windows and reduces across
``torch.distributed`` ranks (sums and counts, so every window weighs the same whatever the rank).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

# constant_velocity_trajectory lives in vavam.types (VaVAM's speed prior uses it too) and stays importable from here
from vavam.types import NUM_WAYPOINTS, WAYPOINT_DT, Command, constant_velocity_trajectory  # noqa: F401

L2_TIMES = (1.0, 2.0, 3.0)


def check_trajectories(pred: torch.Tensor, gt: torch.Tensor, windows: Sequence[str] | None = None,
                       what: str = "pred") -> None:
    """Validate sampled trajectories ``pred [N, K, 6, 2]`` (K >= 1, finite) against ``gt [N, 6, 2]`` (finite).

    ``windows`` (names of the N windows) and ``what`` (e.g. the planner) make the errors say which window
    and which sample is at fault.
    """
    if pred.ndim != 4 or pred.shape[-2:] != (NUM_WAYPOINTS, 2):
        raise ValueError(f"{what} must be [N,K,{NUM_WAYPOINTS},2], got {list(pred.shape)}")
    if gt.shape != (pred.shape[0], NUM_WAYPOINTS, 2):
        raise ValueError(f"gt must be [N,{NUM_WAYPOINTS},2] with N={pred.shape[0]}, got {list(gt.shape)}")
    if pred.shape[1] == 0:
        raise ValueError(f"{what}: no sampled trajectory per window (K = 0, shape {list(pred.shape)}); "
                         "need at least one sample")
    if windows is not None and len(windows) != pred.shape[0]:
        raise ValueError(f"windows: {len(windows)} names for {pred.shape[0]} windows")

    def name(i: int) -> str:
        return f"window {i}" + (f" ({windows[i]})" if windows is not None else "")

    bad = ~torch.isfinite(pred).all(dim=-1).all(dim=-1)  # [N, K]
    if bool(bad.any()):
        i, k = (int(v) for v in bad.nonzero()[0])
        raise ValueError(f"{what}: {name(i)}, sample {k} holds NaN or infinite coordinates "
                         f"({int(bad.sum())} non-finite plan(s) in this batch of {pred.shape[0]} windows)")
    bad_gt = ~torch.isfinite(gt).all(dim=-1).all(dim=-1)  # [N]
    if bool(bad_gt.any()):
        raise ValueError(f"ground truth: {name(int(bad_gt.nonzero()[0]))} holds NaN or infinite coordinates")


def window_commands(commands: torch.Tensor, n: int | None = None, windows: Sequence[str] | None = None,
                   what: str = "commands") -> torch.Tensor:
    """``commands`` as a long ``[n]`` CPU tensor (any length when ``n`` is None) of 0 (right), 1 (left) or
    2 (straight); a ValueError naming ``what`` (and the window) otherwise. The windows' -1 ("no command": the
    future leaves the scene) is refused: it would count in no command's group (or, as an index, pick the last one)."""
    commands = torch.as_tensor(commands).cpu()
    if commands.ndim != 1 or (n is not None and len(commands) != n):
        raise ValueError(f"{what} must be [N]{'' if n is None else f' with N={n}'}, got {list(commands.shape)}")
    bad = ~torch.isin(commands, torch.tensor([int(c) for c in Command], dtype=commands.dtype))
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        where = f"window {i}" + (f" ({windows[i]})" if windows is not None and i < len(windows) else "")
        raise ValueError(f"{what}: {where} has command {commands[i].item()!r}; expected 0 (right), 1 (left) or "
                         f"2 (straight) ({int(bad.sum())} bad of {len(commands)})")
    return commands.long()


def trajectory_errors(pred: torch.Tensor, gt: torch.Tensor, windows: Sequence[str] | None = None,
                      what: str = "pred", checked: bool = False) -> dict[str, torch.Tensor]:
    """Per-window errors of K sampled trajectories against the ground truth.

    Args:
        pred: ``[N, K, 6, 2]`` sampled trajectories (metres), K >= 1, all finite.
        gt: ``[N, 6, 2]`` ground truth (metres), finite.
        windows: optional names of the N windows (e.g. ``"scene-0103 frame 17"``) for error messages.
        what: how error messages name ``pred`` (e.g. the planner).
        checked: the caller has already run :func:`check_trajectories` on ``pred`` and ``gt`` (with the same
            ``windows`` and ``what``): not run again.

    Returns:
        dict of ``[N]`` float tensors: ``min_ade``, ``fde`` (of the best sample), ``l2@1s``,
        ``l2@2s``, ``l2@3s`` (distance at that time, best sample), and ``best`` (long index).

    Raises:
        ValueError: wrong shapes, K = 0, or a NaN / infinite coordinate (named by window and sample: a
            non-finite plan has no distance, and leaving it out would bias minADE towards the other samples).
    """
    if not checked:
        check_trajectories(pred, gt, windows, what)
    dist = torch.linalg.vector_norm(pred.double() - gt.double()[:, None], dim=-1)  # [N, K, 6]
    ade = dist.mean(-1)  # [N, K]
    min_ade, best = ade.min(dim=1)  # [N]
    best_dist = dist[torch.arange(dist.shape[0]), best]  # [N, 6]
    out = {"min_ade": min_ade, "fde": best_dist[:, -1], "best": best}
    for t in L2_TIMES:
        out[f"l2@{t:g}s"] = best_dist[:, round(t / WAYPOINT_DT) - 1]
    return out


def speed_from_previous_frame(prev_positions: torch.Tensor) -> torch.Tensor:
    """Ego speed estimate from the previous context frame's ground-truth trajectory.

    ``prev_positions [N, 6, 2]``: the trajectory of frame t-1 in its own ego frame; its first
    waypoint is where the ego is at frame t (0.5 s later), so speed = |p0| / 0.5 s. -> ``[N]``.
    """
    return torch.linalg.vector_norm(prev_positions[:, 0], dim=-1) / WAYPOINT_DT


class MeanTrajectoryBaseline:
    """Predicts the mean training trajectory of the window's command (the overall mean if unseen)."""

    def __init__(self) -> None:
        self.means: torch.Tensor | None = None  # [3, 6, 2]

    def fit(self, positions: torch.Tensor, commands: torch.Tensor) -> MeanTrajectoryBaseline:
        """``positions [N, 6, 2]``, ``commands [N]`` (0 right, 1 left, 2 straight)."""
        if len(positions) == 0:
            raise ValueError("MeanTrajectoryBaseline.fit: no training trajectories")
        commands = window_commands(commands, len(positions), what="MeanTrajectoryBaseline.fit: commands")
        overall = positions.double().mean(0)
        means = []
        for c in Command:
            sel = positions[commands == int(c)]
            means.append(sel.double().mean(0) if len(sel) else overall)
        self.means = torch.stack(means).float()
        return self

    def predict(self, commands: torch.Tensor) -> torch.Tensor:
        """``commands [N]`` -> ``[N, 6, 2]``."""
        if self.means is None:
            raise RuntimeError("MeanTrajectoryBaseline: call fit() first")
        return self.means[window_commands(commands, what="MeanTrajectoryBaseline.predict: commands")]


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of a CPU tensor over the ranks of the default process group, returned on the CPU.

    An NCCL group reduces only CUDA tensors: the sum then goes through this rank's current CUDA device.
    """
    device = torch.device("cpu")
    if torch.distributed.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    summed = values.to(device)
    torch.distributed.all_reduce(summed)
    return summed.cpu()


@dataclass
class OpenLoopAccumulator:
    """Running sums of the open-loop metrics, overall and per command; DDP-safe :meth:`reduce`."""

    metrics: tuple[str, ...] = ("min_ade", "fde", "l2@1s", "l2@2s", "l2@3s")
    sums: torch.Tensor = field(init=False)  # [4 groups (right, left, straight, all), M]
    counts: torch.Tensor = field(init=False)  # [4]
    collision_sums: torch.Tensor = field(init=False)  # [4] sum over windows of the colliding share of K plans
    collision_counts: torch.Tensor = field(init=False)  # [4] windows with known boxes

    def __post_init__(self) -> None:
        self.sums = torch.zeros(4, len(self.metrics), dtype=torch.float64)
        self.counts = torch.zeros(4, dtype=torch.float64)
        self.collision_sums = torch.zeros(4, dtype=torch.float64)
        self.collision_counts = torch.zeros(4, dtype=torch.float64)

    def update(
        self, pred: torch.Tensor, gt: torch.Tensor, commands: torch.Tensor, collisions: torch.Tensor | None = None,
        windows: Sequence[str] | None = None, what: str = "pred", checked: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Add a batch: ``pred [N,K,6,2]``, ``gt [N,6,2]``, ``commands [N]``, optional ``collisions [N,K]``
        (1 / 0 per plan, NaN for a window without boxes). ``windows`` / ``what`` name the windows and the
        planner in errors; ``checked``: the caller has already run :func:`check_trajectories` on the batch (see
        :func:`trajectory_errors`). Returns its per-window errors."""
        errors = trajectory_errors(pred, gt, windows, what, checked=checked)
        values = torch.stack([errors[m] for m in self.metrics], dim=1).cpu()  # [N, M]
        commands = window_commands(commands, pred.shape[0], windows)  # before any sum changes
        if collisions is not None:
            collisions = torch.as_tensor(collisions, dtype=torch.float64).cpu()
            if collisions.shape != pred.shape[:2]:
                raise ValueError(f"collisions must be [N, K] = {list(pred.shape[:2])}, got {list(collisions.shape)}")
            # per window: 1 / 0 per plan, or NaN for all of them (no boxes); a NaN beside known flags would drop
            # the whole window from the rate, a value other than 0 / 1 would pull it off the share of plans
            ok = ((collisions == 0) | (collisions == 1)).all(1) | collisions.isnan().all(1)  # [N]
            if not bool(ok.all()):
                i = int((~ok).nonzero()[0])
                where = f"window {i}" + (f" ({windows[i]})" if windows is not None else "")
                raise ValueError(f"collisions: {where} holds {collisions[i].tolist()}; expected 1 / 0 per plan, "
                                 "or NaN for every plan of a window without boxes")
            per_window = collisions.mean(1)  # [N], NaN without boxes
            known = ~per_window.isnan()
        for c in range(4):
            sel = commands == c if c < 3 else torch.ones_like(commands, dtype=torch.bool)
            self.sums[c] += values[sel].sum(0)
            self.counts[c] += sel.sum()
            if collisions is not None:
                self.collision_sums[c] += per_window[sel & known].sum()
                self.collision_counts[c] += (sel & known).sum()
        return errors

    def reduce(self) -> None:
        """Sum the running totals over all ranks (no-op without an initialised process group)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            parts = [self.sums, self.counts, self.collision_sums, self.collision_counts]
            packed = all_reduce_sum(torch.cat([p.flatten() for p in parts]))
            self.sums, self.counts, self.collision_sums, self.collision_counts = (  # their own shapes: sums [4, M]
                t.view_as(p) for t, p in zip(packed.split([p.numel() for p in parts]), parts))

    def compute(self) -> dict[str, dict[str, float]]:
        """``{"all" | "right" | "left" | "straight": {metric: mean, "count": n, "collision_rate": r}}``.

        Means are NaN where a group is empty; ``collision_rate`` (share of planned trajectories that
        collide, over windows with known boxes) is NaN when no window had boxes.
        """
        names = ["right", "left", "straight", "all"]
        out = {}
        for i, name in enumerate(names):
            n = float(self.counts[i])
            row = {m: (float(self.sums[i, j]) / n if n else float("nan")) for j, m in enumerate(self.metrics)}
            nc = float(self.collision_counts[i])
            row["collision_rate"] = float(self.collision_sums[i]) / nc if nc else float("nan")
            row["count"] = int(n)
            out[name] = row
        return out
