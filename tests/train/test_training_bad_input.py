"""``vavam train tokenizer | video | action`` refuse bad input before any work starts, naming the option as typed:
counts, presets of the wrong kind, token stores that do not fit the model or lack scenes, ``--init-from`` files that
are not a VaViM training checkpoint; and the hint printed after a SIGTERM checkpoint comes from ``resume_hint``."""

from __future__ import annotations

import dataclasses
import signal

import numpy as np
import pytest
import torch

import vavam
from vavam import presets
from vavam.data.tokens import TokenStoreWriter
from vavam.train.action import train_action
from vavam.train.resume import write_checkpoint
from vavam.train.tokenizer import train_tokenizer
from vavam.train.video import train_video

from test_action_training import _frozen_video, _write_scenes  # noqa: E402  (tests/train is on sys.path)


def _store(root, grid=(4, 6), codes=32, scenes=("s0", "s1"), num_frames=6):
    writer = TokenStoreWriter(root, grid, codebook_size=codes, tokenizer={"name": "rand"}, fps=2.0, resume=False)
    rng = np.random.default_rng(0)
    for name in scenes:
        writer.write_scene(name, rng.integers(0, codes, size=(num_frames, *grid), dtype=np.uint16),
                           np.arange(num_frames, dtype=np.int64) * 500_000)
    return root


# ------------------------------------------------------------------------------ presets


def test_unknown_preset_is_a_value_error_and_still_a_key_error():
    with pytest.raises(ValueError, match=r"^--preset 'nope': unknown preset; known video presets: vavim_b, vavim_l, "
                                         r"vavim_mini, vavim_s, vavim_tiny$") as info:
        presets.get("nope", kind="video", flag="--preset")
    assert isinstance(info.value, KeyError)  # `except KeyError` around presets.get still catches it
    with pytest.raises(ValueError, match=r"'vavim_tiny' is a video preset, not a tokenizer one; known tokenizer "
                                         r"presets: vq16, vq_mini, vq_tiny"):
        presets.get("vavim_tiny", kind="tokenizer", flag="--preset")
    assert presets.get("vavam_tiny", kind="action") == presets.vavam_tiny()


# ------------------------------------------------------------------------------ train tokenizer


@pytest.mark.parametrize("kwargs, message", [
    (dict(preset="nope"), "--preset 'nope': unknown preset; known tokenizer presets: vq16"),
    (dict(preset="vavim_tiny"), "--preset 'vavim_tiny' is a video preset, not a tokenizer one"),
    (dict(log_every=0), "--log-every must be a positive integer, got 0"),
    (dict(ckpt_every=0), "--ckpt-every must be a positive integer, got 0"),
    (dict(steps=0), "--steps must be a positive integer, got 0"),
    (dict(steps=-3), "--steps must be a positive integer, got -3"),
    (dict(val_frames=0), "--val-frames must be a positive integer, got 0"),
    (dict(eval_every=-1), "--eval-every must be a non-negative integer"),
    (dict(keep=-1), "--keep must be a non-negative integer"),  # was: every checkpoint kept
    (dict(lr=float("nan")), "--lr must be a positive finite number, got nan"),  # was: trained on to NaN
    (dict(lr=0.0), "--lr must be a positive finite number, got 0.0"),
])
def test_tokenizer_refuses_bad_counts_and_presets_before_writing(tmp_path, kwargs, message):
    small = dict(steps=2, batch_size=1, image_size=(16, 16), val_frames=1, progress=False)
    with pytest.raises(ValueError, match=message):
        train_tokenizer(tmp_path / "run", **{**small, **kwargs})
    assert not (tmp_path / "run").exists()


def test_tokenizer_sigterm_message_uses_resume_hint(tmp_path, monkeypatch, capsys):
    """After a SIGTERM checkpoint the tokenizer says what to do next: the caller's ``resume_hint``, by default
    "rerun with --resume to continue" (right for `vavam train tokenizer`, not for the quickstart)."""
    import os

    import vavam.train.tokenizer as T

    real = T.SyntheticImages.batch

    def batch_then_sigterm(self, step, batch_size, rows=None):
        if step == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # a pre-emption during the first step
        return real(self, step, batch_size, rows)

    monkeypatch.setattr(T.SyntheticImages, "batch", batch_then_sigterm)
    kw = dict(steps=5, batch_size=1, image_size=(16, 16), val_frames=1, ckpt_every=100, progress=False)
    with pytest.raises(SystemExit) as info:
        train_tokenizer(tmp_path / "a", **kw)
    assert info.value.code == 128 + signal.SIGTERM
    assert "checkpoint written at step 1; rerun with --resume to continue" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_tokenizer(tmp_path / "b", resume_hint="the quickstart resumes this stage on its next run", **kw)
    out = capsys.readouterr().out
    assert "the quickstart resumes this stage on its next run" in out and "--resume" not in out


# ------------------------------------------------------------------------------ train video

SMALL = dict(steps=2, batch_size=2, progress=False)  # a short run, should a check be missing


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "--steps must be a positive integer, got 0"),
    (dict(num_frames=0), "--num-frames must be a positive integer, got 0"),
    (dict(val_every=0), "--val-every must be a positive integer, got 0"),
    (dict(ckpt_every=-1), "--ckpt-every must be a non-negative integer"),
    (dict(keep=-1), r"--keep must be a non-negative integer \(0: keep every checkpoint\), got -1"),  # was: all kept
    (dict(warmup_frac=-0.1), r"--warmup-frac must be a fraction of the steps in \[0, 1\]"),
    (dict(lr=float("nan")), "--lr must be a positive finite number, got nan"),
    (dict(lr=0.0), "--lr must be a positive finite number, got 0.0"),
    (dict(weight_decay=-1e-7), "--weight-decay must be a finite number >= 0, got -1e-07"),
    (dict(preset="nope"), "--preset 'nope': unknown preset; known video presets"),
    (dict(preset="vq_tiny"), "--preset 'vq_tiny' is a tokenizer preset, not a video one"),
])
def test_video_refuses_bad_counts_before_writing(tmp_path, kwargs, message):
    tok = _store(tmp_path / "tok")
    small = dict(steps=2, batch_size=2, num_frames=2, progress=False)
    with pytest.raises(ValueError, match=message):
        train_video(tmp_path / "run", tok, **{**small, **kwargs})
    assert not (tmp_path / "run").exists()  # no logs/ left behind


def test_video_checks_every_store_against_the_model(tmp_path):
    """--val-tokens / --mix must fit the model that --tokens (and the preset) define: grid and codebook, named."""
    tok = _store(tmp_path / "tok", grid=(4, 6), codes=32)
    small = _store(tmp_path / "small", grid=(2, 4), codes=32)
    big_codes = _store(tmp_path / "codes", grid=(4, 6), codes=2048)  # vavim_tiny's vocabulary is 1025
    with pytest.raises(ValueError, match=r"--val-tokens .*small does not fit the VaViM \(--preset vavim_tiny on the "
                                         r"4x6 grid of --tokens, vocabulary 1025\): its token grid 2x4 = 8 tokens "
                                         r"per frame, the model takes 24$"):
        train_video(tmp_path / "run", tok, val_tokens=[small], **SMALL)
    with pytest.raises(ValueError, match=r"--val-tokens .*codes does not fit .*: its codebook of 2048 codes needs a "
                                         r"vocabulary of at least 2049 ids \(codes \+ 1\), the model's has 1025"):
        train_video(tmp_path / "run", tok, val_tokens=[big_codes], **SMALL)
    with pytest.raises(ValueError, match=r"--mix .*small does not fit"):
        train_video(tmp_path / "run", tok, mix=[small], **SMALL)
    assert not (tmp_path / "run").exists()


def _video_training_checkpoint(path, config=None, **hparams):
    """A file shaped like a `vavam train video` checkpoint (no weights needed: the checks read the config)."""
    config = config or dataclasses.replace(presets.vavim_tiny(), vocab_size=33)
    write_checkpoint(path, {"state_dict": {}, "hyper_parameters": {"config": dataclasses.asdict(config), **hparams}})
    return path


def test_video_init_from_checks_tokens_and_val_tokens_against_its_model(tmp_path):
    ckpt = _video_training_checkpoint(tmp_path / "pre.ckpt")  # 24 tokens per frame, vocabulary 33
    tok = _store(tmp_path / "tok", grid=(4, 6), codes=32)
    with pytest.raises(ValueError, match=r"^--tokens .*small does not fit the VaViM of --init-from .*pre\.ckpt: its "
                                         r"token grid 2x4 = 8 tokens per frame, the model takes 24$"):
        train_video(tmp_path / "run", _store(tmp_path / "small", grid=(2, 4)), init_from=ckpt, **SMALL)
    with pytest.raises(ValueError, match=r"^--tokens .*codes does not fit the VaViM of --init-from .*: its codebook "
                                         r"of 64 codes needs a vocabulary of at least 65 ids \(codes \+ 1\), the "
                                         r"model's has 33$"):
        train_video(tmp_path / "run", _store(tmp_path / "codes", codes=64), init_from=ckpt, **SMALL)
    with pytest.raises(ValueError, match=r"^--val-tokens .*wide does not fit the VaViM of --init-from"):
        train_video(tmp_path / "run", tok, init_from=ckpt, val_tokens=[_store(tmp_path / "wide", grid=(4, 8))],
                    **SMALL)
    assert not (tmp_path / "run").exists()


def test_video_init_from_says_what_the_file_is(tmp_path):
    from vavam.video import save_video_model

    tok = _store(tmp_path / "tok")
    save_video_model(vavam.build_model(presets.vavim_tiny()), tmp_path / "model")
    action = tmp_path / "action.ckpt"
    write_checkpoint(action, {"state_dict": {}, "hyper_parameters": {"vavam_config": {"kind": "action"}}})
    bogus = tmp_path / "bogus.ckpt"
    bogus.write_bytes(b"bogus\n")
    cases = [
        (action, r"a `vavam train action` checkpoint \(an action expert on a frozen VaViM\), not a VaViM training "
                 r"checkpoint; give the \.ckpt of a `vavam train video` run"),
        (tmp_path / "model", r"a VaViM model folder \(weights only, no optimiser state\), not a training checkpoint"),
        (tmp_path / "model" / "model.safetensors", r"a safetensors weights file"),
        (bogus, r"not a loadable training checkpoint \(not a loadable weights-only checkpoint"),
    ]
    for path, message in cases:
        with pytest.raises(ValueError, match=rf"^--init-from {path}: {message}") as info:
            train_video(tmp_path / "run", tok, init_from=path, **SMALL)
        assert "\n" not in str(info.value)  # one line (torch's weights_only advice spans many)
    with pytest.raises(FileNotFoundError, match=r"^--init-from .*missing\.ckpt: no such file or folder"):
        train_video(tmp_path / "run", tok, init_from=tmp_path / "missing.ckpt", **SMALL)
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------ train action


@pytest.fixture(scope="module")
def action_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("action_inputs")
    _write_scenes(root, num_scenes=2, num_frames=12)  # records.npz + tok (grid 4x6, 32 codes), scenes s0 s1
    torch.manual_seed(0)
    return root, _frozen_video(root)  # vavim_tiny: 24 tokens per frame, vocabulary 1025


def _action(root, vim, out, **kw):
    args = dict(records=root / "records.npz", tokens=root / "tok", preset="vavam_tiny", steps=2, progress=False)
    return train_action(out, vim, **{**args, **kw})


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "--steps must be a positive integer, got 0"),
    (dict(val_every=0), "--val-every must be a positive integer, got 0"),
    (dict(subsampling=0), "--subsampling must be a positive integer, got 0"),
    (dict(noise_repeats=0), "--noise-repeats must be a positive integer, got 0"),
    (dict(ckpt_every=-2), "--ckpt-every must be a non-negative integer"),
    (dict(keep=-3), "--keep must be a non-negative integer"),
    (dict(ema=1.0), r"--ema must be a decay in \(0, 1\), or 0 for none, got 1.0"),  # was: EMA decay (no flag)
    (dict(plot_every=-1), "--plot-every must be a non-negative integer"),
    (dict(drop_frac=2.0), r"--drop-frac must be a fraction of the steps in \[0, 1\]"),
    (dict(lr=-0.01), "--lr must be a positive finite number, got -0.01"),
    (dict(weight_decay=float("inf")), "--weight-decay must be a finite number >= 0, got inf"),
    (dict(preset="nope"), "--preset 'nope': unknown preset; known action presets"),
    (dict(preset="vavim_tiny"), "--preset 'vavim_tiny' is a video preset, not an action one"),
])
def test_action_refuses_bad_counts_before_writing(action_inputs, tmp_path, kwargs, message):
    root, vim = action_inputs
    with pytest.raises(ValueError, match=message):
        _action(root, vim, tmp_path / "run", **kwargs)
    assert not (tmp_path / "run").exists()


def test_action_checks_token_stores_against_the_vavim(action_inputs, tmp_path):
    root, vim = action_inputs
    small = _store(tmp_path / "small", grid=(2, 4), scenes=("s0", "s1"))  # a smaller grid used to train garbage
    codes = _store(tmp_path / "codes", codes=2048, scenes=("s0", "s1"))
    with pytest.raises(ValueError, match=r"^--tokens .*small does not fit the VaViM of --video .*vim: its token grid "
                                         r"2x4 = 8 tokens per frame, the model takes 24$"):
        _action(root, vim, tmp_path / "run", tokens=small)
    with pytest.raises(ValueError, match=r"^--tokens .*codes does not fit .*: its codebook of 2048 codes needs a "
                                         r"vocabulary of at least 2049 ids \(codes \+ 1\), the model's has 1025$"):
        _action(root, vim, tmp_path / "run", tokens=codes)
    with pytest.raises(ValueError, match=r"^--val-tokens .*small does not fit the VaViM"):
        _action(root, vim, tmp_path / "run", val_records=root / "records.npz", val_tokens=small)
    assert not (tmp_path / "run").exists()


def test_action_refuses_a_store_without_the_records_scenes(action_inputs, tmp_path):
    root, vim = action_inputs
    partial = _store(tmp_path / "partial", scenes=("s0",), num_frames=12)
    with pytest.raises(ValueError, match=r"^--tokens .*partial lacks 1 of the 2 scenes with windows in --records "
                                         r".*records\.npz, first 's1'"):
        _action(root, vim, tmp_path / "run", tokens=partial)
    with pytest.raises(ValueError, match=r"^--val-tokens .*partial lacks 1 of the 2 scenes with windows in "
                                         r"--val-records .*records\.npz, first 's1'"):
        _action(root, vim, tmp_path / "run", val_records=root / "records.npz", val_tokens=partial)
    assert not (tmp_path / "run").exists()


def test_action_validation_options_go_together(action_inputs, tmp_path):
    root, vim = action_inputs
    with pytest.raises(ValueError, match="--val-records and --val-tokens go together .*--val-records was given "
                                         "without --val-tokens"):
        _action(root, vim, tmp_path / "run", val_records=root / "records.npz")
    with pytest.raises(ValueError, match="--val-tokens was given without --val-records"):
        _action(root, vim, tmp_path / "run", val_tokens=root / "tok")
    assert not (tmp_path / "run").exists()


def test_lightning_sigterm_message_uses_resume_hint(tmp_path, monkeypatch, capsys):
    """`train video` / `train action` (fit_resumable): the SIGTERM message ends with ``resume_hint``."""
    import os

    import lightning as L

    import vavam.train.video as V

    class SigtermAfterFirstStep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 1:
                os.kill(os.getpid(), signal.SIGTERM)

    real = V.fit_resumable
    monkeypatch.setattr(V, "fit_resumable", lambda *a, **k: real(*a, **{**k, "extra_callbacks": [
        *k.get("extra_callbacks", ()), SigtermAfterFirstStep()]}))
    tok = _store(tmp_path / "tok", grid=(2, 3), codes=16)
    kw = dict(preset="vavim_tiny", steps=3, batch_size=2, num_frames=2, progress=False)
    with pytest.raises(SystemExit) as info:
        train_video(tmp_path / "a", tok, **kw)
    assert info.value.code == 128 + signal.SIGTERM
    assert "written at step 1; rerun with --resume to continue" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_video(tmp_path / "b", tok, resume_hint="the quickstart resumes this stage on its next run", **kw)
    err = capsys.readouterr().err
    assert "written at step 1; the quickstart resumes this stage on its next run" in err and "--resume" not in err


def test_ctrl_c_in_a_lightning_fit_is_a_keyboard_interrupt(tmp_path, monkeypatch):
    """Lightning turns Ctrl-C into its own message and sys.exit(1); fit_resumable gives the caller the
    KeyboardInterrupt back (the quickstart then says how to continue instead of exiting 1)."""
    import lightning as L

    import vavam.train.video as V

    class CtrlCAtFirstStep(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            raise KeyboardInterrupt

    real = V.fit_resumable
    monkeypatch.setattr(V, "fit_resumable", lambda *a, **k: real(*a, **{**k, "extra_callbacks": [
        *k.get("extra_callbacks", ()), CtrlCAtFirstStep()]}))
    monkeypatch.setattr(signal, "signal", lambda *a, **k: signal.SIG_DFL)  # Lightning would ignore SIGINT after
    tok = _store(tmp_path / "tok", grid=(2, 3), codes=16)
    with pytest.raises(KeyboardInterrupt):
        train_video(tmp_path / "a", tok, preset="vavim_tiny", steps=3, batch_size=2, num_frames=2, progress=False)
