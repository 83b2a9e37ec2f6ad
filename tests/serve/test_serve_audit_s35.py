"""Second-round audit of the serving side: a failed ``/infer`` must leave the session's frame history as it was."""

from __future__ import annotations

import numpy as np
import torch
from fastapi.testclient import TestClient

from vavam.serve.agent import AgentOptions, TokenHistory, VaVAMAgent
from vavam.serve.schemas import encode_image
from vavam.serve.server import create_app


class _Tokenizer:
    """One token per frame: the frame's (constant) pixel value."""

    downsample = 16

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        value = ((images.mean(dim=(1, 2, 3)) + 1) * 127.5).round().long()
        return value[:, None, None].expand(b, h // 16, w // 16).clone()


class _FailingOnceModel:
    """x of every waypoint = number of context frames; the call at ``fail_at`` frames' value raises once."""

    def __init__(self, fail_value: int):
        self.fail_value = fail_value

    def sample_trajectory(self, tokens, command, num_samples=1, num_steps=10, noise=None, generator=None):
        if int(tokens[0, -1, 0, 0]) == self.fail_value:
            self.fail_value = -1
            raise RuntimeError("device error")
        out = torch.zeros(tokens.shape[0], num_samples, 6, 2)
        out[..., 0] = tokens.shape[1]
        return out


def _request(ts_us: int, value: int) -> dict:
    img = np.full((32, 64, 3), value, dtype=np.uint8)
    return {"images": {"CAM_FRONT": encode_image(img)}, "ego2world": np.eye(4).tolist(), "canbus": [0.0] * 18,
            "timestamp": ts_us, "command": 2}


def test_failed_call_restores_frames_it_pruned_s35():
    """A call whose model fails after its frame joined the history must leave the history as it was, including
    the old frames that joining pruned (they are the context of a later call with an earlier timestamp)."""
    agent = VaVAMAgent(_Tokenizer(), _FailingOnceModel(fail_value=200),
                       AgentOptions(image_size=(32, 64), neuroncap_rule=False), context_frames=8)
    client = TestClient(create_app(agent), raise_server_exceptions=False)
    for i in range(8):  # 0 .. 3.5 s at 2 Hz
        assert client.post("/infer", json=_request(i * 500_000, 10 + i)).status_code == 200
    before = list(agent.history().timestamps)
    assert client.post("/infer", json=_request(20_000_000, 200)).status_code == 500  # far ahead, then fails
    assert agent.history().timestamps == before
    out = client.post("/infer", json=_request(4_000_000, 30)).json()
    assert out["trajectory"][0][0] == 8.0  # the full 2 Hz context, as without the failed call


def test_history_drop_newest_restores_pruned_s35():
    hist = TokenHistory(context_frames=2)
    for i in range(3):
        hist.push(i * 500_000, torch.full((1, 1), i))
    pruned = hist.push(10_000_000, torch.full((1, 1), 9))
    assert hist.timestamps == [10_000_000]
    hist.drop_newest(10_000_000, pruned)
    assert hist.timestamps == [0, 500_000, 1_000_000]
    assert [int(t) for t in hist.tokens] == [0, 1, 2]
