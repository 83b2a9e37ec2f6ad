"""``vavam plan``: sample VaVAM trajectories for a driving clip and a high-level command.

Inputs: frames (images, an image folder or one video; tokenized here) or a token-store window; the
last of the ``--context`` frames from ``--start`` is "now". Outputs in ``--out`` (atomically):

- ``trajectory.json``: K sampled trajectories, metres in the ego frame (x forward, y left, origin
  at the current pose), 6 waypoints at 0.5 s .. 3.0 s, plus their mean, the settings and the camera;
- ``plan.png``: the K samples drawn onto the last context frame by perspective projection, with a
  bird's-eye inset (:func:`vavam.viz.draw_trajectories`).

Camera assumption (when ``--intrinsics`` / ``--camera-height`` / ``--camera-forward`` are not given):
nuScenes CAM_FRONT intrinsics scaled to the model-size frame, camera level, 1.51 m above the ground and
1.70 m ahead of the trajectory origin (the rear axle) — the embedded world's front camera
(:class:`vavam.world.camera.Camera`). Right for world data, close for nuScenes/nuPlan front cameras,
only indicative for other footage (dash cams of OpenDV-like videos differ in focal length and mount).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import tyro

from vavam.commands import common as C
from vavam.data.frames import FrameError, check_fps
from vavam.io import atomic_write_json, recorded_grid
from vavam.types import NUM_WAYPOINTS, WAYPOINT_DT, Command

COMMAND_IDS: dict[str, int] = {c.name.lower(): int(c) for c in Command}  # right 0, left 1, straight 2


def command_id(command: str | int) -> int:
    """``"left" | "right" | "straight"`` (any case) -> 1 / 0 / 2; unknown raises :class:`CommandError`."""
    key = str(command).strip().lower()
    if key not in COMMAND_IDS:
        raise C.CommandError(f"--command {command!r}: unknown driving command; use one of left, right, straight")
    return COMMAND_IDS[key]


def plan(
    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")],
    command: Literal["left", "right", "straight"],
    tokenizer: str | None = None,
    frames: list[str] | None = None,
    tokens: Path | None = None,
    scene: str | None = None,
    start: int = 0,
    context: int | None = None,
    num_samples: int = 5,
    num_steps: int | None = None,
    seed: int = 0,
    out: Path = Path("plan"),
    size: tuple[int, int] | None = None,
    fps: float | None = 2.0,
    intrinsics: tuple[float, float, float, float] | None = None,
    camera_height: float | None = None,
    camera_forward: float | None = None,
    camera_pitch_deg: float = 0.0,
    display_width: int = 512,
    device: str = "cpu",
    trust_code: bool = False,
    speed: float | None = None,
) -> dict[str, Any]:
    """Plan ego trajectories with VaVAM for a clip and a command; write trajectory JSON and a picture.

    Args:
        checkpoint: VaVAM checkpoint: our folder or the authors' released ``.pt``.
        command: high-level driving command of the last context frame.
        tokenizer: our tokenizer folder, a LlamaGen VQ ``.pt``, the TorchScript pair (``--trust-code``), or
            "preset:vq_tiny" (random weights, for tests). Default: the one the checkpoint folder's meta.json
            records. Needed with ``--frames``; with ``--tokens`` it only decodes the last frame for the picture
            (else a blank canvas).
        frames: one video, one image folder, or image files in order (2 Hz, like the training data).
        tokens: a token store (instead of ``--frames``); pick the clip with ``--scene`` and ``--start``.
        scene: scene of ``--tokens`` (optional when the store holds one scene).
        start: index of the first context frame in the input.
        context: number of context frames (default: the model's training window, at most its frames).
        num_samples: K, trajectories sampled (independent noise, same visual context).
        num_steps: Euler steps (default: the checkpoint's, 10 for the released models).
        seed: seed of the initial noise.
        out: output folder.
        size: frame size ``H W`` fed to the tokenizer (default: see ``vavam generate --help``).
        fps: resample a video input to this rate (positive; None: every frame).
        intrinsics: ``fx fy cx cy`` in pixels of the model-size frame (default: nuScenes CAM_FRONT
            scaled to it); the focal lengths must be positive.
        camera_height: camera height above the ground in metres (default 1.51).
        camera_forward: camera position ahead of the trajectory origin in metres (default 1.70).
        camera_pitch_deg: downward pitch of the camera (default 0, level).
        display_width: the picture is upscaled (integer factor) to about this width.
        device: torch device.
        trust_code: allow the authors' TorchScript tokenizer files (they run code).
        speed: ego speed in m/s (finite, >= 0) at the last context frame; needed by checkpoints trained with
            the ego speed (``train action --ego-speed``), ignored by the others (the released ones: a warning
            says so). Recorded in ``trajectory.json`` (``speed_mps``, ``speed_used``).

    Returns:
        The content of ``trajectory.json``.
    """
    from vavam.action import load_action_model
    from vavam.viz import default_camera, draw_trajectories, scale_intrinsics

    timer = C.Timer()
    t_start = time.perf_counter()
    cmd = command_id(command)
    if (frames is None) == (tokens is None):
        raise C.CommandError("give exactly one input: --frames (images or a video) or --tokens (a token store)")
    if num_samples < 1:
        raise C.CommandError(f"--num-samples must be >= 1, got {num_samples}")
    if num_steps is not None and num_steps < 1:
        raise C.CommandError(f"--num-steps must be >= 1, got {num_steps}")
    if start < 0:
        raise C.CommandError(f"--start must be >= 0, got {start}")
    if display_width < 1:
        raise C.CommandError(f"--display-width must be a positive width in pixels, got {display_width}")
    if speed is not None and not (math.isfinite(speed) and speed >= 0):
        raise C.CommandError(f"--speed must be a finite ego speed >= 0 in m/s, got {speed}")
    if intrinsics is not None:
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
            raise C.CommandError(f"--intrinsics fx fy cx cy: the focal lengths fx, fy must be positive and all four "
                                 f"finite (pixels of the model-size frame), got {fx:g} {fy:g} {cx:g} {cy:g}")
    # the camera options only draw the picture: a bad value used to be drawn as given (nan: into trajectory.json)
    if camera_height is not None and not (math.isfinite(camera_height) and camera_height > 0):
        raise C.CommandError(f"--camera-height must be a finite height above the ground in metres (> 0), "
                             f"got {camera_height}")
    if camera_forward is not None and not math.isfinite(camera_forward):
        raise C.CommandError(f"--camera-forward must be a finite distance in metres, got {camera_forward}")
    if not (math.isfinite(camera_pitch_deg) and abs(camera_pitch_deg) < 90):
        raise C.CommandError(f"--camera-pitch-deg must be a finite angle between -90 and 90 degrees (downward "
                             f"positive), got {camera_pitch_deg}")
    try:
        check_fps(fps, "--fps")
    except FrameError as exc:
        raise C.CommandError(str(exc)) from None
    out = C.check_out_dir(out)
    kind = C.check_checkpoint(checkpoint)
    tok_path = C.resolve_tokenizer(checkpoint, tokenizer, required=frames is not None)

    with timer("load"):
        try:
            vam = load_action_model(checkpoint, device=device)
        except (ValueError, KeyError) as exc:
            raise C.CommandError(f"checkpoint {checkpoint}: cannot load a VaVAM: {exc}") from exc
        tok = C.load_tokenizer_arg(tok_path, trust_code, device) if tok_path else None
    cfg = vam.config
    vcfg = cfg.video
    if cfg.ego_speed and (speed is None or not math.isfinite(speed)):
        raise C.CommandError(f"--speed: this checkpoint reads the ego speed; give it in m/s (got {speed})")
    speed_warning = None
    if speed is not None and not cfg.ego_speed:
        speed_warning = (f"--speed {speed:g} is ignored: this checkpoint was not trained with the ego speed "
                         "(train action --ego-speed)")
        print(f"vavam plan: warning: {speed_warning}", file=sys.stderr)
    if context is None:
        context = min(cfg.train_frames, vcfg.num_frames)
    if not 1 <= context <= vcfg.num_frames:
        raise C.CommandError(f"--context {context}: must be between 1 and the model's {vcfg.num_frames} frames")
    warnings = C.check_codebook(tok, tok_path, vcfg.vocab_size) if tok is not None else []
    model_grid = recorded_grid(checkpoint)  # None for a released file or an older folder
    if speed_warning is not None:
        warnings.append(speed_warning)

    with timer("read"):
        if frames is not None:
            clip = C.read_frames(frames, start, context, context, vcfg.tokens_per_frame, int(tok.downsample),
                                 tok_path, size, fps, model_grid)
            store = None
        else:
            clip, store = C.read_store_window(tokens, scene, start, context, context, vcfg.tokens_per_frame,
                                                model_grid)
            if tok is not None and store.codebook_size is not None and int(store.codebook_size) != tok.codebook_size:
                raise C.CommandError(
                    f"--tokenizer {tok_path}: codebook of {tok.codebook_size} codes, but --tokens {tokens} was "
                    f"made with a codebook of {store.codebook_size}"
                )
            if store.codebook_size is not None and int(store.codebook_size) > vcfg.vocab_size:
                raise C.CommandError(f"--tokens {tokens}: codebook of {store.codebook_size} codes exceeds the "
                                     f"model's vocabulary of {vcfg.vocab_size}")
    if clip.images is not None:
        with timer("tokenize"):
            clip.tokens = C.encode_images(tok, clip.images.to(device))
        C.check_grid(tuple(clip.tokens.shape[1:]), vcfg.tokens_per_frame, f"--tokenizer {tok_path}",
                     model_grid)
    ctx_tokens = clip.tokens[:context]  # [T, h, w]

    with timer("sample"):
        gen = torch.Generator().manual_seed(seed)
        traj = vam.sample_trajectory(ctx_tokens[None].to(device), torch.tensor([cmd], device=device),
                                     num_samples=num_samples, num_steps=num_steps, generator=gen,
                                     speed=torch.tensor([float(speed)], device=device) if cfg.ego_speed else None)
        traj = traj[0].float().cpu().numpy()  # [K, 6, 2] metres

    with timer("draw"):
        if clip.images is not None:
            image = C.to_uint8(clip.images[context - 1 : context])[0]
            picture_source = "last context frame"
        elif tok is not None:
            image = C.to_uint8(C.decode_tokens(tok, ctx_tokens[-1:])[0])[0]
            picture_source = "last context frame (decoded tokens)"
        else:
            grid = tuple(ctx_tokens.shape[1:])
            hw = store.image_size or (grid[0] * (store.downsample or 16), grid[1] * (store.downsample or 16))
            image = np.full((int(hw[0]), int(hw[1]), 3), 64, np.uint8)
            picture_source = "blank canvas (no tokenizer to decode the frame)"
        img_h, img_w = image.shape[:2]
        k_def, height_def, forward_def = default_camera(img_h, img_w)
        if intrinsics is not None:
            fx, fy, cx, cy = (float(v) for v in intrinsics)
            k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        else:
            k = k_def
        cam_h = height_def if camera_height is None else float(camera_height)
        cam_f = forward_def if camera_forward is None else float(camera_forward)
        scale = max(1, round(display_width / img_w))
        picture = draw_trajectories(image, traj, intrinsics=k, camera_height=cam_h, camera_forward=cam_f,
                                    camera_pitch_deg=camera_pitch_deg, upscale=scale)
        label = f"VaVAM plan: {Command(cmd).name.lower()}, {num_samples} sample{'s' if num_samples > 1 else ''}"
        picture = C.caption(picture, label)

    out = C.make_out_dir(out)
    files = {"png": str(out / "plan.png"), "json": str(out / "trajectory.json")}
    with timer("write"):
        C.write_png(out / "plan.png", picture)
    result: dict[str, Any] = {
        "command": "plan",
        "checkpoint": str(checkpoint),
        "checkpoint_kind": kind,
        "tokenizer": tok_path,
        "input": clip.source,
        "frame_names": clip.names,
        "context": context,
        "driving_command": Command(cmd).name.lower(),
        "driving_command_id": cmd,
        "num_samples": num_samples,
        "num_steps": num_steps or cfg.num_inference_steps,
        "seed": seed,
        "speed_mps": None if speed is None else float(speed),
        "speed_used": bool(cfg.ego_speed),
        "units": "metres",
        "frame": "ego frame at the last context frame: x forward, y left; absolute offsets from the current pose",
        "waypoint_times_s": [round(WAYPOINT_DT * (i + 1), 3) for i in range(NUM_WAYPOINTS)],
        "trajectories": traj.tolist(),
        "mean_trajectory": traj.mean(axis=0).tolist(),
        "camera": {
            "image_size": [img_h, img_w],
            "intrinsics": k.tolist(),
            "intrinsics_at_display_scale": scale_intrinsics(k, scale).tolist(),
            "display_scale": scale,
            "height_m": cam_h,
            "forward_m": cam_f,
            "pitch_deg": camera_pitch_deg,
            "assumed": intrinsics is None or camera_height is None or camera_forward is None,
        },
        "picture": picture_source,
        "files": files,
        "warnings": warnings,
        "device": device,
    }
    result["timings_s"] = {**{k_: round(v, 4) for k_, v in timer.seconds.items()},
                           "total": round(time.perf_counter() - t_start, 4)}
    atomic_write_json(out / "trajectory.json", result)
    end = traj.mean(axis=0)[-1]
    print(f"planned {num_samples} trajectory sample(s) for '{result['driving_command']}' (mean end point "
          f"x {end[0]:.1f} m, y {end[1]:.1f} m at {result['waypoint_times_s'][-1]} s); wrote {files['json']}, "
          f"{files['png']}")
    return result
