"""Regression tests for bugs found in the probe and video-quality evaluations (each failed before its fix)."""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_probe import world  # noqa: F401 - the module-scoped 2-scene world export (a fixture)

from vavam.eval.probe import MemoryBuilder
from vavam.eval.probe_data import ProbeDataError


def test_depth_memory_does_not_depend_on_the_batch_size():
    """Depth bins (the rare-label "classes" of the patch sampling) were min-max normalised over each added batch, so
    the memory, and the probe's numbers, changed with ``batch_size``; they are now normalised per image."""
    g = torch.Generator().manual_seed(1)
    feats = torch.randn(6, 4, 4, 8, generator=g)  # [N, h, w, d]: 16 patches per image, 3 kept
    depth = torch.rand(6, 16, 16, generator=g) * 10 + torch.arange(6.0)[:, None, None] * 5  # [N, H, W], other ranges

    def build(batch_size: int):
        builder = MemoryBuilder("depth", patches_per_image=3, seed=0)
        for i in range(0, 6, batch_size):
            builder.add(feats[i : i + batch_size], depth[i : i + batch_size])
        return builder.build()

    one, all_at_once = build(1), build(6)
    assert torch.equal(one.features, all_at_once.features)
    assert torch.equal(one.values, all_at_once.values)
    assert torch.equal(build(4).values, one.values)


def test_world_window_longer_than_every_scene_names_the_data(world):
    """A window longer than every scene gave an empty reader; the probe then failed with "MemoryBuilder: no memory
    image was added", naming neither the data nor the window."""
    from vavam.eval.probe_data import WorldProbeData

    with pytest.raises(ProbeDataError, match=r"no scene of split 'train' holds a window of 9 frames 1 apart \(9 "
                                             r"frames; the longest scene has 6\)") as err:
        WorldProbeData(world, "train", "segmentation", window=9, frame_step=1)
    assert str(world) in str(err.value)
    assert len(WorldProbeData(world, "train", "segmentation", window=6, sample_step=1)) == 1


def test_read_windows_holds_only_the_frames_of_overlapping_windows(monkeypatch):
    """read_windows decoded every planned frame of a scene before yielding its first window: a long video or image
    folder with many windows held them all (gigabytes at 288x512). Frames are now let go once no window needs them,
    and the batches are unchanged."""
    import vavam.data.frames as frames_module
    from vavam.eval.video_quality import plan_windows, read_windows

    made: list[weakref.ref] = []

    def fake_preprocess(image: np.ndarray, size=None, where: str = "") -> torch.Tensor:
        frame = torch.full((3, 2, 2), float(image[0, 0, 0]))  # [3, H, W]: the value is the frame index
        made.append(weakref.ref(frame))
        return frame

    monkeypatch.setattr(frames_module, "read_image", lambda path: np.full((2, 2, 3), int(path), dtype=np.int64))
    monkeypatch.setattr(frames_module, "preprocess_frame", fake_preprocess)
    source = SimpleNamespace(name="long", kind="images", files=[str(i) for i in range(400)])
    length, step = 4, 2
    plan = plan_windows({"long": 400}, 30, span=(length - 1) * step + 1, stride=5, seed=0)
    held, windows = [], []
    for batch in read_windows([source], plan, length, step, (2, 2), batch_size=1):  # [1, length, 3, H, W]
        gc.collect()
        held.append(sum(ref() is not None for ref in made))
        windows.append(batch[0, :, 0, 0, 0].long().tolist())
    assert windows == [[s + i * step for i in range(length)] for _, s in plan]  # every window, in order, aligned
    assert max(held) <= 2 * (length - 1) * step + 1  # not the ~120 planned frames


@pytest.fixture(scope="module")
def quality_assets(world, tmp_path_factory):
    import vavam
    from vavam.tokenizer import save_tokenizer
    from vavam.video import save_video_model

    root = tmp_path_factory.mktemp("mends_quality")
    torch.manual_seed(0)
    save_video_model(vavam.build_model(vavam.presets.vavim_tiny()).eval(), root / "vim")  # 4 frames of 4x6 tokens
    save_tokenizer(vavam.build_model(vavam.presets.vq_tiny()).eval(), root / "tok")  # 32x48 -> 4x6
    return root


def test_quality_report_states_the_rank_deficiency_of_few_windows(tmp_path):
    """With fewer windows than feature dimensions the covariances are rank-deficient and FD is biased upward;
    eval_quality printed that warning and stored it in evaluation.json, but the report (report.md / .html) beside
    the numbers did not say so."""
    from vavam.eval.quality import rank_deficiency
    from vavam.eval.video_quality import QualityResult, save_quality_report

    result = QualityResult(context=2, horizon=2, reference="future", extractor="vq", description="VQ features",
                           comparable_to_published=False, windows=4, feature_dim=128, fd_generated=[1.0, 2.0],
                           fd_reconstruction=[0.5, 0.6], fd_copy_last=[1.5, 2.5], fd_generated_all=1.5,
                           fd_reconstruction_all=0.55, fd_copy_last_all=2.0)
    why = rank_deficiency(result.windows, result.feature_dim)
    save_quality_report(result, tmp_path, {"warnings": [why]})
    report = (tmp_path / "report.md").read_text()
    assert "Warnings" in report and why in report
    assert "4 windows for 128-d features: the covariances are rank-deficient" in (tmp_path / "report.html").read_text()


def test_quality_says_when_planned_windows_could_not_be_read(world, quality_assets, monkeypatch):
    """read_windows skips a window whose video ends before its declared length; the evaluation then ran on fewer
    windows than planned without a word (the "only N windows fit" warning counts planned windows)."""
    import vavam.eval.video_quality as vq

    real = vq.read_windows

    def short_video(sources, plan, length, step, size, batch_size):  # the last planned window is past the end
        return real(sources, plan[:-1], length, step, size, batch_size)

    monkeypatch.setattr(vq, "read_windows", short_video)
    out = quality_assets / "short"
    summary = vq.eval_quality(quality_assets / "vim", quality_assets / "tok", out, world, split="all",
                              windows=3, context=2, horizon=2, stride=1, examples=0, progress=False)
    assert summary["windows"] == 2
    assert "1 of the 3 planned windows could not be read" in " ".join(summary["warnings"])
    assert "1 of the 3 planned windows could not be read" in (out / "report.md").read_text()


def test_dense_prediction_works_in_bounded_chunks(monkeypatch):
    """predict_dense gathered the neighbours' values [Q*h*w, k, C] and upsampled [Q, C, H, W] for all queries at
    once: the model-agnostic probe() on a dataset's features needed several times their size (GBs). It now goes
    image chunk by image chunk, with the same prediction."""
    import vavam.eval.probe_transfer as transfer
    from vavam.eval.probe import build_index, predict_dense

    g = torch.Generator().manual_seed(0)
    builder = MemoryBuilder("segmentation", num_classes=5, patches_per_image=4, seed=0)
    builder.add(torch.randn(6, 2, 3, 8, generator=g), torch.randint(0, 5, (6, 8, 12), generator=g))
    memory = builder.build()
    index = build_index(memory, backend="torch")
    queries = torch.randn(7, 2, 3, 8, generator=g)  # [Q, h, w, d]
    whole = torch.cat([predict_dense(queries[i : i + 1], memory, index, (8, 12), k=5) for i in range(7)])
    rows: list[int] = []
    real = transfer.transfer_labels

    def counting(sims, idx, values, temperature=0.02):
        rows.append(int(sims.shape[0]))
        return real(sims, idx, values, temperature)

    monkeypatch.setattr(transfer, "transfer_labels", counting)
    per_image = 2 * 3 * 5 * 5 + 5 * 8 * 12  # h w k C + C H W
    monkeypatch.setattr(transfer, "PREDICT_CHUNK_ELEMENTS", 2 * per_image, raising=False)
    pred = predict_dense(queries, memory, index, (8, 12), k=5)  # [Q, H, W]
    assert torch.equal(pred, whole)
    assert rows == [12, 12, 12, 6]  # two images (2 x 6 patches) at a time


def test_sampled_quality_generation_does_not_depend_on_the_batch_size():
    """eval quality --top-k 5 drew every window of a batch from one generator, so a window's generated frames (and
    the Fréchet distances) changed with --batch-size; each window now draws from a generator seeded by (seed, its
    index)."""
    import vavam
    from vavam.eval.video_quality import _as_generator

    torch.manual_seed(0)
    vim = vavam.build_model(vavam.presets.vavim_tiny()).eval()
    ctx = torch.randint(0, 1024, (5, 2, 4, 6))  # [N, T0, h, w]
    at_once = _as_generator(vim, 1.0, 5, seed=3)(ctx, 2)
    run = _as_generator(vim, 1.0, 5, seed=3)
    one_by_one = torch.cat([run(ctx[i : i + 1], 2) for i in range(5)])
    pairs = _as_generator(vim, 1.0, 5, seed=3)
    in_pairs = torch.cat([pairs(ctx[:2], 2), pairs(ctx[2:4], 2), pairs(ctx[4:], 2)])
    assert torch.equal(at_once, one_by_one) and torch.equal(at_once, in_pairs)
    assert not torch.equal(at_once, _as_generator(vim, 1.0, 5, seed=4)(ctx, 2))  # the seed still matters


@pytest.mark.parametrize("dataset, flags, match", [
    ("cityscapes", {"frame_step": 5}, "--frame-step / --sample-step apply to world and kitti-step"),
    ("cityscapes", {"sample_step": 2}, "--frame-step / --sample-step apply to world and kitti-step"),
    ("cityscapes", {"image_height": 96, "image_width": 160}, "--image-height / --image-width apply to world"),
    ("kitti-step", {"image_height": 96, "image_width": 160}, "kitti-step images are cropped and resized to 288x512"),
])
def test_probe_flags_a_real_dataset_would_ignore_are_refused(tmp_path, dataset, flags, match):
    """They were silently ignored (real images take the reference's fixed geometry); refused before any loading."""
    from vavam.eval.probe import eval_probe

    with pytest.raises(ValueError, match=match):
        eval_probe(tmp_path / "no-vim", tmp_path / "no-tok", tmp_path / "out", dataset=dataset, data=tmp_path,
                   progress=False, **flags)
