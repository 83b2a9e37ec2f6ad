"""Validation split over ranks: shards cover the set once, padding counts for nothing, and the logged value is
the mean over the whole set (the 2-process runs of test_distributed.py check it end to end)."""

from __future__ import annotations

import math

import pytest
import torch
from test_action_training import _frozen_video, _write_scenes
from test_video_training import _moving_store

import vavam
from vavam.train.validation import IndexedItems, ShardSampler, ValidationSums, sharded_loader


@pytest.mark.parametrize("n", [1, 2, 5, 9, 12])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 16])
def test_shards_cover_every_item_once_and_have_equal_lengths(n, world):
    shards = [list(ShardSampler(n, rank=r, world=world)) for r in range(world)]
    assert {len(s) for s in shards} == {math.ceil(n / world)}  # the same number of passes on every rank
    items = IndexedItems([f"item{i}" for i in range(n)])
    real = [items[p][0] for s in shards for p in s if items[p][0] >= 0]
    assert real == list(range(n))  # in order, each once
    for s in shards:
        for p in s:
            index, item = items[p]
            assert item == (f"item{index}" if index >= 0 else f"item{p % n}")
    with pytest.raises(ValueError, match="at least one item"):
        ShardSampler(0)


def test_sums_over_shards_give_the_mean_of_the_whole_set():
    losses = torch.tensor([0.5, 1.25, 3.0, 0.125, 2.0, 7.5, 0.25, 1.0, 4.0], dtype=torch.float32)  # 9 items
    world, per = 4, 3
    pairs = torch.zeros(2, dtype=torch.float64)
    for rank in range(world):  # what all_reduce adds up
        sums = ValidationSums()
        positions = list(ShardSampler(len(losses), rank=rank, world=world))
        assert len(positions) == per
        indices = torch.tensor([p if p < len(losses) else -1 for p in positions])
        batch = torch.where(indices >= 0, losses[indices.clamp(min=0)], torch.tensor(1e6))  # padding: huge losses
        sums.add(0, batch[:2], indices[:2])
        sums.add(0, batch[2:], indices[2:])
        pairs += sums.sums[0]
    assert pairs[1] == 9
    assert float(pairs[0] / pairs[1]) == pytest.approx(float(losses.double().mean()), rel=1e-15)
    # one process: no all_reduce; a loader that had no batch reads NaN
    sums = ValidationSums()
    sums.add(0, losses, torch.arange(9))
    assert sums.means(2, torch.device("cpu"))[0] == pytest.approx(float(losses.double().mean()), rel=1e-15)
    assert math.isnan(sums.means(2, torch.device("cpu"))[1])
    with pytest.raises(ValueError, match="differ"):
        sums.add(0, losses, torch.arange(8))


def test_sharded_loader_yields_indices_and_the_collated_items():
    loader = sharded_loader([torch.full((2,), float(i)) for i in range(5)], batch_size=2)
    batches = list(loader)
    assert [b[0].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    torch.testing.assert_close(batches[1][1], torch.tensor([[2.0, 2.0], [3.0, 3.0]]))


def test_video_validation_logs_the_mean_cross_entropy_of_the_windows(tmp_path):
    """The logged val/loss is the mean over the validation windows of each one's next-token cross-entropy,
    computed here from the saved model: batches of 2 over 9 windows (the last batch holds one)."""
    from vavam.train.video import VideoWindowDataset, next_token_loss, train_video
    from vavam.data.tokens import TokenStore

    _moving_store(tmp_path / "tok", num_scenes=2, num_frames=6, grid=(2, 3), codes=16)
    _moving_store(tmp_path / "val", num_scenes=3, num_frames=4, grid=(2, 3), codes=16, seed=1)
    summary = train_video(tmp_path / "run", tokens=tmp_path / "tok", val_tokens=[tmp_path / "val"], val_every=2,
                          preset="vavim_tiny", steps=2, batch_size=2, num_frames=2, progress=False, seed=0)
    model = vavam.load_video_model(tmp_path / "run" / "model").eval()
    windows = VideoWindowDataset(TokenStore(tmp_path / "val"), 2, 1)
    assert len(windows) == 9
    with torch.no_grad():
        batch = torch.stack([torch.as_tensor(windows[i]) for i in range(9)]).long()
        expected = next_token_loss(model(batch), batch, per_window=True)  # [9]
        assert float(expected.mean()) == pytest.approx(float(next_token_loss(model(batch), batch)), rel=1e-6)
    assert summary["metrics"]["val/loss"] == pytest.approx(float(expected.double().mean()), rel=1e-5)


def test_action_validation_noise_belongs_to_the_window_not_the_batch(tmp_path):
    """A validation window's flow loss is the same in a batch of 4 as in two batches of 2 (noise and flow
    times are drawn per window index), and differs between windows of identical data (different draws)."""
    from vavam.action import VideoActionModel
    from vavam.train.action import ActionLitModule, _collate, make_window_dataset

    _write_scenes(tmp_path, num_scenes=2, num_frames=12)
    vim = vavam.load_video_model(_frozen_video(tmp_path))
    config = vavam.presets.vavam_tiny()
    torch.manual_seed(0)
    model = VideoActionModel(config)
    model.video.load_state_dict(vim.state_dict())
    module = ActionLitModule(model, seed=7).eval()
    windows = make_window_dataset(tmp_path / "records.npz", tmp_path / "tok", config.video.num_frames)
    batch = _collate([windows[i] for i in range(4)])
    with torch.no_grad():
        whole = module.validation_losses(batch, torch.arange(4))
        halves = [module.validation_losses(_collate([windows[i] for i in range(a, a + 2)]), torch.arange(a, a + 2))
                  for a in (0, 2)]
        again = module.validation_losses(batch, torch.arange(4))
        other = module.validation_losses(batch, torch.arange(10, 14))
    assert whole.shape == (4,)
    torch.testing.assert_close(torch.cat(halves), whole, rtol=1e-5, atol=0)
    torch.testing.assert_close(again, whole, rtol=0, atol=0)  # the same draws at every validation
    assert not torch.allclose(other, whole)
