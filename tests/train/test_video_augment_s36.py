"""VaViM's optional training changes (vavam.train.video_augment; train_video --permute-codes / --self-forcing / --ema):
what a relabelled window keeps, self-forcing's inputs and targets, resume exactness with all three, and that runs
without them record the settings they always did."""

from __future__ import annotations

import json
import math
import os
import signal

import lightning as L
import pytest
import torch

from vavam.train.resume import list_checkpoints, step_generator
from vavam.train.video import VideoLitModule, next_token_loss, train_video
from vavam.checks import check_fraction
from vavam.train.video_augment import own_last_frame, permute_codes

from test_video_resume import _store, _weights  # noqa: E402 - the sibling resume tests' token store and weights


def _windows(b=6, t=3, h=2, w=3, codes=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, codes, (b, t, h, w), generator=g)


def test_a_relabelled_window_keeps_which_positions_share_a_code():
    tokens = _windows(b=5, codes=8)
    tokens[0, 0, 0, 0] = 8  # the vocabulary's extra id: left alone
    out = permute_codes(tokens, 1.0, 8, step_generator(0, 0))
    assert out.shape == tokens.shape and out.dtype == tokens.dtype
    assert out[0, 0, 0, 0] == 8
    for i in range(5):
        a, b = tokens[i].flatten(), out[i].flatten()
        assert torch.equal(a[:, None] == a[None, :], b[:, None] == b[None, :])  # same code <=> same code
        mapping = {int(x): int(y) for x, y in zip(a, b) if x < 8}
        assert all(0 <= y < 8 for y in mapping.values()) and len(set(mapping.values())) == len(mapping)
    changed = [not torch.equal(tokens[i], out[i]) for i in range(5)]
    assert sum(changed) >= 4  # a random permutation of 8 codes fixes every code present with tiny chance


def test_share_decides_how_many_windows_are_relabelled():
    tokens = _windows(b=2000, t=1, h=1, w=4, codes=50)
    assert permute_codes(tokens, 0.0, 50, step_generator(1, 2)) is tokens
    out = permute_codes(tokens, 0.3, 50, step_generator(1, 2))
    share = (out != tokens).flatten(1).any(1).float().mean().item()
    assert 0.25 < share < 0.35
    again = permute_codes(tokens, 0.3, 50, step_generator(1, 2))
    assert torch.equal(out, again)  # the generator alone decides
    assert not torch.equal(out, permute_codes(tokens, 0.3, 50, step_generator(1, 3)))


def test_slices_of_a_global_batch_draw_what_the_whole_batch_draws():
    """Two devices (or two accumulated passes) of 3 windows relabel as one device of 6."""
    tokens = _windows(b=6)
    whole = permute_codes(tokens, 0.5, 8, step_generator(4, 9))
    parts = [permute_codes(tokens[k:k + 3], 0.5, 8, step_generator(4, 9), offset=k, total=6) for k in (0, 3)]
    assert torch.equal(whole, torch.cat(parts))
    with pytest.raises(ValueError, match="outside"):
        permute_codes(tokens[:3], 0.5, 8, step_generator(4, 9), offset=4, total=6)


@pytest.mark.parametrize("bad", [-0.1, 1.5, math.nan, True, "0.5"])
def test_bad_share_is_refused_naming_the_option(bad):
    with pytest.raises(ValueError, match="--permute-codes"):
        check_fraction(bad, "--permute-codes", "the windows")


def test_bad_windows_are_refused():
    with pytest.raises(ValueError, match=r"\[B, T, h, w\]"):
        permute_codes(torch.zeros(2, 3, dtype=torch.long), 1.0, 8, step_generator(0, 0))
    with pytest.raises(ValueError, match="at least 2"):
        permute_codes(_windows(), 1.0, 1, step_generator(0, 0))
    with pytest.raises(ValueError, match="T >= 2"):
        own_last_frame(_tiny_model(), _windows(t=1))


def _tiny_model():
    from vavam.presets import vavim_tiny
    from vavam.video import VideoGPT

    torch.manual_seed(0)
    import dataclasses

    return VideoGPT(dataclasses.replace(vavim_tiny(), vocab_size=9, tokens_per_frame=6, num_frames=3))


def test_self_forcing_feeds_the_models_greedy_last_frame_and_keeps_the_true_targets():
    from vavam.video import generate_frames

    model = _tiny_model().train()
    tokens = _windows(b=4, t=3, codes=8)
    inputs = own_last_frame(model, tokens)
    assert model.training  # mode restored
    assert torch.equal(inputs[:, :2], tokens[:, :2])
    assert torch.equal(inputs[:, 2:], generate_frames(model.eval(), tokens[:, :2], 1, top_k=1))
    assert not torch.equal(inputs, tokens)

    module = VideoLitModule(model.config, augment={"permute_codes": 0.0, "codes": 8, "seed": 0, "self_forcing": True})
    module.model.load_state_dict(model.state_dict())
    with pytest.warns(UserWarning):  # self.log outside a trainer
        loss = module.training_step(tokens, 0)
    want = next_token_loss(module.model(own_last_frame(module.model, tokens)), tokens)
    assert torch.allclose(loss, want)
    assert not torch.allclose(loss, next_token_loss(module.model(tokens), tokens))


# ---------------------------------------------------------------------------------------------- train_video


KW = dict(preset="vavim_tiny", batch_size=3, lr=0.01, num_frames=2, progress=False, seed=3)
AUG = dict(permute_codes=0.5, self_forcing=True, ema=0.9)


class _SignalAt(L.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_run_with_all_three_resumes_bit_identical(tmp_path, monkeypatch):
    tok = _store(tmp_path / "tok")
    summary = train_video(tmp_path / "full", tok, steps=6, **KW, **AUG)
    assert summary["augment"] == {"permute_codes": 0.5, "codes": 16, "seed": 3, "self_forcing": True}
    assert summary["ema"] == 0.9
    plain = train_video(tmp_path / "plain", tok, steps=6, **KW)
    assert plain["augment"] is None
    full = _weights(tmp_path / "full")
    assert any(not torch.equal(full[k], v) for k, v in _weights(tmp_path / "plain").items())

    import vavam.train.video as tl

    real = tl.fit_resumable
    monkeypatch.setattr(tl, "fit_resumable", lambda *a, **k: real(*a, **{**k, "extra_callbacks": [
        *k.get("extra_callbacks", []), _SignalAt(3)]}))
    with pytest.raises(SystemExit):
        train_video(tmp_path / "cut", tok, steps=6, **KW, **AUG)
    assert [p.name for p in list_checkpoints(tmp_path / "cut")] == ["step-00000003.ckpt"]
    monkeypatch.setattr(tl, "fit_resumable", real)
    with pytest.raises(ValueError, match="ema"):  # the average belongs to the run as started
        train_video(tmp_path / "cut", tok, steps=6, resume=True, **KW, **{**AUG, "ema": 0.8})
    with pytest.raises(ValueError, match="augment"):
        train_video(tmp_path / "cut", tok, steps=6, resume=True, **KW, **{**AUG, "permute_codes": 0.25})
    assert train_video(tmp_path / "cut", tok, steps=6, resume=True, **KW, **AUG)["resumed_from"] == 3
    cut = _weights(tmp_path / "cut")
    assert all(torch.equal(full[k], cut[k]) for k in full)


def test_runs_without_them_record_the_settings_they_always_did(tmp_path):
    """A run started before these options existed resumes: nothing new in its recorded settings."""
    tok = _store(tmp_path / "tok")
    train_video(tmp_path / "run", tok, steps=2, **KW)
    settings = json.loads((tmp_path / "run" / "run_settings.json").read_text())
    assert "ema" not in settings and "augment" not in settings["module"]


@pytest.mark.parametrize("bad, match", [
    (dict(permute_codes=1.5), "--permute-codes"),
    (dict(ema=1.0), "--ema"),
    (dict(ema=True), "--ema"),
    (dict(self_forcing=1), "--self-forcing"),
])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, bad, match):
    tok = _store(tmp_path / "tok")
    with pytest.raises(ValueError, match=match):
        train_video(tmp_path / "run", tok, steps=2, **KW, **bad)
    assert not (tmp_path / "run").exists()
