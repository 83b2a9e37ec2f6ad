"""The NeuroNCAP score and its aggregation (``../shared/reference/neuroncap.md`` §1)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np


def ncap_score(collided: bool, impact_speed: float = 0.0, reference_speed: float = 0.0) -> float:
    """5 without collision; else ``4 * max(0, 1 - v_impact / v_reference)`` (0 when v_reference <= 0)."""
    if not collided:
        return 5.0
    if reference_speed <= 0.0:
        return 0.0
    return 4.0 * max(0.0, 1.0 - impact_speed / reference_speed)


def aggregate(results: Iterable[dict]) -> dict:
    """Mean over runs -> over layouts -> over scenario types (each type counts equally).

    Each result needs keys ``type``, ``layout``, ``score`` and ``collided``. Returns
    ``{"score": float, "collision_rate": float, "types": {type: {"score", "collision_rate", "runs"}}}``;
    the overall collision rate is averaged the same way.
    """
    groups: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in results:
        groups[r["type"]][r["layout"]].append(r)
    types = {}
    for t, layouts in sorted(groups.items()):
        score = np.mean([np.mean([r["score"] for r in runs]) for runs in layouts.values()])
        rate = np.mean([np.mean([float(r["collided"]) for r in runs]) for runs in layouts.values()])
        types[t] = {
            "score": float(score),
            "collision_rate": float(rate),
            "runs": int(sum(len(v) for v in layouts.values())),
        }
    if not types:
        return {"score": float("nan"), "collision_rate": float("nan"), "types": {}}
    return {
        "score": float(np.mean([v["score"] for v in types.values()])),
        "collision_rate": float(np.mean([v["collision_rate"] for v in types.values()])),
        "types": types,
    }
