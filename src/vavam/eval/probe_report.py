"""Figure and report sections of the Hummingbird probe (:mod:`vavam.eval.probe`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vavam.eval.probe_data import IGNORE_INDEX


def _palette(num_classes: int) -> np.ndarray:
    """uint8 ``[num_classes, 3]`` colours: tab10, then the light tab20 shades, cycling."""
    import matplotlib

    strong, light = matplotlib.colormaps["tab10"], matplotlib.colormaps["tab20"]
    colours = [strong(i)[:3] for i in range(10)] + [light(2 * i + 1)[:3] for i in range(10)]
    return (np.array([colours[i % 20] for i in range(num_classes)]) * 255).round().astype(np.uint8)


def colorize_labels(labels: np.ndarray, num_classes: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Label map ``[H, W]`` -> RGB uint8 ``[H, W, 3]`` (ignore pixels black)."""
    labels = np.asarray(labels).astype(np.int64)
    table = np.zeros((max(num_classes, 256), 3), np.uint8)
    table[:num_classes] = _palette(num_classes)
    out = table[np.clip(labels, 0, len(table) - 1)]
    out[labels == ignore_index] = 0
    return out


def save_examples_figure(path: Path, examples: Sequence[dict[str, Any]], task: str, class_names: Sequence[str] | None = None,
                         ignore_index: int = IGNORE_INDEX) -> Path:
    """PNG: per example, the image, the ground truth and the prediction (labels overlaid, or depth maps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = max(1, len(examples))
    fig, axes = plt.subplots(rows, 3, figsize=(11, 2.2 * rows + 0.6), squeeze=False)
    for r, ex in enumerate(examples):
        img = ex["image"].astype(np.float32)
        if task == "segmentation":
            n = len(class_names or ()) or int(max(ex["target"][ex["target"] != ignore_index].max(initial=0), ex["prediction"].max()) + 1)
            panels = []
            for lab in (ex["target"], ex["prediction"]):
                over = 0.45 * img + 0.55 * colorize_labels(lab, n, ignore_index)
                over[lab == ignore_index] = img[lab == ignore_index]
                panels.append(over.round().astype(np.uint8))
            axes[r][1].imshow(panels[0])
            axes[r][2].imshow(panels[1])
        else:
            lo, hi = float(np.min(ex["target"])), float(np.max(ex["target"]))
            axes[r][1].imshow(ex["target"], cmap="magma_r", vmin=lo, vmax=hi)
            axes[r][2].imshow(ex["prediction"], cmap="magma_r", vmin=lo, vmax=hi)
        axes[r][0].imshow(ex["image"])
        axes[r][0].set_ylabel(ex["name"], fontsize=7)
    titles = ("image", "ground truth", "prediction") if task == "segmentation" else (
        "image", "ground-truth depth (dark = far)", "predicted depth")
    for c, title in enumerate(titles):
        axes[0][c].set_title(title)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if task == "segmentation" and class_names:
        from matplotlib.patches import Patch

        colours = _palette(len(class_names)) / 255.0
        fig.legend(handles=[Patch(color=colours[i], label=name) for i, name in enumerate(class_names)],
                   loc="lower center", ncol=min(len(class_names), 7), fontsize=7, frameon=False)
        fig.subplots_adjust(bottom=0.12)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path


def probe_sections(results: dict[str, Any], figure: str | None = None) -> list:
    """Report sections (:class:`vavam.eval.report.Section`) of :func:`run_probe` results."""
    from vavam.eval.report import Section, Table

    task = results["task"]
    settings = (f"Frozen VaViM features of block {results['layer']} (grid {'x'.join(map(str, results['grid']))}); "
                f"memory of {results['memory_patches']} patches from {results['memory_images']} images "
                f"({results['patches_per_image']} per image, rare-label sampling); {results['query_images']} query images; "
                f"k = {results['k']}, temperature {results['temperature']}, {results['backend']} search.")
    if task == "segmentation":
        cm = np.asarray(results["confusion"], dtype=np.float64)
        share = cm.sum(1) / max(cm.sum(), 1)
        rows = [[name, iou, float(share[i])] for i, (name, iou) in enumerate(results["iou"].items())]
        tables = [Table(["metric", "value"], [["mIoU", results["miou"]], ["pixel accuracy", results["pixel_accuracy"]]]),
                  Table(["class", "IoU", "share of ground-truth pixels"], rows)]
        text = settings + " Ignore pixels are left out of the memory's histograms (the reference counted them as class 0)."
    else:
        tables = [Table(["metric", "value"], [[k, results[k]] for k in ("d1", "d2", "d3", "abs_rel", "sq_rel", "rmse")])]
        text = settings + " Depth: per-image metrics averaged over images; RMSE = sqrt(mean per-image MSE)."
    sections = [Section(f"Hummingbird {task} probe", text, tables)]
    if figure:
        sections.append(Section("Query examples", "Image, ground truth and prediction for the first query images.",
                                figures=[figure]))
    return sections
