"""The NeuroNCAP score and its aggregation (``../shared/reference/neuroncap.md`` §1)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable

import numpy as np


def ncap_score(collided: bool, impact_speed: float = 0.0, reference_speed: float = 0.0) -> float:
    """5 without collision; else ``4 * max(0, 1 - v_impact / v_reference)`` (0 when v_reference is 0).

    Raises:
        ValueError: a collision with a NaN, infinite or negative speed (a speed is a norm: such a value would
            silently score 0, or above 4 for a negative impact speed).
    """
    if not collided:
        return 5.0
    for name, v in (("impact_speed", impact_speed), ("reference_speed", reference_speed)):
        if not math.isfinite(v) or v < 0.0:
            raise ValueError(f"ncap_score: {name} must be a finite speed >= 0 (m/s), got {v!r}")
    if reference_speed <= 0.0:
        return 0.0
    return 4.0 * max(0.0, 1.0 - impact_speed / reference_speed)


def failed(result: dict) -> bool:
    """Whether a run record failed (its planner raised or returned a bad plan: ``failure`` holds why)."""
    return result.get("failure") is not None


def collision_of(result: dict) -> float:
    """1.0 / 0.0 for a run that collided / did not; NaN for a failed run (it never drove to the end, so it
    counts in no collision rate; its score is 0)."""
    return math.nan if failed(result) else float(result["collided"])


def nanmean(values: Iterable[float]) -> float:
    """Mean of the non-NaN values; NaN when there are none (without numpy's empty-slice warning)."""
    kept = [float(v) for v in values if not math.isnan(float(v))]
    return float(np.mean(kept)) if kept else math.nan


def aggregate(results: Iterable[dict], per_run: Callable[[dict], dict[str, float]] | None = None) -> dict:
    """Mean over runs -> over layouts -> over scenario types (each type counts equally).

    Each result needs keys ``type``, ``layout``, ``score`` and ``collided`` (and may have ``failure``).
    Returns ``{"score", "collision_rate", "failures", "types": {type: {"score", "collision_rate", "runs",
    "failures"}}}``; the overall collision rate is averaged the same way. A failed run scores 0 and is
    left out of the collision rates (NaN where every run failed). ``per_run`` (a run -> more metrics, NaN
    where the run has none) adds those metrics, per type and overall, averaged as the collision rate.
    """
    from vavam.world.scenarios import SCENARIO_TYPES

    groups: dict[str, dict[str, list[tuple[dict, dict]]]] = defaultdict(lambda: defaultdict(list))
    metrics: list[str] = []  # the per_run metrics' names
    for r in results:
        extra = per_run(r) if per_run is not None else {}
        metrics = metrics or list(extra)
        groups[r["type"]][r["layout"]].append((r, extra))
    types = {}  # in the scenario types' order (stationary, frontal, side), others after them by name
    for t, layouts in sorted(groups.items(), key=lambda kv: (SCENARIO_TYPES.index(kv[0]) if kv[0] in SCENARIO_TYPES
                                                             else len(SCENARIO_TYPES), kv[0])):
        runs_of = [[r for r, _ in runs] for runs in layouts.values()]  # per layout
        types[t] = {
            "score": float(np.mean([np.mean([r["score"] for r in runs]) for runs in runs_of])),
            "collision_rate": nanmean(nanmean(collision_of(r) for r in runs) for runs in runs_of),
            **{m: nanmean(nanmean(e[m] for _, e in runs) for runs in layouts.values()) for m in metrics},
            "runs": sum(len(runs) for runs in runs_of),
            "failures": int(sum(failed(r) for runs in runs_of for r in runs)),
        }
    if not types:
        return {"score": float("nan"), "collision_rate": float("nan"), "failures": 0, "types": {}}
    return {
        "score": float(np.mean([v["score"] for v in types.values()])),
        "collision_rate": nanmean(v["collision_rate"] for v in types.values()),
        **{m: nanmean(v[m] for v in types.values()) for m in metrics},
        "failures": int(sum(v["failures"] for v in types.values())),
        "types": types,
    }
