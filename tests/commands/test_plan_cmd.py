"""``vavam plan`` (vavam.commands.plan) and the trajectory pictures of vavam.viz."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

import vavam
from vavam.action import save_action_model
from vavam.commands import common as C
from vavam.commands.plan import plan
from vavam.data.tokens import TokenStore, TokenStoreWriter
from vavam.tokenizer import save_tokenizer
from vavam.viz import (
    SAMPLE_COLORS,
    bev_plot,
    default_camera,
    draw_trajectories,
    project_ground_points,
    scale_intrinsics,
)

H, W = 32, 48  # vq_tiny (downsampling 8) -> 4 x 6 tokens = vavim_tiny's tokens per frame


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("plan_cmd")
    torch.manual_seed(0)
    tok_cfg = vavam.presets.vq_tiny()
    cfg = vavam.presets.vavam_tiny()
    cfg = dataclasses.replace(cfg, video=dataclasses.replace(cfg.video, vocab_size=tok_cfg.codebook_size + 1))
    assert (H // tok_cfg.downsample) * (W // tok_cfg.downsample) == cfg.video.tokens_per_frame
    tok = vavam.build_model(tok_cfg).eval()
    vam = vavam.build_model(cfg).eval()
    with torch.no_grad():  # the readout is zero at init: make the velocity depend on the inputs
        vam.expert.readout.weight.normal_(0.0, 0.05)
    save_tokenizer(tok, root / "tok")
    save_action_model(vam, root / "vam")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)).save(images / f"f{i}.png")
    writer = TokenStoreWriter(root / "store", (4, 6), image_size=(H, W), downsample=8, codebook_size=1024, fps=2.0)
    writer.write_scene("s0", rng.integers(0, 1024, (6, 4, 6)), np.arange(6) * 500_000)
    writer.write_scene("s1", rng.integers(0, 1024, (3, 4, 6)), np.arange(3) * 500_000)
    return {"root": root, "tok": tok, "vam": vam, "images": images}


# ------------------------------------------------------------------------------ the command


def test_plan_from_images_matches_direct_sampling(assets, tmp_path):
    from PIL import Image

    root = assets["root"]
    res = plan(root / "vam", "left", tokenizer=str(root / "tok"), frames=[str(assets["images"])], start=1,
               num_samples=3, seed=7, out=tmp_path / "p")
    saved = json.loads((tmp_path / "p" / "trajectory.json").read_text())
    assert saved == res
    assert res["driving_command"] == "left" and res["driving_command_id"] == 1 and res["context"] == 4
    traj = np.asarray(saved["trajectories"])
    assert traj.shape == (3, 6, 2) and saved["waypoint_times_s"] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]

    files = sorted(assets["images"].iterdir())[1:5]
    images = torch.stack([torch.from_numpy(np.array(Image.open(f))).permute(2, 0, 1).float() / 127.5 - 1
                          for f in files])
    tokens = assets["tok"].encode(images)
    direct = assets["vam"].sample_trajectory(tokens[None], torch.tensor([1]), num_samples=3,
                                             generator=torch.Generator().manual_seed(7))[0]
    np.testing.assert_allclose(traj, direct.numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(saved["mean_trajectory"]), direct.numpy().mean(0), atol=1e-6)

    png = np.asarray(Image.open(tmp_path / "p" / "plan.png"))
    s = res["camera"]["display_scale"]
    assert s == round(512 / W) and png.shape == (H * s, W * s, 3)
    assert res["camera"]["assumed"] and res["camera"]["height_m"] == pytest.approx(1.51)


def test_plan_from_token_store_same_noise_and_tyro(assets, tmp_path):
    import tyro

    root = assets["root"]
    res = tyro.cli(plan, args=[str(root / "vam"), "--command", "right", "--tokens", str(root / "store"),
                               "--scene", "s0", "--start", "2", "--num-samples", "2", "--num-steps", "3",
                               "--seed", "5", "--out", str(tmp_path / "q")])
    assert res["tokenizer"] is None and res["picture"].startswith("blank canvas")
    tokens = torch.from_numpy(TokenStore(root / "store").window("s0", 2, 4).astype(np.int64))
    g = torch.Generator().manual_seed(5)  # the model draws its noise sample by sample
    noise = torch.stack([torch.randn((1, 6, 2), generator=g) for _ in range(2)], 1)  # [1, 2, 6, 2]
    direct = assets["vam"].sample_trajectory(tokens[None], torch.tensor([0]), num_samples=2, num_steps=3, noise=noise)
    np.testing.assert_allclose(np.asarray(res["trajectories"]), direct[0].numpy(), atol=1e-6)
    assert (tmp_path / "q" / "plan.png").is_file()

    # a different command changes the plan; the tokenizer decodes the picture when given
    res2 = plan(root / "vam", "straight", tokenizer=str(root / "tok"), tokens=root / "store", scene="s0", start=2,
                num_samples=2, num_steps=3, seed=5, intrinsics=(40.0, 40.0, 23.5, 15.5), camera_height=1.2,
                out=tmp_path / "r")
    assert not np.allclose(res2["trajectories"], res["trajectories"])
    assert res2["picture"] == "last context frame (decoded tokens)"
    assert res2["camera"]["intrinsics"][0] == [40.0, 0.0, 23.5] and res2["camera"]["height_m"] == 1.2


def test_plan_errors(assets, tmp_path):
    root = assets["root"]
    tok, imgs = str(root / "tok"), [str(assets["images"])]
    with pytest.raises(C.CommandError, match="--command 'up'"):
        plan(root / "vam", "up", tokenizer=tok, frames=imgs, out=tmp_path / "o")
    with pytest.raises(SystemExit):  # tyro refuses it too
        import tyro

        tyro.cli(plan, args=[str(root / "vam"), "--command", "up", "--frames", *imgs])
    with pytest.raises(FileNotFoundError, match=r"^checkpoint .*: no such file or folder"):  # positional
        plan(tmp_path / "nope", "left", tokenizer=tok, frames=imgs, out=tmp_path / "o")
    released = tmp_path / "vavam.pt"
    released.write_bytes(b"x")
    with pytest.raises(C.CommandError, match="--tokenizer is required.*released"):
        plan(released, "left", frames=imgs, out=tmp_path / "o")
    with pytest.raises(C.CommandError, match="--frames.*--context needs 4"):
        plan(root / "vam", "left", tokenizer=tok, frames=imgs, start=2, out=tmp_path / "o")
    with pytest.raises(C.CommandError, match="--tokens .*scene s1.*--context needs 4"):
        plan(root / "vam", "left", tokens=root / "store", scene="s1", out=tmp_path / "o")
    with pytest.raises(C.CommandError, match="--scene is required"):
        plan(root / "vam", "left", tokens=root / "store", out=tmp_path / "o")
    with pytest.raises(C.CommandError, match="--context 5"):
        plan(root / "vam", "left", tokens=root / "store", scene="s0", context=5, out=tmp_path / "o")
    with pytest.raises(C.CommandError, match=r"--size 16 16.*2x2 token grid = 4 tokens.*expects 24"):
        plan(root / "vam", "left", tokenizer=tok, frames=imgs, size=(16, 16), out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ vavam.viz

K_TEST = np.array([[100.0, 0.0, 50.0], [0.0, 100.0, 40.0], [0.0, 0.0, 1.0]])


def test_projection_of_a_ground_point_by_hand():
    # camera 1.5 m high, 1 m ahead of the origin: ground point (11, 2) is 10 m ahead, 2 m left, 1.5 m below
    # -> camera (x right, y down, z fwd) = (-2, 1.5, 10) -> u = 100 * -0.2 + 50 = 30, v = 100 * 0.15 + 40 = 55
    uv, ok = project_ground_points(np.array([[11.0, 2.0], [0.5, 0.0]]), K_TEST, camera_height=1.5, camera_forward=1.0)
    np.testing.assert_allclose(uv[0], [30.0, 55.0])
    assert ok.tolist() == [True, False] and np.isnan(uv[1]).all()
    # upscaled intrinsics keep pixel centres: u' = (u + 0.5) s - 0.5
    uv3, _ = project_ground_points(np.array([[11.0, 2.0]]), scale_intrinsics(K_TEST, 3), 1.5, 1.0)
    np.testing.assert_allclose(uv3[0], (np.array([30.0, 55.0]) + 0.5) * 3 - 0.5)
    # pitching the camera down moves a ground point up in the image (smaller v)
    uvp, _ = project_ground_points(np.array([[11.0, 2.0]]), K_TEST, 1.5, 1.0, camera_pitch_deg=10.0)
    assert uvp[0, 1] < 55.0


def test_draw_lands_on_the_projected_pixel_and_skips_points_behind():
    image = np.zeros((100, 100, 3), np.uint8)
    traj = np.tile([[11.0, 2.0]], (1, 6, 1))  # every waypoint at the same ground point
    out = draw_trajectories(image, traj, K_TEST, camera_height=1.5, camera_forward=1.0, start_at_origin=False,
                            inset=False, line_width=1)
    assert out.shape == image.shape
    assert tuple(out[55, 30]) == SAMPLE_COLORS[0]
    rows, cols = np.nonzero(out.any(axis=2))
    assert rows.size and np.abs(rows - 55).max() <= 2 and np.abs(cols - 30).max() <= 2

    behind = np.stack([np.linspace(-6, -1, 6), np.zeros(6)], -1)[None]  # all behind the camera (at x = 1)
    out = draw_trajectories(image, behind, K_TEST, camera_height=1.5, camera_forward=1.0, inset=False)
    np.testing.assert_array_equal(out, image)
    # a line from behind the camera to the front is cut at the near plane: drawn, no crash
    across = np.stack([np.linspace(-5, 20, 6), np.zeros(6)], -1)
    out = draw_trajectories(image, across, K_TEST, camera_height=1.5, camera_forward=1.0, inset=False)
    assert out.any() and tuple(out[40 + round(100 * 1.5 / 19), 50]) == SAMPLE_COLORS[0]


def test_draw_defaults_ground_truth_upscale_and_bev():
    image = np.full((36, 64, 3), 90, np.uint8)
    t = np.linspace(0.5, 3.0, 6)
    trajs = np.stack([np.stack([8 * t, s * t**2], -1) for s in (-1.0, 0.0, 1.0)])
    gt = np.stack([8 * t, 0.3 * t], -1)
    out = draw_trajectories(image, trajs, ground_truth=gt, upscale=4)
    assert out.shape == (144, 256, 3) and out.dtype == np.uint8
    k, height, forward = default_camera(36, 64)
    assert height == pytest.approx(1.51) and forward == pytest.approx(1.70) and k[0, 0] == pytest.approx(1266.4 * 0.04)
    bev = bev_plot(trajs, ground_truth=gt, size=(120, 90))
    assert bev.shape == (120, 90, 3)
    colors = {tuple(c) for c in bev.reshape(-1, 3)}
    assert SAMPLE_COLORS[0] in colors and (0, 230, 0) in colors
    with pytest.raises(ValueError, match="trajectories must be"):
        draw_trajectories(image, np.zeros((2, 6, 3)))
    with pytest.raises(ValueError, match="RGB uint8"):
        draw_trajectories(image.astype(np.float32), trajs)


@pytest.mark.parametrize("prior", [False, True])
def test_plan_with_a_speed_reading_checkpoint(assets, tmp_path, prior):
    """A checkpoint trained with the ego speed (and, with ``prior``, generating the deviation from
    constant velocity) round-trips its config, needs ``--speed`` (refused by name without it) and plans
    exactly what the model samples for that speed."""
    root, ckpt = assets["root"], tmp_path / "vam_speed"
    torch.manual_seed(1)
    cfg = dataclasses.replace(assets["vam"].config, ego_speed=True, speed_prior=prior)
    vam = vavam.build_model(cfg).eval()
    with torch.no_grad():
        vam.expert.readout.weight.normal_(0.0, 0.05)
    save_action_model(vam, ckpt)
    loaded = vavam.load_action_model(ckpt).config
    assert loaded.ego_speed and loaded.speed_prior == prior
    args = dict(tokens=root / "store", scene="s0", start=2, num_samples=2, num_steps=3, seed=5)
    with pytest.raises(C.CommandError, match="--speed"):
        plan(ckpt, "straight", out=tmp_path / "a", **args)
    res = plan(ckpt, "straight", out=tmp_path / "b", speed=8.5, **args)
    tokens = torch.from_numpy(TokenStore(root / "store").window("s0", 2, 4).astype(np.int64))
    g = torch.Generator().manual_seed(5)  # the model draws its noise sample by sample
    noise = torch.stack([torch.randn((1, 6, 2), generator=g) for _ in range(2)], 1)  # [1, 2, 6, 2]
    direct = vam.sample_trajectory(tokens[None], torch.tensor([2]), num_samples=2, num_steps=3, noise=noise,
                                   speed=torch.tensor([8.5]))
    np.testing.assert_allclose(np.asarray(res["trajectories"]), direct[0].numpy(), atol=1e-6)
    slower = plan(ckpt, "straight", out=tmp_path / "c", speed=2.0, **args)
    assert not np.allclose(slower["trajectories"], res["trajectories"])


def test_plan_records_the_speed_and_warns_when_the_model_ignores_it(assets, tmp_path, capsys):
    root = assets["root"]
    args = dict(tokens=root / "store", scene="s0", start=2, num_samples=2, num_steps=3, seed=5)
    res = plan(root / "vam", "straight", out=tmp_path / "a", speed=7.5, **args)  # this model reads no speed
    err = capsys.readouterr().err
    assert "warning: --speed 7.5 is ignored: this checkpoint was not trained with the ego speed" in err
    saved = json.loads((tmp_path / "a" / "trajectory.json").read_text())
    assert saved["speed_mps"] == 7.5 and saved["speed_used"] is False
    assert any("--speed 7.5 is ignored" in w for w in saved["warnings"])
    plain = plan(root / "vam", "straight", out=tmp_path / "b", **args)
    assert plain["speed_mps"] is None and plain["warnings"] == [] and "warning" not in capsys.readouterr().err
    np.testing.assert_array_equal(res["trajectories"], plain["trajectories"])  # ignored indeed


def test_plan_refuses_bad_speed_intrinsics_and_fps(assets, tmp_path):
    root = assets["root"]
    args = dict(tokens=root / "store", scene="s0", out=tmp_path / "o")
    for speed in (-1.0, float("nan"), float("inf")):
        with pytest.raises(C.CommandError, match=r"^--speed must be a finite ego speed >= 0 in m/s"):
            plan(root / "vam", "left", speed=speed, **args)
    for k in ((0.0, 40.0, 23.5, 15.5), (40.0, 0.0, 23.5, 15.5), (-40.0, 40.0, 23.5, 15.5),
              (40.0, 40.0, float("nan"), 15.5)):
        with pytest.raises(C.CommandError, match=r"^--intrinsics fx fy cx cy: the focal lengths fx, fy must be "
                                                 r"positive"):
            plan(root / "vam", "left", intrinsics=k, **args)
    with pytest.raises(C.CommandError, match=r"^--fps must be a positive frame rate"):
        plan(root / "vam", "left", tokenizer=str(root / "tok"), frames=[str(assets["images"])], fps=0.0,
             out=tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_plan_refuses_camera_options_that_cannot_be_drawn(assets, tmp_path):
    """--camera-height nan / -1.5 / 0, --camera-forward inf and --camera-pitch-deg 95 were drawn as given (a
    nan height also went into trajectory.json); they are refused by name before anything is written."""
    root = assets["root"]
    args = dict(tokens=root / "store", scene="s0", out=tmp_path / "o")
    for height in (float("nan"), -1.5, 0.0, float("inf")):
        with pytest.raises(C.CommandError, match=r"^--camera-height must be a finite height above the ground"):
            plan(root / "vam", "left", camera_height=height, **args)
    for forward in (float("inf"), float("nan")):
        with pytest.raises(C.CommandError, match=r"^--camera-forward must be a finite distance"):
            plan(root / "vam", "left", camera_forward=forward, **args)
    for pitch in (95.0, -90.0, float("nan")):
        with pytest.raises(C.CommandError, match=r"^--camera-pitch-deg must be a finite angle"):
            plan(root / "vam", "left", camera_pitch_deg=pitch, **args)
    assert not (tmp_path / "o").exists()
    res = plan(root / "vam", "left", camera_height=1.2, camera_forward=-0.5, camera_pitch_deg=-5.0, **args)
    assert res["camera"]["height_m"] == 1.2 and res["camera"]["forward_m"] == -0.5
