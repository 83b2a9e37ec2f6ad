"""The ego speed a speed-reading VaVAM gets in closed loop is measured as in training: the planar distance from the
context frame before to this one, over their time apart (the CAN bus's instantaneous speed is the fallback for a
run's first frame). While braking the two differ by 1.5 m/s in the world's scenarios."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from vavam.serve.agent import AgentOptions, TokenHistory, VaVAMAgent
from vavam.serve.schemas import encode_image
from vavam.serve.server import create_app


class _Tokenizer:
    downsample = 16

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        return torch.zeros(b, h // 16, w // 16, dtype=torch.long)


class _SpeedModel:
    """Trained with the ego speed: records the speed it is given."""

    class config:  # noqa: N801 - stands in for an ActionConfig
        ego_speed = True

    def __init__(self) -> None:
        self.speeds: list[float] = []

    def sample_trajectory(self, tokens, command, num_samples=1, num_steps=10, noise=None, generator=None, speed=None):
        self.speeds.append(float(speed[0]))
        return torch.zeros(tokens.shape[0], num_samples, 6, 2)


def _request(ts_us: int, xy: tuple[float, float], canbus_speed: float) -> dict:
    pose = np.eye(4)
    pose[:2, 3] = xy
    canbus = [0.0] * 18
    canbus[13] = canbus_speed
    return {"images": {"CAM_FRONT": encode_image(np.zeros((32, 64, 3), np.uint8), "torch")},
            "ego2world": pose.tolist(), "canbus": canbus, "timestamp": ts_us, "command": 2}


def test_recent_speed_is_the_distance_over_the_last_context_step_s35():
    history = TokenHistory(context_frames=4)
    tok = torch.zeros(2, 3, dtype=torch.long)
    assert history.push(0, tok, (10.0, -2.0)) == [] and history.recent_speed() is None  # one frame: no step
    history.push(100_000, tok, (11.0, -2.0))  # 0.1 s later: not a 2 Hz step, the context is still one frame back
    assert history.context_indices() == [1] and history.recent_speed() is None
    history.push(500_000, tok, (13.0, 2.0))  # the context's step: frame 0 -> frame 2, 0.5 s, 3-4-5 triangle
    assert history.context_indices() == [0, 2] and history.recent_speed() == pytest.approx(10.0)
    history.push(1_000_000, tok)  # no position: no measured speed
    assert history.recent_speed() is None
    # a push pruning old frames and its undo keep positions aligned with their frames
    pruned = history.push(10_000_000, tok, (0.0, 0.0))
    assert [t for t, _, _ in pruned] == [0, 100_000, 500_000, 1_000_000] and history.positions == [(0.0, 0.0)]
    history.drop_newest(10_000_000, pruned)
    assert history.timestamps == [0, 100_000, 500_000, 1_000_000]
    assert history.positions == [(10.0, -2.0), (11.0, -2.0), (13.0, 2.0), None]


def test_server_gives_the_model_the_speed_measured_from_ego2world_s35():
    """First frame: the CAN bus speed; then the speed over the last context step, whatever the CAN bus says."""
    model = _SpeedModel()
    agent = VaVAMAgent(_Tokenizer(), model, AgentOptions(image_size=(32, 64), neuroncap_rule=False), context_frames=8)
    client = TestClient(create_app(agent))
    assert client.post("/infer", json=_request(0, (100.0, 50.0), 6.25)).status_code == 200
    assert client.post("/infer", json=_request(500_000, (103.0, 54.0), 1.0)).status_code == 200
    assert client.post("/infer", json=_request(1_000_000, (104.5, 56.0), 1.0)).status_code == 200
    assert model.speeds == pytest.approx([6.25, 10.0, 5.0])
    # a pose jump no car drives is a 400 naming the measured speed; the frame may be sent again
    r = client.post("/infer", json=_request(1_500_000, (304.5, 56.0), 1.0))
    assert r.status_code == 400 and "speed measured from the last two context frames' positions" in r.text
    assert agent.history().timestamps[-1] == 1_000_000
    assert client.post("/infer", json=_request(1_500_000, (106.5, 56.0), 1.0)).status_code == 200
    assert model.speeds[-1] == pytest.approx(4.0)


def test_in_process_agent_and_planner_pass_positions_s35():
    from vavam.eval.closedloop import AgentPlanner

    model = _SpeedModel()
    agent = VaVAMAgent(_Tokenizer(), model, AgentOptions(image_size=(32, 64), neuroncap_rule=False), context_frames=8)
    image = np.zeros((32, 64, 3), np.uint8)
    with pytest.raises(ValueError, match="position: expected a finite ego position"):
        agent.plan(image, 0, 2, speed=3.0, position=(float("nan"), 0.0))
    assert len(agent.history()) == 0
    planner = AgentPlanner(agent)

    def obs(t_us: int, x: float, speed: float) -> dict:
        pose = np.eye(4)
        pose[0, 3] = x
        return {"image": image, "timestamp_us": t_us, "command": 2, "speed": speed, "ego_to_world": pose}

    planner.observe(obs(0, 0.0, 9.0))  # a priming frame: joins the history with its position
    planner(obs(500_000, 4.0, 9.0))  # 4 m in 0.5 s, though the world's instantaneous speed says 9
    assert model.speeds == pytest.approx([8.0])
