"""A run folder records what a fresh run started with; a resume with other settings is refused by name."""

from __future__ import annotations

import pytest

from vavam.train.optim import wsd_factor
from vavam.train.resume import (
    RUN_SETTINGS,
    check_past_rates,
    check_run_settings,
    refuse_fresh_run_over_checkpoints,
    write_checkpoint,
    write_run_settings,
)


def test_same_settings_pass_and_differences_are_named(tmp_path):
    settings = {"module": {"lr": 0.004, "config": {"width": 128, "dims": (4, 8)}}, "seed": 0, "tag": None}
    write_run_settings(tmp_path, settings)
    check_run_settings(tmp_path, settings)  # tuples read back as lists: still the same
    changed = {"module": {"lr": 0.002, "config": {"width": 128, "dims": (4, 8), "extra": True}}, "seed": 0}
    with pytest.raises(ValueError) as info:
        check_run_settings(tmp_path, changed)
    message = str(info.value)
    assert "module.lr: run started with 0.004, this call asks 0.002" in message
    assert "module.config.extra: run started with '(unset)', this call asks True" in message
    assert "tag: run started with None, this call asks '(unset)'" in message
    assert "width" not in message and "seed" not in message


def test_ignored_keys_may_change(tmp_path):
    write_run_settings(tmp_path, {"data": {"tokens": "/a", "world_size": 1}, "lr": 1.0})
    check_run_settings(tmp_path, {"data": {"tokens": "/b", "world_size": 4}, "lr": 1.0},
                       ignore=("data.tokens", "data.world_size"))
    with pytest.raises(ValueError, match="data.tokens"):
        check_run_settings(tmp_path, {"data": {"tokens": "/b", "world_size": 1}, "lr": 1.0})
    with pytest.raises(ValueError, match="data.tokens"):  # keys are whole dotted names, not their last part
        check_run_settings(tmp_path, {"data": {"tokens": "/b", "world_size": 1}, "lr": 1.0}, ignore=("tokens",))


def test_runs_without_the_file_are_not_checked_and_a_broken_file_is_named(tmp_path):
    check_run_settings(tmp_path, {"lr": 1.0})  # a run folder from before the file existed
    (tmp_path / RUN_SETTINGS).write_text("{not json")
    with pytest.raises(ValueError, match=r"run_settings.json: unreadable run settings"):
        check_run_settings(tmp_path, {"lr": 1.0})


def test_past_rates_include_the_step_the_checkpoint_resumes_at():
    # 6 steps with a 3-step drop: steps 0-3 at 1 x lr, step 4 at 0.7 x lr (lr of the restored optimiser)
    then = lambda k: wsd_factor(k, 0, 6, 3)  # noqa: E731
    assert [round(then(k), 6) for k in range(6)] == [1.0, 1.0, 1.0, 1.0, 0.7, 0.4]
    check_past_rates("run", 3, then, lambda k: wsd_factor(k, 0, 20, 3), "")  # steps 0-3 unchanged: a longer run
    with pytest.raises(ValueError, match=r"run: cannot resume at step 4 .*step 4 had 0.7 x lr and would now have 1 x lr"):
        check_past_rates("run", 4, then, lambda k: wsd_factor(k, 0, 20, 3), "")


def test_a_fresh_run_refuses_a_folder_with_checkpoints(tmp_path):
    refuse_fresh_run_over_checkpoints(tmp_path)  # empty folder: fine
    write_checkpoint(tmp_path / "checkpoints" / "step-00000007.ckpt", {"global_step": 7})
    with pytest.raises(ValueError, match=r"earlier run \(newest step-00000007.ckpt\); pass --resume"):
        refuse_fresh_run_over_checkpoints(tmp_path)


def _folder_checkpoint(path, files):
    from vavam.train.resume import write_folder_manifest

    contents = files if isinstance(files, dict) else dict.fromkeys(files, "x" * 8)
    for name, text in contents.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    write_folder_manifest(path)


def test_checkpoint_layouts_are_told_apart(tmp_path):
    from vavam.train.resume import checkpoint_layout

    write_checkpoint(tmp_path / "one.ckpt", {"global_step": 1})
    _folder_checkpoint(tmp_path / "fsdp.ckpt", ["meta.pt", "__0_0.distcp"])
    _folder_checkpoint(tmp_path / "ds.ckpt", ["latest", "global_step1/mp_rank_00_model_states.pt"])
    (tmp_path / "other.ckpt").mkdir()
    assert [checkpoint_layout(tmp_path / f"{n}.ckpt") for n in ("one", "fsdp", "ds", "other")] == [
        "file", "fsdp-sharded", "deepspeed", "unknown"]


@pytest.mark.parametrize("layout, files, ok, refused", [
    ("file", None, ("auto", "ddp", "fsdp"), ("deepspeed",)),
    ("fsdp-sharded", ["meta.pt", "__0_0.distcp"], ("fsdp",), ("auto", "ddp", "deepspeed")),
    ("deepspeed", {"latest": "checkpoint", "checkpoint/mp_rank_00_model_states.pt": "x"}, ("deepspeed",),
     ("auto", "ddp", "fsdp")),
])
def test_a_resume_under_a_strategy_that_cannot_load_the_layout_is_refused(tmp_path, layout, files, ok, refused):
    from vavam.train.resume import check_resume_layout

    ckpt = tmp_path / "step-00000002.ckpt"
    if files is None:
        write_checkpoint(ckpt, {"global_step": 2, "vavam_strategy": "fsdp"})  # a full file FSDP wrote
    else:
        _folder_checkpoint(ckpt, files)
    for strategy in ok:
        check_resume_layout(ckpt, strategy)
    for strategy in refused:
        with pytest.raises(ValueError) as info:
            check_resume_layout(ckpt, strategy)
        message = str(info.value)
        assert str(ckpt) in message and f"strategy {strategy!r} cannot resume" in message
        assert all(repr(s) in message.split("resume it with")[1] for s in ok)
        assert ("vavam checkpoint consolidate" in message) == (files is not None)


@pytest.mark.parametrize("state, writer", [
    ({"vavam_strategy": "fsdp"}, "fsdp"),
    ({"vavam_strategy": "ddp"}, "ddp"),
    ({"vavam_strategy": "single"}, "single"),
    ({"hyper_parameters": {"data": {"strategy": "fsdp"}}}, "fsdp"),  # a video run's file from before the key
    ({"hyper_parameters": {"data": {"strategy": "ddp"}}}, "ddp"),
    ({"hyper_parameters": {"lr": 0.1}}, None),  # an action run's file from before the key: unknown
    ({}, None),
])
def test_fsdp_resumes_only_single_files_fsdp_wrote(tmp_path, state, writer):
    """FSDP loads a single file's optimiser state only in the layout FSDP saves; any other writer's file fails at
    the first optimiser step (a shape mismatch in AdamW's moments), so it is refused before training."""
    from vavam.train.resume import check_resume_layout, checkpoint_writer

    ckpt = tmp_path / "step-00000002.ckpt"
    write_checkpoint(ckpt, {"global_step": 2, **state})
    assert checkpoint_writer(ckpt) == writer
    for strategy in ("auto", "ddp"):  # any writer's file resumes without FSDP
        check_resume_layout(ckpt, strategy)
    if writer == "fsdp":
        check_resume_layout(ckpt, "fsdp")
    else:
        with pytest.raises(ValueError, match=r"step-00000002\.ckpt: a single-file checkpoint written by "
                           + (f"strategy '{writer}'" if writer else "an unrecorded strategy")
                           + r", whose optimiser state FSDP cannot load.*resume it with strategy 'ddp'"):
            check_resume_layout(ckpt, "fsdp")


def test_a_folder_of_no_known_layout_is_refused_under_every_strategy(tmp_path):
    from vavam.train.resume import check_resume_layout

    ckpt = tmp_path / "step-00000002.ckpt"
    _folder_checkpoint(ckpt, ["weights.bin"])
    for strategy in ("auto", "ddp", "fsdp", "deepspeed"):
        with pytest.raises(ValueError, match="neither an FSDP sharded checkpoint .* no strategy can resume it"):
            check_resume_layout(ckpt, strategy)


@pytest.mark.parametrize("tags, latest, problem", [
    (["checkpoint", "global_step2"], None, "with no 'latest' file, which"),
    (["checkpoint"], "global_step9", "with a 'latest' file naming 'global_step9', not one of them, which"),
    (["global_step1", "global_step2"], "global_step2", "with no 'checkpoint' tag, the one Lightning writes"),
])
def test_a_deepspeed_folder_lightning_cannot_resume_is_refused(tmp_path, tags, latest, problem):
    """Lightning's DeepSpeed strategy needs a 'checkpoint' tag folder and resumes the tag 'latest' names;
    short of either it fails after building the engine, so the check refuses the folder up front."""
    from vavam.train.resume import check_resume_layout

    ckpt = tmp_path / "step-00000002.ckpt"
    files = {f"{tag}/mp_rank_00_model_states.pt": "x" for tag in tags}
    _folder_checkpoint(ckpt, files if latest is None else {**files, "latest": latest})
    with pytest.raises(ValueError) as info:
        check_resume_layout(ckpt, "deepspeed")
    message = str(info.value)
    assert str(ckpt) in message and f"tags: {', '.join(tags)})" in message and problem in message
    assert "vavam checkpoint consolidate" in message
    # what Lightning writes: the 'checkpoint' tag and 'latest' naming it (DeepSpeed strips the name too)
    (ckpt / "checkpoint").mkdir(exist_ok=True)
    (ckpt / "checkpoint" / "mp_rank_00_model_states.pt").write_text("x")
    (ckpt / "latest").write_text("checkpoint\n")
    check_resume_layout(ckpt, "deepspeed")
