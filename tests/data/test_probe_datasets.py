"""Probe dataset readers on tiny fake copies of the Cityscapes and KITTI-STEP layouts."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vavam.eval.probe_data import (
    CITYSCAPES_CLASSES,
    CityscapesProbeData,
    KittiStepProbeData,
    ProbeDataError,
    WorldProbeData,
    cityscapes_train_ids,
    open_probe_data,
)


def test_cityscapes_train_id_mapping():
    ids = np.arange(34)
    train = cityscapes_train_ids(ids)
    expected = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
                27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    for label_id in range(34):
        assert train[label_id] == expected.get(label_id, 255), label_id
    assert train.dtype == np.uint8 and len(CITYSCAPES_CLASSES) == 19 and CITYSCAPES_CLASSES[13] == "car"


# ------------------------------------------------------------------------------------------ Cityscapes


def _cityscapes(root, split="train", city="aachen", n=2, size=(1024, 2048), depth=False):
    h, w = size
    for i in range(n):
        stem = f"{city}_{i:06d}_000019"
        img_dir = root / "leftImg8bit" / split / city
        lab_dir = root / "gtFine" / split / city
        img_dir.mkdir(parents=True, exist_ok=True)
        lab_dir.mkdir(parents=True, exist_ok=True)
        img = np.zeros((h, w, 3), np.uint8)
        img[:16] = 255  # the rows the reader crops away
        img[16:, :, 1] = 40 * (i + 1)
        Image.fromarray(img).save(img_dir / f"{stem}_leftImg8bit.png")
        lab = np.full((h, w), 7, np.uint8)  # road
        lab[:16] = 0  # unlabeled (void) rows at the top: cropped away
        lab[16:51] = 23  # 35 rows of sky -> 10 rows after /3.5
        lab[:, w // 2 :] = 26  # car on the right half
        lab[-10:] = 4  # "static" -> void
        Image.fromarray(lab, mode="L").save(lab_dir / f"{stem}_gtFine_labelIds.png")
        for suffix in ("color.png", "instanceIds.png", "polygons.json"):  # other files of the layout
            (lab_dir / f"{stem}_gtFine_{suffix}").write_bytes(b"")
        if depth:
            d_dir = root / "cityscapes_depth" / split
            d_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((288, 512), 10 * (i + 1), np.uint8)).save(d_dir / f"{stem}_leftImg8bit_depth.png")


def test_cityscapes_reader_geometry_and_labels(tmp_path):
    _cityscapes(tmp_path, "train", "aachen", n=2)
    _cityscapes(tmp_path, "val", "frankfurt", n=1)
    data = CityscapesProbeData(tmp_path, "train")
    assert len(data) == 2 and data.num_classes == 19
    s = data[0]
    assert s.name == "aachen_000000_000019" and s.frames.shape == (1, 3, 288, 512) and s.target.shape == (288, 512)
    # top 16 px removed before resizing: no white row at the top of the image
    assert s.frames[0, 0].max() < -0.9 and s.frames[0, 1].mean().item() == pytest.approx(40 / 127.5 - 1, abs=1e-3)
    t = s.target
    assert set(np.unique(t)) == {0, 10, 13, 255}
    assert (t[:10, :200] == 10).all() and (t[10, :200] == 0).all()  # 35 sky rows / 3.5 = 10 rows (left half)
    # resize to 288 x int(2048 / 3.5) = 585 (nearest: output column j reads input column floor(j * 2048 / 585)),
    # then centre crop 512 (offset 36): the car starts at resized column 293, i.e. crop column 257
    assert (t[20, 256] == 0) and (t[20, 257] == 13)
    assert (t[-2:] == 255).all() and (t[-3] != 255).all()  # 10 void rows at the bottom -> rows reading 1001, 1004
    val = open_probe_data("cityscapes", tmp_path, "val", "segmentation")
    assert len(val) == 1 and val[0].name.startswith("frankfurt")


def test_cityscapes_depth_and_missing_paths(tmp_path):
    _cityscapes(tmp_path, "train", n=2, depth=True)
    data = CityscapesProbeData(tmp_path, "train", task="depth", max_samples=1)
    assert len(data) == 1
    s = data[0]
    # the 8-bit map is read in [0, 1] as the reference does (TF.to_dtype(..., scale=True)): 10 -> 10/255
    assert s.target.dtype == np.float32 and s.target.shape == (288, 512) and np.allclose(s.target, 10 / 255)
    with pytest.raises(ProbeDataError, match="leftImg8bit/val"):
        CityscapesProbeData(tmp_path, "val")
    with pytest.raises(ProbeDataError, match="cityscapes_depth/val"):
        (tmp_path / "leftImg8bit" / "val").mkdir()
        CityscapesProbeData(tmp_path, "val", task="depth")
    (tmp_path / "gtFine" / "train" / "aachen" / "aachen_000001_000019_gtFine_labelIds.png").unlink()
    data = CityscapesProbeData(tmp_path, "train")
    with pytest.raises(ProbeDataError, match="aachen_000001_000019_gtFine_labelIds.png"):
        data[1]
    with pytest.raises(ProbeDataError, match="gtFine/test"):
        (tmp_path / "leftImg8bit" / "test").mkdir()
        CityscapesProbeData(tmp_path, "test")


# ------------------------------------------------------------------------------------------ KITTI-STEP


def _kitti(root, split="train", sequences=("0000", "0001"), frames=12, size=(375, 1242)):
    h, w = size
    for s, seq in enumerate(sequences):
        img_dir = root / "images" / split / seq
        pan_dir = root / "panoptic_maps" / split / seq
        img_dir.mkdir(parents=True)
        pan_dir.mkdir(parents=True)
        for f in range(frames):
            Image.fromarray(np.full((h, w, 3), 10 * f + s, np.uint8)).save(img_dir / f"{f:06d}.png")
            pan = np.zeros((h, w, 3), np.uint8)
            pan[:, w // 2 :, 0] = 13  # car on the right half ...
            pan[:, w // 2 :, 1] = 1  # ... instance 256 + f
            pan[:, w // 2 :, 2] = f
            pan[:20, :, 0] = 255  # void band at the top
            Image.fromarray(pan).save(pan_dir / f"{f:06d}.png")


def test_kitti_step_single_frames_and_windows(tmp_path):
    _kitti(tmp_path)
    single = KittiStepProbeData(tmp_path, "train")
    assert len(single) == 24
    s = single[0]
    assert s.name == "0000/000000" and s.frames.shape == (1, 3, 288, 512) and s.target.shape == (288, 512)
    assert set(np.unique(s.target)) == {0, 13, 255}  # the R channel only: no instance ids leak in
    assert (s.target[:, :100] != 13).all() and (s.target[20:, -100:] == 13).all()
    assert (s.target[:10] == 255).all() and (s.target[20:, :100] == 0).all()  # 20 rows * 288/375 ~ 15 rows void
    # video windows: 3 frames 5 apart, each last frame with enough history once -> frames 10, 11 per sequence
    video = KittiStepProbeData(tmp_path, "train", window=3, frame_step=5)
    assert len(video) == 4
    w = video[1]
    assert w.name == "0000/000011" and w.frames.shape == (3, 3, 288, 512)
    levels = [round(float((x[0].mean() + 1) * 127.5)) for x in w.frames]
    assert levels == [10, 60, 110]  # frames 1, 6, 11 of sequence 0000
    with pytest.raises(ProbeDataError, match="no sequence with 36 frames"):
        KittiStepProbeData(tmp_path, "train", window=8, frame_step=5)


def test_kitti_step_resize_truncates_the_long_side_as_the_reference(tmp_path):
    # torchvision's Resize(288) (reference kitti.py) gives int(288 * 1242 / 375) = int(953.86) = 953 columns, then the
    # centre crop starts at column 220; rounding to 954 would shift the crop by one column and rescale it
    _kitti(tmp_path, sequences=("0000",), frames=1)
    data = KittiStepProbeData(tmp_path, "train")
    assert data._size(375, 1242) == (288, 953) and data._size(375, 1224) == (288, 940)
    assert data._size(1242, 375) == (953, 288)
    t = data[0].target  # car from input column 621: resized column ceil(621 * 953 / 1242) = 477 -> crop column 257
    assert (t[20:, 256] == 0).all() and (t[20:, 257] == 13).all()


def test_kitti_step_depth_is_read_in_zero_one(tmp_path):
    """The pseudo depth PNG (0..255) is read as value / 255, the reference's unit: abs_rel (where the map is 0,
    the denominator being 1e-6), sq_rel and RMSE depend on it."""
    _kitti(tmp_path, sequences=("0000",), frames=1)
    d_dir = tmp_path / "kitti_depth" / "train"
    d_dir.mkdir(parents=True)
    depth = np.zeros((288, 512), np.uint8)
    depth[:, 256:] = 255
    Image.fromarray(depth).save(d_dir / "0000_000000_depth.png")
    t = KittiStepProbeData(tmp_path, "train", task="depth")[0].target
    assert t.dtype == np.float32 and t.shape == (288, 512)
    assert (t[:, :256] == 0).all() and (t[:, 256:] == 1.0).all()


def test_kitti_step_missing_paths(tmp_path):
    with pytest.raises(ProbeDataError, match="images/val"):
        KittiStepProbeData(tmp_path, "val")
    _kitti(tmp_path, "val", sequences=("0002",), frames=2)
    (tmp_path / "panoptic_maps" / "val" / "0002" / "000001.png").unlink()
    data = KittiStepProbeData(tmp_path, "val")
    with pytest.raises(ProbeDataError, match="panoptic_maps/val/0002/000001.png"):
        data[1]
    with pytest.raises(ProbeDataError, match="kitti_depth/val"):
        KittiStepProbeData(tmp_path, "val", task="depth")
    import shutil

    shutil.rmtree(tmp_path / "panoptic_maps")
    with pytest.raises(ProbeDataError, match="panoptic_maps/val"):
        KittiStepProbeData(tmp_path, "val")


def test_world_reader_errors(tmp_path):
    with pytest.raises(ProbeDataError, match="meta.json"):
        WorldProbeData(tmp_path, "train")
    with pytest.raises(ValueError, match="dataset must be one of"):
        open_probe_data("nuscenes", tmp_path, "train", "segmentation")
    with pytest.raises(ValueError, match="task must be"):
        WorldProbeData(tmp_path, "train", task="normals")
