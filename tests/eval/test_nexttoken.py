"""Next-token evaluation: argument checks, streaming frequency baselines (same counts, bounded memory) and
errors that name the store or dataset at fault."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch

from vavam.data.tokens import TokenStore, TokenStoreWriter
from vavam.eval import nexttoken
from vavam.eval.nexttoken import FrequencyBaseline, eval_nexttoken, evaluate_next_token, store_windows

VOCAB = 9


class _Uniform(torch.nn.Module):
    """A video model with uniform logits over ``VOCAB`` codes."""

    class config:  # noqa: N801 - mimics a model's config attribute
        vocab_size = VOCAB

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.zeros(tokens.shape[0], tokens[0].numel(), VOCAB)


def _store(root, scenes=((7, 0), (5, 1), (11, 2)), grid=(2, 3), high=VOCAB - 1):
    """A token store of ``(frames, seed)`` scenes with ids in ``[0, high)``."""
    writer = TokenStoreWriter(root, grid, codebook_size=high, tokenizer={"name": "rand"}, fps=2.0, resume=False)
    for k, (frames, seed) in enumerate(scenes):
        tokens = np.random.default_rng(seed).integers(0, high, size=(frames, *grid), dtype=np.uint16)
        writer.write_scene(f"s{k}", tokens, np.arange(frames, dtype=np.int64) * 500_000)
    return TokenStore(root)


def _reference_counts(frames: np.ndarray, per_position: bool) -> np.ndarray:
    """Add-one smoothed counts as the in-memory implementation computed them (float64 [P, V])."""
    flat = frames.reshape(len(frames), -1).astype(np.int64)
    positions = flat.shape[1] if per_position else 1
    counts = np.ones((positions, VOCAB))
    pos = np.broadcast_to(np.arange(flat.shape[1]), flat.shape) if per_position else np.zeros_like(flat)
    np.add.at(counts, (pos.reshape(-1), flat.reshape(-1)), 1.0)
    return counts


def test_store_fit_is_streamed_and_equal_to_the_in_memory_counts(tmp_path, monkeypatch):
    store = _store(tmp_path / "train")
    frames = np.concatenate([np.asarray(store.tokens(s)) for s in store.scenes])
    for per_position in (False, True):
        streamed = FrequencyBaseline(VOCAB, per_position).fit_store(TokenStore(store.root))
        in_memory = FrequencyBaseline(VOCAB, per_position).fit(torch.from_numpy(frames.astype(np.int64)))
        reference = _reference_counts(frames, per_position)
        assert streamed.counts.dtype == torch.float64
        np.testing.assert_array_equal(streamed.counts.numpy(), reference)
        np.testing.assert_array_equal(in_memory.counts.numpy(), reference)
    windows = {"val": store_windows(store, 2)}
    by_store = evaluate_next_token(_Uniform(), windows, TokenStore(store.root))
    by_tensor = evaluate_next_token(_Uniform(), windows, torch.from_numpy(frames.astype(np.int64)))
    assert by_store == by_tensor and set(by_store["val"]) == {"model", "unigram frequency", "per-position frequency"}

    # memory: a split of 20 000 frames is counted a chunk at a time, never as one int64 copy
    big = _store(tmp_path / "big", scenes=((5000, 3), (5000, 4), (5000, 5), (5000, 6)), grid=(1, 2))
    monkeypatch.setattr(nexttoken, "_COUNT_CHUNK", 1000)
    FrequencyBaseline(VOCAB, per_position=True).fit_store(big)  # warm-up: a first call's imports are traced too
    tracemalloc.start()
    FrequencyBaseline(VOCAB, per_position=True).fit_store(big)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 40_000, f"{peak} bytes traced for 40 000 tokens (a whole-split int64 copy is 320 000)"


def test_empty_inputs_and_non_positive_limits_are_refused_by_name(tmp_path):
    with pytest.raises(ValueError, match="tokens: no training tokens.*empty"):
        FrequencyBaseline(4, per_position=False).fit(torch.zeros(0, 1, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="vocab_size must be a positive integer"):
        FrequencyBaseline(0, per_position=False)
    with pytest.raises(ValueError, match="dataset 'val': needs at least one window"):
        evaluate_next_token(_Uniform(), {"val": torch.zeros(0, 2, 1, 2, dtype=torch.long)})
    windows = {"val": torch.zeros(1, 2, 1, 2, dtype=torch.long)}
    with pytest.raises(ValueError, match="batch_size must be a positive integer, got 0"):
        evaluate_next_token(_Uniform(), windows, batch_size=0)
    store = _store(tmp_path / "val")
    for limit in (0, -1):
        with pytest.raises(ValueError, match=f"limit must be a positive integer, got {limit}"):
            store_windows(store, 2, limit=limit)
    # the command checks its flags before loading the model (the checkpoint here does not exist)
    for flags, match in (({"limit": 0}, "--limit must be"), ({"batch_size": 0}, "--batch-size must be"),
                         ({"stride": 0}, "--stride must be")):
        with pytest.raises(ValueError, match=match):
            eval_nexttoken(tmp_path / "no_model", [store.root], tmp_path / "out", progress=False, **flags)


def test_out_of_vocabulary_tokens_name_the_store_scene_or_dataset(tmp_path):
    wide = _store(tmp_path / "wide", high=VOCAB + 20)  # ids up to 28 for a 9-code model
    windows = {"val": torch.zeros(1, 2, 2, 3, dtype=torch.long)}
    with pytest.raises(ValueError, match=rf"{wide.root} \(scene 's0'\): token ids outside \[0, {VOCAB}\)"):
        evaluate_next_token(_Uniform(), windows, wide)
    with pytest.raises(ValueError, match=r"--train-tokens x \(scene 's0'\): token ids outside"):
        evaluate_next_token(_Uniform(), windows, wide, train_name="--train-tokens x")
    with pytest.raises(ValueError, match=rf"dataset 'val' ids must lie in \[0, {VOCAB}\)"):
        evaluate_next_token(_Uniform(), {"val": torch.full((1, 2, 2, 3), VOCAB)})
    fitted = FrequencyBaseline(VOCAB, per_position=True).fit(torch.zeros(3, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="heldout: frames of 1x2 tokens, the per-position baseline was fitted on 6"):
        fitted.cross_entropy(torch.zeros(1, 2, 1, 2, dtype=torch.long), "heldout")


def test_per_position_baseline_refuses_a_transposed_grid():
    # 2x3 and 3x2 frames have the same number of positions, but position r*w + c is another pixel
    fitted = FrequencyBaseline(VOCAB, per_position=True).fit(torch.zeros(3, 2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="heldout: frames of 3x2 tokens, the per-position baseline was fitted on "
                                         "frames of 2x3 tokens"):
        fitted.cross_entropy(torch.zeros(1, 2, 3, 2, dtype=torch.long), "heldout")
    unigram = FrequencyBaseline(VOCAB, per_position=False).fit(torch.zeros(3, 2, 3, dtype=torch.long))
    assert unigram.cross_entropy(torch.zeros(1, 2, 3, 2, dtype=torch.long))[1] == 11  # pooled: any grid


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_baselines_score_windows_on_the_model_device():
    # `vavam eval nexttoken --device cuda --train-tokens ...` moves the windows to the GPU; the counts stay on the CPU
    frames = torch.from_numpy(np.random.default_rng(0).integers(0, VOCAB, size=(6, 2, 3)))
    windows = torch.from_numpy(np.random.default_rng(1).integers(0, VOCAB, size=(3, 2, 2, 3)))

    class OnDevice(_Uniform):
        def forward(self, tokens):
            return super().forward(tokens).to(tokens.device)

    on_cpu = evaluate_next_token(OnDevice(), {"val": windows}, frames)
    on_gpu = evaluate_next_token(OnDevice(), {"val": windows.cuda()}, frames)
    for row in ("unigram frequency", "per-position frequency"):
        assert on_gpu["val"][row]["cross_entropy"] == pytest.approx(on_cpu["val"][row]["cross_entropy"])


def test_windows_across_a_missing_frame_are_left_out_and_counted(tmp_path):
    """Non-overlapping windows tile each scene; one whose frames are not evenly spaced in time (a frame missing
    from the scene) leaves its place empty, and the evaluation says how many it left out."""
    import json

    import vavam
    from vavam import presets
    from vavam.video import save_video_model

    writer = TokenStoreWriter(tmp_path / "val", (1, 2), codebook_size=8, tokenizer={"name": "rand"}, fps=2.0,
                              resume=False)
    clock = np.array([i for i in range(13) if i != 5], dtype=np.int64) * 500_000  # 12 frames, 2.5 s missing
    writer.write_scene("gap", np.arange(24, dtype=np.uint16).reshape(12, 1, 2) % 8, clock)
    writer.write_scene("even", np.zeros((12, 1, 2), dtype=np.uint16), np.arange(12, dtype=np.int64) * 500_000)
    store = TokenStore(tmp_path / "val")
    # windows of 3 frames (span 3) start at 0, 3, 6, 9; in "gap" the step from frame 4 lasts 1 s: window 3 goes
    index, left_out = nexttoken.store_window_index(store, 3)
    assert index == [("even", 0), ("even", 3), ("even", 6), ("even", 9), ("gap", 0), ("gap", 6), ("gap", 9)]
    assert left_out == 1
    with pytest.warns(UserWarning, match=r"1 of 8 windows of 3 frames \(stride 1\) span a jump in time"):
        windows = store_windows(store, 3)
    np.testing.assert_array_equal(windows[4:, :, 0, 0], [[0, 2, 4], [12 % 8, 14 % 8, 16 % 8], [18 % 8, 20 % 8, 22 % 8]])

    config = presets.vavim_tiny()
    config = type(config)(**{**config.__dict__, "num_frames": 3, "tokens_per_frame": 2})
    save_video_model(vavam.build_model(config), tmp_path / "vim")
    with pytest.warns(UserWarning, match="span a jump in time"):
        payload = eval_nexttoken(tmp_path / "vim", [store.root], tmp_path / "out", progress=False)
    assert payload["windows_left_out"] == {"val": 1}
    assert payload["datasets"]["val"]["model"]["targets"] == 7 * (3 * 2 - 1)
    assert "val: 1 window(s) left out" in (tmp_path / "out" / "report.md").read_text()
    assert json.loads((tmp_path / "out" / "evaluation.json").read_text())["results"]["windows_left_out"] == {"val": 1}


def test_store_rows_are_named_alike():
    """Stores that all end in tokens/ were named "tokens" and then by their full paths; each row now takes the
    same number of trailing folders, as few as tell them apart."""
    from pathlib import Path

    assert nexttoken.store_labels([Path("/d/a/train/tokens"), Path("/d/a/val/tokens")]) == ["train/tokens",
                                                                                            "val/tokens"]
    assert nexttoken.store_labels([Path("/d/nuplan"), Path("/e/opendv")]) == ["nuplan", "opendv"]
    assert nexttoken.store_labels([Path("/d/x/tokens"), Path("/e/x/tokens")]) == ["d/x/tokens", "e/x/tokens"]
    assert nexttoken.store_labels([Path("/d/x"), Path("/d/x")]) == ["/d/x (1)", "/d/x (2)"]
    assert nexttoken.store_labels([Path("/tokens"), Path("/x/tokens")]) == ["/tokens", "x/tokens"]
