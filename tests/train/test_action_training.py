"""VaVAM training learns: the expert reads the speed of each scene from the (frozen) video model's tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vavam
from vavam.data.records import SceneRecord, save_records
from vavam.data.tokens import TokenStoreWriter
from vavam.data.windows import WindowConfig, WindowIndex
from vavam.train.action import expert_width_multipliers, make_window_dataset, train_action

SPEEDS = (2.0, 5.0, 8.0, 11.0)


def _write_scenes(root, num_scenes=8, num_frames=20, grid=(4, 6), seed=0):
    """Straight drives at constant speed (yaw varies per scene); every token of a scene encodes its speed."""
    rng = np.random.default_rng(seed)
    records, writer = [], TokenStoreWriter(root / "tok", grid, codebook_size=32, tokenizer={"name": "speed"}, fps=2.0,
                                           resume=False)
    for k in range(num_scenes):
        speed, yaw = SPEEDS[k % len(SPEEDS)], rng.uniform(-np.pi, np.pi)
        ts = np.arange(num_frames, dtype=np.int64) * 500_000 + k * 10**9
        dist = speed * 0.5 * np.arange(num_frames)
        trans = np.stack([dist * np.cos(yaw), dist * np.sin(yaw), np.zeros(num_frames)], -1)
        rot = np.tile([np.cos(yaw / 2), 0, 0, np.sin(yaw / 2)], (num_frames, 1))
        records.append(SceneRecord(name=f"s{k}", timestamps=ts, translations=trans, rotations=rot))
        toks = np.full((num_frames, *grid), 4 * (k % len(SPEEDS)), dtype=np.uint16)
        toks += rng.integers(0, 2, size=toks.shape, dtype=np.uint16)  # a little token noise
        writer.write_scene(f"s{k}", toks, ts)
    save_records(root / "records.npz", records)
    return records


def _frozen_video(tmp_path):
    from vavam.video import save_video_model

    torch.manual_seed(0)
    vim = vavam.build_model(vavam.presets.vavim_tiny())
    save_video_model(vim, tmp_path / "vim")
    return tmp_path / "vim"


def test_multipliers_cover_every_expert_matrix():
    model = vavam.build_model(vavam.presets.vavam_tiny())
    mults = expert_width_multipliers(model.expert)
    names = dict(model.expert.named_parameters())
    assert set(mults) <= set(names)
    assert "readout.weight" not in mults and "encoder.command_emb.weight" not in mults


@pytest.mark.slow
def test_action_training_learns_speed(tmp_path):
    _write_scenes(tmp_path)
    vim_dir = _frozen_video(tmp_path)
    ds = make_window_dataset(tmp_path / "records.npz", tmp_path / "tok", context_frames=4)
    item = ds[0]
    assert item["tokens"].shape == (4, 4, 6) and item["positions"].shape == (4, 6, 2)
    summary = train_action(tmp_path / "run", vim_dir, tmp_path / "records.npz", tmp_path / "tok", preset="vavam_tiny",
                           steps=1000, batch_size=16, lr=0.01, val_records=tmp_path / "records.npz",
                           val_tokens=tmp_path / "tok", val_every=500, progress=False)
    vam = vavam.load_action_model(tmp_path / "run" / "model")
    # the frozen VaViM is unchanged by training
    vim = vavam.load_video_model(vim_dir)
    for k, v in vim.state_dict().items():
        assert torch.equal(vam.video.state_dict()[k], v)
    batch = [ds[i] for i in range(0, len(ds), 3)]
    tokens = torch.stack([b["tokens"] for b in batch])
    gt = torch.stack([b["positions"][-1] for b in batch])  # last context frame's future [N, 6, 2]
    cmd = torch.stack([b["commands"][-1] for b in batch])
    g = torch.Generator().manual_seed(1)
    pred = vam.sample_trajectory(tokens, cmd, num_samples=1, generator=g)[:, 0]
    ade = (pred - gt).norm(dim=-1).mean().item()
    # predicting the mean speed for every scene gives ADE = mean |v - 6.5| * mean t = 3.5 * 1.75 = 6.1 m
    assert ade < 2.5, (ade, summary["metrics"])
