"""Hummingbird in-context dense probes of frozen VaViM features: semantic segmentation and depth.

Protocol (reference §5.2), for feature maps ``[N, h, w, d]`` whose patch ``(i, j)`` covers the
``P_h x P_w`` pixels ``[i P_h, (i+1) P_h) x [j P_w, (j+1) P_w)`` of an ``H x W`` target map:

1. **Features**: ``vim.features(tokens, layer)`` of the LAST frame of a window (default layer: the
   middle block, ``num_layers // 2``, i.e. 12 of 24 as the reference), L2-normalised.
2. **Memory** (from the memory split): per image ``patches_per_image`` patches (default 10 for
   segmentation, 100 for depth: the reference's "x10" / "x100"), chosen with a preference for rare
   labels: the set of classes present in each patch is computed, a class's frequency is the number of
   the image's patches containing it, a patch's score is the sum of the frequencies of its classes
   multiplied by U(0, 1) (1e6, unscaled, for a patch without any label); the lowest scores are kept. For depth,
   the depth values of each image are min-max normalised and cut into 255 bins that play the role of
   classes (the reference normalised over its batch: results then depended on the batch size). Stored
   values: the patch's class histogram (segmentation) or its mean depth (depth; the reference stores the
   patch's raw depths and averages them after the transfer, which gives the same prediction because the
   transfer is linear).
3. **Retrieval**: the ``k`` nearest memory patches by cosine similarity (inner product of normalised
   features): exact chunked ``torch`` matmul + top-k with bounded memory, or ``faiss`` when installed
   (exact ``IndexFlatIP``, or IVF with sqrt(M) lists probing a tenth of them with ``exact=False``).
4. **Label transfer**: softmax over the k neighbours of similarity / temperature (0.02), weighted
   average of their values -> ``[N, h, w, C]`` (or ``[N, h, w]`` depth), bilinear upsampling to
   ``H x W`` (``align_corners=False``); segmentation prediction = argmax.
5. **Metrics**: segmentation -> confusion matrix over pixels whose label is not ``ignore_index``,
   per-class IoU, mIoU = mean over classes that occur (in ground truth or prediction); depth -> per
   image d1 / d2 / d3 (share of pixels with ``max(pred/gt, gt/pred)`` below 1.25, 1.25², 1.25³),
   abs_rel, sq_rel (zero ground truth replaced by 1e-6 in denominators) and MSE, averaged over
   images; RMSE = sqrt(mean of per-image MSE).

**Fix of the reference's label memory** (reference §8.15): the reference remaps ignore pixels (255) to
class 0 before building the memory's patch histograms, so void areas vote for class 0 (road on
Cityscapes). Here ignore pixels are dropped: a patch's histogram is the count of each valid class
divided by the number of pixels in the patch (ignore pixels add nothing), and ignore pixels never
make a class "present" for the rare-label sampling.

Entry points: the model-agnostic core (:class:`MemoryBuilder`, :func:`build_index`,
Entry points: the model-agnostic core (:class:`MemoryBuilder`, :func:`build_index`,
:func:`predict_dense`, :class:`SegmentationMeter`, :class:`DepthMeter`, :func:`probe` on feature
tensors), :func:`run_probe` for in-memory models and data, and the CLI :func:`eval_probe`
(``vavam eval probe``).

Layout: :mod:`vavam.eval.probe_memory` (patch targets, rare-label sampling, memory bank),
:mod:`vavam.eval.probe_knn` (search backends), :mod:`vavam.eval.probe_transfer` (label transfer,
dense prediction), :mod:`vavam.eval.probe_metrics` (confusion matrix, IoU, depth errors),
:mod:`vavam.eval.probe_report` (figure, report sections), :mod:`vavam.eval.probe_data` (datasets);
this module runs the probe and re-exports their public names.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vavam.eval.probe_data import IGNORE_INDEX, ProbeSample
from vavam.eval.probe_knn import Backend, KnnIndex, build_index, faiss_available, resolve_backend, topk_inner_product
from vavam.eval.probe_memory import (
    DEFAULT_PATCHES,
    DEPTH_BINS,
    NO_LABEL_SCORE,
    MemoryBank,
    MemoryBuilder,
    Task,
    check_task,
    depth_bins,
    label_histograms,
    patch_view,
    select_patches,
)
from vavam.eval.probe_metrics import (
    DepthMeter,
    SegmentationMeter,
    confusion_matrix,
    depth_errors,
    iou_per_class,
    mean_iou,
)
from vavam.eval.probe_report import colorize_labels, probe_sections, save_examples_figure
from vavam.eval.probe_transfer import predict_dense, transfer_labels

__all__ = [
    "DEFAULT_PATCHES",
    "DEPTH_BINS",
    "IGNORE_INDEX",
    "NO_LABEL_SCORE",
    "Backend",
    "DepthMeter",
    "KnnIndex",
    "MemoryBank",
    "MemoryBuilder",
    "SegmentationMeter",
    "Task",
    "build_index",
    "check_task",
    "colorize_labels",
    "confusion_matrix",
    "depth_bins",
    "depth_errors",
    "eval_probe",
    "extract_features",
    "faiss_available",
    "iou_per_class",
    "label_histograms",
    "mean_iou",
    "patch_view",
    "predict_dense",
    "probe",
    "probe_sections",
    "resolve_backend",
    "run_probe",
    "save_examples_figure",
    "select_patches",
    "topk_inner_product",
    "transfer_labels",
]


# --------------------------------------------------------------------------------- model-agnostic probe


def probe(
    memory_features: torch.Tensor,
    memory_targets: torch.Tensor | np.ndarray,
    query_features: torch.Tensor,
    query_targets: torch.Tensor | np.ndarray,
    task: Task = "segmentation",
    num_classes: int | None = None,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    ignore_index: int = IGNORE_INDEX,
    backend: Backend = "auto",
    exact: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """The whole probe on feature tensors (no model).

    Args:
        memory_features: ``[N, h, w, d]`` of the memory images.
        memory_targets: ``[N, H, W]`` labels (segmentation) or depths.
        query_features: ``[Q, h, w, d]``.
        query_targets: ``[Q, H, W]``.
        task, num_classes, k, temperature, patches_per_image, ignore_index, backend, exact, seed:
            see the module docstring and :class:`MemoryBuilder` / :class:`KnnIndex`.

    Returns:
        the meter's metrics plus ``memory_patches``, ``backend`` and ``prediction`` (``[Q, H, W]``).
    """
    builder = MemoryBuilder(task, num_classes, patches_per_image, ignore_index, seed)
    builder.add(memory_features, memory_targets)
    memory = builder.build()
    index = build_index(memory, backend, exact)
    q_targets = torch.as_tensor(np.asarray(query_targets) if isinstance(query_targets, np.ndarray) else query_targets)
    pred = predict_dense(torch.as_tensor(query_features), memory, index, tuple(q_targets.shape[-2:]), k, temperature)
    meter: SegmentationMeter | DepthMeter = SegmentationMeter(num_classes, ignore_index) if task == "segmentation" else DepthMeter()
    meter.update(pred, q_targets)
    return {**meter.compute(), "memory_patches": len(memory), "backend": index.backend, "prediction": pred}


# --------------------------------------------------------------------------------------- with models


def _module_device(module: Any) -> torch.device:
    for p in getattr(module, "parameters", lambda: iter(()))():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def extract_features(vim: Any, tokenizer: Any, frames: torch.Tensor, layer: int) -> torch.Tensor:
    """VaViM features of the last frame of each window.

    Args:
        vim: a :class:`~vavam.video.VideoGPT` (frozen).
        tokenizer: has ``encode(images [B,3,H,W]) -> ids [B,h,w]``.
        frames: float ``[B, T, 3, H, W]`` in [-1, 1]; windows longer than the model's frame count
            keep their last ``num_frames`` frames.
        layer: block index for ``vim.features``.

    Returns:
        float32 ``[B, h, w, d]`` on the CPU.
    """
    if frames.ndim != 5 or frames.shape[2] != 3:
        raise ValueError(f"frames must be [B, T, 3, H, W], got shape {tuple(frames.shape)}")
    frames = frames[:, -vim.config.num_frames :]
    b, t = frames.shape[:2]
    ids = tokenizer.encode(frames.flatten(0, 1).to(_module_device(tokenizer)))  # [B*T, h, w]
    tokens = ids.reshape(b, t, *ids.shape[-2:]).to(_module_device(vim))
    return vim.features(tokens, layer)[:, -1].float().cpu()


def _batches(data: Iterable[ProbeSample], batch_size: int) -> Iterable[list[ProbeSample]]:
    batch: list[ProbeSample] = []
    for sample in data:
        batch.append(sample)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stack(batch: list[ProbeSample], task: str) -> tuple[torch.Tensor, torch.Tensor]:
    shapes = {(tuple(s.frames.shape), tuple(s.target.shape)) for s in batch}
    if len(shapes) != 1:
        raise ValueError(f"samples of a batch differ in shape (frames, target): {sorted(shapes)}")
    frames = torch.stack([s.frames for s in batch])
    if frames.shape[-2:] != batch[0].target.shape:
        raise ValueError(f"sample {batch[0].name}: target {batch[0].target.shape} does not match frames {tuple(frames.shape[-2:])}")
    dtype = np.int64 if task == "segmentation" else np.float32
    return frames, torch.from_numpy(np.stack([np.asarray(s.target, dtype=dtype) for s in batch]))


def run_probe(
    vim: Any,
    tokenizer: Any,
    memory_data: Sequence[ProbeSample] | Iterable[ProbeSample],
    query_data: Sequence[ProbeSample] | Iterable[ProbeSample],
    task: Task = "segmentation",
    layer: int | None = None,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    ignore_index: int = IGNORE_INDEX,
    batch_size: int = 8,
    backend: Backend = "auto",
    exact: bool = True,
    seed: int = 0,
    num_examples: int = 4,
    progress: bool = True,
) -> dict[str, Any]:
    """Hummingbird probe of a VaViM with a tokenizer, on in-memory data.

    Args:
        vim: the frozen video model (``features(tokens, layer)``, ``config.num_layers / num_frames``).
        tokenizer: ``encode(images) -> ids``.
        memory_data: samples of the memory split (e.g. a :mod:`vavam.eval.probe_data` reader).
        query_data: samples to evaluate.
        task: ``segmentation`` or ``depth``.
        layer: feature block (default ``num_layers // 2``).
        k: neighbours.
        temperature: softmax temperature.
        patches_per_image: memory patches per image (default 10 / 100).
        num_classes: C (default ``memory_data.num_classes``).
        class_names: names for the per-class table (default ``memory_data.class_names``).
        ignore_index: ignore label.
        batch_size: images per forward pass.
        backend: k-NN backend (``auto``, ``torch``, ``faiss``).
        exact: exact search (faiss IVF otherwise).
        seed: memory sampling seed.
        num_examples: query examples kept for figures (image, ground truth, prediction).
        progress: tqdm bars.

    Returns:
        metrics (see :class:`SegmentationMeter` / :class:`DepthMeter`; per-class IoU by name for
        segmentation) plus settings, and ``_examples`` (list of dicts with ``image`` uint8 ``[H,W,3]``,
        ``target``, ``prediction``, ``name``; not JSON).
    """
    from tqdm.auto import tqdm

    from vavam.types import unit_to_uint8

    check_task(task)
    n_layers = int(vim.config.num_layers)
    layer = n_layers // 2 if layer is None else int(layer)
    if not -n_layers <= layer < n_layers:
        raise ValueError(f"layer must be in [0, {n_layers}) for this {n_layers}-block model, got {layer}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if task == "segmentation":
        num_classes = num_classes if num_classes is not None else getattr(memory_data, "num_classes", None)
        if num_classes is None:
            raise ValueError("num_classes is needed for segmentation (memory_data has no num_classes)")
        class_names = list(class_names or getattr(memory_data, "class_names", None) or [str(c) for c in range(num_classes)])
    builder = MemoryBuilder(task, num_classes, patches_per_image, ignore_index, seed)
    total = len(memory_data) if hasattr(memory_data, "__len__") else None
    grid = None
    with tqdm(total=total, desc="probe memory", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in _batches(memory_data, batch_size):
            frames, targets = _stack(batch, task)
            feats = extract_features(vim, tokenizer, frames, layer)
            grid = tuple(feats.shape[1:3])
            builder.add(feats, targets)
            bar.update(len(batch))
    memory = builder.build()
    index = build_index(memory, backend, exact)
    if k > len(memory):
        warnings.warn(f"k={k} exceeds the memory size {len(memory)}; using k={len(memory)}", stacklevel=2)
        k = len(memory)
    meter: SegmentationMeter | DepthMeter = SegmentationMeter(num_classes, ignore_index) if task == "segmentation" else DepthMeter()
    examples: list[dict[str, Any]] = []
    queries = 0
    total = len(query_data) if hasattr(query_data, "__len__") else None
    with tqdm(total=total, desc="probe queries", unit="img", disable=not progress, dynamic_ncols=True) as bar:
        for batch in _batches(query_data, batch_size):
            frames, targets = _stack(batch, task)
            feats = extract_features(vim, tokenizer, frames, layer)
            pred = predict_dense(feats, memory, index, tuple(targets.shape[-2:]), k, temperature)
            meter.update(pred, targets)
            for j in range(min(len(batch), num_examples - len(examples))):
                examples.append({"image": unit_to_uint8(frames[j, -1]).permute(1, 2, 0).numpy(),
                                 "target": targets[j].numpy(), "prediction": pred[j].numpy(), "name": batch[j].name})
            queries += len(batch)
            bar.update(len(batch))
    if not queries:
        raise ValueError("query_data is empty")
    metrics = meter.compute()
    if task == "segmentation":
        metrics["iou"] = dict(zip(class_names, metrics["iou"]))
        metrics["class_names"] = class_names
    return {
        "task": task, **metrics, "layer": layer % n_layers, "k": k, "temperature": temperature,
        "patches_per_image": builder.used_per_image, "memory_patches": len(memory), "memory_images": memory.num_images,
        "query_images": queries, "grid": list(grid or ()), "backend": index.backend, "exact": exact, "seed": seed,
        "_examples": examples,
    }  # fmt: skip


# ------------------------------------------------------------------------------------------- CLI


def eval_probe(
    video: Path,
    tokenizer: Path,
    out: Path,
    data: Path | None = None,
    dataset: Literal["world", "cityscapes", "kitti-step"] = "world",
    task: Literal["segmentation", "depth"] = "segmentation",
    layer: int | None = None,
    k: int = 30,
    temperature: float = 0.02,
    patches_per_image: int | None = None,
    memory_split: str | None = None,
    query_split: str | None = None,
    window: int = 1,
    frame_step: int | None = None,
    sample_step: int | None = None,
    max_memory_images: int | None = None,
    max_query_images: int | None = None,
    image_height: int | None = None,
    image_width: int | None = None,
    world_scenes: int = 8,
    backend: Literal["auto", "torch", "faiss"] = "auto",
    exact: bool = True,
    batch_size: int = 8,
    num_examples: int = 4,
    seed: int = 0,
    device: str = "cpu",
    trust_code: bool = False,
    progress: bool = True,
) -> dict:
    """Hummingbird segmentation / depth probe of frozen VaViM features (k-NN label transfer).

    Writes ``evaluation.json``, ``report.md`` / ``report.html`` (kind ``probe``: metrics table, per-class
    IoU) and ``probe_examples.png`` under ``out``.

    Args:
        video: VaViM checkpoint (released ``.pt`` or our folder).
        tokenizer: its tokenizer (checkpoint folder, LlamaGen ``.pt``, or TorchScript with --trust-code).
        out: output folder.
        data: dataset root; for ``world`` without it, a small world export is generated under ``out/world``.
        dataset: world, cityscapes or kitti-step.
        task: segmentation or depth.
        layer: feature block (default: the middle one, num_layers // 2).
        k: neighbours (the reference README uses 30, its runs 128).
        temperature: softmax temperature of the label transfer.
        patches_per_image: memory patches per image (default 10 segmentation, 100 depth).
        memory_split: split of the memory (default train).
        query_split: split of the queries (default heldout for world, val otherwise).
        window: frames per sample, the last one evaluated (world, kitti-step).
        frame_step: frames between the frames of a window (default: 1 world, 5 kitti-step; not for cityscapes).
        sample_step: frames between evaluated frames of a scene (default: 2 world, 1 kitti-step; not for cityscapes).
        max_memory_images: cap on memory images (evenly spread).
        max_query_images: cap on query images (evenly spread).
        image_height: world frames are resized to this (default: the tokenizer's training size, if recorded; real
            datasets take the reference's 288x512 crop).
        image_width: see image_height.
        world_scenes: scenes of the generated world export (without --data).
        backend: k-NN backend (auto = faiss when installed, else chunked torch).
        exact: exact search (False: faiss IVF, approximate).
        batch_size: images per forward pass.
        num_examples: query examples drawn in probe_examples.png.
        seed: seed of the memory sampling (and of the generated world).
        device: torch device of the models.
        trust_code: allow TorchScript tokenizer files.
        progress: progress bars.
    """
    import vavam
    from vavam.eval.probe_data import open_probe_data
    from vavam.eval.report import save_evaluation

    from vavam.checks import image_size_arg
    from vavam.tokenizer.loading import recorded_image_size

    size = image_size_arg(image_height, image_width)  # before loading anything
    if dataset != "world" and size is not None:  # it was ignored: real images take the reference's geometry
        raise ValueError(f"--image-height / --image-width apply to world frames; {dataset} images are cropped and "
                         "resized to 288x512 as in the reference evaluation")
    if dataset == "cityscapes" and (frame_step is not None or sample_step is not None):
        raise ValueError("--frame-step / --sample-step apply to world and kitti-step (Cityscapes has single images)")
    out = Path(out)
    vim = vavam.load_video_model(video, device=device).eval()
    tok = vavam.load_tokenizer(tokenizer, trust_code=trust_code, device=device)
    if data is None:
        if dataset != "world":
            raise ValueError(f"--data is required for dataset {dataset!r} (the folder holding its files)")
        from vavam.world.export import generate

        size = size or recorded_image_size(tokenizer) or (288, 512)
        data = out / "world"
        generate(data, num_scenes=world_scenes, duration_s=20.0, rate_hz=2.0, height=size[0], width=size[1], seed=seed,
                 hazard_share=0.0, labels=True, depth=True, held_out_towns=1, scenes_per_town=max(1, world_scenes // 2),
                 progress=progress)
    elif dataset == "world" and size is None:
        size = recorded_image_size(tokenizer)
    memory_split = memory_split or "train"
    query_split = query_split or ("heldout" if dataset == "world" else "val")
    kw: dict[str, Any] = {}
    if dataset in ("world", "kitti-step"):
        kw["window"] = window
        if frame_step is not None:
            kw["frame_step"] = frame_step
        kw["sample_step"] = sample_step if sample_step is not None else (2 if dataset == "world" else 1)
    elif window != 1:
        raise ValueError("--window applies to world and kitti-step (Cityscapes has single images)")
    if dataset == "world":
        kw["size"] = size
    memory_data = open_probe_data(dataset, data, memory_split, task, max_samples=max_memory_images, **kw)
    query_data = open_probe_data(dataset, data, query_split, task, max_samples=max_query_images, **kw)
    results = run_probe(vim, tok, memory_data, query_data, task=task, layer=layer, k=k, temperature=temperature,
                        patches_per_image=patches_per_image, batch_size=batch_size, backend=backend, exact=exact,
                        seed=seed, num_examples=num_examples, progress=progress)
    examples = results.pop("_examples")
    figure = None
    if examples:
        save_examples_figure(out / "probe_examples.png", examples, task, results.get("class_names"))
        figure = "probe_examples.png"
    results.update({"dataset": dataset, "data": str(data), "memory_split": memory_split, "query_split": query_split,
                    "window": window, "video": str(video), "tokenizer": str(tokenizer)})
    save_evaluation(out, "probe", f"Hummingbird {task} probe ({dataset})", results, probe_sections(results, figure))
    head = f"mIoU {results['miou']:.3f}" if task == "segmentation" else f"d1 {results['d1']:.3f}  abs_rel {results['abs_rel']:.3f}  rmse {results['rmse']:.3f}"
    print(f"probe {task} on {dataset} ({query_split}): {head} -> {out}")
    return results
