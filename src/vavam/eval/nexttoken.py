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

import torch
import torch.nn.functional as F


class FrequencyBaseline:
    """Token frequencies (per spatial position or pooled) -> cross-entropy of windows' targets."""

    def __init__(self, vocab_size: int, per_position: bool) -> None:
        self.vocab_size = vocab_size
        self.per_position = per_position
        self.counts: torch.Tensor | None = None  # [P, V] float64 (P = h*w or 1)

    def fit(self, tokens: torch.Tensor) -> "FrequencyBaseline":
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
