"""A planner behind a NeuroNCAP-compatible model server: observations -> ``ModelInput`` -> HTTP.

Only the front camera is rendered; it is sent as ``CAM_FRONT`` (base64 of a ``torch.save``d uint8
``H x W x 3`` tensor, NeuroNCAP's encoding). ``canbus`` follows the nuScenes layout NeuroNCAP
emulates: [0:3] translation, [3:7] yaw quaternion (w, x, y, z), [7:10] ego-frame acceleration,
[10:13] rotation rate, [13:16] ego-frame velocity (speed = canbus[13]), then two zeros.
"""

from __future__ import annotations

import numpy as np

from vavam.world.geometry import yaw_to_quaternion


def model_input(obs: dict, camera_to_ego: np.ndarray | None = None):
    """Build a :class:`vavam.serve.schemas.ModelInput` from a closed-loop observation (needs an image).

    ``calibration`` gets CAM_FRONT's intrinsics (``obs["intrinsics"]``) and extrinsics (``camera_to_ego``, else
    ``obs["camera_to_ego"]``), as NeuroNCAP sends them for every camera."""
    from vavam.serve.schemas import Calibration, ModelInput, encode_image

    if obs.get("image") is None:
        raise ValueError("this planner needs camera images: run the scenario with a renderer")
    m = np.asarray(obs["ego_to_world"], dtype=np.float64)
    yaw = float(np.arctan2(m[1, 0], m[0, 0]))
    world = obs.get("world")
    accel = float(world.ego.a) if world is not None else 0.0
    yaw_rate = 0.0
    if world is not None and world.ego.v > 0:
        yaw_rate = float(world.ego.v * np.tan(world.ego.steer) / world.params.wheelbase)
    canbus = [
        *m[:3, 3],
        *yaw_to_quaternion(yaw),
        accel,
        0.0,
        0.0,
        0.0,
        0.0,
        yaw_rate,
        float(obs["speed"]),
        0.0,
        0.0,
        0.0,
        0.0,
    ]
    calib = Calibration()
    if obs.get("intrinsics") is not None:
        calib.camera2image["CAM_FRONT"] = np.asarray(obs["intrinsics"]).tolist()
    if camera_to_ego is None:
        camera_to_ego = obs.get("camera_to_ego")  # the rendering camera's mount (closed-loop observations)
    if camera_to_ego is not None:
        calib.camera2ego["CAM_FRONT"] = np.asarray(camera_to_ego).tolist()
    return ModelInput(
        images={"CAM_FRONT": encode_image(obs["image"])},
        ego2world=m.tolist(),
        canbus=[float(c) for c in canbus],
        timestamp=int(obs["timestamp_us"]),
        command=int(obs["command"]),
        calibration=calib,
    )


class HTTPPlanner:
    """Wraps a :class:`vavam.serve.client.ModelClient` (or anything with ``reset()`` and
    ``infer(ModelInput) -> [6, 2]``) as a closed-loop planner."""

    def __init__(self, client, camera_to_ego: np.ndarray | None = None):
        self.client, self.camera_to_ego = client, camera_to_ego

    def reset(self) -> None:
        """Clear the server's history before a run."""
        self.client.reset()

    def observe(self, obs: dict) -> None:
        """A priming step: the frame goes to the server (it joins its history), the plan is discarded, as
        NeuroNCAP calls the model on every step."""
        self(obs)

    def __call__(self, obs: dict) -> np.ndarray:
        return np.asarray(self.client.infer(model_input(obs, self.camera_to_ego)), dtype=np.float64)
