"""Images with dense targets for the Hummingbird probes (:mod:`vavam.eval.probe`).

Three readers, each a sequence of :class:`ProbeSample` (a window of frames whose LAST frame carries the
target: a semantic label map or a depth map at pixel resolution):

- :class:`WorldProbeData`: an export of the embedded world (``vavam world generate --labels --depth``);
  splits ``train`` / ``heldout`` come from the scene records' metadata, label names from ``meta.json``.
  Depth is metric (metres along the optical axis), clipped to ``max_depth`` (sky is the 1000 m far
  plane otherwise).
- :class:`CityscapesProbeData`: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
  ``gtFine/<split>/<city>/*_gtFine_labelIds.png``; label ids -> the 19 train ids, everything else 255.
  Geometry as the reference evaluation: crop 16 px off the top, resize by 1/3.5, centre-crop 288x512
  (images bilinear with antialias, masks nearest).
- :class:`KittiStepProbeData`: ``images/<split>/<seq>/<frame>.png`` with
  ``panoptic_maps/<split>/<seq>/<frame>.png``; the semantic map is the R channel (train ids, 255 void).
  Short side resized to 288, centre crop 288x512. ``window=1`` gives single frames; ``window=8,
  frame_step=5`` the reference's video windows (10 Hz -> 2 Hz), every frame with enough history
  being the last frame of one window.

Depth for Cityscapes / KITTI-STEP is the Depth Anything pseudo ground truth of reference §5.3 (8-bit
PNG, channel 0) at ``<root>/cityscapes_depth/<split>/<image stem>_depth.png`` and
``<root>/kitti_depth/<split>/<seq>_<frame>_depth.png``, read as value / 255 in [0, 1] as the reference
does (its RMSE and sq_rel scale with the unit, and abs_rel too where the map is 0, the denominator then
being 1e-6); a map that already has the output size is used as is, otherwise it goes through the same
crop/resize as the label maps (nearest).

Missing folders or files raise :class:`ProbeDataError` naming the path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from vavam.data.frames import natural_key, preprocess_frame, read_image

IGNORE_INDEX = 255
Task = Literal["segmentation", "depth"]

#: The 19 Cityscapes evaluation classes, in train-id order.
CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign", "vegetation",
    "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle",
)  # fmt: skip
#: Cityscapes label id of each train id (``CITYSCAPES_LABEL_IDS[train_id] = label_id``).
CITYSCAPES_LABEL_IDS: tuple[int, ...] = (7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33)


class ProbeDataError(ValueError):
    """A probe dataset is missing, empty or malformed; the message names the path."""


@dataclass
class ProbeSample:
    """One probe item.

    Attributes:
        frames: float ``[T, 3, H, W]`` in [-1, 1]; the last frame is the one with the target.
        target: ``[H, W]``: uint8 label ids (255 = ignore) or float32 depth.
        name: identifies the item in reports.
    """

    frames: torch.Tensor
    target: np.ndarray
    name: str


def cityscapes_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Cityscapes label ids ``[H, W]`` (0..33) -> train ids uint8 ``[H, W]`` (0..18, void 255)."""
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    for train_id, label_id in enumerate(CITYSCAPES_LABEL_IDS):
        lut[label_id] = train_id
    return lut[np.asarray(label_ids).astype(np.int64).clip(0, 255)]


def _require_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise ProbeDataError(f"{path}: {what} folder not found")
    return path


def _read_gray(path: Path, channel: int | None = 0) -> np.ndarray:
    """A PNG map -> ``[H, W]`` (channel ``channel`` of a multi-channel image)."""
    from PIL import Image

    if not path.is_file():
        raise ProbeDataError(f"{path}: map file not found")
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., channel]
    return arr


def _resize_map(target: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest resize of a ``[H, W]`` map to ``size``; dtype kept.

    As the reference (torchvision ``Resize`` with ``NEAREST`` on masks, i.e. torch's legacy ``nearest``): output
    pixel ``j`` reads source pixel ``floor(j * H_in / H_out)``, the one under its top-left corner. Against the
    images' centre-aligned bilinear resize that is up to half an output pixel off; kept, so that probe numbers
    compare with the authors'.
    """
    if tuple(target.shape) == tuple(size):
        return target
    t = torch.from_numpy(np.ascontiguousarray(target).astype(np.float32))[None, None]
    out = F.interpolate(t, size=size, mode="nearest")[0, 0].numpy()
    return out.astype(target.dtype)


def _centre_crop(x: np.ndarray | torch.Tensor, size: tuple[int, int]):
    """Centre crop of the last two axes to ``size`` (H, W); raises when the input is smaller."""
    h, w = x.shape[-2:]
    ch, cw = size
    if h < ch or w < cw:
        raise ProbeDataError(f"image {w}x{h} (WxH) is smaller than the crop {cw}x{ch}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def _evenly(n: int, limit: int | None) -> list[int]:
    """``limit`` evenly spread indices of ``range(n)`` (all when ``limit`` is None or >= n)."""
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 1:
        raise ValueError(f"max_samples must be >= 1, got {limit}")
    return sorted({int(i) for i in np.linspace(0, n - 1, limit).round()})


class ProbeDataset(Sequence[ProbeSample]):
    """Common part: ``task``, ``class_names``, ``num_classes`` and item indexing."""

    task: Task
    class_names: tuple[str, ...]

    def _check_task(self, task: str) -> None:
        if task not in ("segmentation", "depth"):
            raise ValueError(f"task must be 'segmentation' or 'depth', got {task!r}")

    @property
    def num_classes(self) -> int:
        """Number of semantic classes (label ids ``0 .. num_classes-1``; 255 ignored)."""
        return len(self.class_names)

    def __len__(self) -> int:
        return len(self._items)  # type: ignore[attr-defined]

    def __getitem__(self, index: int) -> ProbeSample:  # type: ignore[override]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        return self._load(self._items[index])  # type: ignore[attr-defined]


# --------------------------------------------------------------------------------------- world


class WorldProbeData(ProbeDataset):
    """Frames + label/depth maps of one split of a world export.

    Args:
        root: the export folder (``meta.json``, ``records.npz``, ``labels/``, ``depth/``).
        split: ``train`` or ``heldout`` (the records' ``metadata["split"]``).
        task: ``segmentation`` (labels) or ``depth``.
        window: frames per sample (the last one carries the target).
        frame_step: frames between consecutive frames of a window.
        sample_step: frames between the last frames of consecutive samples of a scene.
        max_samples: keep this many samples, evenly spread (None: all).
        size: resize to (H, W): images bilinear with antialias, maps nearest (None: keep).
        max_depth: depth is clipped to ``[0, max_depth]`` metres.
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        task: Task = "segmentation",
        window: int = 1,
        frame_step: int = 1,
        sample_step: int = 5,
        max_samples: int | None = None,
        size: tuple[int, int] | None = None,
        max_depth: float = 100.0,
    ) -> None:
        from vavam.data.records import load_records

        self._check_task(task)
        if window < 1 or frame_step < 1 or sample_step < 1:
            raise ValueError(f"window, frame_step, sample_step must be >= 1, got {window}, {frame_step}, {sample_step}")
        self.root, self.split, self.task = Path(root), split, task
        self.size, self.max_depth = (tuple(size) if size else None), float(max_depth)
        meta_path = self.root / "meta.json"
        if not meta_path.is_file():
            raise ProbeDataError(f"{meta_path}: world export metadata not found (run `vavam world generate`)")
        meta = json.loads(meta_path.read_text())
        names = meta.get("label_names") or {}
        self.class_names = tuple(names[str(i)] for i in range(len(names)))
        if not (self.root / "records.npz").is_file():
            raise ProbeDataError(f"{self.root / 'records.npz'}: world export records not found")
        records = [r for r in load_records(self.root / "records.npz", check_files=False, validate=False)
                   if r.metadata.get("split") == split]
        if not records:
            raise ProbeDataError(f"{self.root}: no scene of split {split!r}")
        key = "labels_path" if task == "segmentation" else "depth_path"
        items = []
        span = (window - 1) * frame_step
        for rec in records:
            if key not in rec.metadata:
                flag = "--labels" if task == "segmentation" else "--depth"
                raise ProbeDataError(f"{self.root}: scene {rec.name} has no {key} (generate with {flag})")
            for last in range(span, len(rec), sample_step):
                frames = [rec.image_paths[i] for i in range(last - span, last + 1, frame_step)]
                items.append((rec.name, rec.metadata[key], last, frames))
        if not items:
            longest = max(len(rec) for rec in records)
            raise ProbeDataError(f"{self.root}: no scene of split {split!r} holds a window of {window} frames "
                                 f"{frame_step} apart ({span + 1} frames; the longest scene has {longest})")
        self._items = [items[i] for i in _evenly(len(items), max_samples)]
        self._maps: dict[str, np.ndarray] = {}

    def _map(self, rel: str) -> np.ndarray:
        if rel not in self._maps:
            path = self.root / rel
            if not path.is_file():
                raise ProbeDataError(f"{path}: map file not found")
            self._maps = {rel: np.load(path, mmap_mode="r")}  # one scene at a time
        return self._maps[rel]

    def _load(self, item) -> ProbeSample:
        scene, rel, last, frame_paths = item
        frames = torch.stack([preprocess_frame(read_image(self.root / p), size=self.size, where=str(self.root / p))
                              for p in frame_paths])
        target = np.asarray(self._map(rel)[last])
        if self.task == "depth":
            target = np.clip(np.nan_to_num(target.astype(np.float32), nan=self.max_depth), 0.0, self.max_depth)
        else:
            target = target.astype(np.uint8)
        if self.size is not None:
            target = _resize_map(target, self.size)
        return ProbeSample(frames, target, f"{scene}/{last:06d}")


# ---------------------------------------------------------------------------------- Cityscapes


class CityscapesProbeData(ProbeDataset):
    """Cityscapes fine annotations of one split (19 train ids), in the reference's geometry.

    Args:
        root: the dataset root (``leftImg8bit/``, ``gtFine/``, optional ``cityscapes_depth/``).
        split: ``train``, ``val`` or ``test``.
        task: ``segmentation`` or ``depth`` (pseudo depth, see the module docstring).
        top_crop: rows removed from the top before resizing.
        divisor: the image is resized to ``(int(H / divisor), int(W / divisor))``.
        crop: centre crop (H, W) after resizing.
        max_samples: keep this many images, evenly spread (None: all).
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        task: Task = "segmentation",
        top_crop: int = 16,
        divisor: float = 3.5,
        crop: tuple[int, int] = (288, 512),
        max_samples: int | None = None,
    ) -> None:
        self._check_task(task)
        self.root, self.split, self.task = Path(root), split, task
        self.top_crop, self.divisor, self.crop = int(top_crop), float(divisor), tuple(crop)
        self.class_names = CITYSCAPES_CLASSES
        images = _require_dir(self.root / "leftImg8bit" / split, "Cityscapes image")
        if task == "segmentation":
            _require_dir(self.root / "gtFine" / split, "Cityscapes gtFine label")
        else:
            _require_dir(self.root / "cityscapes_depth" / split, "Cityscapes pseudo-depth")
        files = sorted(images.rglob("*leftImg8bit.png"), key=lambda p: natural_key(str(p)))
        if not files:
            raise ProbeDataError(f"{images}: no *_leftImg8bit.png image")
        self._items = [files[i] for i in _evenly(len(files), max_samples)]

    def target_path(self, image: Path) -> Path:
        """Label (or pseudo-depth) file of an image file."""
        if self.task == "segmentation":
            city = image.parent.name
            stem = image.name[: -len("leftImg8bit.png")]
            return self.root / "gtFine" / self.split / city / f"{stem}gtFine_labelIds.png"
        return self.root / "cityscapes_depth" / self.split / f"{image.stem}_depth.png"

    def _geometry(self, h: int, w: int) -> tuple[int, int]:
        return int((h - self.top_crop) / self.divisor), int(w / self.divisor)

    def _map(self, m: np.ndarray, h: int, w: int) -> np.ndarray:
        m = m[self.top_crop :]
        return np.ascontiguousarray(_centre_crop(_resize_map(m, self._geometry(h, w)), self.crop))

    def _load(self, image: Path) -> ProbeSample:
        rgb = read_image(image)
        h, w = rgb.shape[:2]
        if h <= self.top_crop:
            raise ProbeDataError(f"{image}: image height {h} is not above the top crop {self.top_crop}")
        x = preprocess_frame(np.ascontiguousarray(rgb[self.top_crop :]), size=self._geometry(h, w), where=str(image))
        x = _centre_crop(x, self.crop).contiguous()
        raw = _read_gray(self.target_path(image))
        if self.task == "segmentation":
            if raw.shape != (h, w):
                raise ProbeDataError(f"{self.target_path(image)}: label map {raw.shape} differs from the image {(h, w)}")
            target = self._map(cityscapes_train_ids(raw), h, w)
        else:
            target = raw.astype(np.float32) / 255.0  # [0, 1], as the reference reads the 8-bit maps
            if target.shape != self.crop:
                target = self._map(target, h, w)
        return ProbeSample(x[None], target, image.name[: -len("_leftImg8bit.png")])


# ---------------------------------------------------------------------------------- KITTI-STEP


class KittiStepProbeData(ProbeDataset):
    """KITTI-STEP semantic maps (R channel of the panoptic PNGs), single frames or video windows.

    Args:
        root: the dataset root (``images/``, ``panoptic_maps/``, optional ``kitti_depth/``).
        split: ``train`` or ``val`` (``test`` has no panoptic maps).
        task: ``segmentation`` or ``depth`` (pseudo depth, see the module docstring).
        window: frames per sample (1: single frames; the reference's video setting is 8).
        frame_step: frames between consecutive frames of a window (reference video: 5, i.e. 2 Hz).
        sample_step: frames between the last frames of consecutive samples of a sequence.
        short_side: the short image side is resized to this.
        crop: centre crop (H, W) after resizing.
        max_samples: keep this many samples, evenly spread (None: all).
    """

    def __init__(
        self,
        root: Path,
        split: str = "train",
        task: Task = "segmentation",
        window: int = 1,
        frame_step: int = 5,
        sample_step: int = 1,
        short_side: int = 288,
        crop: tuple[int, int] = (288, 512),
        max_samples: int | None = None,
    ) -> None:
        self._check_task(task)
        if window < 1 or frame_step < 1 or sample_step < 1:
            raise ValueError(f"window, frame_step, sample_step must be >= 1, got {window}, {frame_step}, {sample_step}")
        self.root, self.split, self.task = Path(root), split, task
        self.short_side, self.crop = int(short_side), tuple(crop)
        self.class_names = CITYSCAPES_CLASSES
        images = _require_dir(self.root / "images" / split, "KITTI-STEP image")
        if task == "segmentation":
            _require_dir(self.root / "panoptic_maps" / split, "KITTI-STEP panoptic map")
        else:
            _require_dir(self.root / "kitti_depth" / split, "KITTI-STEP pseudo-depth")
        span = (window - 1) * frame_step
        items = []
        for seq in sorted(p for p in images.iterdir() if p.is_dir()):
            frames = sorted(seq.glob("*.png"), key=lambda p: natural_key(p.name))
            for last in range(span, len(frames), sample_step):
                items.append([frames[i] for i in range(last - span, last + 1, frame_step)])
        if not items:
            raise ProbeDataError(f"{images}: no sequence with {span + 1} frames (<seq>/<frame>.png)")
        self._items = [items[i] for i in _evenly(len(items), max_samples)]

    def target_path(self, image: Path) -> Path:
        """Panoptic map (or pseudo-depth) file of an image file."""
        seq = image.parent.name
        if self.task == "segmentation":
            return self.root / "panoptic_maps" / self.split / seq / image.name
        return self.root / "kitti_depth" / self.split / f"{seq}_{image.stem}_depth.png"

    def _size(self, h: int, w: int) -> tuple[int, int]:
        # the long side is truncated, as torchvision's Resize(short_side) of the reference: 375x1242 -> 288x953
        s = self.short_side
        return (s, int(s * w / h)) if h <= w else (int(s * h / w), s)

    def _load(self, frame_paths: list[Path]) -> ProbeSample:
        frames = []
        for p in frame_paths:
            rgb = read_image(p)
            size = self._size(*rgb.shape[:2])
            frames.append(_centre_crop(preprocess_frame(rgb, size=size, where=str(p)), self.crop).contiguous())
        last = frame_paths[-1]
        h, w = rgb.shape[:2]  # the last frame's
        if self.task == "segmentation":
            raw = _read_gray(self.target_path(last), channel=0)  # R = semantic train id
            if raw.shape != (h, w):
                raise ProbeDataError(f"{self.target_path(last)}: panoptic map {raw.shape} differs from the image {(h, w)}")
            target = raw.astype(np.uint8)
        else:
            target = _read_gray(self.target_path(last)).astype(np.float32) / 255.0  # [0, 1], as the reference
        if target.shape != self.crop:
            target = np.ascontiguousarray(_centre_crop(_resize_map(target, self._size(h, w)), self.crop))
        return ProbeSample(torch.stack(frames), target, f"{last.parent.name}/{last.stem}")


DATASETS = {"world": WorldProbeData, "cityscapes": CityscapesProbeData, "kitti-step": KittiStepProbeData}


def open_probe_data(dataset: str, root: Path, split: str, task: Task, **kwargs) -> ProbeDataset:
    """Open one split of a probe dataset by name (``world``, ``cityscapes``, ``kitti-step``).

    ``kwargs`` go to the reader (``window``, ``max_samples``, ...); readers ignore none silently:
    an argument a reader does not take raises ``TypeError``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {sorted(DATASETS)}, got {dataset!r}")
    return DATASETS[dataset](Path(root), split=split, task=task, **kwargs)
