"""muP coordinate check of VaViM: activation scales stay width-independent at init and after a few steps.

Widths 128, 256, 512, 1024 of a 2-layer VaViM with the presets' muP base width (256) and head dim (128),
the released hyper-parameters (init_std 0.0289, lr 0.0041, weight decay 1e-7) and our muP AdamW groups
(``build_optimizer`` with :func:`video_width_multipliers`: lr / m for the block matrices). Each width trains
5 steps on a fixed batch (2 windows of one 4 x 6 frame); statistics are means over 3 seeds (one seed alone is
dominated by finite-width fluctuations of the first Adam steps at this learning rate).

Measured (1 thread): mean |hidden| of the last residual stream 0.33 / 0.33 / 0.34 / 0.34 at init and within
×1.7 across widths at every step; mean |logit| within ×1.8 after every step. The standard parametrisation
(the same lr for every parameter) blows the hidden scale up by ×40 from width 128 to 1024 after the same 5
steps (the test asks for more than ×8), so the check has teeth.

Finding (see ``test_init_logits_within_factor_2``): at initialisation the mean |logit| is NOT within ×2:
0.51 / 0.37 / 0.26 / 0.19 (ratio 2.7). This is the released parametrisation, not an implementation slip:
the readout is tied to the token embedding (entries N(0, σ²), vector-like, not width-scaled) and divides its
input by m = width / 256, so a logit is a sum of ``width`` O(σ / m) terms of random sign and scales as
σ·256 / √width. muP only requires init logits to be O(1) or vanishing (its untied readout is zero-initialised,
giving exactly 0); the tied readout cannot be zero-initialised without zeroing the input embedding, and the
released checkpoints depend on the tie and the 1/m division, so we keep them and pin the 1/√width law instead.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from vavam import presets
from vavam.train.optim import build_optimizer
from vavam.train.video import next_token_loss, video_width_multipliers
from vavam.video import VideoGPT

WIDTHS = (128, 256, 512, 1024)
STEPS = 5
SEEDS = (0, 1, 2)
LR = 0.0041  # the released VaViM recipe (transferred across widths by muP)
FACTOR = 2.0


def _config(width: int):
    # presets' muP base width 256, head dim 128, init_std 0.0289; small depth, vocabulary and window
    return dataclasses.replace(
        presets.vavim_s(), width=width, num_layers=2, vocab_size=257, num_frames=1, tokens_per_frame=24
    )


def _trajectory(width: int, seed: int, mup: bool = True) -> torch.Tensor:
    """Mean |logit| and mean |hidden| (last residual stream) at steps 0..STEPS: ``[STEPS + 1, 2]``."""
    tokens = torch.randint(0, 256, (2, 1, 4, 6), generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    model = VideoGPT(_config(width))
    if mup:
        model.mup_width_multipliers = lambda: video_width_multipliers(model)
    else:  # standard parametrisation of the optimiser: every parameter gets the same lr
        model.mup_width_multipliers = dict
    opt = build_optimizer(model, LR, weight_decay=1e-7)
    out = torch.zeros(STEPS + 1, 2)
    for step in range(STEPS + 1):
        hidden = model.run_blocks(model.embed_frames(tokens))
        logits = model.readout(model.final_norm(hidden))
        out[step, 0] = logits.detach().abs().mean()
        out[step, 1] = hidden.detach().abs().mean()
        if step == STEPS:
            break
        opt.zero_grad()
        next_token_loss(logits, tokens).backward()
        opt.step()
    return out


@pytest.fixture(scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # deterministic reductions
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def coords(one_thread) -> dict[int, torch.Tensor]:
    """width -> seed-averaged ``[STEPS + 1, 2]`` (logit, hidden) scales under muP."""
    return {w: torch.stack([_trajectory(w, s) for s in SEEDS]).mean(0) for w in WIDTHS}


def _spread(values) -> float:
    values = [float(v) for v in values]
    return max(values) / min(values)


def test_hidden_scale_at_init(coords):
    assert _spread(coords[w][0, 1] for w in WIDTHS) < FACTOR


@pytest.mark.xfail(
    strict=True,
    reason="finding: the released tied muP readout gives init logits ∝ σ·256/√width (ratio 2.8 over 128..1024); "
    "see the module docstring",
)
def test_init_logits_within_factor_2(coords):
    assert _spread(coords[w][0, 0] for w in WIDTHS) < FACTOR


def test_init_logits_follow_tied_readout_law(coords):
    """mean |logit| · √width is width-independent at init (the law behind the finding above)."""
    scaled = [coords[w][0, 0] * math.sqrt(w) for w in WIDTHS]
    assert _spread(scaled) < 1.25
    # and the logits do vanish with width (no blow-up: muP's requirement at init)
    assert coords[1024][0, 0] < coords[128][0, 0]


@pytest.mark.parametrize("step", range(1, STEPS + 1))
def test_scales_after_steps(coords, step):
    logits = [coords[w][step, 0] for w in WIDTHS]
    hidden = [coords[w][step, 1] for w in WIDTHS]
    assert _spread(logits) < FACTOR, f"logit scales {logits}"
    assert _spread(hidden) < FACTOR, f"hidden scales {hidden}"
    # training did move the activations (the check is not trivially passed by a frozen network)
    assert min(hidden) > 1.5 * max(coords[w][0, 1] for w in WIDTHS)


def test_standard_parametrisation_fails_the_check(one_thread):
    """Negative control: without lr / m the hidden scale after a few steps grows with width."""
    small = _trajectory(WIDTHS[0], 0, mup=False)[STEPS, 1]
    large = _trajectory(WIDTHS[-1], 0, mup=False)[STEPS, 1]
    assert large / small > 4 * FACTOR
