"""Models record the token grid they were trained on, and token stores of the transposed grid (the same number of
tokens per frame, which is all the models themselves record) are refused wherever a model meets a store."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vavam
from vavam import io
from vavam.commands import common as C
from vavam.data.tokens import TokenStoreWriter
from vavam.train.resume import list_checkpoints
from vavam.train.video import train_video

KW = dict(preset="vavim_tiny", num_frames=2, lr=0.01, progress=False)


def _store(root, grid=(2, 3), scenes=2, frames=8, seed=0):
    rng = np.random.default_rng(seed)
    w = TokenStoreWriter(root, grid, codebook_size=16, tokenizer={"name": "rand"}, fps=2.0, resume=False)
    for k in range(scenes):
        w.write_scene(f"s{k}", rng.integers(0, 16, size=(frames, *grid), dtype=np.uint16),
                      np.arange(frames, dtype=np.int64) * 500_000)
    return root


def _vim_folder(tmp_path, grid=(2, 3), meta=None):
    """A random VaViM of ``grid[0] * grid[1]`` tokens per frame, saved with ``meta``."""
    from vavam.video import save_video_model

    torch.manual_seed(0)
    config = vavam.presets.vavim_tiny()
    import dataclasses

    vim = vavam.build_model(dataclasses.replace(config, tokens_per_frame=grid[0] * grid[1], vocab_size=17))
    return save_video_model(vim, tmp_path / "vim", meta={"token_grid": list(grid)} if meta is None else meta)


def test_a_trained_vavim_records_its_grid_and_a_transposed_validation_store_is_refused(tmp_path):
    store = _store(tmp_path / "a")
    train_video(tmp_path / "run", store, steps=1, batch_size=2, stride=1, seed=0, **KW)
    assert io.recorded_grid(tmp_path / "run" / "model") == (2, 3)
    flipped = _store(tmp_path / "b", grid=(3, 2))
    with pytest.raises(ValueError, match=r"--val-tokens .* its token grid is 3x2, the model was trained on 2x3"):
        train_video(tmp_path / "run2", store, val_tokens=[flipped], steps=1, batch_size=2, stride=1, seed=0, **KW)


def test_a_cooldown_refuses_a_store_of_the_transposed_grid(tmp_path):
    store = _store(tmp_path / "a")
    train_video(tmp_path / "pre", store, steps=1, batch_size=2, stride=1, seed=0, **KW)
    ckpt = list_checkpoints(tmp_path / "pre")[-1]
    with pytest.raises(ValueError, match=r"--tokens .* its token grid is 3x2, the model was trained on 2x3"):
        train_video(tmp_path / "cool", _store(tmp_path / "b", grid=(3, 2)), steps=1, batch_size=2, stride=1, seed=0,
                    init_from=ckpt, **KW)
    # the same grid continues
    train_video(tmp_path / "cool2", _store(tmp_path / "c", seed=1), steps=1, batch_size=2, stride=1, seed=0,
                init_from=ckpt, **KW)


def test_a_resume_of_a_run_recorded_without_the_grid_is_not_refused_for_it(tmp_path):
    from vavam.train.resume import RUN_SETTINGS

    store = _store(tmp_path / "a")
    train_video(tmp_path / "run", store, steps=1, batch_size=2, stride=1, seed=0, ckpt_every=1, **KW)
    settings = io.read_json(tmp_path / "run" / RUN_SETTINGS)
    del settings["module"]["data"]["grid"]  # as a run of the version before wrote it
    io.atomic_write_json(tmp_path / "run" / RUN_SETTINGS, settings)
    out = train_video(tmp_path / "run", store, steps=2, batch_size=2, stride=1, seed=0, ckpt_every=1, resume=True,
                      **KW)
    assert out["resumed_from"] is not None and io.recorded_grid(tmp_path / "run" / "model") == (2, 3)


def test_action_training_refuses_a_store_of_the_transposed_grid(tmp_path):
    from vavam.train.action import train_action

    vim = _vim_folder(tmp_path)
    flipped = _store(tmp_path / "b", grid=(3, 2))
    with pytest.raises(ValueError, match=r"--tokens .* its token grid is 3x2, the model was trained on 2x3"):
        train_action(tmp_path / "act", vim, tmp_path / "records.npz", flipped, preset="vavam_tiny", steps=1,
                     progress=False)


def test_eval_nexttoken_refuses_a_store_of_the_transposed_grid(tmp_path):
    from vavam.eval.nexttoken import eval_nexttoken

    vim = _vim_folder(tmp_path)
    with pytest.raises(ValueError, match=r"its token grid is 3x2, the model was trained on 2x3"):
        eval_nexttoken(vim, [_store(tmp_path / "b", grid=(3, 2))], out=tmp_path / "ev", progress=False)


def test_the_commands_refuse_a_transposed_store_window_and_read_frames_at_the_trained_grid(tmp_path):
    store = _store(tmp_path / "b", grid=(3, 2))
    with pytest.raises(C.CommandError, match="token grid 3x2, but the model was trained on 2x3"):
        C.read_store_window(store, "s0", 0, 2, 2, 6, model_grid=(2, 3))
    clip, _ = C.read_store_window(store, "s0", 0, 2, 2, 6)  # unknown grid: the count alone is checked
    assert tuple(clip.tokens.shape) == (2, 3, 2)
    # frames are sized for the trained grid (without it, the grid of 6 tokens nearest 16:9 is 2x3: 32x48 frames)
    from PIL import Image

    for k in range(2):
        Image.fromarray(np.zeros((48, 32, 3), np.uint8)).save(tmp_path / f"f{k}.png")
    clip = C.read_frames([str(tmp_path / "f0.png"), str(tmp_path / "f1.png")], 0, 2, 2, 6, 16, "", model_grid=(3, 2))
    assert tuple(clip.images.shape[-2:]) == (48, 32)


def test_recorded_grid_is_none_for_folders_that_do_not_record_a_valid_one(tmp_path):
    assert io.recorded_grid(_vim_folder(tmp_path / "a", meta={})) is None
    assert io.recorded_grid(_vim_folder(tmp_path / "b", meta={"token_grid": [2, "3"]})) is None
    assert io.recorded_grid(tmp_path / "nothing") is None
    assert io.recorded_grid(_vim_folder(tmp_path / "c", grid=(3, 2))) == (3, 2)


def test_the_server_sizes_images_for_the_recorded_grid_and_refuses_a_transposed_size(tmp_path):
    from vavam.action.convert import save_action_model
    from vavam.serve.server import load_agent
    from vavam.tokenizer.loading import save_tokenizer

    torch.manual_seed(0)
    tok = save_tokenizer(vavam.build_model(vavam.presets.vq_tiny()), tmp_path / "tok",
                         meta={"training": {"image_size": [32, 48]}})  # 4 x 6 tokens at downsampling 8
    vam = vavam.build_model(vavam.presets.vavam_tiny())  # 24 tokens per frame
    ckpt = save_action_model(vam, tmp_path / "vam", meta={"tokenizer": str(tok), "token_grid": [6, 4]})
    assert load_agent(ckpt).options.image_size == (48, 32)  # the recorded grid, not the tokenizer's size
    with pytest.raises(ValueError, match="give a 4x6 token grid, but .* was trained on 6x4"):
        load_agent(ckpt, image_size=(32, 48))
    plain = save_action_model(vam, tmp_path / "plain", meta={"tokenizer": str(tok)})
    assert load_agent(plain).options.image_size == (32, 48)  # no grid recorded: the tokenizer's size
