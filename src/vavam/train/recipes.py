"""Training recipes: the released models' hyper-parameters as named presets (reference §2.9, §2.10, §3.8).

A recipe fills the arguments of :func:`vavam.train.video.train_video` / :func:`vavam.train.action.train_action`
that the caller left at their defaults; anything given explicitly wins. On the command line "explicitly"
means typed, even when the value typed equals the function's default (``--stride 1 --recipe pretrain``
keeps stride 1): the CLI records the options typed (:func:`command_line`); from Python, an argument
equal to its default cannot be told from one left out, so the recipe sets it. ``steps=None`` in a recipe
means one epoch of the training windows at the recipe's global batch.

======================  =========================================================================
video recipe            what it is
======================  =========================================================================
``pretrain``            OpenDV pretraining: lr 0.0041, wd 1e-7, global batch 384, 8 frames at
                        2 Hz from 10 fps tokens (stride 5), 10 % warmup, no drop, one epoch,
                        bf16-mixed, checkpoints and validation every quarter epoch, seed 84924; the quarter and
                        90 % checkpoints (cool-down starts of the scaling grid) are never pruned
``cooldown``            continues a pretraining checkpoint (weights + optimiser moments; schedule
                        and data position reset) on the OpenDV / nuPlan / nuScenes mix 0.40 /
                        0.5872 / 0.0128 for 15,529 steps, lr dropping linearly to 0.1 x lr over
                        all of them, OpenDV windows drawn from those the pretraining had not seen
``cpu``                 the small CPU recipe of the quickstart (vavim_mini, batch 8, lr 0.004,
                        fp32, 1,500 steps, 10 % warmup and drop)
======================  =========================================================================

The action recipe ``release`` is the VaVAM imitation-learning recipe: lr 0.0194, wd 1e-7, global
batch 384, 1 % warmup, 10 % drop, one epoch (7,251 steps on nuPlan + nuScenes), bf16-mixed, seed 84924 (the
reference's top-level seed, §6.1), checkpoints every 3,625 steps and the "before drop" one at 90 % kept for
good. Its warmup is ``int(0.01 x steps)``: 72 of 7,251 steps where the authors' config says 75 (a documented
deviation, docs/scale-out.md). ``cpu`` is the quickstart's (vavam_mini, batch 16, lr 0.02, 2,000 steps).
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, Callable

_TYPED: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar("vavam_typed_options", default=frozenset())


def typed_options(argv: Sequence[str]) -> frozenset[str]:
    """Parameter names of the options on a command line: ``--lr 0.1`` / ``--lr=0.1`` -> ``lr``,
    ``--global-batch 8`` -> ``global_batch``, ``--no-compile`` -> ``compile``."""
    names = set()
    for token in argv:
        if token == "--":
            break
        if token.startswith("--") and len(token) > 2:
            name = token[2:].split("=", 1)[0].replace("-", "_")
            names.add(name)
            if name.startswith("no_"):
                names.add(name[3:])
    return frozenset(names)


@contextlib.contextmanager
def command_line(argv: Sequence[str]) -> Iterator[None]:
    """While the block runs, :func:`apply_recipe` keeps the options typed on ``argv`` even where they equal
    the defaults (the CLI wraps each command in it)."""
    token = _TYPED.set(typed_options(argv))
    try:
        yield
    finally:
        _TYPED.reset(token)


def typed() -> frozenset[str]:
    """The options typed on the command line of the running command (empty outside :func:`command_line`)."""
    return _TYPED.get()

#: COOLDOWN_MIX: cool-down sampling ratios (OpenDV, nuPlan, nuScenes), reference §2.10 / §4.6.
COOLDOWN_MIX = (0.40, 0.5872, 0.0128)

#: PRETRAIN_SNAPSHOTS: shares of the pretraining run whose checkpoints are kept for good (beyond ``keep``): the
#: quarters and the 90 % "before drop" one, which the released cool-downs start from (reference §2.9, §7).
PRETRAIN_SNAPSHOTS = (0.25, 0.5, 0.75, 0.9)

#: ACTION_SNAPSHOTS: the share of the VaVAM release run whose checkpoint is kept for good: the "before drop" one
#: (6,525 of 7,251 steps, reference §3.8), from which the learning-rate drop can be run again.
ACTION_SNAPSHOTS = (0.9,)

VIDEO_RECIPES: dict[str, dict[str, Any]] = {
    "pretrain": dict(preset="vavim_s", steps=None, batch_size=384, lr=0.0041, weight_decay=1e-7, warmup_frac=0.1,
                     drop_frac=0.0, stride=5, precision="bf16-mixed", seed=84924, ckpt_every_frac=0.25,
                     val_every_frac=0.25, snapshot_fracs=PRETRAIN_SNAPSHOTS),
    "cooldown": dict(preset="vavim_s", steps=15_529, batch_size=384, lr=0.0041, weight_decay=1e-7, warmup_frac=0.0,
                     drop_frac=1.0, stride=5, precision="bf16-mixed", seed=84924, ckpt_every_frac=0.25,
                     mix_ratios=COOLDOWN_MIX),
    "cpu": dict(preset="vavim_mini", steps=1500, batch_size=8, lr=0.004, weight_decay=1e-7, warmup_frac=0.1,
                drop_frac=0.1, stride=1, precision="32", seed=0),
}

ACTION_RECIPES: dict[str, dict[str, Any]] = {
    "release": dict(preset="vavam_s", steps=None, batch_size=384, lr=0.0194, weight_decay=1e-7, warmup_frac=0.01,
                    drop_frac=0.1, precision="bf16-mixed", seed=84924, ckpt_every=3_625,
                    snapshot_fracs=ACTION_SNAPSHOTS),
    "cpu": dict(preset="vavam_mini", steps=2000, batch_size=16, lr=0.02, weight_decay=1e-7, warmup_frac=0.01,
                drop_frac=0.1, precision="32"),
}


def apply_recipe(func: Callable, recipes: dict[str, dict[str, Any]], name: str | None,
                 given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Arguments of ``func`` with recipe ``name`` filling those left at their defaults.

    Args:
        func: the training function (its signature gives the defaults).
        recipes: the recipe table.
        name: recipe name, or None for no recipe.
        given: the call's arguments (as from ``locals()``).

    Returns:
        (arguments, extras): the filled arguments, and recipe keys that are not arguments of ``func``
        (``ckpt_every_frac``, ``val_every_frac``, ``snapshot_fracs``) for the caller to interpret.
    """
    args = dict(given)
    if name is None:
        return args, {}
    if name not in recipes:
        raise ValueError(f"recipe {name!r} unknown; choose from {sorted(recipes)}")
    params = inspect.signature(func).parameters
    extras = {}
    explicit = typed()
    for key, value in recipes[name].items():
        if key not in params:
            extras[key] = value
        elif key not in explicit and args.get(key) == params[key].default:
            args[key] = value
    return args, extras
