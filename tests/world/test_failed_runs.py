"""Failed closed-loop runs (the planner raised or returned a bad plan) score 0 and count in no collision
rate or route metric; the tables show how many failed."""

from __future__ import annotations

import math

import pytest

from vavam.eval.closedloop import closedloop_table, summarize
from vavam.world.ncap import aggregate


def _record(layout: int, run: int, collided: bool, score: float, failure: str | None = None) -> dict:
    return {"type": "stationary", "layout": layout, "run": run, "collided": collided, "score": score,
            "failure": failure, "trajectory": []}


def test_aggregate_leaves_failed_runs_out_of_the_collision_rate():
    runs = [_record(0, 0, True, 2.0), _record(0, 1, False, 0.0, failure="HTTPStatusError: 401"),
            _record(1, 0, False, 5.0), _record(1, 1, False, 5.0)]
    agg = aggregate(runs)
    # layout 0: one completed run, collided -> rate 1; layout 1: 0 -> mean 0.5 (was 0.25 counting the failure)
    assert agg["collision_rate"] == pytest.approx(0.5)
    assert agg["score"] == pytest.approx(((2.0 + 0.0) / 2 + 5.0) / 2)  # the failed run scores 0
    assert agg["failures"] == 1 and agg["types"]["stationary"]["failures"] == 1


def test_every_run_failed_gives_no_collision_rate():
    runs = [_record(0, r, False, 0.0, failure="RuntimeError: boom") for r in range(3)]
    agg = aggregate(runs)
    assert math.isnan(agg["collision_rate"]) and agg["score"] == 0.0 and agg["failures"] == 3
    summary = summarize(runs)
    assert math.isnan(summary["collision_rate"]) and summary["failures"] == 3
    table = closedloop_table({"VaVAM": summary})
    assert table.splitlines()[0].endswith("| failed runs |")
    overall = table.splitlines()[-1]
    assert "| – |" in overall and overall.endswith("| 3 |")


def test_summarize_matches_aggregate_on_score_and_collisions():
    runs = [_record(0, 0, True, 2.0), _record(0, 1, False, 0.0, failure="ValueError: bad plan"),
            _record(1, 0, False, 5.0)]
    summary, agg = summarize(runs), aggregate(runs)
    assert summary["score"] == pytest.approx(agg["score"])
    assert summary["collision_rate"] == pytest.approx(agg["collision_rate"])
    assert summary["types"]["stationary"]["failures"] == 1


@pytest.mark.parametrize("failures", [1, 6])
def test_eval_closedloop_reports_failures(monkeypatch, capsys, failures):
    """The command names the first failure; when every VaVAM run failed it stops (exit status 1)."""
    import vavam.eval.closedloop as cl
    import vavam.serve.server as server

    monkeypatch.setattr(server, "load_agent", lambda *a, **k: object())
    result = {"table": "| table |", "planners": {cl.VAVAM: {"failures": failures, "num_runs": 6,
                                                             "first_failure": "HTTPStatusError: 500"}}}
    monkeypatch.setattr(cl, "evaluate_vavam", lambda *a, **k: result)
    if failures == 6:
        with pytest.raises(SystemExit, match="VaVAM: 6 of 6 runs failed.*first: HTTPStatusError: 500"):
            cl.eval_closedloop("ckpt", progress=False)
    else:
        assert cl.eval_closedloop("ckpt", progress=False) is result
        assert "VaVAM: 1 of 6 runs failed" in capsys.readouterr().err


def test_world_score_table_has_a_failed_column_only_when_runs_failed():
    from vavam.world.evaluate import score_table

    ok = aggregate([_record(0, 0, True, 2.0)])
    bad = aggregate([_record(0, 0, False, 0.0, failure="RuntimeError: boom"), _record(0, 1, False, 5.0)])
    assert "failed" not in score_table({"a": ok}).splitlines()[0]
    table = score_table({"a": ok, "b": bad}).splitlines()
    assert table[0].endswith("| b failed |") and "a failed" not in table[0]
    assert table[2].endswith("| 1 |") and table[-1].endswith("| 1 |")


def test_closedloop_json_is_strict_json_when_every_run_failed(tmp_path, monkeypatch):
    """Every run of the VaVAM planner failed: its collision rate is unknown. closedloop.json held a bare NaN
    there (not JSON: strict readers such as jq or a browser refuse the file); it now holds null."""
    import json
    from types import SimpleNamespace

    import vavam.world.evaluate as world_evaluate
    from vavam.eval.closedloop import VAVAM, evaluate_vavam

    def fake_evaluate_planner(planner, name, out, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        (out / "runs.json").write_text(json.dumps([_record(0, r, False, 0.0, failure="RuntimeError: boom")
                                                   for r in range(2)]))
        return {"num_runs": 2, "failures": 2, "seconds": 0.1, "videos": []}

    monkeypatch.setattr(world_evaluate, "evaluate_planner", fake_evaluate_planner)
    agent = SimpleNamespace(options=SimpleNamespace(image_size=(64, 128)))
    evaluate_vavam(agent, runs=2, layouts=1, kinds=("stationary",), out=tmp_path, baselines=False, progress=False)

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    saved = json.loads((tmp_path / "closedloop.json").read_text(), parse_constant=refuse)
    assert saved["planners"][VAVAM]["collision_rate"] is None and saved["planners"][VAVAM]["failures"] == 2


def test_aggregate_averages_per_run_metrics_like_the_collision_rate():
    """``per_run`` metrics (the closed-loop route metrics) are averaged runs -> layouts -> types, a NaN (a failed
    run's) left out: hand-computed."""
    runs = [{"type": "side", "layout": 0, "score": 5.0, "collided": False, "d": 1.0},
            {"type": "side", "layout": 0, "score": 0.0, "collided": True, "d": math.nan, "failure": "raised"},
            {"type": "side", "layout": 1, "score": 5.0, "collided": False, "d": 3.0},
            {"type": "side", "layout": 1, "score": 5.0, "collided": False, "d": 5.0},
            {"type": "frontal", "layout": 0, "score": 0.0, "collided": True, "d": 10.0}]
    res = aggregate(runs, lambda r: {"deviation": r["d"]})
    assert res["types"]["side"]["deviation"] == (1.0 + (3.0 + 5.0) / 2) / 2  # layout 0: the NaN left out
    assert res["types"]["frontal"]["deviation"] == 10.0
    assert res["deviation"] == (2.5 + 10.0) / 2 and res["score"] == (3.75 + 0.0) / 2
    assert "deviation" not in aggregate(runs)["types"]["side"]


def test_aggregate_lists_types_in_scenario_order():
    """Types come in the scenario types' order (as the closed-loop tables list them), so the overall means are
    summed in one order everywhere; unknown types follow by name."""
    runs = [{"type": t, "layout": 0, "score": 5.0, "collided": False} for t in ("zz", "side", "aa", "stationary")]
    assert list(aggregate(runs)["types"]) == ["stationary", "side", "aa", "zz"]
