"""Autoregressive frame generation with VaViM (token by token, KV cache).

Differences from the reference (``MupGPT2.forward_inference``): when the window is full, the
context keeps its **last** ``num_frames - 1`` frames (the reference keeps the first ones, so every
frame after the window is full is generated from a stale context); the cache is then recomputed
because the temporal positions are absolute inside the window.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vavam.checks import check_positive_int, check_token_ids
from vavam.video.model import VideoGPT


Generators = torch.Generator | Sequence[torch.Generator] | None


def sample_logits(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = 1, generator: Generators = None
) -> torch.Tensor:
    """Draw one token per row from ``logits [B, V]`` -> long ``[B]``.

    ``logits / temperature`` -> softmax -> keep the ``top_k`` largest probabilities (all if None) ->
    renormalise -> multinomial draw. ``top_k == 1`` is greedy (argmax, no randomness). ``generator``: one for
    the whole batch, or one per row (B of them): row ``i`` then draws from generator ``i`` alone, so its tokens do
    not depend on the other rows (the batch size, the batch's order).
    """
    rows = None
    if generator is not None and not isinstance(generator, torch.Generator):
        rows = list(generator)
        if len(rows) != logits.shape[0]:
            raise ValueError(f"generator: {len(rows)} generators for {logits.shape[0]} rows of logits")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_k == 1:
        return logits.argmax(dim=-1)
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    # shifted so the largest logit is 0 (a tiny temperature gives -inf, never inf - inf = NaN), and the temperature
    # kept above float32's smallest normal (below it, it rounds to 0 and 0 / 0 is NaN)
    x = logits.float()
    x = (x - x.amax(dim=-1, keepdim=True)) / max(float(temperature), torch.finfo(torch.float32).tiny)
    probs = torch.softmax(x, dim=-1)
    top_i = None
    if top_k is not None and top_k < probs.shape[-1]:
        probs, top_i = probs.topk(top_k, dim=-1)  # [B, k]
        probs = probs / probs.sum(-1, keepdim=True)
    if rows is None:
        choice = torch.multinomial(probs, 1, generator=generator)  # [B, 1]
    else:  # row by row: each row's draw is the one it gets alone
        choice = torch.cat([torch.multinomial(probs[i : i + 1], 1, generator=g) for i, g in enumerate(rows)])
    return (choice if top_i is None else top_i.gather(-1, choice)).squeeze(-1)


@torch.no_grad()
def generate_frames(
    model: VideoGPT,
    context: torch.Tensor,
    num_frames: int,
    temperature: float = 1.0,
    top_k: int | None = 1,
    generator: Generators = None,
    use_cache: bool = True,
    return_step_logits: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Generate ``num_frames`` frames of tokens after ``context``, token by token.

    Args:
        model: a :class:`VideoGPT` (put it in eval mode; it has no dropout anyway).
        context: long ``[B, T0, h, w]``, ``T0 >= 1``.
        num_frames: number of new frames F.
        temperature, top_k, generator: see :func:`sample_logits` (defaults: greedy); B generators (one per row)
            make each row's frames independent of the rest of the batch.
        use_cache: KV-cached decoding (default); False reruns the whole window at every token.
        return_step_logits: also return the readout output before temperature/top-k at each step.

    Returns:
        long ``[B, F, h, w]``; with ``return_step_logits`` also float ``[B, F·h·w, V]``; on ``context``'s device
        (generation runs on the model's; a ``generator`` must live there when sampling).

    When ``T0`` plus the frames generated so far reach the model's ``num_frames``, the context is
    trimmed to its last ``num_frames - 1`` frames before the next frame (and the cache recomputed).
    """
    if context.dim() != 4:
        raise ValueError(f"context must be [B, T0, h, w], got shape {tuple(context.shape)}")
    b, t0, h, w = context.shape
    if t0 < 1:
        raise ValueError("context needs at least one frame")
    check_positive_int(num_frames, "num_frames")
    check_token_ids(context, model.config.vocab_size, "context")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    p = h * w
    if p > model.config.tokens_per_frame:
        raise ValueError(
            f"context grid {h}x{w} has more than the model's {model.config.tokens_per_frame} tokens per frame"
        )
    max_frames = model.config.num_frames
    out_device = context.device  # the context may live elsewhere than the model: generated there, returned here
    context = context.to(model.token_emb.weight.device)
    if max_frames < 2:
        raise ValueError("the model must hold at least 2 frames to generate")
    window = context[:, -(max_frames - 1) :] if t0 >= max_frames else context  # [B, T, h, w]
    new_frames: list[torch.Tensor] = []
    step_logits: list[torch.Tensor] = []
    cache = None
    pending: torch.Tensor | None = None  # last generated token, not yet fed to the cache: [B, 1]

    for _ in range(num_frames):
        if window.shape[1] >= max_frames:  # slide: keep the LAST frames, recompute the cache
            window = window[:, -(max_frames - 1) :]
            cache = None
        seq = window.reshape(b, -1)  # [B, T·p]
        if use_cache:
            if cache is None:
                cache = model.new_kv_cache(b, max_frames * p)
                logits = model.decode_step(seq, cache, p)  # prefill
            else:
                logits = model.decode_step(pending, cache, p)
        else:
            logits = _full_last_logits(model, seq, p)
        frame: list[torch.Tensor] = []
        for j in range(p):
            if return_step_logits:
                step_logits.append(logits)
            tok = sample_logits(logits, temperature, top_k, generator)  # [B]
            frame.append(tok)
            if j < p - 1:
                if use_cache:
                    logits = model.decode_step(tok[:, None], cache, p)
                else:
                    logits = _full_last_logits(model, torch.cat([seq, torch.stack(frame, 1)], 1), p)
        new = torch.stack(frame, dim=1).view(b, 1, h, w)  # [B, p] -> [B, 1, h, w]
        pending = new.view(b, p)[:, -1:]
        new_frames.append(new)
        window = torch.cat([window, new], dim=1)

    out = torch.cat(new_frames, dim=1) if new_frames else context.new_zeros(b, 0, h, w)
    if return_step_logits:
        v = model.config.vocab_size
        logits_all = torch.stack(step_logits, dim=1) if step_logits else context.new_zeros(b, 0, v, dtype=torch.float)
        return out.to(out_device), logits_all.to(out_device)
    return out.to(out_device)


def _full_last_logits(model: VideoGPT, seq: torch.Tensor, tokens_per_frame: int) -> torch.Tensor:
    """Uncached: run the whole flat sequence ``[B, n]`` (causal), logits of the last position ``[B, V]``."""
    x = model.run_blocks(model.embed(seq, 0, tokens_per_frame))
    return model.readout(model.final_norm(x[:, -1]))
