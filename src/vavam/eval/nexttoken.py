"""Next-token evaluation: the model's cross-entropy and two frequency baselines.

Both baselines are fitted on training tokens with add-one (Laplace) smoothing over the whole
vocabulary, so every token has a finite cross-entropy:

- unigram: one distribution over codes for every position;
- per-position: one distribution per spatial position ``r * w + c`` of the frame.

The model is scored exactly as trained: position ``i`` predicts token ``i + 1`` of the window, so a
window of ``T*h*w`` tokens has ``T*h*w - 1`` targets.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


#: tokens counted per step when fitting the frequency baselines (bounds the int64 index buffer to 8 MiB)
_COUNT_CHUNK = 1 << 20


class FrequencyBaseline:
    """Token frequencies (per spatial position or pooled) -> cross-entropy of windows' targets.

    Counting is streaming: :meth:`update` adds a block of frames at a time into int64 counts ``[P, V]``
    (``P = h*w`` per position, else 1), in chunks of about a million tokens, so fitting a whole training
    split (:meth:`fit_store`) needs memory for one chunk plus the counts, not for the split.
    """

    def __init__(self, vocab_size: int, per_position: bool) -> None:
        from vavam.checks import check_positive_int

        check_positive_int(vocab_size, "vocab_size")
        self.vocab_size = vocab_size
        self.per_position = per_position
        self.counts: torch.Tensor | None = None  # [P, V] float64 (P = h*w or 1), add-one smoothed
        self._raw: torch.Tensor | None = None  # [P, V] int64 observed counts while fitting
        self._grid: tuple[int, int] | None = None  # (h, w) of the counted frames
        self._seen = 0  # tokens counted

    def reset(self) -> FrequencyBaseline:
        """Forget every count (the next :meth:`update` starts a new fit)."""
        self.counts, self._raw, self._grid, self._seen = None, None, None, 0
        return self

    def update(self, tokens: torch.Tensor | np.ndarray, name: str = "tokens") -> FrequencyBaseline:
        """Add the counts of frames ``[..., h, w]`` (any integer dtype, torch or numpy; uint16 memory maps too).

        Args:
            tokens: frames to count; every id must lie in ``[0, vocab_size)``.
            name: what ``tokens`` are, for error messages (e.g. the store and scene).
        """
        array = tokens.detach().cpu().numpy() if isinstance(tokens, torch.Tensor) else np.asarray(tokens)
        if array.ndim < 2:
            raise ValueError(f"{name}: expected frames [..., h, w], got shape {tuple(array.shape)}")
        if not np.issubdtype(array.dtype, np.integer):
            raise TypeError(f"{name}: token ids must be integers, got dtype {array.dtype}")
        grid = (int(array.shape[-2]), int(array.shape[-1]))
        if 0 in grid:
            raise ValueError(f"{name}: frames of {grid[0]}x{grid[1]} tokens hold no token")
        if self._grid is not None and grid != self._grid:
            raise ValueError(f"{name}: frames of {grid[0]}x{grid[1]} tokens, but the frames counted so far are "
                             f"{self._grid[0]}x{self._grid[1]}")
        hw = grid[0] * grid[1]
        flat = array.reshape(-1, hw)  # [frames, h*w] (a view where possible)
        if self._raw is None:
            self._raw = torch.zeros((hw if self.per_position else 1) * self.vocab_size, dtype=torch.int64)
            self._grid = grid
        offsets = (np.arange(hw, dtype=np.int64) * self.vocab_size) if self.per_position else None
        step = max(1, _COUNT_CHUNK // max(hw, 1))
        for first in range(0, len(flat), step):
            chunk = np.asarray(flat[first : first + step])
            if chunk.size == 0:
                continue
            lo, hi = int(chunk.min()), int(chunk.max())
            if lo < 0 or hi >= self.vocab_size:
                raise ValueError(f"{name}: token ids outside [0, {self.vocab_size}) (min {lo}, max {hi})")
            index = chunk.astype(np.int64)
            if offsets is not None:
                index += offsets
            index = torch.from_numpy(index.reshape(-1))
            self._raw.index_add_(0, index, torch.ones(1, dtype=torch.int64).expand(len(index)))
            self._seen += int(chunk.size)
        self.counts = None  # stale until finish()
        return self

    def finish(self, name: str = "tokens") -> FrequencyBaseline:
        """Turn the counts gathered by :meth:`update` into the add-one smoothed table :attr:`counts`."""
        if self._raw is None or self._seen == 0:
            raise ValueError(f"{name}: no training tokens to fit the frequency baseline on (empty)")
        positions = self._raw.numel() // self.vocab_size
        self.counts = self._raw.view(positions, self.vocab_size).double().add_(1.0)  # add-one smoothing
        return self

    def fit(self, tokens: torch.Tensor | np.ndarray, name: str = "tokens") -> FrequencyBaseline:
        """Count ``tokens [N, T, h, w]`` (or ``[N, h, w]`` frames) from scratch; ``name`` is how errors call them.

        Raises:
            ValueError: no token (empty input), or ids outside ``[0, vocab_size)``.
        """
        return self.reset().update(tokens, name).finish(name)

    def fit_store(self, store, name: str | None = None) -> FrequencyBaseline:
        """Count every frame of a token store, scene by scene (memory: one chunk + the counts)."""
        return fit_frequency_baselines([self], store, name)[0]

    def log_probs(self) -> torch.Tensor:
        """``[P, V]`` log-probabilities."""
        if self.counts is None:
            raise RuntimeError("FrequencyBaseline: call fit() first")
        return (self.counts / self.counts.sum(-1, keepdim=True)).log()

    def cross_entropy(self, tokens: torch.Tensor, name: str = "tokens") -> tuple[float, int]:
        """(sum of -log p over the targets, number of targets) for windows ``[N, T, h, w]``.

        Targets are all tokens but the first of each window, as for the model. The windows may lie on any device
        (the counts stay on the CPU, where the windows are scored).
        """
        tokens = torch.as_tensor(tokens).long().cpu()
        if tokens.ndim != 4:
            raise ValueError(f"{name}: expected windows [N, T, h, w], got shape {tuple(tokens.shape)}")
        n, t, h, w = tokens.shape
        logp_table = self.log_probs()
        if self.per_position and logp_table.shape[0] != h * w:
            raise ValueError(f"{name}: frames of {h}x{w} tokens, the per-position baseline was fitted on "
                             f"{logp_table.shape[0]} positions per frame")
        if self.per_position and self._grid is not None and (h, w) != self._grid:
            raise ValueError(f"{name}: frames of {h}x{w} tokens, the per-position baseline was fitted on frames of "
                             f"{self._grid[0]}x{self._grid[1]} tokens")
        flat = tokens.reshape(n, t * h * w)[:, 1:]  # [N, L-1] targets
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.vocab_size):
            raise ValueError(f"{name}: token ids outside [0, {self.vocab_size}) (min {int(flat.min())}, "
                             f"max {int(flat.max())})")
        positions = torch.arange(1, t * h * w)
        pos = positions % (h * w) if self.per_position else torch.zeros_like(positions)
        logp = logp_table[pos.expand_as(flat), flat]  # [N, L-1]
        return float(-logp.sum()), flat.numel()


def fit_frequency_baselines(baselines: list[FrequencyBaseline], source, name: str | None = None
                            ) -> list[FrequencyBaseline]:
    """Fit several baselines in one pass over training frames, scene by scene.

    Args:
        baselines: the baselines to fit (their previous counts are dropped).
        source: a token store (``.scenes``, ``.tokens(scene)`` -> ``[T, h, w]``, e.g.
            :class:`vavam.data.tokens.TokenStore`) or frames ``[..., h, w]`` (tensor or array).
        name: how errors name the source (default: the store's folder, or ``"train_tokens"``).

    Returns:
        ``baselines``, fitted.
    """
    for b in baselines:
        b.reset()
    if hasattr(source, "scenes") and hasattr(source, "tokens"):
        label = name or str(getattr(source, "root", "train_tokens"))
        release = getattr(source, "release", None)  # TokenStore caches each scene's memory map once read
        for scene in source.scenes:
            frames = source.tokens(scene)
            for b in baselines:
                b.update(frames, f"{label} (scene {scene!r})")
            if callable(release):  # unmap it: a training split's pages would otherwise stay resident
                release(scene)
            del frames
    else:
        label = name or "train_tokens"
        for b in baselines:
            b.update(source, label)
    for b in baselines:
        b.finish(label)
    return baselines


@torch.no_grad()
def model_cross_entropy(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[float, int]:
    """(sum of CE, number of targets) of a video model on windows ``long [N, T, h, w]``."""
    logits = model(tokens)  # [N, L, V]
    n, length, vocab = logits.shape
    targets = tokens.reshape(n, length)[:, 1:].reshape(-1)  # [N*(L-1)]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), targets, reduction="sum")
    return float(loss), n * (length - 1)


def perplexity(mean_cross_entropy: float) -> float:
    """exp(CE), with CE in nats; ``inf`` where it overflows a float (CE above about 709.78, a diverged model),
    instead of ``math.exp``'s ``OverflowError`` ending the whole evaluation."""
    try:
        return math.exp(mean_cross_entropy)
    except OverflowError:
        return math.inf


def store_window_index(store, num_frames: int, stride: int = 1) -> tuple[list[tuple[str, int]], int]:
    """The non-overlapping windows of ``num_frames`` frames (every ``stride``-th frame) of every scene of a token
    store, as ``(scene, start)`` in scene order, and how many of them were left out because their frames are not
    evenly spaced in time (a missing frame: :meth:`~vavam.data.tokens.TokenStore.steady_window_starts`).

    Windows tile each scene from its first frame (starts ``0, span, 2 span, ...`` with ``span = (num_frames - 1)
    stride + 1``); a left-out window's place stays empty, so the others are the same with or without the gap.
    """
    from vavam.checks import check_positive_int

    check_positive_int(num_frames, "num_frames")
    check_positive_int(stride, "stride")
    span = (num_frames - 1) * stride + 1
    index, left_out = [], 0
    for scene in store.scenes:
        steady = set(store.steady_window_starts(scene, num_frames, stride).tolist())
        for start in range(0, store.num_frames(scene) - span + 1, span):
            if start in steady:
                index.append((scene, start))
            else:
                left_out += 1
    return index, left_out


def store_labels(paths: list[Path]) -> list[str]:
    """Row names for token stores: the fewest trailing path parts that tell them all apart, the same number for
    every store (``train/tokens``, ``val/tokens`` rather than ``tokens`` and a full path); the whole path where
    no suffix does (the same folder given twice)."""
    parts = [Path(p).parts for p in paths]
    for k in range(1, max((len(q) for q in parts), default=1) + 1):
        labels = [Path(*q[-k:]).as_posix() for q in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{p} ({i + 1})" for i, p in enumerate(paths)]


def store_windows(store, num_frames: int, stride: int = 1, limit: int | None = None, seed: int = 0) -> torch.Tensor:
    """Non-overlapping windows of ``num_frames`` frames (every ``stride``-th frame) of every scene of a
    token store -> long ``[N, T, h, w]``; with ``limit`` (>= 1), a seeded random subset of that many.
    Windows that span a jump in time are left out, with a warning (:func:`store_window_index`)."""
    return counted_store_windows(store, num_frames, stride, limit, seed)[0]


def counted_store_windows(store, num_frames: int, stride: int = 1, limit: int | None = None,
                          seed: int = 0) -> tuple[torch.Tensor, int]:
    """:func:`store_windows` and the number of windows it left out for a jump in time."""
    from vavam.checks import check_positive_int

    if limit is not None:
        check_positive_int(limit, "limit")
    index, left_out = store_window_index(store, num_frames, stride)
    span = (num_frames - 1) * stride + 1
    if left_out:
        warnings.warn(f"{store.root}: {left_out} of {left_out + len(index)} windows of {num_frames} frames (stride "
                      f"{stride}) span a jump in time (a missing frame) and are left out", stacklevel=3)
    if not index:
        raise ValueError(f"{store.root}: no scene has {span} frames (a window of {num_frames} at stride {stride})"
                         + (" without a jump in time" if left_out else ""))
    if limit is not None and len(index) > limit:  # the subset is drawn first: only its windows are read
        keep = torch.randperm(len(index), generator=torch.Generator().manual_seed(seed))[:limit]
        index = [index[i] for i in keep.tolist()]
    windows = torch.from_numpy(np.stack([store.window(scene, start, num_frames, stride).astype(np.int64)
                                         for scene, start in index]))
    return windows, left_out


@torch.no_grad()
def evaluate_next_token(
    model: torch.nn.Module,
    datasets: dict[str, torch.Tensor],
    train_tokens=None,
    batch_size: int = 8,
    progress: bool = False,
    train_name: str | None = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean cross-entropy (nats / token) and perplexity per dataset, with the two frequency baselines.

    Args:
        model: a video model (``model(tokens [B,T,h,w]) -> logits [B, T*h*w, V]``, ``model.config.vocab_size``).
        datasets: name -> windows ``long [N, T, h, w]`` (N >= 1 each).
        train_tokens: training tokens for the baselines: a token store (counted scene by scene, see
            :func:`fit_frequency_baselines`) or frames ``long [..., h, w]``; None: baselines left out.
        batch_size: windows per forward pass (>= 1).
        progress: show a progress bar.
        train_name: how errors about the training tokens name them (default: the store's folder).

    Returns:
        ``{dataset: {row: {"cross_entropy", "perplexity", "targets"}}}`` with rows ``model`` and, given
        training tokens, ``unigram frequency`` and ``per-position frequency``.
    """
    from vavam.checks import check_positive_int, check_token_ids

    check_positive_int(batch_size, "batch_size")
    vocab = model.config.vocab_size
    for name, windows in datasets.items():
        if windows.ndim != 4 or len(windows) == 0 or windows.shape[1:].numel() < 2:
            raise ValueError(f"dataset {name!r}: needs at least one window [N, T, h, w] of 2 or more tokens, got "
                             f"shape {tuple(windows.shape)}")
        check_token_ids(windows, vocab, f"dataset {name!r}")
    baselines = {}
    if train_tokens is not None:
        fitted = fit_frequency_baselines([FrequencyBaseline(vocab, per_position=False),
                                          FrequencyBaseline(vocab, per_position=True)], train_tokens, train_name)
        baselines = {"unigram frequency": fitted[0], "per-position frequency": fitted[1]}
    out = {}
    for name, windows in datasets.items():
        totals = {"model": [0.0, 0], **{b: [0.0, 0] for b in baselines}}
        starts = range(0, len(windows), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"next-token {name}", unit="batch")
        for i in starts:
            batch = windows[i : i + batch_size]
            for row, (total, n) in [("model", model_cross_entropy(model, batch)),
                                    *((b, f.cross_entropy(batch, f"dataset {name!r}")) for b, f in baselines.items())]:
                totals[row][0] += total
                totals[row][1] += n
        out[name] = {row: {"cross_entropy": t / n, "perplexity": perplexity(t / n), "targets": n}
                     for row, (t, n) in totals.items()}
    return out


def eval_nexttoken(
    video: Path,
    tokens: list[Path],
    out: Path,
    train_tokens: Path | None = None,
    stride: int = 1,
    limit: int | None = None,
    batch_size: int = 8,
    seed: int = 0,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Next-token cross-entropy and perplexity of a VaViM per dataset, beside two frequency baselines.

    Args:
        video: VaViM checkpoint (our folder or the authors' ``.pt``).
        tokens: one or more token stores (one table row group each, named after the folder, with as many
            parent folders as tell them apart: :func:`store_labels`).
        out: output folder (``evaluation.json``, ``report.md`` / ``.html``, ``cross_entropy.png``).
        train_tokens: the training token store, for the unigram and per-position frequency baselines
            (counted scene by scene).
        stride: frame subsampling inside a window, the same for every store (the reference uses 5 on 10 Hz
            OpenDV tokens; a store whose step is then not 0.5 s is named in a warning).
        limit: at most LIMIT windows per dataset (a seeded random subset; at least 1).
        batch_size: windows per forward pass (at least 1).
        seed: seed of the subset.
        device: where the model runs.
        progress: show progress bars.
    """
    import vavam
    from vavam.checks import check_positive_int
    from vavam.data.tokens import TokenStore, stride_step_warning
    from vavam.eval.report import Section, Table, save_evaluation

    if not tokens:
        raise ValueError("--tokens: give at least one token store")
    check_positive_int(stride, "--stride")
    check_positive_int(batch_size, "--batch-size")
    if limit is not None:
        check_positive_int(limit, "--limit")
    from vavam.io import recorded_grid
    from vavam.train.video import check_store_fits

    vim = vavam.load_video_model(video, device=device)
    datasets, left_out = {}, {}
    for path, name in zip(tokens, store_labels(tokens)):
        store = TokenStore(path)
        check_store_fits(store, "--tokens", vim.config.tokens_per_frame, vim.config.vocab_size,
                         f"the VaViM of --video {video}", recorded_grid(video))
        if (why := stride_step_warning(store, stride)) is not None:
            warnings.warn(why, stacklevel=2)
        windows, left_out[name] = counted_store_windows(store, vim.config.num_frames, stride, limit, seed)
        datasets[name] = windows.to(device)
    train = None
    if train_tokens is not None:
        train = TokenStore(train_tokens)
        if train.total_frames() == 0:
            raise ValueError(f"--train-tokens {train_tokens}: the token store holds no frames")
    results = evaluate_next_token(vim, datasets, train, batch_size, progress,
                                  train_name=None if train is None else f"--train-tokens {train_tokens}")
    rows = []
    for name, res in results.items():
        for row, r in res.items():
            rows.append([name, "VaViM" if row == "model" else row, r["cross_entropy"], r["perplexity"], r["targets"]])
    table = Table(["dataset", "model", "cross-entropy (nats)", "perplexity", "targets"], rows)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _plot_cross_entropy(results, out / "cross_entropy.png")
    text = (f"Windows of {vim.config.num_frames} frames at stride {stride}; every token but the first of a window is "
            "a target. Baselines: token frequencies of the training set (add-one smoothing)"
            + ("." if train is not None else " — not computed: no --train-tokens given.")
            + "".join(f" {name}: {n} window(s) left out, their frames not evenly spaced in time (a missing frame)."
                      for name, n in left_out.items() if n))
    section = Section("Next-token prediction", text, [table], ["cross_entropy.png"])
    payload = {"video": str(video), "stride": stride, "datasets": results, "windows_left_out": left_out}
    save_evaluation(out, "nexttoken", "Next-token prediction", payload, [section])
    print(table.markdown())
    print(f"report: {out / 'report.html'}")
    return payload


def _plot_cross_entropy(results: dict, path) -> None:
    """Grouped bars: cross-entropy per dataset and model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(results)
    rows = list(next(iter(results.values())))
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(names), 3.2))
    width = 0.8 / len(rows)
    for j, row in enumerate(rows):
        ax.bar(np.arange(len(names)) + j * width, [results[n][row]["cross_entropy"] for n in names], width,
               label="VaViM" if row == "model" else row)
    ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
    ax.set_ylabel("cross-entropy (nats / token)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
