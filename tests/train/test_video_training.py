"""VaViM training learns: on scenes whose frames move predictably, loss drops far below chance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import vavam
from vavam.data.tokens import TokenStore, TokenStoreWriter
from vavam.train.video import VideoWindowDataset, next_token_loss, train_video, video_width_multipliers


def _moving_store(root, num_scenes=6, num_frames=10, grid=(4, 6), codes=32, seed=0):
    """Each scene: a random first frame, then every frame is the previous shifted one column left."""
    rng = np.random.default_rng(seed)
    writer = TokenStoreWriter(root, grid, codebook_size=codes, tokenizer={"name": "moving"}, fps=2.0, resume=False)
    for k in range(num_scenes):
        strip = rng.integers(0, codes, size=(grid[0], grid[1] + num_frames), dtype=np.uint16)
        frames = np.stack([strip[:, t : t + grid[1]] for t in range(num_frames)])  # [T, h, w]
        writer.write_scene(f"s{k}", frames, np.arange(num_frames, dtype=np.int64) * 500_000)
    return TokenStore(root)


def test_next_token_loss_shifts_by_one():
    tokens = torch.tensor([[0, 1, 2, 3]]).view(1, 1, 2, 2)
    logits = torch.full((1, 4, 5), -1e4)
    logits[0, torch.arange(3), torch.tensor([1, 2, 3])] = 0.0  # position i predicts token i+1 exactly
    assert next_token_loss(logits, tokens).item() == pytest.approx(0.0, abs=1e-6)


def test_window_dataset_and_multipliers(tmp_path):
    store = _moving_store(tmp_path / "tok")
    ds = VideoWindowDataset(store, num_frames=4, stride=2)
    assert len(ds) == 6 * (10 - 7 + 1)  # span (4-1)*2+1 = 7 frames
    assert ds[0].shape == (4, 4, 6) and ds[0].dtype == torch.long
    with pytest.raises(ValueError, match="no window"):
        VideoWindowDataset(store, num_frames=11)
    model = vavam.build_model(vavam.presets.vavim_tiny())
    mults = video_width_multipliers(model)
    assert mults and all(v == model.config.width_mult for v in mults.values())
    assert "token_emb.weight" not in mults


@pytest.mark.slow
def test_training_beats_chance_and_saves_loadable_model(tmp_path):
    store = _moving_store(tmp_path / "tok")
    summary = train_video(tmp_path / "run", tmp_path / "tok", preset="vavim_tiny", steps=150, batch_size=8,
                          lr=0.003, num_frames=4, val_tokens=tmp_path / "tok", val_every=150, progress=False)
    chance = math.log(33)
    assert summary["metrics"]["val/loss"] < 0.6 * chance, summary["metrics"]
    model = vavam.load_video_model(tmp_path / "run" / "model")
    batch = VideoWindowDataset(store, 4)[0][None]
    assert next_token_loss(model(batch), batch).item() < 0.6 * chance
