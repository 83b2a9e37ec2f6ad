"""VaViM's training windows leave out those that span a missing frame; runs indexed before that rule keep
their windows on resume and cool-down."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vavam.data.tokens import TokenStore, TokenStoreWriter
from vavam.train.resume import list_checkpoints
from vavam.train.video import VideoWindowDataset, train_video

KW = dict(preset="vavim_tiny", num_frames=2, lr=0.01, progress=False, seed=1, batch_size=2)


def _store(root, fps=10.0, missing=(), scenes=2, frames=14, seed=0):
    """Scenes of ``frames`` frames at ``fps``, the frames at indices ``missing`` of each scene's clock left out."""
    rng = np.random.default_rng(seed)
    w = TokenStoreWriter(root, (2, 3), codebook_size=16, tokenizer={"name": "rand"}, fps=fps, resume=False)
    for k in range(scenes):
        clock = [i for i in range(frames + len(missing)) if i not in missing]
        w.write_scene(f"s{k}", rng.integers(0, 16, size=(frames, 2, 3), dtype=np.uint16),
                      np.array(clock, dtype=np.int64) * int(1e6 / (fps or 10.0)), fps=fps)
    return root


def test_window_dataset_leaves_out_windows_across_a_missing_frame(tmp_path):
    store = TokenStore(_store(tmp_path / "tok", missing=(6,)))  # 14 frames, the step from frame 5 lasts 0.2 s
    every = VideoWindowDataset(store, 2, 5, steady=False)
    assert len(every) == 2 * 9 and every.left_out == 0
    with pytest.warns(UserWarning, match=r"10 windows of 2 frames \(stride 5\) in 2 scene\(s\) span a jump in time"):
        steady = VideoWindowDataset(store, 2, 5)
    # a window of 2 frames at stride 5 from s holds the step s -> s + 5, which crosses the gap for s = 1..5
    assert steady.index == [(f"s{k}", s) for k in range(2) for s in (0, 6, 7, 8)]
    assert steady.left_out == 10 and len(steady) == 8
    unknown = TokenStore(_store(tmp_path / "unknown", fps=None, missing=(6,)))  # no rate: nothing to check
    with pytest.warns(UserWarning, match=r"unknown: 2 scene\(s\) record no frame rate"):
        assert len(VideoWindowDataset(unknown, 2, 5)) == 18
    with pytest.raises(ValueError, match="no window of 2 frames .* without a jump in time"):
        VideoWindowDataset(TokenStore(_store(tmp_path / "short", missing=(1,), frames=2)), 2, 1)


def test_new_runs_record_the_rule_and_older_runs_keep_every_window(tmp_path, monkeypatch):
    import vavam.train.video as tv

    tok = _store(tmp_path / "tok", missing=(6,))
    with pytest.warns(UserWarning, match="span a jump in time"):
        new = train_video(tmp_path / "new", tok, steps=2, stride=5, **KW)
    assert new["windows"] == 8 and new["windows_left_out"] == 10
    settings = json.loads((tmp_path / "new" / "run_settings.json").read_text())
    assert settings["module"]["data"]["window_rule"] == "steady" and settings["samples"] == 8

    # a run started before the rule existed: every window, no rule recorded
    monkeypatch.setattr(tv, "_window_rules", lambda *a: (False, False))
    old = train_video(tmp_path / "old", tok, steps=2, stride=5, ckpt_every=1, keep=0, **KW)
    monkeypatch.undo()
    assert old["windows"] == 18 and old["windows_left_out"] == 0
    assert "window_rule" not in json.loads((tmp_path / "old" / "run_settings.json").read_text())["module"]["data"]
    # its resume indexes windows as it did (another count would be refused as other data), and so does a
    # cool-down from it on the same store (it must tell which of those windows the pretraining drew)
    for ckpt in list_checkpoints(tmp_path / "old")[1:]:
        ckpt.unlink()  # resume from step 1
    resumed = train_video(tmp_path / "old", tok, steps=2, stride=5, resume=True, **KW)
    assert resumed["resumed_from"] == 1 and resumed["windows"] == 18
    # ... while its other stores (here a --mix store missing a frame too) are checked as in a new run
    mix = _store(tmp_path / "mix", missing=(6,), seed=1)
    with pytest.warns(UserWarning, match=r"mix: 10 windows .* span a jump in time"):
        cool = train_video(tmp_path / "cool", tok, steps=2, stride=5, recipe="cooldown", mix=[mix],
                           mix_ratios=[0.5, 0.5], init_from=list_checkpoints(tmp_path / "old")[-1], ckpt_every=1,
                           keep=0, **KW)
    assert cool["mix"]["pretraining_windows_available"] == 18 - 2 * 2 and cool["windows_left_out"] == 10
    rule = json.loads((tmp_path / "cool" / "run_settings.json").read_text())["module"]["data"]["window_rule"]
    assert rule == {"tokens": "every", "others": "steady"}
    for ckpt in list_checkpoints(tmp_path / "cool")[1:]:
        ckpt.unlink()
    with pytest.warns(UserWarning, match=r"mix: 10 windows"):  # its resume reads both rules back
        resumed = train_video(tmp_path / "cool", tok, steps=2, stride=5, recipe="cooldown", mix=[mix],
                              mix_ratios=[0.5, 0.5], init_from=list_checkpoints(tmp_path / "old")[-1], resume=True,
                              **KW)
    assert resumed["resumed_from"] == 1 and resumed["windows_left_out"] == 10
    # a cool-down from the new run on the same store is steady, like its pretraining
    with pytest.warns(UserWarning, match="span a jump in time"):
        cool_new = train_video(tmp_path / "cool_new", tok, steps=2, stride=5, recipe="cooldown", mix=[mix],
                               mix_ratios=[0.5, 0.5], init_from=list_checkpoints(tmp_path / "new")[-1], **KW)
    assert cool_new["mix"]["pretraining_windows_available"] == 8 - 2 * 2 and cool_new["windows_left_out"] == 10 + 10


def test_a_stride_that_is_not_half_a_second_is_named(tmp_path):
    """VaViM is trained on 0.5 s steps; the default --stride 1 on 10 Hz tokens (0.1 s) trained silently."""
    from vavam.data.tokens import stride_step_warning

    tok = _store(tmp_path / "tok")  # 10 Hz
    with pytest.warns(UserWarning, match=r"--tokens .*tok: --stride 1 at 10 fps steps 0.1 s between window frames, "
                                         r"not VaViM's 0.5 s \(2 Hz\); --stride 5 gives it"):
        train_video(tmp_path / "run", tok, steps=1, stride=1, **KW)
    assert stride_step_warning(TokenStore(tok), 5) is None
    two_hz = TokenStore(_store(tmp_path / "nuscenes", fps=2.0))
    assert "--stride 5 at 2 fps steps 2.5 s" in stride_step_warning(two_hz, 5)
    assert stride_step_warning(two_hz, 1) is None
    assert stride_step_warning(TokenStore(_store(tmp_path / "unknown", fps=None)), 3) is None  # no rate recorded
