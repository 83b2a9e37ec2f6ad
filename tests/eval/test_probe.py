"""Hummingbird probes: metrics by hand, memory sampling, k-NN backends, the label fix, end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vavam.eval.probe import (
    DepthMeter,
    KnnIndex,
    MemoryBank,
    MemoryBuilder,
    SegmentationMeter,
    confusion_matrix,
    depth_bins,
    depth_errors,
    iou_per_class,
    label_histograms,
    mean_iou,
    predict_dense,
    probe,
    select_patches,
    topk_inner_product,
    transfer_labels,
)

# ------------------------------------------------------------------------------------- metrics


def test_confusion_matrix_iou_by_hand():
    gt = torch.tensor([0, 0, 1, 1, 2, 255])
    pred = torch.tensor([0, 1, 1, 1, 0, 2])  # the last pixel is ignored
    cm = confusion_matrix(pred, gt, num_classes=4)
    assert cm.tolist() == [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    iou = iou_per_class(cm)
    assert iou[0].item() == pytest.approx(1 / 3)  # TP 1, FP 1 (gt 2), FN 1 (pred 1)
    assert iou[1].item() == pytest.approx(2 / 3)  # TP 2, FP 1
    assert iou[2].item() == 0.0  # present in the ground truth, never right
    assert math.isnan(iou[3].item())  # in neither: left out of the mean
    assert mean_iou(cm) == pytest.approx((1 / 3 + 2 / 3 + 0) / 3)
    # a class predicted but absent from the ground truth counts with IoU 0
    cm2 = confusion_matrix(torch.tensor([3, 0]), torch.tensor([0, 0]), num_classes=4)
    assert iou_per_class(cm2)[3].item() == 0.0 and mean_iou(cm2) == pytest.approx((0.5 + 0.0) / 2)
    meter = SegmentationMeter(4)
    meter.update(pred.reshape(1, 2, 3), gt.reshape(1, 2, 3))
    res = meter.compute()
    assert res["pixels"] == 5 and res["pixel_accuracy"] == pytest.approx(3 / 5)
    assert res["miou"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="gt"):
        confusion_matrix(torch.tensor([0]), torch.tensor([7]), num_classes=4)


def test_depth_metrics_by_hand():
    gt = torch.tensor([[[1.0, 2.0], [4.0, 8.0]], [[1.0, 2.0], [3.0, 0.0]]])
    pred = torch.tensor([[[1.2, 1.0], [5.0, 8.0]], [[1.0, 2.0], [3.0, 0.0]]])
    e = depth_errors(pred, gt)
    # image 0: ratios 1.2, 2, 1.25, 1 (1.25 is not < 1.25)
    assert e["d1"][0].item() == pytest.approx(0.5)
    assert e["d2"][0].item() == pytest.approx(0.75) and e["d3"][0].item() == pytest.approx(0.75)
    assert e["abs_rel"][0].item() == pytest.approx((0.2 + 0.5 + 0.25 + 0) / 4)
    assert e["sq_rel"][0].item() == pytest.approx((0.04 + 0.5 + 0.25 + 0) / 4)
    assert e["mse"][0].item() == pytest.approx((0.04 + 1 + 1 + 0) / 4)
    # image 1: exact, including a zero ground truth predicted as zero (1e-6 in denominators)
    assert e["d1"][1].item() == 1.0 and e["abs_rel"][1].item() == 0.0 and e["mse"][1].item() == 0.0
    meter = DepthMeter()
    meter.update(pred[:1], gt[:1])
    meter.update(pred[1:], gt[1:])
    res = meter.compute()
    assert res["images"] == 2 and res["d1"] == pytest.approx(0.75)
    assert res["rmse"] == pytest.approx(math.sqrt(0.51 / 2))  # sqrt of the mean per-image MSE
    assert res["abs_rel"] == pytest.approx(0.2375 / 2)


def test_transfer_and_bilinear_upsampling_by_hand():
    w = torch.softmax(torch.tensor([1.0, 0.98]) / 0.02, 0)  # e / (1 + e), 1 / (1 + e)
    out = transfer_labels(torch.tensor([[1.0, 0.98]]), torch.tensor([[0, 1]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    assert torch.allclose(out, w[None]) and out[0, 0].item() == pytest.approx(math.e / (1 + math.e), abs=1e-5)
    # depth: two memory patches (depth 1 and 3) with orthogonal features; a 1x2 query grid copies them,
    # then bilinear upsampling (align_corners=False) to 1x4 pixels gives 1, 1.5, 2.5, 3
    memory = MemoryBank(torch.eye(2), torch.tensor([1.0, 3.0]), "depth", 1)
    index = KnnIndex(memory.features, backend="torch")
    pred = predict_dense(torch.eye(2).reshape(1, 1, 2, 2), memory, index, (1, 4), k=1)
    assert torch.allclose(pred, torch.tensor([[[1.0, 1.5, 2.5, 3.0]]]))


# --------------------------------------------------------------------------- memory + the label fix


def test_histograms_drop_ignore_pixels_instead_of_class_zero():
    labels = torch.tensor([[[1, 255], [255, 2]]])  # one 2x2 patch: two ignore pixels
    ours = label_histograms(labels, (1, 1), num_classes=3)[0, 0, 0]
    assert ours.tolist() == [0.0, 0.25, 0.25]
    reference = label_histograms(labels.masked_fill(labels == 255, 0), (1, 1), num_classes=3)[0, 0, 0]
    assert reference.tolist() == [0.5, 0.25, 0.25]  # the reference's remap makes void vote for class 0
    with pytest.raises(ValueError, match="value 7"):
        label_histograms(torch.tensor([[[7]]]), (1, 1), num_classes=3)
    with pytest.raises(ValueError, match="whole number of patches"):
        label_histograms(torch.zeros(1, 3, 4, dtype=torch.long), (2, 2), num_classes=3)


def test_ignore_fix_changes_the_prediction():
    # memory image: 1x2 grid of 2x2-pixel patches; patch A (feature e0): three void pixels + one of
    # class 1; patch B (feature e1): class 0. A query patch like A must get class 1 (the reference's
    # remap gives A the histogram [0.75, 0.25] and so predicts class 0).
    mem_feats = torch.eye(2).reshape(1, 1, 2, 2)
    mem_labels = torch.tensor([[[255, 255, 0, 0], [255, 1, 0, 0]]])
    query_feats = torch.tensor([1.0, 0.0]).expand(1, 1, 2, 2)
    query_labels = torch.ones(1, 2, 4, dtype=torch.long)
    res = probe(mem_feats, mem_labels, query_feats, query_labels, num_classes=2, k=2, patches_per_image=2, backend="torch")
    assert (res["prediction"] == 1).all() and res["miou"] == 1.0
    remapped = mem_labels.masked_fill(mem_labels == 255, 0)
    ref = probe(mem_feats, remapped, query_feats, query_labels, num_classes=2, k=2, patches_per_image=2, backend="torch")
    assert (ref["prediction"] == 0).all()


def _stripes(n: int, grid=(4, 6), patch=4, classes=5, seed=0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose patch rows have one random class each -> (one-hot features [n,h,w,C+3], labels [n,H,W])."""
    g = torch.Generator().manual_seed(seed)
    h, w = grid
    rows = torch.randint(0, classes, (n, h), generator=g)
    patch_labels = rows[:, :, None].expand(n, h, w)
    feats = torch.cat([F.one_hot(patch_labels, classes).float(), torch.zeros(n, h, w, 3)], -1)
    labels = patch_labels.repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    return feats, labels


def test_miou_is_one_on_separable_features():
    mem_f, mem_l = _stripes(30, seed=1)
    q_f, q_l = _stripes(10, seed=2)
    res = probe(mem_f, mem_l, q_f, q_l, num_classes=5, k=30, backend="torch")
    assert res["miou"] == 1.0 and res["pixel_accuracy"] == 1.0
    assert res["memory_patches"] == 30 * 10  # x10 memory
    # depth: the patch depths come back exactly; pixels = bilinear upsampling of the true patch grid
    depth = (mem_l.float() + 1) * 2
    q_depth = (q_l.float() + 1) * 2
    res = probe(mem_f, depth, q_f, q_depth, task="depth", k=5, backend="torch")
    assert res["memory_patches"] == 30 * 24  # x100, capped at the 24 patches of an image
    patch_depth = q_depth[:, ::4, ::4]  # [10, 4, 6]
    expected = F.interpolate(patch_depth[:, None], size=(16, 24), mode="bilinear", align_corners=False)[:, 0]
    assert torch.allclose(res["prediction"], expected, atol=1e-4)
    assert 0.5 < res["d1"] < 1.0  # bilinear seams between stripes of different depth


def test_rare_label_sampling_prefers_rare_classes():
    # 24 pure patches: patch 0 holds the rare class 1, the others class 0; keep one patch per image.
    n, p = 4000, 24
    presence = torch.zeros(n, p, 2, dtype=torch.bool)
    presence[:, 0, 1] = True
    presence[:, 1:, 0] = True
    chosen = select_patches(presence, 1, torch.Generator().manual_seed(0))[:, 0]
    share = (chosen == 0).float().mean().item()
    expected = 23 / 24 * (1 - (22 / 23) ** 24)  # P(U0 * 1 < 23 U_i for all 23 others) ~ 0.63, uniform 1/24
    assert abs(share - expected) < 0.03
    again = select_patches(presence, 1, torch.Generator().manual_seed(0))[:, 0]
    assert torch.equal(chosen, again)  # seeded
    # a patch without any label (score 1e6) is almost never kept
    presence[:, 5] = False
    chosen = select_patches(presence, 3, torch.Generator().manual_seed(1))
    assert (chosen == 5).float().mean().item() < 1e-3
    # in a memory, the rare class gets a far larger share than its pixel share
    labels = torch.zeros(200, 16, 24, dtype=torch.long)
    labels[:, :4, :4] = 1  # one of 24 patches (4x6 grid of 4x4 pixels)
    builder = MemoryBuilder("segmentation", num_classes=2, patches_per_image=2, seed=0)
    builder.add(torch.randn(200, 4, 6, 8), labels)
    mem = builder.build()
    assert mem.values[:, 1].mean().item() > 0.3 > (1 / 24) * 2
    assert mem.features.norm(dim=-1).allclose(torch.ones(len(mem)))


def test_label_less_patches_come_after_every_labelled_one():
    # The reference multiplies only the labelled patches' scores by U(0, 1); a label-less patch (all ignore pixels)
    # keeps 1e6 and is never kept while a labelled patch is left. Here the labelled patches hold many classes
    # shared by all of them (score 100 * 1000 * U), so a label-less patch scaled by U would often undercut them.
    n, p, k = 200, 101, 1000
    presence = torch.zeros(n, p, k, dtype=torch.bool)
    presence[:, 1:] = True  # patch 0: no label
    chosen = select_patches(presence, 100, torch.Generator().manual_seed(0))
    assert not (chosen == 0).any()
    # when labelled patches run out, label-less ones fill the memory
    assert (select_patches(presence[:, :3], 3, torch.Generator().manual_seed(0)) == 0).any(1).all()


def test_depth_bins_over_the_batch():
    depth = torch.tensor([[[0.0, 10.0]], [[5.0, 20.0]]])
    assert depth_bins(depth).tolist() == [[[0, 127]], [[63, 254]]]  # (d - 0) / 20 * 255, top bin 254


# -------------------------------------------------------------------------------------- k-NN search


def test_chunked_torch_topk_is_exact_and_faiss_agrees():
    g = torch.Generator().manual_seed(0)
    memory = F.normalize(torch.randn(5000, 32, generator=g), dim=-1)
    queries = F.normalize(torch.randn(300, 32, generator=g), dim=-1)
    full = (queries @ memory.T).topk(30, dim=1)
    sims, idx = topk_inner_product(queries, memory, 30, query_chunk=64, memory_chunk=700)
    assert torch.equal(idx, full.indices) and torch.allclose(sims, full.values)
    with pytest.raises(ValueError, match="k must be"):
        topk_inner_product(queries, memory[:10], 30)
    pytest.importorskip("faiss")
    fs, fi = KnnIndex(memory, backend="faiss").search(queries, 30)
    assert torch.equal(fi, idx) and torch.allclose(fs, sims, atol=1e-5)
    # approximate IVF: valid neighbours, never better than exact
    a_s, a_i = KnnIndex(memory, backend="faiss", exact=False).search(queries, 30)
    assert a_i.shape == (300, 30) and (a_i >= 0).all() and (a_s[:, 0] <= sims[:, 0] + 1e-5).all()
    recall = np.mean([len(set(a.tolist()) & set(b.tolist())) / 30 for a, b in zip(a_i, idx)])
    assert recall > 0.2


def test_backends_give_the_same_probe():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(3)
    mem_f, q_f = torch.randn(12, 4, 6, 16, generator=g), torch.randn(4, 4, 6, 16, generator=g)
    mem_l = torch.randint(0, 4, (12, 16, 24), generator=g)
    q_l = torch.randint(0, 4, (4, 16, 24), generator=g)
    a = probe(mem_f, mem_l, q_f, q_l, num_classes=4, k=10, backend="torch")
    b = probe(mem_f, mem_l, q_f, q_l, num_classes=4, k=10, backend="faiss")
    assert a["backend"] == "torch" and b["backend"] == "faiss"
    assert torch.equal(a["prediction"], b["prediction"]) and a["confusion"] == b["confusion"]


# --------------------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    pytest.importorskip("moderngl")
    from vavam.world.export import generate

    out = tmp_path_factory.mktemp("probe_world") / "data"
    generate(out, num_scenes=2, duration_s=1.2, rate_hz=5.0, height=32, width=48, seed=0, hazard_share=0.0,
             labels=True, depth=True, held_out_towns=1, scenes_per_town=1, progress=False)
    return out


@pytest.fixture(scope="module")
def tiny_models():
    import vavam

    torch.manual_seed(0)
    vim = vavam.build_model(vavam.presets.vavim_tiny()).eval()  # 4 frames of 4x6 tokens
    tok = vavam.build_model(vavam.presets.vq_tiny()).eval()  # downsampling 8: 32x48 -> 4x6
    return vim, tok


def test_run_probe_on_world(world, tiny_models):
    from vavam.eval.probe import run_probe
    from vavam.eval.probe_data import WorldProbeData

    vim, tok = tiny_models
    mem = WorldProbeData(world, "train", "segmentation", sample_step=1)
    qry = WorldProbeData(world, "heldout", "segmentation", sample_step=1)
    assert len(mem) == len(qry) == 6 and mem.num_classes == 9 and mem.class_names[0] == "sky"
    res = run_probe(vim, tok, mem, qry, k=30, batch_size=4, backend="torch", num_examples=2, progress=False)
    assert res["layer"] == 1 and res["grid"] == [4, 6] and res["memory_patches"] == 6 * 10 and res["k"] == 30
    assert 0.0 <= res["miou"] <= 1.0 and 0.0 <= res["pixel_accuracy"] <= 1.0
    assert res["pixels"] == 6 * 32 * 48 and set(res["iou"]) == set(mem.class_names)
    assert len(res["_examples"]) == 2 and res["_examples"][0]["image"].shape == (32, 48, 3)
    # video windows (2 frames, the last evaluated) and depth
    mem = WorldProbeData(world, "train", "depth", window=2, frame_step=2, sample_step=1)
    qry = WorldProbeData(world, "heldout", "depth", window=2, frame_step=2, sample_step=1)
    assert len(mem) == 4 and mem[0].frames.shape == (2, 3, 32, 48) and mem[0].target.dtype == np.float32
    assert mem[0].target.max() <= 100.0  # sky (1000 m) clipped to max_depth
    res = run_probe(vim, tok, mem, qry, task="depth", layer=0, k=8, backend="torch", progress=False)
    assert res["layer"] == 0 and res["patches_per_image"] == 24 and res["images"] == 4
    assert 0 <= res["d1"] <= res["d2"] <= res["d3"] <= 1 and res["rmse"] > 0 and res["abs_rel"] >= 0


@pytest.mark.slow
def test_eval_probe_command_writes_report(world, tiny_models, tmp_path):
    from vavam.eval.probe import eval_probe
    from vavam.tokenizer import save_tokenizer
    from vavam.video import save_video_model

    vim, tok = tiny_models
    save_video_model(vim, tmp_path / "vim")
    save_tokenizer(tok, tmp_path / "tok")
    out = tmp_path / "probe"
    res = eval_probe(tmp_path / "vim", tmp_path / "tok", out, data=world, sample_step=1, k=5, progress=False)
    payload = json.loads((out / "evaluation.json").read_text())
    assert payload["kind"] == "probe" and payload["results"]["query_split"] == "heldout"
    assert 0 <= payload["results"]["miou"] <= 1 and res["memory_images"] == 6
    assert (out / "probe_examples.png").is_file() and (out / "report.html").is_file()
    md = (out / "report.md").read_text()
    assert "mIoU" in md and "vehicle" in md and "probe_examples.png" in md
    with pytest.raises(ValueError, match="--data is required"):
        eval_probe(tmp_path / "vim", tmp_path / "tok", out, dataset="cityscapes", progress=False)


def test_non_finite_features_are_refused_naming_memory_or_query():
    labels = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 1, 1], [2, 2, 1, 1]]])
    feats = torch.eye(4).reshape(1, 2, 2, 4)
    bad = feats.clone()
    bad[0, 0, 0, 0] = float("nan")  # gave a silently wrong mIoU
    with pytest.raises(ValueError, match=r"memory features \(images 0\.\.0 of the memory\) holds 1 NaN"):
        probe(bad, labels, feats, labels, num_classes=3, k=1, patches_per_image=4, backend="torch")
    with pytest.raises(ValueError, match="query features holds 1 NaN or infinite"):
        probe(feats, labels, bad, labels, num_classes=3, k=1, patches_per_image=4, backend="torch")
    builder = MemoryBuilder("segmentation", 3, patches_per_image=4)
    builder.add(feats, labels)
    with pytest.raises(ValueError, match=r"memory features \(images 1\.\.1 of the memory\)"):
        builder.add(bad, labels)
