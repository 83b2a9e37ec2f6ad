"""Front-camera rendering: intrinsics, projection, labels/depth consistent with geometry, golden image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from vavam.world.camera import Camera
from vavam.world.geometry import pose_matrix
from vavam.world.roads import NetworkConfig

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "world"
SMALL = NetworkConfig(grid=(3, 3))


@pytest.fixture(scope="module")
def town():
    from vavam.world.town import generate_town

    return generate_town(0, SMALL)


def test_intrinsics_scale_nuscenes_cam_front():
    k = Camera(288, 512).intrinsics
    assert k[0, 0] == pytest.approx(1266.4 / 3.125) and k[1, 1] == pytest.approx(1266.4 / 3.125)
    assert k[0, 2] == pytest.approx((816.3 + 0.5) / 3.125 - 0.5)
    full = Camera(900, 1600).intrinsics
    assert full[0, 2] == pytest.approx(816.3) and full[1, 2] == pytest.approx(491.5)


def test_projection_of_known_points():
    cam = Camera(288, 512)
    ego = pose_matrix(10.0, 5.0, np.pi / 2)  # facing world +y
    k = cam.intrinsics
    # 20 m straight ahead at camera height: the principal point
    p = np.array([[10.0, 5.0 + cam.mount[0] + 20.0, cam.mount[2]]])
    uv, depth = cam.project(p, ego)
    np.testing.assert_allclose(uv[0], [k[0, 2], k[1, 2]], atol=1e-9)
    assert depth[0] == pytest.approx(20.0)
    # 1 m to the left (world -x when facing +y) and 1 m up: left of and above the centre
    uv, _ = cam.project(np.array([[9.0, 5.0 + cam.mount[0] + 20.0, cam.mount[2] + 1.0]]), ego)
    np.testing.assert_allclose(uv[0], [k[0, 2] - k[0, 0] / 20.0, k[1, 2] - k[1, 1] / 20.0], atol=1e-9)


def _far_away_scene(renderer, distance: float = 15.0, height: float = 3.0):
    """Ego outside the town (flat terrain), a 3 m tall van straight ahead, rear face at ``distance``."""
    ego = pose_matrix(-1000.0, -1000.0, 0.0)
    length = 5.0
    cx = -1000.0 + renderer.camera.mount[0] + distance + length / 2
    box = np.array([[cx, -1000.0, 0.0, length, 2.0, height, 0.8, 0.1, 0.1]])
    return ego, box


def test_vehicle_ahead_gives_label_and_depth_at_image_centre(gl_context, town):
    from vavam.world.meshes import LABEL_IDS
    from vavam.world.render import Renderer

    cam = Camera(72, 128)
    r = Renderer(town, cam, ctx=gl_context)
    ego, box = _far_away_scene(r)
    frame = r.render(ego, box)
    assert frame.rgb.shape == (72, 128, 3) and frame.rgb.dtype == np.uint8
    assert frame.label.shape == (72, 128) and frame.depth.dtype == np.float32
    k = cam.intrinsics
    i, j = round(k[1, 2]), round(k[0, 2])
    assert frame.label[i, j] == LABEL_IDS["vehicle"]
    assert frame.depth[i, j] == pytest.approx(15.0, abs=0.01)
    assert frame.label[0, j] == LABEL_IDS["sky"] and frame.depth[0, j] == pytest.approx(cam.far)
    assert frame.label[-1, j] == LABEL_IDS["terrain"]
    # ground depth at the bottom row: camera height * fy / (v - cy)
    v = 71
    assert frame.depth[v, 5] == pytest.approx(cam.mount[2] * k[1, 1] / (v - k[1, 2]), rel=0.03)
    # the top edge of the van projects where the label changes from sky to vehicle
    top = np.array([[box[0, 0] - 2.5, -1000.0, 3.0]])
    v_top = cam.project(top, ego)[0][0, 1]
    col = frame.label[:, j]
    first_vehicle_row = int(np.argmax(col == LABEL_IDS["vehicle"]))
    assert abs(first_vehicle_row - v_top) <= 1.0
    r.release()


def test_render_is_deterministic_and_matches_golden(gl_context):
    from PIL import Image

    from vavam.world.render import Renderer
    from vavam.world.sim import World, WorldConfig

    world = World(0, WorldConfig(network=SMALL))
    for _ in range(20):
        world.step()
    r = Renderer(world.town, Camera(36, 64), ctx=gl_context)
    a = r.render(world.ego_to_world(), world.render_boxes())
    b = r.render(world.ego_to_world(), world.render_boxes())
    np.testing.assert_array_equal(a.rgb, b.rgb)
    np.testing.assert_array_equal(a.label, b.label)
    path_rgb, path_label = ARTIFACTS / "golden_rgb_36x64.png", ARTIFACTS / "golden_label_36x64.png"
    if os.environ.get("VAVAM_UPDATE_GOLDEN") == "1" or not path_rgb.exists():
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        Image.fromarray(a.rgb).save(path_rgb)
        Image.fromarray(a.label).save(path_label)
    gold_rgb = np.asarray(Image.open(path_rgb))
    gold_label = np.asarray(Image.open(path_label))
    # software rasterisers may differ by a few edge pixels across Mesa versions
    assert np.abs(a.rgb.astype(int) - gold_rgb.astype(int)).mean() < 3.0
    assert (a.label == gold_label).mean() > 0.97
    r.release()
