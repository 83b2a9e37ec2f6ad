"""Two optional changes to VaViM's training windows, for small models trained briefly (the quickstart's).

Neither is in the released recipe (reference §2.6-2.9); both are off by default.

- **Code permutation** (``--permute-codes P``): a share ``P`` of the windows of each batch have their token ids
  relabelled by a random permutation of the codebook, one permutation per window and the same on all its frames.
  Inside such a window a token id says nothing about the image, only which positions hold the same code, so
  the model has to predict from what the window itself shows (a code that stayed put, a code seen nearby)
  rather than from which codes the training towns use. On towns it has never seen, that is what carries
  over: in the quickstart (half the windows) it raised greedy next-frame accuracy on held-out towns by 3
  points at the same steps, at the price of a higher cross-entropy (it no longer knows as well which codes
  are common).
- **Self-forcing** (``--self-forcing``): the last frame of every window is fed to the model as the model's
  own greedy generation from the frames before it, while the targets stay the true tokens. Greedy
  generation conditions each token on the tokens generated before it in the frame; trained on true tokens
  only, the model never sees its own mistakes there. Costs a KV-cached generation of one frame per step
  (with code permutation and the weight average, the quickstart's VaViM stage took 1.4x as long).

The permutations draw nothing from the global random state: those of optimiser step ``n`` come from a
generator seeded by ``(seed, n)`` and are drawn for the step's whole global batch, so a resumed run relabels
the windows it would have relabelled, on any number of devices.
"""

from __future__ import annotations

import torch


def permute_codes(tokens: torch.Tensor, share: float, codes: int, generator: torch.Generator, offset: int = 0,
                  total: int | None = None) -> torch.Tensor:
    """Relabel the codes of about ``share`` of the windows by a random permutation each.

    Args:
        tokens: long ``[B, T, h, w]`` token ids.
        share: chance that a window is relabelled, in [0, 1] (each window draws on its own).
        codes: codebook size K: ids ``0..K-1`` are permuted among themselves; ids ``>= K`` (a vocabulary's
            unused extra id) are left as they are.
        generator: a CPU generator (:func:`vavam.train.resume.step_generator`): which windows, which permutations.
        offset, total: the draws are made for ``total`` windows (default B; an optimiser step's windows over all
            ranks and accumulated passes) and windows ``offset .. offset + B - 1`` of them are these, so a run
            on N devices relabels as a run on one.

    Returns:
        long ``[B, T, h, w]``: a new tensor (``tokens`` itself when no window is drawn); within each relabelled
        window, two positions hold the same id exactly when they did before.
    """
    if tokens.dim() != 4:
        raise ValueError(f"tokens must be [B, T, h, w], got shape {tuple(tokens.shape)}")
    if codes < 2:
        raise ValueError(f"codes must be at least 2 to permute, got {codes}")
    b = tokens.shape[0]
    total = b if total is None else int(total)
    if not 0 <= offset <= total - b:
        raise ValueError(f"windows {offset}..{offset + b - 1} lie outside the {total} drawn for")
    chosen = (torch.rand(total, generator=generator) < share)[offset:offset + b]  # [B]
    if not bool(chosen.any()):
        return tokens
    perms = torch.argsort(torch.rand(total, codes, generator=generator), dim=1)[offset:offset + b]  # [B, K]
    keep = ~chosen.to(tokens.device)
    flat = tokens.reshape(b, -1).long()  # [B, T·h·w]
    relabelled = torch.gather(perms.to(tokens.device), 1, flat.clamp(max=codes - 1))  # [B, T·h·w]: old -> new id
    relabelled = torch.where((flat >= codes) | keep[:, None], flat, relabelled)
    return relabelled.view_as(tokens).to(tokens.dtype)


@torch.no_grad()
def own_last_frame(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """The window with its last frame replaced by the model's greedy generation from the frames before it.

    Args:
        model: a :class:`vavam.video.VideoGPT`.
        tokens: long ``[B, T, h, w]``, ``T >= 2``.

    Returns:
        long ``[B, T, h, w]``: frames ``0..T-2`` as given, frame ``T-1`` generated (top-1, KV cache).
    """
    from vavam.video import generate_frames

    if tokens.dim() != 4 or tokens.shape[1] < 2:
        raise ValueError(f"self-forcing needs windows [B, T >= 2, h, w], got shape {tuple(tokens.shape)}")
    was_training = model.training
    model.eval()
    try:
        generated = generate_frames(model, tokens[:, :-1], 1, top_k=1)  # [B, 1, h, w]
    finally:
        model.train(was_training)
    return torch.cat([tokens[:, :-1], generated.to(tokens.dtype)], dim=1)
