"""Training and inference FLOPs of VaViM and VaVAM: an analytic count and a direct one.

What is counted (both counts): the floating-point operations of **matrix multiplications**, 2 per
multiply-add — the dense weight matmuls and the two attention products (QKᵀ and A·V). LayerNorm,
GELU, softmax, the loss, embedding lookups and the optimiser are not counted (they are O(n·d) and
negligible at scale; FlopCounterMode does not count them either).

Analytic count of VaViM over ``D`` token positions in windows of ``n`` positions:

- ``N = L·(4 + 2·r)·d² + V·d`` matmul parameters: per block the fused QKV (3d²), the output projection
  (d²) and the MLP (2·r·d², r = ``mlp_ratio``), plus the tied readout ``V·d`` (it *is* a matmul:
  hidden ``[n, d]`` times the embedding table ``[d, V]``). The embedding lookups (token, spatial,
  temporal) are not matmuls and are not counted. With r = 4 this is the usual ``12·L·d² + V·d``.
- weights: ``2·N·D`` forward, ``6·N·D`` forward + backward (backward = gradient of the input and of
  the weight, each as costly as the forward).
- attention, per layer and sequence: QKᵀ and A·V cost ``2·n²·d`` each, ``4·n²·d`` forward for every
  (query, key) pair. Conventions (``attention=``):

  * ``"causal"`` — the causal halving: only half of the pairs do useful work, ``2·L·n²·d`` forward,
    ``6·L·n²·d`` forward + backward (the usual convention; benchmarks/bench_video.py uses it).
    Per token: ``6·L·n·d``.
  * ``"full"`` — every pair, as a dense kernel computes it: ``4·L·n²·d`` forward, ``12·L·n²·d`` forward +
    backward. This is what :func:`count_flops` measures (it runs SDPA through its math backend, which
    computes the masked scores too), so the test checks this convention exactly.
  * ``"none"`` — attention left out (the pure ``6·N·D`` of scaling-law papers).

VaVAM training (:func:`action_flops`): VaViM is frozen, so its stream is a forward pass only (no
readout: only its per-layer keys/values are used); the action expert runs forward + backward. The
expert's first linear (noisy actions -> width) has no input gradient (its input is data), so its
backward costs one forward, not two. Its attention: ``T·H`` action queries over ``T·P + T·H`` keys; with
``"full"`` every pair (backward: gradients of both operands of both products, 2x forward, because
the concatenated keys/values require grad); with ``"causal"`` only the pairs the training mask allows
(action group τ sees the ``(τ+1)·P`` visual tokens of frames 0..τ and its own ``H`` tokens), and VaViM's
own attention with the causal halving.

A note on other counters: with a fused SDPA kernel (flash / memory-efficient, on GPU) FlopCounterMode
counts the full square and a backward of 2.5x the forward (it assumes the scores are recomputed);
on CPU the default fused kernel is not counted at all. :func:`count_flops` therefore forces the math
backend, whose count is device-independent.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from vavam.config import ActionConfig, VideoConfig

AttentionConvention = Literal["causal", "full", "none"]
_CONVENTIONS = ("causal", "full", "none")


@dataclass(frozen=True)
class FlopCount:
    """FLOPs split into dense weight matmuls and attention products (QKᵀ, A·V); ``total`` is their sum."""

    matmul: int
    attention: int

    @property
    def total(self) -> int:
        return self.matmul + self.attention

    def __add__(self, other: FlopCount) -> FlopCount:
        return FlopCount(self.matmul + other.matmul, self.attention + other.attention)


def _check_convention(attention: str) -> None:
    if attention not in _CONVENTIONS:
        raise ValueError(f"attention must be one of {_CONVENTIONS}, got {attention!r}")


def _check_positive(value: int, name: str) -> int:
    """``value`` as a Python int when it is a positive integer (numpy integers too), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


# ------------------------------------------------------------------------------------ VaViM


def video_block_params(config: VideoConfig) -> int:
    """Matmul parameters of VaViM's blocks: ``L·(4 + 2·mlp_ratio)·d²`` (QKV 3d², output d², MLP 2·r·d²)."""
    d = config.width
    return config.num_layers * (4 + 2 * config.mlp_ratio) * d * d


def video_matmul_params(config: VideoConfig, readout: bool = True) -> int:
    """Parameters of VaViM that do matmul work per token: the blocks plus (``readout``) the tied readout ``V·d``.

    Embedding lookups are excluded; the readout counts although its weight is the token embedding.
    """
    return video_block_params(config) + (config.vocab_size * config.width if readout else 0)


def video_flops(
    config: VideoConfig,
    tokens: int,
    seq_len: int | None = None,
    backward: bool = True,
    attention: AttentionConvention = "causal",
) -> FlopCount:
    """FLOPs of VaViM processing ``tokens`` positions in windows of ``seq_len`` positions (next-token training).

    Args:
        config: the model.
        tokens: positions processed, ``D`` (batch x window length x steps for a training run).
        seq_len: positions per window ``n`` (default the config's ``num_frames·tokens_per_frame``).
        backward: forward + backward (``6·N·D + ...``, training) or forward only (``2·N·D + ...``).
        attention: ``"causal"``, ``"full"`` or ``"none"`` (module docstring).

    Returns:
        :class:`FlopCount`; e.g. causal training: ``matmul = 6·N·D``, ``attention = 6·L·n·d·D``
        (``= 6·L·n²·d`` per window).
    """
    _check_convention(attention)
    tokens = _check_positive(tokens, "tokens")
    window = config.num_frames * config.tokens_per_frame
    n = _check_positive(window if seq_len is None else seq_len, "seq_len")
    if n > window:
        raise ValueError(f"seq_len {n} exceeds the model's window of {window} positions")
    factor = 3 if backward else 1  # backward = 2 x forward (input and weight gradients)
    matmul = factor * 2 * video_matmul_params(config) * tokens
    per_token = {"full": 4 * n, "causal": 2 * n, "none": 0}[attention]  # 4·(keys per query), on average
    attn = factor * config.num_layers * config.width * per_token * tokens
    return FlopCount(matmul, attn)


def video_train_flops(config: VideoConfig, tokens: int, seq_len: int | None = None,
                      attention: AttentionConvention = "causal") -> int:
    """Total training FLOPs (forward + backward) of VaViM over ``tokens`` positions: ``6·N·D`` + attention."""
    return video_flops(config, tokens, seq_len, backward=True, attention=attention).total


# ------------------------------------------------------------------------------------ VaVAM


def action_expert_params(config: ActionConfig) -> int:
    """Matmul parameters of the action expert (no embeddings; the first linear and the readout count).

    ``a·e`` (action -> width) + ``2e²`` (fuse) + ``e²`` (out) + ``L·(3·d·e + d·e + 8·e²)`` (blocks, attention
    width d = the video width) + ``e·a`` (readout), with ``a`` = action_dim, ``e`` = expert width.
    """
    e, d, a = config.width, config.video.width, config.action_dim
    blocks = config.video.num_layers * (4 * d * e + 8 * e * e)
    return a * e + 3 * e * e + blocks + e * a


def _action_attention_pairs(frames: int, tokens_per_frame: int, horizon: int, attention: str) -> int:
    """(query, key) pairs of the action rows of the training mask, per sequence."""
    nv, na = frames * tokens_per_frame, frames * horizon
    if attention == "full":
        return na * (nv + na)
    if attention == "causal":  # group τ: (τ+1)·P visual keys and its own H action keys
        return horizon * tokens_per_frame * frames * (frames + 1) // 2 + frames * horizon * horizon
    return 0


def action_flops(
    config: ActionConfig,
    batch: int = 1,
    frames: int | None = None,
    tokens_per_frame: int | None = None,
    backward: bool = True,
    attention: AttentionConvention = "causal",
) -> FlopCount:
    """FLOPs of one VaVAM training step (``flow_loss`` + backward, frozen VaViM) over ``batch`` windows.

    Args:
        config: the VaVAM config (its ``video`` is the frozen VaViM).
        batch: windows ``B``.
        frames: frames per window ``T`` (default ``train_frames``).
        tokens_per_frame: ``P`` (default the video config's).
        backward: forward + backward of the expert (training) or forward only.
        attention: ``"causal"`` (mask-allowed pairs; VaViM causal-halved), ``"full"`` or ``"none"``.

    Returns:
        :class:`FlopCount` of VaViM's forward (blocks only, no readout) plus the expert's pass(es).
    """
    _check_convention(attention)
    batch = _check_positive(batch, "batch")
    t = _check_positive(config.train_frames if frames is None else frames, "frames")
    p = _check_positive(config.video.tokens_per_frame if tokens_per_frame is None else tokens_per_frame,
                        "tokens_per_frame")
    if t > config.video.num_frames or p > config.video.tokens_per_frame:
        raise ValueError(f"{t} frames of {p} tokens exceed VaViM's {config.video.num_frames} x "
                         f"{config.video.tokens_per_frame}")
    nv, na = t * p, t * config.horizon
    d, layers = config.video.width, config.video.num_layers
    # frozen VaViM: forward of the blocks only
    video_attn = {"full": 4, "causal": 2, "none": 0}[attention] * layers * d * nv * nv
    video = FlopCount(2 * video_block_params(config.video) * nv, video_attn)
    # expert: forward 2·N_e per token; backward 4·N_e minus the first linear's missing input gradient
    n_e = action_expert_params(config)
    first = config.action_dim * config.width
    expert_mm = 2 * n_e * na + ((4 * n_e - 2 * first) * na if backward else 0)
    pairs = _action_attention_pairs(t, p, config.horizon, attention)
    expert_attn = (3 if backward else 1) * 4 * layers * d * pairs
    total = video + FlopCount(expert_mm, expert_attn)
    return FlopCount(total.matmul * batch, total.attention * batch)


# ------------------------------------------------------------------------------------ direct count


def count_flops(fn: Callable[[], Any]) -> int:
    """Run ``fn()`` under :class:`torch.utils.flop_counter.FlopCounterMode` and return the FLOPs it counted.

    Scaled-dot-product attention is forced to the math backend, so that its QKᵀ and A·V are counted as
    matmuls over every (query, key) pair (the ``"full"`` convention), on any device.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with sdpa_kernel(SDPBackend.MATH), counter:
        fn()
    return int(counter.get_total_flops())


def measure_video_flops(model: torch.nn.Module, tokens: torch.Tensor, backward: bool = True) -> int:
    """Direct count of one VaViM forward (+ backward of the summed logits) over ``tokens`` long ``[B, T, h, w]``.

    Gradients are accumulated into ``model``'s parameters (call ``zero_grad`` afterwards if it matters).
    """

    def step() -> None:
        with torch.set_grad_enabled(backward):
            logits = model(tokens)  # [B, T·h·w, V]
            if backward:
                logits.float().sum().backward()

    return count_flops(step)


def measure_action_flops(
    model: torch.nn.Module, tokens: torch.Tensor, command: torch.Tensor, actions: torch.Tensor, seed: int = 0
) -> int:
    """Direct count of one VaVAM training step: ``model.flow_loss(tokens, command, actions)`` + backward.

    Args:
        model: a :class:`~vavam.action.model.VideoActionModel` (VaViM frozen).
        tokens: long ``[B, T, h, w]``; command: long ``[B, T]``; actions: metres ``[B, T, H, 2]``.
        seed: seed of the flow times and noise.
    """
    generator = torch.Generator().manual_seed(seed)

    def step() -> None:
        model.flow_loss(tokens, command, actions, generator=generator).backward()

    return count_flops(step)
