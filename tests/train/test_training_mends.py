"""Regression tests of the training-schedule / recipe audit: warmup and drop lengths read from the decimal shares,
the recipes' reference numbers (VaVAM seed 84924, pretraining validation every quarter epoch), and training options
that were ignored or refused without naming the option (``--width 0``, ``--init-std``, ``--seed``, ``--mix-ratios``
without ``--mix``, overlapping ``--warmup-frac`` / ``--drop-frac``)."""

from __future__ import annotations

import numpy as np
import pytest
from test_action_training import _frozen_video, _write_scenes

import vavam.train.action as ta
import vavam.train.video as tv
from vavam.data.tokens import TokenStoreWriter
from vavam.train.recipes import ACTION_RECIPES, command_line

pytestmark = pytest.mark.usefixtures("one_thread")


class _Stop(Exception):
    """Raised by the stand-in of ``fit_resumable``: everything before the fit ran, nothing trained."""


def _capture(monkeypatch, module) -> dict:
    """Replace ``module.fit_resumable`` by a stand-in that records its LightningModule and keyword arguments."""
    seen: dict = {}

    def fake(lit, *args, **kwargs):
        seen["module"], seen["kwargs"] = lit, kwargs
        raise _Stop

    monkeypatch.setattr(module, "fit_resumable", fake)
    return seen


def _store(root, scenes: int = 2, frames: int = 14, fps: float = 10.0):
    rng = np.random.default_rng(0)
    writer = TokenStoreWriter(root, (2, 3), codebook_size=16, tokenizer={"name": "rand"}, fps=fps, resume=False)
    for k in range(scenes):
        writer.write_scene(f"s{k}", rng.integers(0, 16, size=(frames, 2, 3), dtype=np.uint16),
                           np.arange(frames, dtype=np.int64) * int(1e6 / fps))
    return root


VIDEO = dict(preset="vavim_tiny", num_frames=2, stride=5, batch_size=2, progress=False)


# ------------------------------------------------------------------------------ warmup / drop lengths


def test_warmup_and_drop_lengths_are_the_decimal_shares(tmp_path, monkeypatch):
    """``int(0.7 * 90)`` is 62 in binary floating point: --warmup-frac 0.7 of 90 steps warmed up for 62 steps,
    not 63 (and --drop-frac 0.29 of 100 dropped for 28, not 29). The reference numbers stay: 10 % of 155,293 is
    15,529, 1 % / 10 % of 7,251 are 72 / 725."""
    seen = _capture(monkeypatch, tv)
    with pytest.raises(_Stop):
        tv.train_video(tmp_path / "v", _store(tmp_path / "tok"), steps=90, warmup_frac=0.7, drop_frac=0.29, **VIDEO)
    assert seen["module"].schedule == (63, 90, 26)

    _write_scenes(tmp_path, num_scenes=2, num_frames=12)
    seen = _capture(monkeypatch, ta)
    with pytest.raises(_Stop):
        ta.train_action(tmp_path / "a", _frozen_video(tmp_path), tmp_path / "records.npz", tmp_path / "tok",
                        preset="vavam_tiny", steps=100, batch_size=2, warmup_frac=0.7, drop_frac=0.29, plot_every=0,
                        progress=False)
    assert seen["module"].schedule == (70, 100, 29)
    from vavam.train.optim import frac_steps

    assert (frac_steps(0.1, 155_293), frac_steps(0.01, 7_251), frac_steps(0.1, 7_251)) == (15_529, 72, 725)


@pytest.mark.parametrize("train", ["video", "action"])
def test_overlapping_warmup_and_drop_are_refused(tmp_path, train):
    """--warmup-frac 0.6 --drop-frac 0.6 of 10 steps used to ramp to 5/6 of --lr, then jump to the drop's 0.7 and
    decay: --lr was never reached. Refused, naming both options, before anything is written."""
    match = r"--warmup-frac 0.6 and --drop-frac 0.6 overlap"
    with pytest.raises(ValueError, match=match):
        if train == "video":
            tv.train_video(tmp_path / "run", _store(tmp_path / "tok"), steps=10, warmup_frac=0.6, drop_frac=0.6,
                           **VIDEO)
        else:
            ta.train_action(tmp_path / "run", tmp_path / "vim", tmp_path / "records.npz", tmp_path / "tok",
                            steps=10, warmup_frac=0.6, drop_frac=0.6, progress=False)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ recipes


def test_release_recipe_uses_the_reference_seed(tmp_path, monkeypatch):
    """The reference's top-level seed 84924 (train.yaml, §6.1) is that of every experiment, action learning
    included; the video recipes had it, the VaVAM ``release`` recipe ran with seed 0. A typed seed still wins."""
    assert ACTION_RECIPES["release"]["seed"] == 84_924
    _write_scenes(tmp_path, num_scenes=2, num_frames=12)
    vim = _frozen_video(tmp_path)
    args = (vim, tmp_path / "records.npz", tmp_path / "tok")
    kw = dict(recipe="release", preset="vavam_tiny", precision="32", batch_size=2, steps=10, plot_every=0,
              progress=False)
    seen = _capture(monkeypatch, ta)
    argv = ["--recipe", "release", "--preset", "vavam_tiny", "--precision", "32", "--batch-size", "2", "--steps", "10"]
    with command_line(argv):
        with pytest.raises(_Stop):
            ta.train_action(tmp_path / "run", *args, **kw)
    assert seen["module"].seed == 84_924 and seen["kwargs"]["seed"] == 84_924
    with command_line([*argv, "--seed", "0"]):
        with pytest.raises(_Stop):
            ta.train_action(tmp_path / "run", *args, seed=0, **kw)
    assert seen["module"].seed == 0


def test_pretrain_recipe_validates_every_quarter_epoch(tmp_path, monkeypatch):
    """Reference §2.9: pretraining validates every 0.25 epoch. The recipe left --val-every at 100 steps (about
    1,550 validations over the 155,293 steps); it now validates with the quarter checkpoints, unless --val-every
    is typed."""
    tok = _store(tmp_path / "tok")
    argv = ["--recipe", "pretrain", "--preset", "vavim_tiny", "--stride", "5", "--precision", "32",
            "--batch-size", "2", "--steps", "20", "--num-frames", "2"]
    kw = dict(recipe="pretrain", preset="vavim_tiny", stride=5, precision="32", batch_size=2, steps=20, num_frames=2,
              progress=False, val_tokens=[tok])
    seen = _capture(monkeypatch, tv)
    with command_line(argv), pytest.raises(_Stop):
        tv.train_video(tmp_path / "run", tok, **kw)
    assert (seen["kwargs"]["val_every"], seen["kwargs"]["ckpt_every"]) == (5, 5)
    with command_line([*argv, "--val-every", "100"]), pytest.raises(_Stop):
        tv.train_video(tmp_path / "run", tok, **kw, val_every=100)
    assert seen["kwargs"]["val_every"] == 100  # typed: wins over the recipe
    with pytest.raises(_Stop):
        tv.train_video(tmp_path / "run", tok, **{**kw, "recipe": None})
    assert seen["kwargs"]["val_every"] == 100  # no recipe: the default


# ------------------------------------------------------------------------------ options ignored or not named


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=0), r"--width must be a positive integer, got 0"),  # was: the preset's width, silently
    (dict(init_std=-0.02), r"--init-std must be a positive finite number .*got -0.02"),  # was: torch's normal_
    (dict(init_std=float("nan")), r"--init-std must be a positive finite number .*got nan"),
    (dict(init_std=0.0), r"--init-std must be a positive finite number .*got 0.0"),  # was: every weight zero
    (dict(seed=-1), r"--seed must be an integer in \[0, 2\^32 - 1\], got -1"),  # was: Lightning's message
])
def test_video_model_options_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tv.train_video(tmp_path / "run", _store(tmp_path / "tok"), steps=1, **{**VIDEO, **kwargs})
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("kwargs, message", [
    (dict(width=0), r"--width must be a positive integer, got 0"),
    (dict(init_std=-1.0), r"--init-std must be a positive finite number .*got -1.0"),
    (dict(seed=2**32), r"--seed must be an integer in \[0, 2\^32 - 1\], got 4294967296"),
])
def test_action_model_options_are_named(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ta.train_action(tmp_path / "run", tmp_path / "vim", tmp_path / "records.npz", tmp_path / "tok", steps=1,
                        progress=False, **kwargs)
    assert not (tmp_path / "run").exists()


def test_action_width_zero_is_not_the_preset_width(tmp_path, monkeypatch):
    """``width or preset width`` took --width 0 for 'not given': the run trained the preset's expert."""
    _write_scenes(tmp_path, num_scenes=2, num_frames=12)
    vim = _frozen_video(tmp_path)
    seen = _capture(monkeypatch, ta)
    with pytest.raises(_Stop):  # a real override still applies
        ta.train_action(tmp_path / "a", vim, tmp_path / "records.npz", tmp_path / "tok", preset="vavam_tiny",
                        width=32, steps=2, batch_size=2, plot_every=0, progress=False)
    assert seen["module"].model.config.width == 32
    with pytest.raises(ValueError, match="--width must be a positive integer, got 0"):
        ta.train_action(tmp_path / "b", vim, tmp_path / "records.npz", tmp_path / "tok", preset="vavam_tiny",
                        width=0, steps=2, batch_size=2, plot_every=0, progress=False)


@pytest.mark.parametrize("kwargs, message", [
    (dict(mix_ratios=[0.5, 0.5]), r"--mix-ratios \[0.5, 0.5\] was given without --mix"),  # was: ignored
    (dict(mix_seed=7), r"--mix-seed 7 was given without --mix"),  # was: ignored
])
def test_mix_options_without_mix_are_refused(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tv.train_video(tmp_path / "run", _store(tmp_path / "tok"), steps=1, **VIDEO, **kwargs)
    assert not (tmp_path / "run").exists()


def test_typed_mix_seed_without_mix_is_refused_and_the_cooldown_recipe_alone_is_not(tmp_path, monkeypatch):
    tok = _store(tmp_path / "tok")
    with command_line(["--mix-seed", "42"]), pytest.raises(ValueError, match="--mix-seed 42 was given without --mix"):
        tv.train_video(tmp_path / "run", tok, steps=1, **VIDEO)
    seen = _capture(monkeypatch, tv)  # the cool-down recipe's own ratios without --mix are not the user's
    with pytest.raises(_Stop):
        with command_line(["--recipe", "cooldown", "--preset", "vavim_tiny", "--precision", "32"]):
            tv.train_video(tmp_path / "run", tok, steps=1, recipe="cooldown", **{**VIDEO, "precision": "32"})
    assert seen["module"].schedule == (0, 1, 1)


@pytest.mark.parametrize("ratios, message", [
    ([0.5, -0.5], r"--mix-ratios must be finite numbers >= 0, not all 0 .*got \[0.5, -0.5\]"),  # was: 'ratios must'
    ([0.0, 0.0], r"--mix-ratios must be finite numbers >= 0, not all 0"),
    ([0.5, float("nan")], r"--mix-ratios must be finite numbers >= 0, not all 0 .*nan"),
    ([1.0], r"--mix-ratios: 1 ratios for 2 token stores \(--tokens \+ --mix\)"),
])
def test_bad_mix_ratios_are_named_before_anything_is_written(tmp_path, ratios, message):
    tok, other = _store(tmp_path / "tok"), _store(tmp_path / "other")
    with pytest.raises(ValueError, match=message):
        tv.train_video(tmp_path / "run", tok, steps=1, mix=[other], mix_ratios=ratios, **VIDEO)
    assert not (tmp_path / "run").exists()


def test_training_prints_no_lightning_advertisement_nor_its_internal_warnings(tmp_path, capfd):
    """Every Trainer printed a tip to install Lightning's cloud logger, and every run torch's deprecation of a
    pytree API that Lightning calls (and, without validation data, a note on the unused validation step)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tv.train_video(tmp_path / "v", _store(tmp_path / "tok"), steps=2, **VIDEO)
    out = "".join(capfd.readouterr())
    messages = [str(w.message) for w in caught]
    assert (tmp_path / "v" / "model").is_dir()
    assert "litlogger" not in out and "Tip" not in out
    assert not [m for m in messages if "LeafSpec" in m or "validation_step" in m], messages


def test_the_training_progress_bar_counts_steps_without_a_negative_epoch_count(tmp_path, capfd):
    """The bar read "Epoch 0/-2" (max_steps leaves max_epochs at -1) and showed the CSV logger's "v_num"."""
    tv.train_video(tmp_path / "v", _store(tmp_path / "tok"), steps=3, **(VIDEO | {"progress": True}))
    out = "".join(capfd.readouterr())
    assert "steps" in out and "3/3" in out
    assert "Epoch 0/-" not in out and "v_num" not in out
