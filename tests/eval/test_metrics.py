"""Evaluation metrics pinned on hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vavam.eval.nexttoken import FrequencyBaseline, model_cross_entropy, perplexity
from vavam.eval.openloop import (
    MeanTrajectoryBaseline,
    OpenLoopAccumulator,
    constant_velocity_trajectory,
    speed_from_previous_frame,
    trajectory_errors,
)
from vavam.eval.quality import FeatureStats, frechet_distance, frechet_distance_from_features


def _line(speed: float, lateral: float = 0.0) -> torch.Tensor:
    t = torch.arange(1, 7, dtype=torch.float32) * 0.5
    return torch.stack([speed * t, torch.full_like(t, lateral)], -1)  # [6, 2]


def test_min_ade_fde_l2_by_hand():
    gt = _line(10.0)[None]  # [1, 6, 2]
    # sample 0: offset 1 m laterally everywhere (ADE 1); sample 1: offset 3 m (ADE 3)
    pred = torch.stack([_line(10.0, 1.0), _line(10.0, 3.0)])[None]  # [1, 2, 6, 2]
    e = trajectory_errors(pred, gt)
    assert e["min_ade"].item() == pytest.approx(1.0) and e["best"].item() == 0
    assert e["fde"].item() == pytest.approx(1.0)
    # growing error: pred at speed 12 -> error 2 m/s * t; ADE = mean(1,2,...,6) = 3.5
    e = trajectory_errors(_line(12.0)[None, None], gt)
    assert e["min_ade"].item() == pytest.approx(3.5)
    assert e["fde"].item() == pytest.approx(6.0)
    assert e["l2@1s"].item() == pytest.approx(2.0)
    assert e["l2@2s"].item() == pytest.approx(4.0)
    assert e["l2@3s"].item() == pytest.approx(6.0)
    with pytest.raises(ValueError, match="pred"):
        trajectory_errors(torch.zeros(1, 6, 2), gt)


def test_accumulator_per_command_and_mean():
    acc = OpenLoopAccumulator()
    gt = torch.stack([_line(10.0)] * 3)
    pred = torch.stack([_line(10.0, 1.0), _line(10.0, 2.0), _line(10.0, 4.0)])[:, None]
    acc.update(pred, gt, torch.tensor([0, 1, 1]))
    res = acc.compute()
    assert res["right"]["min_ade"] == pytest.approx(1.0) and res["right"]["count"] == 1
    assert res["left"]["min_ade"] == pytest.approx(3.0) and res["left"]["count"] == 2
    assert math.isnan(res["straight"]["min_ade"]) and res["straight"]["count"] == 0
    assert res["all"]["min_ade"] == pytest.approx(7.0 / 3)
    acc.reduce()  # no process group: unchanged
    after = acc.compute()["all"]
    assert math.isnan(after.pop("collision_rate")) and math.isnan(res["all"].pop("collision_rate"))
    assert after == res["all"]


def test_baselines():
    speed = speed_from_previous_frame(_line(8.0)[None])
    assert speed.item() == pytest.approx(8.0)
    cv = constant_velocity_trajectory(speed)
    assert torch.allclose(cv[0], _line(8.0))
    base = MeanTrajectoryBaseline().fit(torch.stack([_line(2.0), _line(4.0), _line(5.0, 3.0)]), torch.tensor([2, 2, 1]))
    pred = base.predict(torch.tensor([2, 1, 0]))
    assert torch.allclose(pred[0], _line(3.0))
    assert torch.allclose(pred[1], _line(5.0, 3.0))
    assert torch.allclose(pred[2], (_line(2.0) + _line(4.0) + _line(5.0, 3.0)) / 3)  # unseen command: overall mean


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    assert frechet_distance_from_features(x, x) == pytest.approx(0.0, abs=1e-6)
    # same covariance, shifted mean: FD = |shift|^2
    assert frechet_distance_from_features(x, x + np.array([1.0, 2.0, 0.0, 0.0])) == pytest.approx(5.0, rel=1e-6)
    # 1-D Gaussians: FD = (m1-m2)^2 + (s1-s2)^2
    assert frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[9.0]])) == pytest.approx(1 + 1)
    # diagonal covariances: sum over dims of (sqrt a - sqrt b)^2
    a, b = np.diag([1.0, 4.0]), np.diag([9.0, 16.0])
    assert frechet_distance(np.zeros(2), a, np.zeros(2), b) == pytest.approx((1 - 3) ** 2 + (2 - 4) ** 2)


def test_frechet_distance_of_a_set_against_itself_is_not_negative():
    """Wide-ranging feature scales leave float sums a hair below 0 for a set against itself (seed 0: -5e-5)."""
    x = np.random.default_rng(0).normal(size=(500, 64)) * np.linspace(0.01, 100, 64)
    assert 0.0 <= frechet_distance_from_features(x, x) < 1e-3


def test_feature_stats_match_numpy():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3))
    stats = FeatureStats(3)
    stats.update(x[:40])
    stats.update(torch.from_numpy(x[40:]))
    mu, cov = stats.mean_cov()
    assert np.allclose(mu, x.mean(0)) and np.allclose(cov, np.cov(x, rowvar=False))
    with pytest.raises(ValueError, match="features"):
        stats.update(np.zeros((2, 4)))


def test_frequency_baselines_by_hand():
    # vocab 4, frames of 1x2 tokens. Training: position 0 always 1, position 1 always 2 (3 frames).
    train = torch.tensor([[1, 2], [1, 2], [1, 2]]).view(3, 1, 1, 2)
    uni = FrequencyBaseline(4, per_position=False).fit(train)
    # counts with add-one: [1, 4, 4, 1] / 10
    assert torch.allclose(uni.log_probs().exp()[0], torch.tensor([0.1, 0.4, 0.4, 0.1], dtype=torch.float64))
    pos = FrequencyBaseline(4, per_position=True).fit(train)
    assert torch.allclose(pos.log_probs().exp()[0], torch.tensor([1, 4, 1, 1], dtype=torch.float64) / 7)
    window = torch.tensor([[1, 2], [1, 2]]).view(1, 2, 1, 2)  # targets: 2 (pos 1), 1 (pos 0), 2 (pos 1)
    total, n = pos.cross_entropy(window)
    assert n == 3 and total == pytest.approx(-3 * math.log(4 / 7))
    total_u, _ = uni.cross_entropy(window)
    assert total_u == pytest.approx(-3 * math.log(0.4))
    assert perplexity(math.log(7)) == pytest.approx(7.0)


def test_model_cross_entropy_matches_uniform_logits():
    class Uniform(torch.nn.Module):
        def forward(self, tokens):
            return torch.zeros(tokens.shape[0], tokens[0].numel(), 5)

    tokens = torch.randint(0, 5, (2, 2, 2, 3))
    total, n = model_cross_entropy(Uniform(), tokens)
    assert n == 2 * 11 and total / n == pytest.approx(math.log(5))


def test_frechet_distance_refuses_non_finite_features_naming_the_set():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(20, 4))
    y[3, 1] = np.nan  # reached scipy as "LinAlgError: Internal error in scipy.linalg.sqrtm: -102"
    with pytest.raises(ValueError, match=r"y \(second feature set\): 1 of 20 feature vectors hold NaN"):
        frechet_distance_from_features(x, y)
    x_inf = x.copy()
    x_inf[0, 0] = np.inf
    with pytest.raises(ValueError, match=r"x \(first feature set\): 1 of 20 feature vectors hold NaN or infinite"):
        frechet_distance_from_features(x_inf, x)
    with pytest.raises(ValueError, match="generated frames: 1 of 2"):
        FeatureStats(4, "generated frames").update(torch.tensor([[0.0, 1, 2, 3], [float("nan"), 0, 0, 0]]))
    mu, cov = np.zeros(4), np.eye(4)
    with pytest.raises(ValueError, match="frechet_distance: cov2 holds NaN"):
        frechet_distance(mu, cov, mu, np.full((4, 4), np.nan))


def test_frechet_distance_of_few_samples_is_finite_without_scipy_warning_and_says_why():
    """Few samples and features that do not vary make an exactly singular product: scipy's sqrtm warned "Matrix is
    singular"; the distance stays finite (eps fallback) and the report states the rank in words instead."""
    import warnings

    from vavam.eval.quality import rank_deficiency

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 16)), rng.normal(size=(5, 16)) + 1.0
    x[:, 12:] = y[:, 12:] = 0.5  # 4 features constant in both sets (a dead channel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fd = frechet_distance_from_features(x, y)
    assert np.isfinite(fd) and fd > 12  # the mean shift alone is 12
    assert rank_deficiency(17, 16) is None
    assert rank_deficiency(5, 16) == ("5 windows for 16-d features: the covariances are rank-deficient (at most 4 of "
                                      "16 dimensions), so the Fréchet distances are biased upward; compare them only "
                                      "with evaluations of the same number of windows")


def test_accumulator_refuses_commands_outside_right_left_straight():
    """A window's -1 ("no command") or any other code counted in "all" but in no command's row, silently; a
    command list of the wrong length failed with a bare IndexError. Both are refused naming ``commands``, before
    any sum changes."""
    acc = OpenLoopAccumulator()
    gt = torch.stack([_line(10.0)] * 2)
    pred = torch.stack([_line(10.0, 1.0), _line(10.0, 2.0)])[:, None]
    with pytest.raises(ValueError, match=r"commands: window 1 \(scene 'b' frame 7\) has command -1; expected 0"):
        acc.update(pred, gt, torch.tensor([2, -1]), windows=["scene 'a' frame 3", "scene 'b' frame 7"])
    with pytest.raises(ValueError, match=r"commands: window 0 has command 3"):
        acc.update(pred, gt, torch.tensor([3, 0]))
    with pytest.raises(ValueError, match=r"commands must be \[N\] with N=2, got \[3\]"):
        acc.update(pred, gt, torch.tensor([0, 1, 2]))
    assert acc.compute()["all"]["count"] == 0  # nothing was added
    acc.update(pred, gt, torch.tensor([2, 1]))
    res = acc.compute()
    assert res["all"]["count"] == res["left"]["count"] + res["right"]["count"] + res["straight"]["count"] == 2


def test_mean_baseline_refuses_undefined_commands():
    """``predict(-1)`` returned the "straight" mean (a negative index wraps around); ``fit`` left -1 windows out
    of every command's mean."""
    base = MeanTrajectoryBaseline().fit(torch.stack([_line(2.0), _line(4.0)]), torch.tensor([2, 1]))
    with pytest.raises(ValueError, match=r"predict: commands: window 1 has command -1"):
        base.predict(torch.tensor([2, -1]))
    with pytest.raises(ValueError, match=r"fit: commands: window 0 has command -1"):
        MeanTrajectoryBaseline().fit(torch.stack([_line(2.0), _line(4.0)]), torch.tensor([-1, 1]))
    with pytest.raises(ValueError, match=r"fit: commands must be \[N\] with N=2"):
        MeanTrajectoryBaseline().fit(torch.stack([_line(2.0), _line(4.0)]), torch.tensor([2]))


def test_accumulator_refuses_partly_unknown_or_non_binary_collision_flags():
    """A NaN flag beside known ones dropped the whole window from the collision rate without a word (only a
    window without boxes is NaN throughout); a flag of 2 pushed the rate above the share of colliding plans."""
    gt = torch.stack([_line(10.0)] * 2)
    pred = gt[:, None].repeat(1, 2, 1, 1)  # [2, K=2, 6, 2]
    acc = OpenLoopAccumulator()
    with pytest.raises(ValueError, match=r"collisions: window 0 \(w0\) holds \[1\.0, nan\]; expected 1 / 0"):
        acc.update(pred, gt, torch.tensor([2, 2]), torch.tensor([[1.0, math.nan], [0.0, 0.0]]), windows=["w0", "w1"])
    with pytest.raises(ValueError, match=r"collisions: window 1 holds \[2\.0, 0\.0\]"):
        acc.update(pred, gt, torch.tensor([2, 2]), torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    acc.update(pred, gt, torch.tensor([2, 2]), torch.tensor([[1.0, 0.0], [math.nan, math.nan]]))
    assert acc.compute()["all"]["collision_rate"] == pytest.approx(0.5)
