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
from pathlib import Path

import torch
import torch.nn.functional as F


class FrequencyBaseline:
    """Token frequencies (per spatial position or pooled) -> cross-entropy of windows' targets."""

    def __init__(self, vocab_size: int, per_position: bool) -> None:
        self.vocab_size = vocab_size
        self.per_position = per_position
        self.counts: torch.Tensor | None = None  # [P, V] float64 (P = h*w or 1)

    def fit(self, tokens: torch.Tensor) -> FrequencyBaseline:
        """Count ``tokens long [N, T, h, w]`` (or ``[N, h, w]`` frames)."""
        tokens = tokens.long()
        hw = tokens.shape[-2] * tokens.shape[-1]
        flat = tokens.reshape(-1, hw)  # [frames, h*w]
        if flat.max() >= self.vocab_size or flat.min() < 0:
            raise ValueError(f"token ids outside [0, {self.vocab_size})")
        positions = hw if self.per_position else 1
        counts = torch.ones(positions, self.vocab_size, dtype=torch.float64)  # add-one smoothing
        pos = torch.arange(hw).expand_as(flat) if self.per_position else torch.zeros_like(flat)
        counts.view(-1).index_add_(0, (pos * self.vocab_size + flat).reshape(-1), torch.ones(flat.numel(), dtype=torch.float64))
        self.counts = counts
        return self

    def log_probs(self) -> torch.Tensor:
        """``[P, V]`` log-probabilities."""
        if self.counts is None:
            raise RuntimeError("FrequencyBaseline: call fit() first")
        return (self.counts / self.counts.sum(-1, keepdim=True)).log()

    def cross_entropy(self, tokens: torch.Tensor) -> tuple[float, int]:
        """(sum of -log p over the targets, number of targets) for windows ``[N, T, h, w]``.

        Targets are all tokens but the first of each window, as for the model.
        """
        tokens = tokens.long()
        n, t, h, w = tokens.shape
        flat = tokens.reshape(n, t * h * w)[:, 1:]  # [N, L-1] targets
        pos = (torch.arange(1, t * h * w) % (h * w)) if self.per_position else torch.zeros(t * h * w - 1, dtype=torch.long)
        logp = self.log_probs()[pos.expand_as(flat), flat]  # [N, L-1]
        return float(-logp.sum()), flat.numel()


@torch.no_grad()
def model_cross_entropy(model: torch.nn.Module, tokens: torch.Tensor) -> tuple[float, int]:
    """(sum of CE, number of targets) of a video model on windows ``long [N, T, h, w]``."""
    logits = model(tokens)  # [N, L, V]
    n, length, vocab = logits.shape
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, vocab).float(), tokens.reshape(n, length)[:, 1:].reshape(-1), reduction="sum")
    return float(loss), n * (length - 1)


def perplexity(mean_cross_entropy: float) -> float:
    """exp(CE), with CE in nats."""
    return math.exp(mean_cross_entropy)


def store_windows(store, num_frames: int, stride: int = 1, limit: int | None = None, seed: int = 0) -> torch.Tensor:
    """Non-overlapping windows of ``num_frames`` frames (every ``stride``-th frame) of every scene of a
    token store -> long ``[N, T, h, w]``; with ``limit``, a seeded random subset of that many."""
    import numpy as np

    out = []
    span = (num_frames - 1) * stride + 1
    for scene in store.scenes:
        for start in range(0, store.num_frames(scene) - span + 1, span):
            out.append(store.window(scene, start, num_frames, stride).astype(np.int64))
    if not out:
        raise ValueError(f"{store.root}: no scene has {span} frames (a window of {num_frames} at stride {stride})")
    windows = torch.from_numpy(np.stack(out))
    if limit is not None and len(windows) > limit:
        windows = windows[torch.randperm(len(windows), generator=torch.Generator().manual_seed(seed))[:limit]]
    return windows


@torch.no_grad()
def evaluate_next_token(
    model: torch.nn.Module,
    datasets: dict[str, torch.Tensor],
    train_tokens: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> dict[str, dict[str, dict[str, float]]]:
    """Mean cross-entropy (nats / token) and perplexity per dataset, with the two frequency baselines.

    Args:
        model: a video model (``model(tokens [B,T,h,w]) -> logits [B, T*h*w, V]``, ``model.config.vocab_size``).
        datasets: name -> windows ``long [N, T, h, w]``.
        train_tokens: training frames ``long [..., h, w]`` for the baselines (None: baselines left out).
        batch_size: windows per forward pass.
        progress: show a progress bar.

    Returns:
        ``{dataset: {row: {"cross_entropy", "perplexity", "targets"}}}`` with rows ``model`` and, given
        training tokens, ``unigram frequency`` and ``per-position frequency``.
    """
    vocab = model.config.vocab_size
    baselines = {}
    if train_tokens is not None:
        baselines = {"unigram frequency": FrequencyBaseline(vocab, per_position=False).fit(train_tokens),
                     "per-position frequency": FrequencyBaseline(vocab, per_position=True).fit(train_tokens)}
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
                                    *((b, f.cross_entropy(batch)) for b, f in baselines.items())]:
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
        tokens: one or more token stores (one table row group each, named after the folder).
        out: output folder (``evaluation.json``, ``report.md`` / ``.html``, ``cross_entropy.png``).
        train_tokens: the training token store, for the unigram and per-position frequency baselines.
        stride: frame subsampling inside a window (the reference uses 5 on 10 Hz OpenDV tokens).
        limit: at most LIMIT windows per dataset (a seeded random subset).
        batch_size: windows per forward pass.
        seed: seed of the subset.
        device: where the model runs.
        progress: show progress bars.
    """
    import numpy as np

    import vavam
    from vavam.data.tokens import TokenStore
    from vavam.eval.report import Section, Table, save_evaluation

    if not tokens:
        raise ValueError("--tokens: give at least one token store")
    vim = vavam.load_video_model(video, device=device)
    datasets = {}
    for path in tokens:
        store = TokenStore(path)
        name = Path(path).name if Path(path).name not in datasets else str(path)
        datasets[name] = store_windows(store, vim.config.num_frames, stride, limit, seed).to(device)
    train = None
    if train_tokens is not None:
        store = TokenStore(train_tokens)
        train = torch.from_numpy(np.concatenate([np.asarray(store.tokens(s)) for s in store.scenes]).astype(np.int64))
    results = evaluate_next_token(vim, datasets, train, batch_size, progress)
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
            + ("." if train is not None else " — not computed: no --train-tokens given."))
    section = Section("Next-token prediction", text, [table], ["cross_entropy.png"])
    payload = {"video": str(video), "stride": stride, "datasets": results}
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
