"""Recipes fill what the user left out; options typed on the command line win even at their default values."""

from __future__ import annotations

from vavam.train.action import train_action
from vavam.train.recipes import ACTION_RECIPES, VIDEO_RECIPES, apply_recipe, command_line, typed_options
from vavam.train.video import train_video


def _defaults(func) -> dict:
    import inspect

    return {k: p.default for k, p in inspect.signature(func).parameters.items()}


def test_typed_options_are_parsed():
    assert typed_options(["--lr", "0.1", "--global-batch=8", "--no-compile", "pos", "--", "--seed"]) == {
        "lr", "global_batch", "no_compile", "compile"}


def test_typed_values_equal_to_the_defaults_win_over_the_recipe():
    given = _defaults(train_video) | {"recipe": "pretrain"}
    args, _ = apply_recipe(train_video, VIDEO_RECIPES, "pretrain", given)
    assert (args["stride"], args["preset"], args["seed"]) == (5, "vavim_s", 84924)  # nothing typed: the recipe's
    argv = ["--recipe", "pretrain", "--stride", str(given["stride"]), "--preset", given["preset"],
            "--seed", str(given["seed"]), "--precision", given["precision"]]
    with command_line(argv):
        args, _ = apply_recipe(train_video, VIDEO_RECIPES, "pretrain", given)
    assert (args["stride"], args["preset"], args["seed"], args["precision"]) == (
        given["stride"], given["preset"], given["seed"], given["precision"])
    assert args["lr"] == VIDEO_RECIPES["pretrain"]["lr"]  # not typed: still the recipe's


def test_typed_batch_size_is_per_device_under_a_recipe():
    from vavam.train.distributed import recipe_global_batch

    given = _defaults(train_action) | {"recipe": "release"}
    args, _ = apply_recipe(train_action, ACTION_RECIPES, "release", given)
    recipe_global_batch(train_action, args, given)
    assert (args["batch_size"], args["global_batch"]) == (384, 384)
    with command_line(["--recipe", "release", "--batch-size", str(given["batch_size"])]):
        args, _ = apply_recipe(train_action, ACTION_RECIPES, "release", given)
        recipe_global_batch(train_action, args, given)
    assert args["batch_size"] == given["batch_size"] and args.get("global_batch") is None


def test_the_command_line_records_what_was_typed(monkeypatch):
    """``vavam train video --recipe pretrain --stride 1``: the CLI wraps the command in command_line, so a
    typed value (here the function's default) is known to be typed and survives the recipe."""
    from vavam import cli
    from vavam.train.recipes import typed

    captured = {}

    def command(stride: int = 1, lr: float = 0.1) -> int:
        captured["typed"] = typed()
        return 0

    monkeypatch.setattr(cli, "_resolve", lambda target: command)
    assert cli.main(["train", "video", "--stride", "1"]) == 0
    assert captured["typed"] == {"stride"} and typed() == frozenset()  # only while the command runs


def test_pretrain_recipe_keeps_its_quarter_and_before_drop_checkpoints(tmp_path):
    """The pretraining recipe checkpoints every quarter epoch for the scaling grid's cool-downs (25 / 50 / 75 /
    90 %): those survive the rolling ``keep``, which only prunes the others."""
    import numpy as np

    from vavam.data.tokens import TokenStoreWriter
    from vavam.train.resume import list_checkpoints

    writer = TokenStoreWriter(tmp_path / "tok", (2, 3), codebook_size=16, tokenizer={"name": "rand"}, fps=2.0,
                              resume=False)
    rng = np.random.default_rng(0)
    writer.write_scene("s0", rng.integers(0, 16, size=(12, 2, 3), dtype=np.uint16), np.arange(12) * 500_000)
    argv = ["--recipe", "pretrain", "--preset", "vavim_tiny", "--stride", "1", "--precision", "32",
            "--batch-size", "2", "--steps", "20", "--keep", "1", "--num-frames", "2"]
    with command_line(argv):
        train_video(tmp_path / "run", tmp_path / "tok", recipe="pretrain", preset="vavim_tiny", stride=1,
                    precision="32", batch_size=2, steps=20, keep=1, num_frames=2, progress=False)
    # every 5 steps, 20 steps: 5, 10, 15 are quarters and 18 the 90 % one; of the others only the newest stays
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == [
        "step-00000005.ckpt", "step-00000010.ckpt", "step-00000015.ckpt", "step-00000018.ckpt", "step-00000020.ckpt"]


def test_snapshots_fall_on_the_periodic_checkpoints():
    """Quarter snapshots are the quarter-epoch checkpoints (k x every), also when the steps are not a multiple of 4
    (10 steps: every 2 -> 2, 4, 6; int(k / 4 x 10) gave 2, 5, 7: extra full checkpoints kept for good); the 90 %
    one is int(0.9 x steps), as the reference's 139,763 of 155,293."""
    from vavam.train.recipes import PRETRAIN_SNAPSHOTS
    from vavam.train.video import _snapshot_steps

    assert _snapshot_steps(PRETRAIN_SNAPSHOTS, 10, 0.25, 2) == [2, 4, 6, 9]
    assert _snapshot_steps(PRETRAIN_SNAPSHOTS, 155_293, 0.25, 38_823) == [38_823, 77_646, 116_469, 139_763]
    assert _snapshot_steps(PRETRAIN_SNAPSHOTS, 10, None, 3) == [2, 5, 7, 9]  # --ckpt-every typed: the shares


def test_release_action_recipe_keeps_its_before_drop_checkpoint(tmp_path):
    """The VaVAM release recipe keeps the 90 % checkpoint for good (the reference's 6,525 of 7,251 steps), as the
    pretraining keeps its snapshots; before, ``train_action`` dropped the recipe's extras and kept only the
    rolling checkpoints."""
    from test_action_training import _frozen_video, _write_scenes

    from vavam.train.recipes import ACTION_SNAPSHOTS
    from vavam.train.resume import list_checkpoints
    from vavam.train.video import _snapshot_steps

    assert _snapshot_steps(ACTION_SNAPSHOTS, 7_251, None, 3_625) == [6_525]
    _write_scenes(tmp_path, num_scenes=2, num_frames=12)
    vim = _frozen_video(tmp_path)
    argv = ["--recipe", "release", "--preset", "vavam_tiny", "--precision", "32", "--batch-size", "2",
            "--steps", "10", "--ckpt-every", "2", "--keep", "1"]
    with command_line(argv):
        train_action(tmp_path / "run", vim, tmp_path / "records.npz", tmp_path / "tok", recipe="release",
                     preset="vavam_tiny", precision="32", batch_size=2, steps=10, ckpt_every=2, keep=1,
                     plot_every=0, progress=False)
    # every 2 steps, keep 1: step 9 (90 % of 10) stays beside the newest
    assert [p.name for p in list_checkpoints(tmp_path / "run")] == ["step-00000009.ckpt", "step-00000010.ckpt"]
