"""Video quality of VaViM: Fréchet distance of generated frames at k = 1..horizon (``vavam eval quality``).

Protocol (reference §5.4, with its bug fixed): for each window of ``context + horizon`` real frames,
tokenize the ``context`` frames, generate ``horizon`` frames (greedy by default), decode them, and
extract features of

- the generated k-th frame (FD@k's "generated" set, one frame per window);
- the **true k-th future frame** (FD@k's "real" set with ``reference="future"``, the default). The
  original compared against the real *context* frames (all of them, pooled): ``reference="context"``
  keeps that variant, which measures "looks like driving video" rather than "looks like what came next";
- the tokenizer reconstruction ``decode(encode(future))`` of the true future (the reconstruction
  bound: the FD a perfect token predictor would reach, compared with the same real set);
- the last real context frame (a "copy the last frame" baseline).

Features come from a pluggable extractor (:mod:`vavam.eval.features`): the offline default (VQ encoder
features) is labelled *not comparable to published FID* in every report. Fréchet distances use the
running sums of :class:`~vavam.eval.quality.FeatureStats` (covariance with n - 1, scipy sqrtm,
eps = 1e-6 jitter when singular). With few windows FD is biased upwards (covariances of ``dim``
features from ``N`` samples); compare numbers from the same number of windows only.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from vavam.eval.quality import FeatureStats, frechet_distance, rank_deficiency

Reference = Literal["future", "context"]
#: What a generator looks like: context tokens long ``[B, T0, h, w]`` and a frame count -> ``[B, F, h, w]``.
Generator = Callable[[torch.Tensor, int], torch.Tensor]


@dataclass
class QualityResult:
    """Numbers of one video-quality evaluation (``fd_*[k-1]`` is FD@k) and example frames.

    ``examples``: float images in about [-1, 1] of the first windows: ``context`` ``[S, C, 3, H, W]``,
    ``future``, ``generated``, ``reconstruction`` ``[S, F, 3, H, W]``.
    """

    context: int
    horizon: int
    reference: str
    extractor: str
    description: str
    comparable_to_published: bool
    windows: int
    feature_dim: int
    fd_generated: list[float]
    fd_reconstruction: list[float]
    fd_copy_last: list[float]
    fd_generated_all: float
    fd_reconstruction_all: float
    fd_copy_last_all: float
    clamped_ids: int = 0
    examples: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able numbers (no example images)."""
        return {
            "context": self.context, "horizon": self.horizon, "reference": self.reference,
            "extractor": self.extractor, "extractor_description": self.description,
            "comparable_to_published": self.comparable_to_published, "windows": self.windows,
            "feature_dim": self.feature_dim,
            "fd_at_k": {str(k + 1): v for k, v in enumerate(self.fd_generated)},
            "fd_reconstruction_at_k": {str(k + 1): v for k, v in enumerate(self.fd_reconstruction)},
            "fd_copy_last_at_k": {str(k + 1): v for k, v in enumerate(self.fd_copy_last)},
            "fd_all": self.fd_generated_all, "fd_reconstruction_all": self.fd_reconstruction_all,
            "fd_copy_last_all": self.fd_copy_last_all, "clamped_ids": self.clamped_ids,
        }


# ------------------------------------------------------------------------------ statistics


class _Stats:
    """Lazily sized :class:`FeatureStats` (the feature size is known after the first batch)."""

    def __init__(self, name: str = "features") -> None:
        self.name = name
        self.stats: FeatureStats | None = None

    def update(self, feats: torch.Tensor) -> None:
        if self.stats is None:
            self.stats = FeatureStats(int(feats.shape[-1]), self.name)
        self.stats.update(feats)

    @staticmethod
    def merged(parts: list[_Stats]) -> FeatureStats:
        """One FeatureStats holding the samples of all ``parts``."""
        first = parts[0].stats
        out = FeatureStats(first.dim, parts[0].name.rsplit(" (", 1)[0] + " (all future steps)")
        for p in parts:
            out.n += p.stats.n
            out.sum += p.stats.sum
            out.outer += p.stats.outer
        return out


def _fd(a: FeatureStats, b: FeatureStats) -> float:
    return frechet_distance(*a.mean_cov(), *b.mean_cov())


# ------------------------------------------------------------------------------ the evaluation


def _as_generator(vim: Any, temperature: float, top_k: int | None, seed: int) -> Generator:
    """A VideoGPT -> greedy/sampled :func:`generate_frames`; any other callable is used as it is.

    Sampling draws window ``i``'s tokens (counted over the calls, in order) from a generator seeded by ``(seed, i)``
    alone, so a window's frames do not depend on the batch size or on the other windows of its batch."""
    from vavam.train.resume import step_generator
    from vavam.video import generate_frames
    from vavam.video.model import VideoGPT

    if isinstance(vim, VideoGPT):
        device = next(vim.parameters()).device
        done = [0]  # windows generated so far

        def run(ctx: torch.Tensor, n: int) -> torch.Tensor:
            first, done[0] = done[0], done[0] + ctx.shape[0]
            gens = None if top_k == 1 else [step_generator(seed, first + i, device=device) for i in range(ctx.shape[0])]
            return generate_frames(vim, ctx.to(device), n, temperature=temperature, top_k=top_k, generator=gens).cpu()

        return run
    if callable(vim):
        return vim
    raise TypeError("vim must be a VideoGPT or a callable (context tokens, num_frames) -> tokens, "
                    f"got {type(vim).__name__}")


def _batches(windows: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(windows, torch.Tensor):
        for i in range(0, len(windows), batch_size):
            yield windows[i : i + batch_size]
    else:
        yield from windows


def _to_unit(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] (about) -> [0, 1], clamped."""
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def evaluate_video_quality(
    vim: Any,
    tokenizer: Any,
    windows_of_frames: torch.Tensor | Iterable[torch.Tensor],
    extractor: Any,
    context: int = 4,
    horizon: int = 4,
    reference: Reference = "future",
    top_k: int | None = 1,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    num_examples: int = 4,
    total: int | None = None,
    progress: bool = False,
) -> QualityResult:
    """FD@k (k = 1..horizon) of generated frames, the tokenizer reconstruction bound and a copy baseline.

    Args:
        vim: a :class:`~vavam.video.VideoGPT` (generation with :func:`~vavam.video.generate_frames`), or any
            callable ``(context tokens long [B, context, h, w], horizon) -> long [B, horizon, h, w]``.
        tokenizer: ``encode`` (float ``[B, 3, H, W]`` in [-1, 1] -> long ``[B, h, w]``), ``decode`` and
            ``codebook_size`` (a VQModel or the TorchScript pair).
        windows_of_frames: real frames float in [-1, 1], ``[N, T, 3, H, W]`` with ``T >= context + horizon``
            (only the first ``context + horizon`` are used), or an iterable of such batches.
        extractor: a :class:`~vavam.eval.features.FeatureExtractor` (``[N, 3, H, W]`` in [0, 1] -> ``[N, d]``).
        context: number of context frames (the reference uses 4).
        horizon: number of generated frames (the reference uses 4).
        reference: ``"future"``: FD@k against the true k-th future frames; ``"context"`` (the original's
            variant): against all real context frames.
        top_k, temperature, seed: sampling (default greedy, as the reference).
        batch_size: windows per batch when ``windows_of_frames`` is a tensor.
        num_examples: windows whose frames are kept in ``examples``.
        total: number of windows (for the progress bar when an iterable is given).
        progress: tqdm bar over windows.

    Returns:
        :class:`QualityResult`.

    Raises:
        ValueError: bad ``context`` / ``horizon`` / ``reference``, window shapes, fewer than 2 windows, or
            ``context`` longer than the model's window allows.
    """
    from tqdm.auto import tqdm

    from vavam.media import decode_tokens, encode_images

    for value, name in ((context, "context"), (horizon, "horizon")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if reference not in ("future", "context"):
        raise ValueError(f"reference must be 'future' or 'context', got {reference!r}")
    max_frames = getattr(getattr(vim, "config", None), "num_frames", None)
    if max_frames is not None and context > int(max_frames) - 1:
        raise ValueError(f"context {context}: the model holds {max_frames} frames, so at most {int(max_frames) - 1} "
                         "context frames (one frame must be generated inside the window)")
    generate = _as_generator(vim, temperature, top_k, seed)
    length = context + horizon

    gen_stats = [_Stats(f"features of the generated frames (future step {k + 1})") for k in range(horizon)]
    rec_stats = [_Stats(f"features of the tokenizer reconstructions (future step {k + 1})") for k in range(horizon)]
    copy_stats = _Stats("features of the last context frames (copy baseline)")
    fut_stats = [_Stats(f"features of the real future frames (step {k + 1})") for k in range(horizon)]
    ctx_stats = _Stats("features of the context frames")
    examples: dict[str, list[torch.Tensor]] = {"context": [], "future": [], "generated": [], "reconstruction": []}
    n_windows, clamped = 0, 0
    bar = tqdm(total=total, disable=not progress, desc="video quality", unit="window", dynamic_ncols=True)
    try:
        for batch in _batches(windows_of_frames, batch_size):
            if not isinstance(batch, torch.Tensor) or batch.ndim != 5 or batch.shape[2] != 3:
                shape = tuple(batch.shape) if isinstance(batch, torch.Tensor) else type(batch).__name__
                raise ValueError(f"windows_of_frames must be float [N, T, 3, H, W] in [-1, 1], got {shape}")
            if batch.shape[1] < length:
                raise ValueError(f"windows_of_frames hold {batch.shape[1]} frames, but context {context} + horizon "
                                 f"{horizon} = {length} are needed")
            b = batch.shape[0]
            if b == 0:
                continue
            frames = batch[:, :length].float().cpu()
            ctx_img, fut_img = frames[:, :context], frames[:, context:]  # [B, C, 3, H, W], [B, F, 3, H, W]
            hw = tuple(frames.shape[-2:])
            ctx_tok = encode_images(tokenizer, ctx_img.flatten(0, 1))
            ctx_tok = ctx_tok.view(b, context, *ctx_tok.shape[1:])  # [B, C, h, w]
            fut_tok = encode_images(tokenizer, fut_img.flatten(0, 1))
            generated = generate(ctx_tok, horizon)
            if not isinstance(generated, torch.Tensor) or tuple(generated.shape) != (b, horizon, *ctx_tok.shape[2:]):
                got = tuple(generated.shape) if isinstance(generated, torch.Tensor) else type(generated).__name__
                raise ValueError(f"the generator returned {got}, expected {(b, horizon, *ctx_tok.shape[2:])}")
            gen_img, outside = decode_tokens(tokenizer, generated.flatten(0, 1).long().cpu())
            rec_img, _ = decode_tokens(tokenizer, fut_tok)
            clamped += outside
            gen_img = gen_img.view(b, horizon, *gen_img.shape[1:])
            rec_img = rec_img.view(b, horizon, *rec_img.shape[1:])
            if tuple(gen_img.shape[-2:]) != hw:
                raise ValueError(f"the tokenizer decodes {tuple(gen_img.shape[-2:])} images from {hw} frames")

            feats = {
                "ctx": extractor(_to_unit(ctx_img.flatten(0, 1))).view(b, context, -1),
                "fut": extractor(_to_unit(fut_img.flatten(0, 1))).view(b, horizon, -1),
                "gen": extractor(_to_unit(gen_img.flatten(0, 1))).view(b, horizon, -1),
                "rec": extractor(_to_unit(rec_img.flatten(0, 1))).view(b, horizon, -1),
            }
            ctx_stats.update(feats["ctx"].flatten(0, 1))
            copy_stats.update(feats["ctx"][:, -1])
            for k in range(horizon):
                fut_stats[k].update(feats["fut"][:, k])
                gen_stats[k].update(feats["gen"][:, k])
                rec_stats[k].update(feats["rec"][:, k])
            keep = max(0, min(b, num_examples - n_windows))
            if keep:
                for key, value in (("context", ctx_img), ("future", fut_img), ("generated", gen_img),
                                   ("reconstruction", rec_img)):
                    examples[key].append(value[:keep].clone())
            n_windows += b
            bar.update(b)
    finally:
        bar.close()
    if n_windows < 2:
        raise ValueError(f"need at least 2 windows for a covariance, got {n_windows}")

    copy = copy_stats.stats
    if reference == "future":
        refs = [s.stats for s in fut_stats]
        ref_all = _Stats.merged(fut_stats)
    else:
        refs = [ctx_stats.stats] * horizon
        ref_all = ctx_stats.stats
    fd_gen = [_fd(gen_stats[k].stats, refs[k]) for k in range(horizon)]
    fd_rec = [_fd(rec_stats[k].stats, refs[k]) for k in range(horizon)]
    fd_copy = [_fd(copy, refs[k]) for k in range(horizon)]
    return QualityResult(
        context=context, horizon=horizon, reference=reference,
        extractor=str(getattr(extractor, "name", type(extractor).__name__)),
        description=str(getattr(extractor, "description", "")),
        comparable_to_published=bool(getattr(extractor, "comparable_to_published", False)),
        windows=n_windows, feature_dim=copy.dim,
        fd_generated=fd_gen, fd_reconstruction=fd_rec, fd_copy_last=fd_copy,
        fd_generated_all=_fd(_Stats.merged(gen_stats), ref_all),
        fd_reconstruction_all=_fd(_Stats.merged(rec_stats), ref_all),
        fd_copy_last_all=_fd(copy, ref_all),
        clamped_ids=clamped,
        examples={k: torch.cat(v) for k, v in examples.items() if v},
    )


# ------------------------------------------------------------------------------ report


def _rows(result: QualityResult) -> list[tuple[str, list[float], float]]:
    return [
        ("VaViM (generated)", result.fd_generated, result.fd_generated_all),
        ("tokenizer reconstruction (bound)", result.fd_reconstruction, result.fd_reconstruction_all),
        ("copy last context frame", result.fd_copy_last, result.fd_copy_last_all),
    ]


def plot_fd_vs_k(result: QualityResult, path: Path) -> Path:
    """Line plot of FD@k for the generated frames, the reconstruction bound and the copy baseline (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vavam.io import atomic_write_bytes

    ks = list(range(1, result.horizon + 1))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for (name, values, _), style in zip(_rows(result), ("o-", "s--", "^:")):
        ax.plot(ks, values, style, label=name)
    ax.set_xlabel("k (frames after the context)")
    ax.set_ylabel(f"FD ({result.extractor} features)")
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if result.extractor == "vq":
        ax.set_title("not comparable to published FID", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def write_strips(result: QualityResult, folder: Path, display_height: int = 96) -> list[str]:
    """Per k, ``strip_k{k}.png``: one row per example window, real k-th future frame | generated k-th frame.

    Returns the file names (relative to ``folder``); strips an earlier run left in ``folder`` are removed first.
    """
    from vavam.commands import common as C

    for old in Path(folder).glob("strip_k*.png"):  # an earlier run's strips would be taken for this one's
        old.unlink()
    if "generated" not in result.examples:
        return []
    real, gen = result.examples["future"], result.examples["generated"]
    scale = max(1, round(display_height / int(real.shape[-2])))
    names = []
    for k in range(result.horizon):
        rows = []
        for i in range(len(real)):
            pair = [C.labelled(C.upscale(C.to_uint8(img[None])[0], scale), text)
                    for img, text in ((real[i, k], f"real t+{k + 1}"), (gen[i, k], f"generated t+{k + 1}"))]
            rows.append(C.hstack(pair))
        name = f"strip_k{k + 1}.png"
        C.write_png(Path(folder) / name, C.vstack(rows))
        names.append(name)
    return names


def comparability_label(result: QualityResult) -> str:
    """The warning every report carries when its numbers cannot be set beside published ones ("" if they can)."""
    from vavam.eval.features import NOT_COMPARABLE

    if result.extractor == "vq":
        return NOT_COMPARABLE[0].upper() + NOT_COMPARABLE[1:]
    if not result.comparable_to_published:
        return f"Not comparable to published numbers: {result.description}"
    if result.reference != "context":
        return ("Same features as published numbers, but the real set is the true future (the paper's FD@k used "
                "the context frames: --reference context)")
    return ""


def quality_sections(result: QualityResult, strips: list[str], plot: str | None) -> tuple[str, list]:
    """(intro, sections) of the report: the FD@k table, the plot, the strips, the protocol."""
    from vavam.eval.report import Section, Table

    label = f"**{comparability_label(result)}.** " if comparability_label(result) else ""
    real = ("the true k-th future frame of each window" if result.reference == "future"
            else f"all {result.context} real context frames of each window (the original protocol's real set)")
    intro = (f"{label}Fréchet distance between {result.extractor} features of generated frames and {real}, "
             f"over {result.windows} windows ({result.context} context frames -> {result.horizon} generated).")
    columns = ["", *[f"FD@{k}" for k in range(1, result.horizon + 1)], "all k"]
    table = Table(columns, [[name, *vals, pooled] for name, vals, pooled in _rows(result)], digits=3)
    text = (f"Lower is better. Reference set: {real}. The reconstruction row encodes and decodes the true future "
            "frames with the tokenizer: the FD a perfect token predictor would reach. The copy row repeats the last "
            "real context frame. 'all k' pools the k's.")
    if result.extractor == "vq":
        text += (" VQ encoder features favour the tokenizer's own reconstructions; use DINOv2 or Inception features "
                 "to compare models across tokenizers.")
    sections = [Section("Fréchet distance at k", f"{label}{text}", [table])]
    if plot:
        sections.append(Section("FD vs k", label.strip(), figures=[plot]))
    if strips:
        sections.append(Section("Real vs generated", "Per k: rows are windows; left the real k-th future frame, "
                                "right the generated one.", figures=strips))
    protocol = [
        f"- extractor: {result.description}",
        f"- comparable to published numbers: {'yes' if result.comparable_to_published else 'no'}",
        f"- reference set: {result.reference} ({real})",
        (f"- windows: {result.windows}; feature size {result.feature_dim}; FD of Gaussians fitted with n - 1 "
         "covariances (biased upwards for few windows: compare at equal window counts)"),
    ]
    if result.clamped_ids:
        protocol.append(f"- {result.clamped_ids} generated ids outside the codebook were clamped for decoding")
    sections.append(Section("Protocol", "\n".join(protocol)))
    return intro, sections


def save_quality_report(result: QualityResult, out: Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``evaluation.json`` (kind "quality") + report.md/html + ``fd_vs_k.png`` + strips into ``out``; the
    report lists ``extra["warnings"]`` (e.g. too few windows for a full-rank covariance) in a Warnings section."""
    from vavam.eval.report import save_evaluation

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    strips = write_strips(result, out)
    plot = plot_fd_vs_k(result, out / "fd_vs_k.png").name
    intro, sections = quality_sections(result, strips, plot)
    if (extra or {}).get("warnings"):  # e.g. too few windows for a full-rank covariance: said beside the numbers
        from vavam.eval.report import Section

        sections.insert(1, Section("Warnings", "\n".join(f"- {w}" for w in extra["warnings"])))
    results = {**result.to_dict(), **(extra or {}), "figures": [plot, *strips]}
    results["label"] = comparability_label(result)
    title = "Video quality: FD@k" + (" (not comparable to published FID)" if result.extractor == "vq" else "")
    return save_evaluation(out, "quality", title, results, sections, intro)


# ------------------------------------------------------------------------------ data: windows of real frames


def frame_sources(data: Path, split: str = "heldout", fps: float | None = 2.0) -> list:
    """Frame sources of ``data``: a world export folder (``frames/<scene>/*.png``, scenes of ``split`` per
    ``meta.json``; ``"all"`` for every scene), else image folders / videos found under ``data``."""
    from vavam.commands.common import CommandError
    from vavam.data.frames import FrameSource, discover_sources
    from vavam.io import read_json

    data = Path(data)
    if not data.exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder")
    frames_dir = data / "frames"
    if frames_dir.is_dir():
        names = sorted(p.name for p in frames_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        meta_path = data / "meta.json"
        if split != "all" and meta_path.is_file():
            splits = read_json(meta_path).get("splits", {})
            if split not in splits:
                raise CommandError(f"--split {split}: {meta_path} lists splits {sorted(splits)}; pass --split all")
            listed = set(splits[split].get("scenes", []))
            names = [n for n in names if n in listed]
        sources = [FrameSource.from_image_folder(frames_dir / n, name=n) for n in names]
        if not sources:
            raise CommandError(f"--data {data}: no complete scene of split {split!r} under {frames_dir}")
        return sources
    return discover_sources([data], fps=fps, recursive=data.is_dir())


def plan_windows(lengths: dict[str, int], count: int, span: int, stride: int, seed: int) -> list[tuple[str, int]]:
    """``count`` window starts ``(scene, first frame)`` drawn without replacement (seeded) among all starts
    ``0, stride, 2 stride, ...`` whose ``span`` frames fit in the scene; sorted by scene and start."""
    starts = [(name, s) for name, n in lengths.items() for s in range(0, n - span + 1, stride)]
    if count < len(starts):
        pick = np.random.default_rng(seed).choice(len(starts), size=count, replace=False)
        starts = [starts[i] for i in sorted(pick)]
    return starts


def read_windows(sources: list, plan: list[tuple[str, int]], length: int, step: int, size: tuple[int, int],
                 batch_size: int) -> Iterator[torch.Tensor]:
    """Batches ``[B, length, 3, H, W]`` in [-1, 1] of the planned windows (frames ``start + i * step``).

    Frames are read in order and let go once no pending window of their scene needs them, so at most the frames of
    the windows that overlap the current one are held (not every planned frame of a scene: a long video with many
    windows would need gigabytes). A window whose frames a video does not hold (it ends before its declared
    length) is skipped.
    """
    from vavam.data.frames import preprocess_frame, read_image

    by_name = {s.name: s for s in sources}
    batch: list[torch.Tensor] = []
    last = (length - 1) * step  # a window starting at s is complete once frame s + last is read
    for name in dict.fromkeys(n for n, _ in plan):
        source = by_name[name]
        pending = sorted(s for n, s in plan if n == name)
        needed = sorted({s + i * step for s in pending for i in range(length)})
        if source.kind == "images":
            stream = ((i, preprocess_frame(read_image(source.files[i]), size=size, where=f"{source.files[i]}"))
                      for i in needed)
        else:
            wanted = set(needed)
            stream = ((f.index, f.image) for f in source.frames(size=size) if f.index in wanted)
        frames: dict[int, torch.Tensor] = {}
        for index, image in stream:
            frames[index] = image
            while pending and pending[0] + last <= index:
                s = pending.pop(0)
                idx = [s + i * step for i in range(length)]
                if all(i in frames for i in idx):
                    batch.append(torch.stack([frames[i] for i in idx]))
                if len(batch) == batch_size:
                    yield torch.stack(batch)
                    batch = []
            low = pending[0] if pending else index + 1
            for i in [i for i in frames if i < low]:  # no pending window starts before `low`
                del frames[i]
            if not pending:
                break
        stream.close()  # the rest of a video is not decoded
    if batch:
        yield torch.stack(batch)


# ------------------------------------------------------------------------------ command


def eval_quality(
    video: Path,
    tokenizer: Path,
    out: Path,
    data: Path,
    extractor: Literal["vq", "dinov2", "inception"] = "vq",
    weights: Path | None = None,
    reference: Literal["future", "context"] = "future",
    windows: int = 64,
    seed: int = 0,
    context: int = 4,
    horizon: int = 4,
    split: Literal["heldout", "train", "all"] = "heldout",
    frame_step: int = 1,
    stride: int | None = None,
    fps: float | None = 2.0,
    size: tuple[int, int] | None = None,
    top_k: int | None = 1,
    temperature: float = 1.0,
    batch_size: int = 8,
    examples: int = 4,
    dinov2_quirk: bool = False,
    device: str = "cpu",
    trust_code: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Video quality of a VaViM: FD@k of generated frames vs the true future, with the tokenizer bound.

    Writes into ``out``: ``evaluation.json`` (kind "quality"), ``report.md`` / ``report.html``, ``fd_vs_k.png``
    and ``strip_k{k}.png`` (real | generated). With ``--extractor vq`` (the offline default) every report
    says the numbers are not comparable to published FID.

    Args:
        video: VaViM checkpoint: our folder or the authors' released ``.pt`` (a VaVAM folder: its VaViM).
        tokenizer: our tokenizer folder, a LlamaGen VQ ``.pt``, the TorchScript pair (``--trust-code``), or
            "preset:vq_tiny" (random weights, for tests).
        out: output folder.
        data: a world export folder (``vavam world generate``), an image folder, a video, or a folder of those.
        extractor: vq (offline; tokenizer encoder features), dinov2 (ViT-L/14-reg, the paper's), inception (FID).
        weights: dinov2: a local transformers folder (config.json + model.safetensors); inception: pytorch-fid's
            ``pt_inception-2015-12-05-6726825d.pth`` (file or folder). Nothing is downloaded.
        reference: future (the true k-th future frames) or context (all real context frames, the original).
        windows: number of windows (drawn at random, seeded, among all that fit).
        seed: seed of the window draw and of sampling.
        context: context frames per window.
        horizon: generated frames per window.
        split: world exports: scenes of this split (heldout towns by default); ignored for other data.
        frame_step: take every n-th input frame (e.g. 5 for a 10 Hz export and a 2 Hz model).
        stride: frames between window starts (default: windows do not overlap).
        fps: resample videos to this rate (None: every frame).
        size: frame size ``H W`` fed to the tokenizer (default: the model's token grid times the downsampling).
        top_k: 1 = greedy (default, as the reference); 0 or None = no cut.
        temperature: softmax temperature, > 0 when sampling (unused when greedy: any value >= 0, 0 included).
        batch_size: windows per batch.
        examples: windows shown in the strips.
        dinov2_quirk: normalise the [-1, 1] tensor as the original did (to reproduce its numbers).
        device: torch device.
        trust_code: allow the authors' TorchScript tokenizer files.
        progress: progress bar.
    """
    from vavam.commands import common as C
    from vavam.commands.generate import _load_vim
    from vavam.eval.features import build_extractor

    if windows < 2:
        raise C.CommandError(f"--windows must be >= 2 (a covariance needs 2 samples), got {windows}")
    for value, name in ((context, "--context"), (horizon, "--horizon"), (frame_step, "--frame-step"),
                        (batch_size, "--batch-size")):
        if value < 1:
            raise C.CommandError(f"{name} must be >= 1, got {value}")
    if stride is not None and stride < 1:
        raise C.CommandError(f"--stride must be >= 1, got {stride}")
    top_k, sample_temperature = C.sampling_args(top_k, temperature)
    if extractor != "vq" and weights is None:
        raise C.CommandError(f"--extractor {extractor} needs --weights (a local copy of its weights; nothing is "
                             "downloaded), or use --extractor vq (offline, not comparable to published FID)")
    if not Path(video).exists():
        raise FileNotFoundError(f"--video {video}: no such file or folder")
    tok_path = str(tokenizer)
    try:
        vim = _load_vim(video, device)
    except (ValueError, KeyError) as exc:
        raise C.CommandError(f"--video {video}: cannot load a VaViM: {exc}") from exc
    tok = C.load_tokenizer_arg(tok_path, trust_code, device)
    warnings = C.check_codebook(tok, tok_path, vim.config.vocab_size)
    if context > vim.config.num_frames - 1:
        raise C.CommandError(f"--context {context}: the model holds {vim.config.num_frames} frames, so at most "
                             f"{vim.config.num_frames - 1} context frames")
    try:
        feats = build_extractor(extractor, tokenizer=tok, weights=weights, device=device,
                                signed_input_quirk=dinov2_quirk)
    except (FileNotFoundError, ImportError) as exc:
        raise type(exc)(f"--weights: {exc}") from exc
    except (ValueError, TypeError) as exc:
        raise C.CommandError(f"--extractor {extractor}: {exc}") from exc

    sources = frame_sources(data, split, fps)
    from vavam.tokenizer.loading import recorded_image_size

    hw = C.choose_frame_size(C.source_size(sources[0]), vim.config.tokens_per_frame, int(tok.downsample), size,
                             tok_path, recorded_image_size(tok_path))
    length = context + horizon
    span = (length - 1) * frame_step + 1
    lengths = {s.name: len(s.files) if s.kind == "images" else int(s.num_frames_hint or 0) for s in sources}
    plan = plan_windows(lengths, windows, span, stride or length * frame_step, seed)
    if len(plan) < 2:
        raise C.CommandError(f"--data {data}: {len(plan)} window(s) of {length} frames (step {frame_step}) fit in "
                             f"{len(sources)} scene(s); need at least 2 (lower --stride, or more data)")
    if len(plan) < windows:
        warnings.append(f"only {len(plan)} windows fit in the data (asked for {windows})")
    batches = read_windows(sources, plan, length, frame_step, hw, batch_size)
    result = evaluate_video_quality(vim, tok, batches, feats, context=context, horizon=horizon, reference=reference,
                                    top_k=top_k, temperature=sample_temperature, seed=seed, num_examples=examples,
                                    total=len(plan), progress=progress)
    if result.windows < len(plan):  # read_windows skips windows a video does not hold (it ended early)
        warnings.append(f"{len(plan) - result.windows} of the {len(plan)} planned windows could not be read (a video "
                        f"ended before its declared length); FD is over the other {result.windows}")
    if (why := rank_deficiency(result.windows, result.feature_dim)) is not None:
        warnings.append(why)
    world_export = (Path(data) / "frames").is_dir()  # --split applies to world exports only
    extra = {"video": str(video), "tokenizer": tok_path, "data": str(data), "split": split if world_export else None,
             "seed": seed,
             "frame_step": frame_step, "stride": stride or length * frame_step, "image_size": list(hw),
             "top_k": top_k, "temperature": temperature, "weights": str(weights) if weights else None,
             "warnings": warnings}
    path = save_quality_report(result, out, extra)
    summary = {**result.to_dict(), **extra, "label": comparability_label(result), "evaluation": str(path)}
    fmt = ", ".join(f"FD@{k + 1} {v:.3f}" for k, v in enumerate(result.fd_generated))
    print(f"{fmt} (reconstruction bound {result.fd_reconstruction_all:.3f}) over {result.windows} windows"
          + ("" if result.comparable_to_published else " [not comparable to published FID]"))
    for w in warnings:
        print(f"warning: {w}")
    print(f"-> {out}")
    return summary
