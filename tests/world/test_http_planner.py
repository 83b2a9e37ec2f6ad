"""Planners behind the NeuroNCAP wire format."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pydantic")


class FakeClient:
    def __init__(self):
        self.requests, self.resets = [], 0

    def reset(self):
        self.resets += 1
        return True

    def infer(self, request):
        self.requests.append(request)
        return np.stack([request.speed * 0.5 * np.arange(1, 7), np.zeros(6)], 1)


def test_http_planner_sends_neuroncap_inputs():
    from vavam.serve.schemas import decode_image
    from vavam.world.geometry import pose_matrix
    from vavam.world.http_planner import HTTPPlanner

    client = FakeClient()
    planner = HTTPPlanner(client)
    planner.reset()
    image = np.zeros((36, 64, 3), dtype=np.uint8)
    image[0, 0] = 255
    obs = {
        "image": image,
        "ego_to_world": pose_matrix(3.0, 4.0, 0.5),
        "speed": 7.0,
        "command": 1,
        "timestamp_us": 1_500_000,
        "intrinsics": np.eye(3),
    }
    plan = planner(obs)
    req = client.requests[0]
    assert client.resets == 1
    np.testing.assert_allclose(plan[:, 0], 3.5 * np.arange(1, 7))
    assert req.canbus[13] == 7.0 and req.command == 1 and req.timestamp == 1_500_000
    np.testing.assert_allclose(req.canbus[:3], [3.0, 4.0, 0.0])
    np.testing.assert_allclose(req.canbus[3:7], [np.cos(0.25), 0, 0, np.sin(0.25)])
    np.testing.assert_array_equal(decode_image(req.images["CAM_FRONT"]), image)


def test_http_planner_needs_images():
    from vavam.world.geometry import pose_matrix
    from vavam.world.http_planner import HTTPPlanner

    with pytest.raises(ValueError, match="images"):
        HTTPPlanner(FakeClient())(
            {"image": None, "ego_to_world": pose_matrix(0, 0, 0), "speed": 1.0, "command": 2, "timestamp_us": 0}
        )
