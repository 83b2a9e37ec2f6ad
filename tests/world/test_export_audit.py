"""Audit regressions of the world's data export (episodes and their labels)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np


def test_generate_episodes_never_draws_a_benchmark_layout(monkeypatch):
    """generate_episodes drew hazard layouts from 0 .. 9999, so about 1 % of its hazard episodes were one of
    the closed-loop benchmark layouts 0 .. 99 (``vavam world scenarios`` / evaluate_planner): the model
    trained on the towns and scripted hazards it is then scored on. Layouts must start at 100."""
    import vavam.world.episode as episode
    import vavam.world.render as render
    import vavam.world.scenarios as scenarios
    from vavam.world.export import HAZARD_LAYOUT_BASE

    class FakeContext:
        def release(self) -> None:
            pass

    monkeypatch.setattr(render, "create_context", FakeContext)
    fake_spec = lambda kind, layout, run: SimpleNamespace(layout=layout, duration=8.0)  # noqa: E731
    monkeypatch.setattr(scenarios, "make_scenario", fake_spec)
    monkeypatch.setattr(episode, "record_hazard_episode", lambda spec, *args, **kwargs: spec)
    specs = list(episode.generate_episodes(600, seed=0, duration_s=2.0, hazard_share=1.0))
    layouts = np.array([spec.layout for spec in specs])
    assert len(layouts) == 600
    assert layouts.min() >= HAZARD_LAYOUT_BASE == 100
    assert layouts.max() < 10_000 and len(np.unique(layouts)) > 500  # still spread over the rest of the range
