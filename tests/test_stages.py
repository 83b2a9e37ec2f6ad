"""Resumable stages: finished stages are skipped, interrupted ones restart from a clean folder."""

from __future__ import annotations

import pytest

from vavam.stages import Stage, run_stages, stage_done


def test_stages_skip_finished_and_restart_interrupted(tmp_path):
    calls = []

    def first(folder):
        calls.append("first")
        (folder / "out.txt").write_text("a")
        return {"value": 1}

    def crashing(folder):
        calls.append("second")
        (folder / "partial.txt").write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_stages(tmp_path, [Stage("first", first), Stage("second", crashing)], log=lambda s: None)
    assert stage_done(tmp_path, "first") and not stage_done(tmp_path, "second")

    def second(folder):
        calls.append("second-again")
        assert not (folder / "partial.txt").exists()  # restarted cleanly
        return {"value": 2}

    out = run_stages(tmp_path, [Stage("first", first), Stage("second", second)], log=lambda s: None)
    assert out == {"first": {"value": 1}, "second": {"value": 2}}
    assert calls == ["first", "second", "second-again"]
    with pytest.raises(ValueError, match="unique"):
        run_stages(tmp_path, [Stage("a", first), Stage("a", first)])
