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
