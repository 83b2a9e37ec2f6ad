"""Second-round audit of the action expert and flow matching: properties checked against the reference facts
(time convention, Euler direction, the speed prior, the open-loop metrics), kept as regression tests.
"""

from __future__ import annotations

import dataclasses

import torch

from vavam import flow, presets
from vavam.action import VideoActionModel
from vavam.eval.planning import evaluate_open_loop, fit_mean_baseline, window_noise


def _perturbed(config, seed: int = 0, scale: float = 0.2) -> VideoActionModel:
    """A model of ``config`` with every weight perturbed (non-zero readout and query rows)."""
    torch.manual_seed(seed)
    model = VideoActionModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)
    return model


def test_audit_s35_one_euler_step_is_the_last_frames_training_velocity_at_noise_time():
    """Inference (all context frames visible, t = 0 at the noise end) equals the training path's last frame group."""
    model = _perturbed(presets.vavam_tiny())
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 1024, (2, 3, 4, 6), generator=g)
    command = torch.randint(0, 3, (2, 3), generator=g)
    noise = torch.randn(2, 1, 6, 2, generator=g)
    traj = model.sample_trajectory(tokens, command[:, -1], num_samples=1, num_steps=1, noise=noise)  # [2, 1, 6, 2]
    x = torch.randn(2, 3, 6, 2, generator=g)
    x[:, -1] = noise[:, 0]
    t = torch.rand(2, 3, generator=g)
    t[:, -1] = 0.0
    v = model.velocity(x, t, command, tokens)  # [2, 3, 6, 2]
    expected = (noise[:, 0] + v[:, -1]) * model.config.action_scaling
    torch.testing.assert_close(traj[:, 0], expected.detach(), rtol=1e-5, atol=1e-4)


def test_audit_s35_training_times_follow_the_pi0_beta_schedule():
    """t = 0.999 (1 - z), z ~ Beta(1.5, 1): mean 0.3996, inside [0, 0.999], more mass on the noise end."""
    t = flow.sample_time((200_000,), generator=torch.Generator().manual_seed(0))
    assert float(t.min()) >= 0.0 and float(t.max()) <= 0.999
    assert abs(float(t.mean()) - 0.999 * 0.4) < 3e-3
    assert abs(float((t < 0.5).float().mean()) - (1 - 0.4995 ** 1.5)) < 5e-3  # P(t < 0.5) = P(z > 0.4995)


def test_audit_s35_speed_prior_openloop_metrics_match_a_hand_computation_for_any_batch_size():
    """With the speed prior, minADE over windows (K samples, last frame's GT) is the hand-computed one, batch 1 or 4."""
    config = dataclasses.replace(presets.vavam_tiny(), ego_speed=True, speed_prior=True, action_scaling=10.0)
    model = _perturbed(config, scale=0.05)
    g = torch.Generator().manual_seed(1)
    items = [{"tokens": torch.randint(0, 1024, (4, 4, 6), generator=g),
              "positions": torch.randn(4, 6, 2, generator=g).cumsum(1),
              "commands": torch.randint(0, 3, (4,), generator=g), "speeds": torch.rand(4, generator=g) * 10,
              "scene": f"s{i}", "frame_indices": torch.arange(4)} for i in range(5)]
    results = [evaluate_open_loop(model, items, None, fit_mean_baseline(items), num_samples=3, batch_size=b, seed=3)
               for b in (1, 4)]
    ades = []
    for i, it in enumerate(items):
        pred = model.sample_trajectory(it["tokens"][None], it["commands"][None, -1], num_samples=3,
                                       noise=window_noise(3, i, 3, 6)[None], speed=it["speeds"][None, -1])
        ades.append((pred[0] - it["positions"][-1]).norm(dim=-1).mean(-1).min())
    expected = float(torch.stack(ades).mean())
    for result in results:
        assert abs(result["rows"]["VaVAM"]["all"]["min_ade"] - expected) < 1e-3
        assert result["rows"]["VaVAM"]["all"]["count"] == 5
