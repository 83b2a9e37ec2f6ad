"""The cool-down recipe: continue a pretraining checkpoint (weights + AdamW moments, fresh schedule)
on an exact-ratio mix of token stores whose pretraining part only holds windows not yet drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from vavam.data.tokens import TokenStoreWriter
from vavam.train.recipes import COOLDOWN_MIX, VIDEO_RECIPES
from vavam.train.resume import StepBatchSampler, list_checkpoints, read_checkpoint
from vavam.train.video import _cooldown_mix, VideoWindowDataset, train_video
from vavam.data.tokens import TokenStore


def _store(root, scenes, frames, fps, seed):
    rng = np.random.default_rng(seed)
    w = TokenStoreWriter(root, (2, 3), codebook_size=16, tokenizer={"name": "rand"}, fps=fps, resume=False)
    for k in range(scenes):
        w.write_scene(f"s{k}", rng.integers(0, 16, size=(frames, 2, 3), dtype=np.uint16),
                      np.arange(frames, dtype=np.int64) * int(1e6 / fps))
    return root


KW = dict(preset="vavim_tiny", num_frames=2, lr=0.01, progress=False)


def test_cooldown_continues_pretraining_on_unseen_windows(tmp_path):
    opendv = _store(tmp_path / "opendv", 4, 14, 10.0, 0)  # stride 5 at 10 Hz
    nuplan = _store(tmp_path / "nuplan", 3, 12, 10.0, 1)
    nuscenes = _store(tmp_path / "nuscenes", 2, 5, 2.0, 2)  # stride 1 at 2 Hz
    pre = train_video(tmp_path / "pre", opendv, steps=3, batch_size=4, stride=5, seed=11, **KW)
    ckpt = list_checkpoints(tmp_path / "pre")[-1]
    state = read_checkpoint(ckpt)
    assert state["callbacks"]["_DataPosition"]["consumed"] == 3

    cool = train_video(tmp_path / "cool", opendv, steps=4, batch_size=5, stride=5, seed=12, recipe="cooldown",
                       init_from=ckpt, mix=[nuplan, nuscenes], **KW)
    mix = cool["mix"]
    assert mix["ratios"] == list(COOLDOWN_MIX) and mix["total"] == 20
    targets = [s["target"] for s in mix["sources"]["sources"]]
    assert targets == [8, 12, 0] and sum(targets) == 20  # largest remainder: 8.0 / 11.744 / 0.256
    # each source named by its path (the mixed stores were named by their repr, 'TokenStore(..., scenes=3, ...)')
    assert [s["name"] for s in mix["sources"]["sources"]] == [str(opendv), str(nuplan), str(nuscenes)]
    windows = pre["windows"]  # 4 scenes x (14 - 5) windows
    assert windows == 36 and mix["pretraining_windows_available"] == windows - 12  # 3 steps x 4 consumed
    # cool-down LR drops linearly to 0.1 lr over all its steps (recipe: warmup 0, drop 100 %)
    assert VIDEO_RECIPES["cooldown"]["drop_frac"] == 1.0
    lrs = [json.loads(r)["lr"] for r in (tmp_path / "cool" / "metrics.jsonl").read_text().splitlines()]
    factors = [0.1 + 0.9 * (4 - n) / 4 for n in range(1, 5)]  # after steps 1..4: 0.775 ... 0.1
    assert [lr / lrs[0] for lr in lrs] == pytest.approx([f / factors[0] for f in factors], rel=1e-9)


def test_cooldown_pool_is_exactly_the_unseen_windows(tmp_path):
    opendv = _store(tmp_path / "opendv", 4, 14, 10.0, 0)
    nuplan = _store(tmp_path / "nuplan", 3, 12, 10.0, 1)
    train_video(tmp_path / "pre", opendv, steps=5, batch_size=4, stride=5, seed=11, **KW)
    state = read_checkpoint(list_checkpoints(tmp_path / "pre")[-1])
    first = VideoWindowDataset(TokenStore(opendv), 2, 5)
    seen = set(np.concatenate([StepBatchSampler(len(first), 4, 11, 5).batch(k) for k in range(5)]).tolist())
    mixed, info = _cooldown_mix(first, opendv, [TokenStore(nuplan)], [0.5, 0.5], total=40, seed=3, frames=2, init_state=state)
    drawn = {int(w) for s, w in zip(mixed.mix.source_ids, mixed.mix.window_ids) if s == 0}
    assert len(seen) == 20 and drawn and not (drawn & seen)  # only windows the pretraining never drew
    assert drawn == set(range(len(first))) - seen  # 16 unseen, 20 wanted: all of them (plus repeats)
    assert info["pretraining_windows_available"] == 16


def test_init_from_loads_weights_and_moments_but_not_the_schedule(tmp_path):
    opendv = _store(tmp_path / "opendv", 2, 14, 10.0, 0)
    train_video(tmp_path / "pre", opendv, steps=2, batch_size=2, stride=5, seed=1, **KW)
    ckpt = list_checkpoints(tmp_path / "pre")[-1]
    pre = read_checkpoint(ckpt)
    # zero steps of cool-down would change nothing; one step must start from the pretraining moments
    train_video(tmp_path / "cool", opendv, steps=1, batch_size=2, stride=5, seed=1, warmup_frac=0.0,
                init_from=ckpt, **KW)
    cool = read_checkpoint(list_checkpoints(tmp_path / "cool")[-1])
    step_pre = pre["optimizer_states"][0]["state"][0]["step"]
    step_cool = cool["optimizer_states"][0]["state"][0]["step"]
    assert float(step_cool) == float(step_pre) + 1  # AdamW's bias-correction step carried over
    assert cool["global_step"] == 1
    with pytest.raises(ValueError, match="not a vavam training checkpoint"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "bad.ckpt")
        train_video(tmp_path / "x", opendv, steps=1, init_from=tmp_path / "bad.ckpt", **KW)


def test_mix_refuses_a_store_without_a_single_frame_rate(tmp_path):
    """A store whose manifest records no rate (fps null) gives no 0.5 s stride: --mix refuses it by name."""
    from types import SimpleNamespace

    from vavam.train.video import _store_stride

    assert _store_stride(SimpleNamespace(fps=10.0, root=tmp_path)) == 5
    assert _store_stride(SimpleNamespace(fps=2.0, root=tmp_path)) == 1
    with pytest.raises(ValueError, match=f"{tmp_path}: the token store records no single frame rate"):
        _store_stride(SimpleNamespace(fps=None, root=tmp_path))


def test_cooldown_keeps_its_own_weight_decay_and_lr(tmp_path):
    """--init-from brings the pretraining's AdamW moments, not its hyper-parameters: the cool-down's own
    weight decay and learning rate are the ones its optimiser uses (and the ones run_settings.json records)."""
    opendv = _store(tmp_path / "opendv", 2, 14, 10.0, 0)
    train_video(tmp_path / "pre", opendv, steps=2, batch_size=2, stride=5, seed=1, weight_decay=1e-7, **KW)
    ckpt = list_checkpoints(tmp_path / "pre")[-1]
    train_video(tmp_path / "cool", opendv, steps=1, batch_size=2, stride=5, seed=1, warmup_frac=0.0, drop_frac=0.0,
                init_from=ckpt, **dict(KW, lr=0.02), weight_decay=0.3)
    groups = read_checkpoint(list_checkpoints(tmp_path / "cool")[-1])["optimizer_states"][0]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.3] * len(groups)
    assert [g["lr"] for g in groups] == pytest.approx([0.02 / g["width_mult"] for g in groups])
    assert [g["initial_lr"] for g in groups] == pytest.approx([0.02 / g["width_mult"] for g in groups])


def test_init_from_refuses_model_options_it_would_ignore(tmp_path):
    """The cool-down continues the pretrained VaViM as it is: a --num-frames, --width or --init-std that differs
    from it used to be ignored silently; it is refused by name before anything is written."""
    opendv = _store(tmp_path / "opendv", 2, 14, 10.0, 0)
    train_video(tmp_path / "pre", opendv, steps=1, batch_size=2, stride=5, seed=1, **KW)
    ckpt = list_checkpoints(tmp_path / "pre")[-1]
    base = dict(KW, num_frames=None)
    for option, match in (({"num_frames": 3}, r"--num-frames 3: .* as it is \(num frames 2\); leave --num-frames out"),
                          ({"width": 96}, r"--width 96: .*\(width 64\); leave --width out"),
                          ({"init_std": 0.5}, r"--init-std 0.5: .*leave --init-std out")):
        with pytest.raises(ValueError, match=match):
            train_video(tmp_path / "cool", opendv, steps=1, batch_size=2, stride=5, init_from=ckpt,
                        **{**base, **option})
        assert not (tmp_path / "cool").exists()
    same = train_video(tmp_path / "cool", opendv, steps=1, batch_size=2, stride=5, init_from=ckpt,
                       **dict(base, num_frames=2))
    assert same["config"]["num_frames"] == 2
