"""How the quickstart's data, step counts and model sizes follow from its time budget.

The rule (documented in the README): with ``s = budget_minutes / 15``,

- data: ``4 round(45 s)`` training scenes and ``4 max(2, round(4 s))`` held-out scenes of 20 s at 2 Hz, in
  whole towns of 4 scenes (held-out scenes come from towns never seen in training; a fifth of all scenes
  contain hazards);
- steps: tokenizer ``round(180 s)``, VaViM ``round(1200 s)``, VaVAM ``round(1100 s)``;
- floors for tiny budgets: at least 4 training and 8 held-out scenes, 50 tokenizer, 30 VaViM and 50 VaVAM
  steps;
- closed loop: ``max(1, round(2 s))`` runs of 2 layouts per scenario type;
- at most 7,800 scenes in all (the most the embedded world renders in one export): budgets above about
  597 minutes are refused;
- VaVAM keeps the average of its expert's weights over about the last 100 steps (EMA 0.99) from
  ``s >= 1``; shorter runs keep the last weights; so does VaViM;
- VaViM trains with the codes of half its windows relabelled by a random permutation each
  (``--permute-codes 0.5``) and on its own greedy last frames (``--self-forcing``; see
  :mod:`vavam.train.video_augment` and below), which make a step 1.4x dearer: at ``s >= 4`` its step
  count is divided by that too (below it, the default run's spare minutes pay for it);
- VaVAM reads the ego speed of each frame (``ActionConfig.ego_speed``) at every budget, and its flow
  generates the deviation from the constant-velocity trajectory (``speed_prior``) in units of 10 m
  (``action_scaling``);
- sizes: 64 x 128 frames, ``vq_mini`` (downsampling 16: 4 x 8 tokens per frame, 64 codes) /
  ``vavim_mini`` / ``vavam_mini`` below ``s = 4``; from ``s >= 4`` the VaViM and expert widths double
  (more budget buys a bigger model, as in the paper's scaling study) and their step counts are divided
  by the measured cost of a wider step (VaViM ``round(1200 s / (2.3 x 1.4))``, VaVAM ``round(1100 s / 2.1)``).
  The frames stay 64 x 128 at every budget, because more pixels did not buy better models per minute
  on 2 CPU cores: 8 x 16 tokens per frame (what 128 x 256 frames would give) kept the tiny VaViM on a
  loss plateau for ~2,000 steps before it learned to look at the previous frame (below), more steps
  than a one-hour budget buys at that size; 96 x 192 frames (6 x 12 tokens, same scenes, seed 0) learn
  without a plateau, but a VaViM step costs 2.9x, a tokenizer step 2.0x and a VaVAM step 2.3x, and even
  with twice the VaViM steps (2,400, 990 s against 170 s) the models were not better: held-out
  tokenizer PSNR 18.4 vs 17.6 dB, VaViM cross-entropy ratio 0.445 vs 0.421, greedy next frame 0.41 vs
  copy 0.48 (0.53 vs 0.56 at 64 x 128), VaVAM minADE@5 2.46 vs 2.39 m (1,100 steps, EMA; constant
  velocity 2.21 m on both);
- precision: float32 everywhere. bf16 autocast is 2x faster only on CPUs with native bf16 (AVX-512 BF16,
  AMX) and 10-80x slower on the others (AVX2; :mod:`vavam.hardware`); float32 keeps one run the same on
  every machine.

Why these numbers (measured on 2 CPU cores, seed 0): at 8 x 16 tokens per frame the tiny VaViM did not
learn to look at the previous frame in minutes (on frames that repeat exactly, copying at a 128-token
offset stays on a loss plateau for ~2,000 steps); at 4 x 8 tokens the copy is learned within ~400 steps,
and each step is 4x cheaper. With 32 training scenes VaViM then memorises them (train loss 0.04,
held-out cross-entropy 7.7 nats after 1,500 steps); with 180+ it generalises (train loss and held-out
cross-entropy stay within 0.1 nat). With 64 codes rather than 512, VaViM's teacher-forced next-frame
accuracy passes copying the last frame (``vq_mini``'s docstring). Trained by the released recipe, greedy
generation of the next frame stays 2-6 points below copying whatever we changed on an earlier default run's
data (1,200 VaViM steps unless said): 64 codes 0.532 vs 0.560, 32 codes 0.553 vs 0.575, 16 codes 0.559
vs 0.592 (tokenizer PSNR 17.6, 17.3, 16.8 dB); width 256 for the same time (520 steps) 0.528; a 30 % instead of 10 %
learning-rate decay phase 0.529; averaging VaViM's weights (EMA 0.99) 0.531; on training windows 0.488
vs 0.496 (so not a held-out effect); anti-aliased frames (rendered at 128 x 256 and averaged down;
tokenizer PSNR 18.1 dB) 0.469 vs 0.502; the budget-60 run's tokenizer (20.9 dB) 0.410 vs 0.449;
twice the towns (2 scenes each) 0.478 vs 0.533; 3,600 steps 0.468 (cross-entropy ratio 0.443: train
loss 1.15 vs held-out 1.43 nats); weight decay 0.1 (instead of 1e-7) 0.522 at 1,200 steps and 0.504 at
2,400 (cross-entropy ratio 0.418): greedy falls as the cross-entropy improves on the same data. More data
helps a little: the training scenes plus their mirror images (frames flipped left-right, tokenized by the run's
tokenizer) give 0.495 at 1,200 steps and 0.511 at 2,400 (cross-entropy ratio 0.406, the best measured) against
copying's 0.551 on the data of the Intel default run whose plain VaViM scores 0.484. Regularising did not:
on that data, dropout 0.1 on each block's update gives 0.485, width 64 0.487, and windows played backwards
(a quarter / half of each batch, free data) 0.493 / 0.489; with the mirror images and 2,400 steps, 0.512.
Training on its own greedy last frames (the inputs of each window's last frame replaced by VaViM's greedy
generation, targets unchanged; 1.7x the stage's time) gained 1.5-2.8 points (on an AVX-512 machine's
default run, copy 0.555: 0.517 -> 0.545, seed 1 0.528 -> 0.543; 2,000 steps 0.537) and stayed below
copying; so did scheduled sampling on teacher-forced predictions (0.517 / 0.521 at 25 / 50 %), no loss on
the first frame (0.525) and head dims 16 / 64 (0.523 / 0.531). A count-based predictor of each token from
the same position in the last one or two frames does not beat copying (0.527-0.555): the past frames say
little about the next one beyond copying at this size. Nor does a VaViM trained to predict each token of
the last frame from the context frames alone (its inputs there replaced by the frame before's), which is
what greedy generation and copying both do: 0.533 / 0.534 after 1,200 / 2,400 steps (it beats copying
where the scene changes fast, 0.433 vs 0.402 on 27 windows, and loses where it barely changes, 0.662 vs
0.750 on 17). Nor does a direct path to copying (a learned gate adding the previous frame's token at the
target's position to the logits: 0.526; that token's embedding added to the input: 0.524); and adding to
the plain VaViM's logits the constant bias toward that token that scores best on the held-out windows
themselves (chosen on the test windows: an upper bound) only ties copying, 0.557 at 2 nats (1 / 3 nats:
0.550 / 0.554) against 0.555. On the AMD machine's default run (copy 0.460, plain 0.419), four times the
training scenes and 3,000 steps give 0.444, and with its own greedy frames 0.451, for a VaViM stage of 462 s
(the whole run: 350 s). (Scratch experiments: no training option runs them.)
What closed the gap, on that AMD run's data, 1,200 steps: relabelling the codes of a share of the windows by
a random permutation each (``--permute-codes``: a quarter / half / three quarters 0.443 / 0.449 / 0.442; it
makes VaViM copy tokens that stayed put, which the released recipe's VaViM under-trusts: P(copied token)
0.48 where 74 % of them stay), and with self-forcing and the weight average 0.461 (2,000 steps 0.449, width
256 0.455, four times the scenes and 2,000 steps 0.453); the quickstart run of this plan: 0.463 vs 0.460
(seeds 1, 2, 3: 0.469 vs 0.466, 0.470 vs 0.471, 0.418 vs 0.415), a margin of a few tokens within noise
(sign tests p >= 0.38; README). The
cross-entropy ratio rises with it (0.534 -> 0.592), the VaViM stage takes 1.4x as long (124 -> 175 s).
VaVAM without the ego speed: on one VaViM, 1,200 steps gave held-out minADE@5 2.46 m and 2,000 steps
2.74 m (lr 0.02; lr 0.005 / 0.0025: 2.98 / 2.95 m; lr 0.04 and uniform flow times: 2.72 m; 4 flow
samples per window (``noise_repeats``) at equal compute, 420 steps: 2.71 m), so the steps go to the data
and VaViM instead. The expert's weights are averaged over about the last 100 steps (``ema`` 0.99; the
released recipe keeps the last weights): on an earlier default run's data and VaViM, 1,100 steps, held-out
minADE@5 2.76 -> 2.39 m (seed 0) and 2.44 -> 2.45 m (seed 1); with the average, 2,000 steps gave 2.33 /
2.28 m, too little for 900 more steps; also training VaViM with the expert (VaViM lr 0.002) gave 2.86 m.
A short run is still improving fast and the average lags behind it: at budget 3 (220 steps) it made
minADE@5 worse, 4.00 -> 5.17 m, so below ``s = 1`` the last weights are kept. The default run with 200
scenes and 250 / 1,500 / 1,200 steps took 957 s on the reference machine; these counts (180 scenes, 180
/ 1,200 / 1,100 steps) took 783 s and, in later runs on the same machine, 612 s, (VaVAM reading the
speed) 663 s and (with the speed prior, on a busier day: the unchanged world stage took 150 s against
111 s) 750 s, leaving room for a noisier machine (held-out PSNR 19.8 -> 17.6 dB, VaViM's
cross-entropy ratio 0.45 -> 0.42, minADE@5 2.78 -> 2.76 m without the speed).

The ego speed: the released VaVAM sees only frames and the command (reference limitation 10), and
from 4 x 8-token frames the quickstart's expert could not tell its own speed well enough to beat the
constant-velocity baseline, which is given the speed: every variant above stayed at 1.0-1.3x its
minADE@5. Given the same speed the baseline reads (the distance driven over the last 0.5 s), the same
1,100 steps with the average on an earlier default run's data and VaViM gave held-out minADE@5 1.32 m against
2.21 m (0.60x; L2@1s 0.74 m, L2@3s 2.49 m vs 4.93 m) and LEFT - RIGHT 9.8 m.
The speed prior: the expert then still generated whole trajectories, whose straight-ahead part it
had to rebuild from the speed, in units of 35 m (``vavam_mini``). Generating only the deviation from
the constant-velocity trajectory (turns, speed changes: a few metres) in units of 10 m, so that the
targets span about the flow's unit noise, the same run gave 1.08 m (L2@1s 0.49 m, collision rate
0.24 vs 0.30, LEFT - RIGHT 11.0 m); units of 20 m 1.10 m, of 35 m 1.36 m and of 70 m 1.69 m (the
deviations are then too small against the noise). It matters most for short runs: after 220 steps
(budget 3's count) on the same data 2.02 m against 5.28 m without the prior (35 m units: 2.16 m), and
on budget 3's own data and VaViM 2.12 m against 2.80 m, where constant velocity scores 2.78 m.

The rule at ``s = 4`` (budget 60, seed 0, run end to end on the reference machine; VaVAM and the
evaluation re-run with the speed prior): 3,270 s in all (world 528, tokenizer 423, tokens 145, VaViM
989, VaVAM 997, evaluation 188 s), within its hour; held-out tokenizer PSNR 20.9 dB, VaViM
cross-entropy ratio 0.529, greedy next frame 0.428 vs copy 0.431, VaVAM minADE@5 0.84 vs 2.09 m
(0.401x; 1.19 m, 0.570x, without the prior), LEFT - RIGHT 11.5 m.

Step counts are fixed by the budget, not measured, so a run is reproducible for a seed on any machine;
the budget is what it takes on 2 CPU cores (this project's reference machine: float32 on AVX2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_BUDGET_MIN = 15.0
SCENES_PER_TOWN = 4  # the quickstart's world: 4 scenes per town, so held-out towns hold whole blocks of scenes
# cost of a training step with the double-width models relative to the default ones, measured on 2 AVX2
# cores (float32): VaViM 8 x 256 tokens, width 256 vs 128: 0.591 / 0.255 s; VaVAM 16 windows, VaViM 256 +
# expert 128 vs 128 + 64: 0.391 / 0.189 s
WIDE_VIDEO_STEP_COST = 2.3
SELF_FORCING_STEP_COST = 1.4  # a VaViM step with self-forcing, code permutation and the average: 175 s vs 124 s
WIDE_ACTION_STEP_COST = 2.1
# the most scenes the embedded world renders in one export (``vavam.world.export.HAZARD_LAYOUT_SPAN``; not imported:
# that module pulls in the whole world): a larger plan failed in the world stage, after plan.json was written
MAX_SCENES = 7800


@dataclass(frozen=True)
class QuickstartPlan:
    """Every size of a quickstart run."""

    budget_min: float
    height: int = 64
    width: int = 128
    train_scenes: int = 180
    heldout_scenes: int = 16
    scene_seconds: float = 20.0
    hazard_share: float = 0.2
    tokenizer_preset: str = "vq_mini"
    tokenizer_steps: int = 180
    tokenizer_batch: int = 16
    tokenizer_precision: str = "32"
    video_preset: str = "vavim_mini"
    video_width: int | None = None
    video_steps: int = 1200
    video_batch: int = 8
    video_lr: float = 0.004
    video_precision: str = "32"
    video_permute_codes: float = 0.5
    video_self_forcing: bool = True
    video_ema: float = 0.99
    action_preset: str = "vavam_mini"
    action_width: int | None = None
    action_steps: int = 1100
    action_batch: int = 16
    action_lr: float = 0.02
    action_ema: float = 0.99
    action_ego_speed: bool = True
    action_speed_prior: bool = True
    action_scaling: float = 10.0
    action_precision: str = "32"
    num_samples: int = 5
    closed_loop_runs: int = 2
    closed_loop_layouts: int = 2

    @classmethod
    def from_budget(cls, budget_min: float = DEFAULT_BUDGET_MIN) -> QuickstartPlan:
        """The plan of a time budget in minutes (see the module docstring for the rule)."""
        if not math.isfinite(budget_min) or budget_min <= 0:  # NaN passed "<= 0" and failed later, unexplained
            raise ValueError(f"--budget must be positive minutes, got {budget_min}")
        s = budget_min / DEFAULT_BUDGET_MIN
        too_many = (f"--budget {budget_min:g} minutes plans more than the {MAX_SCENES} scenes the embedded world "
                    f"renders; choose at most about 597 minutes")
        if s > MAX_SCENES:  # more scenes than that whatever the rounding; and 1200 s could overflow to infinity
            raise ValueError(too_many)
        wide = s >= 4  # twice the widths; fewer steps, so that the run still fits the budget
        video_cost, action_cost = (WIDE_VIDEO_STEP_COST * SELF_FORCING_STEP_COST, WIDE_ACTION_STEP_COST) if wide \
            else (1.0, 1.0)
        plan = cls(
            budget_min=budget_min,
            train_scenes=SCENES_PER_TOWN * max(1, round(180 * s / SCENES_PER_TOWN)),  # whole towns, so that
            heldout_scenes=SCENES_PER_TOWN * max(2, round(16 * s / SCENES_PER_TOWN)),  # the split is as planned
            tokenizer_steps=max(50, round(180 * s)),
            video_steps=max(30, round(1200 * s / video_cost)),
            action_steps=max(50, round(1100 * s / action_cost)),
            closed_loop_runs=max(1, round(2 * s)),
            action_ema=0.99 if s >= 1 else 0.0,
            video_ema=0.99 if s >= 1 else 0.0,
            video_width=256 if wide else None,
            action_width=128 if wide else None,
        )
        if plan.train_scenes + plan.heldout_scenes > MAX_SCENES:
            raise ValueError(too_many)
        return plan
