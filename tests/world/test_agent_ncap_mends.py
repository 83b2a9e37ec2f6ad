"""Mends found auditing the agent, the NCAP score and the closed-loop evaluation around them."""

from __future__ import annotations

import numpy as np
import pytest

from vavam.world.evaluate import evaluate_planner


def test_repeated_scenario_type_is_refused_before_any_run() -> None:
    """``kinds=["side", "side"]`` drove every side run twice and counted both in the type's mean: the report said
    ``runs_per_type`` 1 but ``types.side.runs`` 2 (and ``num_runs`` 2). It is now refused, naming the type, before
    the planner is called."""
    calls: list[float] = []

    def planner(obs: dict) -> np.ndarray:
        calls.append(obs["time"])
        raise RuntimeError("must not be called")

    with pytest.raises(ValueError, match=r"kinds: scenario types \['side'\] are given more than once"):
        evaluate_planner(planner, runs=1, layouts=1, kinds=["side", "stationary", "side"], progress=False)
    assert calls == []


def test_runs_json_says_which_plans_the_reference_made(tmp_path) -> None:
    """runs.json listed every tracked plan as the planner's, the priming steps' (the reference driver's) included;
    each plan now says who made it, and the planner's are exactly the ones it returned."""
    import json

    from vavam.world.planners import ConstantVelocityPlanner

    made: list[float] = []
    cv = ConstantVelocityPlanner()

    def planner(obs: dict) -> np.ndarray:
        made.append(round(float(obs["time"]), 6))
        return cv(obs)

    evaluate_planner(planner, runs=1, layouts=1, kinds=["stationary"], out=tmp_path, progress=False)
    run = json.loads((tmp_path / "runs.json").read_text())[0]
    by = [p["by"] for p in run["plans"]]
    assert by[:2] == ["reference", "reference"] and set(by[2:]) == {"planner"}  # 2 priming steps
    assert [round(p["t"], 6) for p in run["plans"] if p["by"] == "planner"] == made
