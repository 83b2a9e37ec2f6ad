"""Resumable stages: finished stages are skipped, interrupted ones restart from a clean folder."""

from __future__ import annotations

import shutil

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



def test_a_stage_that_runs_again_reruns_the_stages_made_from_its_output(tmp_path):
    """Redoing an earlier stage (its folder deleted by hand, say a retrained tokenizer) must not leave later
    stages skipped on top of outputs they were not made from, even if the redo is interrupted."""
    version = {"first": 0}
    calls = []

    def first(folder):
        version["first"] += 1
        calls.append("first")
        (folder / "out.txt").write_text(str(version["first"]))
        return {"version": version["first"]}

    def from_first(name, crash=False):
        def fn(folder):
            calls.append(name)
            if crash:
                raise KeyboardInterrupt
            return {"made from": int((tmp_path / "first" / "out.txt").read_text())}
        return fn

    stages = [Stage("first", first), Stage("second", from_first("second")), Stage("third", from_first("third"))]
    log = []
    run_stages(tmp_path, stages, log=log.append)
    shutil.rmtree(tmp_path / "first")  # redo the first stage
    crashing = [stages[0], Stage("second", from_first("second", crash=True)), stages[2]]
    with pytest.raises(KeyboardInterrupt):
        run_stages(tmp_path, crashing, log=log.append)
    assert "[1/3] first: runs again, so the later stages made from its earlier output will too: second, third" in log
    # interrupted in the second stage: the third, made from the old first output, is no longer marked done
    assert stage_done(tmp_path, "first") and not stage_done(tmp_path, "second") and not stage_done(tmp_path, "third")
    calls.clear()
    out = run_stages(tmp_path, stages, log=log.append)
    assert calls == ["second", "third"]
    assert "[3/3] third: clearing its outdated earlier output" in log
    assert out == {"first": {"version": 2}, "second": {"made from": 2}, "third": {"made from": 2}}
    calls.clear()
    run_stages(tmp_path, stages, log=log.append)  # everything done: nothing runs
    assert calls == []


def test_files_a_stage_writes_outside_its_folder_go_when_it_is_to_run_again(tmp_path):
    """The quickstart's report stage writes report.md / report.html in the run folder: when an earlier stage runs
    again and is interrupted, the old report (numbers of the old models) used to stay in view; it is removed as
    soon as the report stage is bound to run again, and a stage that is skipped keeps its outside files."""

    def first(folder):
        (folder / "out.txt").write_text("x")
        return {}

    def page(folder):
        (tmp_path / "page.html").write_text("numbers")
        return {}

    def crash(folder):
        raise KeyboardInterrupt

    stages = [Stage("first", first), Stage("page", page, outputs=("page.html",))]
    run_stages(tmp_path, stages, log=lambda s: None)
    run_stages(tmp_path, stages, log=lambda s: None)  # all done: the page stays
    assert (tmp_path / "page.html").read_text() == "numbers"
    shutil.rmtree(tmp_path / "first")  # redo the first stage; it is interrupted
    with pytest.raises(KeyboardInterrupt):
        run_stages(tmp_path, [Stage("first", crash), stages[1]], log=lambda s: None)
    assert not (tmp_path / "page.html").exists()
    run_stages(tmp_path, stages, log=lambda s: None)
    assert (tmp_path / "page.html").read_text() == "numbers"
