"""``vavam generate``: continue a driving clip with VaViM and decode the new frames with the tokenizer.

Inputs: frames (images, an image folder or one video, tokenized here) or a token-store window.
The first ``--context`` frames from ``--start`` condition the model; the next ``--new-frames`` input
frames, when the input has them, are the real future that the generated frames are compared with.

Outputs in ``--out`` (each written atomically):

- ``generated.mp4``: context then generated frames; real (left) and generated (right) side by side,
  labelled, when the real future is known, else the generated panel alone;
- ``strip.png`` (rows: context | generated | real), and each row as ``context.png``,
  ``generated.png``, ``real.png``;
- ``context_tokens.npy``, ``generated_tokens.npy`` (and ``real_tokens.npy``), int32 ``[T, h, w]``;
- ``summary.json``: settings, paths, timings, per-frame token accuracy vs the real future.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import tyro

from vavam.commands import common as C
from vavam.data.frames import FrameError, check_fps
from vavam.io import atomic_write_json, recorded_grid
from vavam.media import MAX_MP4_FPS


class _ProgressModel:
    """Duck-typed view of a :class:`~vavam.video.VideoGPT` that advances a progress bar by one token per
    ``decode_step`` (every decode step yields the logits of exactly one sampled token). All else is delegated."""

    def __init__(self, model, bar, tokens_per_frame: int) -> None:
        self._model, self._bar, self._p = model, bar, tokens_per_frame

    def decode_step(self, *args, **kwargs):
        logits = self._model.decode_step(*args, **kwargs)
        self._bar.update(1.0 / self._p)
        return logits

    def __getattr__(self, name: str):
        return getattr(self._model, name)


def _load_vim(checkpoint: Path, device: str):
    """VaViM of ``checkpoint``; a VaVAM checkpoint folder gives its (frozen) VaViM."""
    from vavam.io import is_checkpoint_folder, read_json
    from vavam.video import load_video_model

    if is_checkpoint_folder(checkpoint) and read_json(Path(checkpoint) / "config.json").get("kind") == "action":
        from vavam.action import load_action_model

        return load_action_model(checkpoint, device=device).video
    return load_video_model(checkpoint, device=device)


def generate(
    checkpoint: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="CHECKPOINT")],
    tokenizer: str | None = None,
    frames: list[str] | None = None,
    tokens: Path | None = None,
    scene: str | None = None,
    start: int = 0,
    context: int = 4,
    new_frames: int = 4,
    top_k: int | None = 1,
    temperature: float = 1.0,
    seed: int = 0,
    out: Path = Path("generated"),
    size: tuple[int, int] | None = None,
    fps: float | None = 2.0,
    video_fps: float = 2.0,
    display_height: int = 288,
    device: str = "cpu",
    trust_code: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate future frames of a driving clip with VaViM and write them as mp4 + PNG strips + JSON.

    Args:
        checkpoint: VaViM checkpoint: our folder or the authors' released ``.pt`` (a VaVAM folder: its VaViM).
        tokenizer: our tokenizer folder, a LlamaGen VQ ``.pt``, the TorchScript pair (``--trust-code``), or
            "preset:vq_tiny" (random weights, for tests). Default: the one the checkpoint folder's meta.json
            records; required for released checkpoints.
        frames: one video, one image folder, or image files in order (2 Hz, like the training data).
        tokens: a token store (instead of ``--frames``); pick the clip with ``--scene`` and ``--start``.
        scene: scene of ``--tokens`` (optional when the store holds one scene).
        start: index of the first context frame in the input.
        context: number of context frames (at most the model's frames - 1).
        new_frames: number of frames to generate.
        top_k: sample among the k most likely tokens; 1 = greedy (default); 0 or None = no cut.
        temperature: softmax temperature, > 0 when sampling (unused when greedy: any value >= 0, 0 included).
        seed: seed of the sampling generator.
        out: output folder.
        size: frame size ``H W`` fed to the tokenizer; default: the token grid nearest the input's
            aspect ratio (``h * w`` = the model's tokens per frame) times the downsampling factor.
        fps: resample a video input to this rate (None: every frame); image inputs are taken as they are.
        video_fps: frame rate of the written mp4 (0.001 to 1000).
        display_height: frames are upscaled (nearest, integer factor) to about this height in the
            mp4 and PNGs.
        device: torch device.
        trust_code: allow the authors' TorchScript tokenizer files (they run code).
        progress: show a progress bar over the generated frames.

    Returns:
        The summary written to ``summary.json``.
    """
    from vavam.video import generate_frames

    timer = C.Timer()
    t_start = time.perf_counter()
    if (frames is None) == (tokens is None):
        raise C.CommandError("give exactly one input: --frames (images or a video) or --tokens (a token store)")
    if context < 1:
        raise C.CommandError(f"--context must be >= 1, got {context}")
    if new_frames < 1:
        raise C.CommandError(f"--new-frames must be >= 1, got {new_frames}")
    if start < 0:
        raise C.CommandError(f"--start must be >= 0, got {start}")
    top_k, sample_temperature = C.sampling_args(top_k, temperature)
    if not (math.isfinite(video_fps) and 0.001 <= video_fps <= MAX_MP4_FPS):
        raise C.CommandError(f"--video-fps must be a positive frame rate (0.001 to {MAX_MP4_FPS}) for the mp4, got "
                             f"{video_fps}")
    try:
        check_fps(fps, "--fps")
    except FrameError as exc:
        raise C.CommandError(str(exc)) from None
    out = C.check_out_dir(out)
    kind = C.check_checkpoint(checkpoint)
    tok_path = C.resolve_tokenizer(checkpoint, tokenizer, required=True)

    with timer("load"):
        try:
            vim = _load_vim(checkpoint, device)
        except (ValueError, KeyError) as exc:
            raise C.CommandError(f"checkpoint {checkpoint}: cannot load a VaViM: {exc}") from exc
        tok = C.load_tokenizer_arg(tok_path, trust_code, device)
    cfg = vim.config
    if context > cfg.num_frames - 1:
        raise C.CommandError(
            f"--context {context}: the model holds {cfg.num_frames} frames, so at most {cfg.num_frames - 1} "
            "context frames (one frame must be generated inside the window)"
        )
    warnings = C.check_codebook(tok, tok_path, cfg.vocab_size)
    model_grid = recorded_grid(checkpoint)  # None for a released file or an older folder
    ds = int(tok.downsample)

    with timer("read"):
        if frames is not None:
            clip = C.read_frames(frames, start, context + new_frames, context, cfg.tokens_per_frame, ds, tok_path,
                                 size, fps, model_grid)
            store = None
        else:
            clip, store = C.read_store_window(tokens, scene, start, context + new_frames, context,
                                              cfg.tokens_per_frame, model_grid)
            if store.codebook_size is not None and int(store.codebook_size) != int(tok.codebook_size):
                raise C.CommandError(
                    f"--tokenizer {tok_path}: codebook of {tok.codebook_size} codes, but --tokens {tokens} was "
                    f"made with a codebook of {store.codebook_size}"
                )
            if store.downsample is not None and int(store.downsample) != ds:
                warnings.append(f"--tokens was made with downsampling {store.downsample}, --tokenizer has {ds}")
    if clip.images is not None:
        with timer("tokenize"):
            clip.tokens = C.encode_images(tok, clip.images.to(device))
        C.check_grid(tuple(clip.tokens.shape[1:]), cfg.tokens_per_frame, f"--tokenizer {tok_path}",
                     model_grid)
    all_tokens = clip.tokens  # [N, h, w]
    h, w = all_tokens.shape[1:]
    ctx_tokens = all_tokens[:context]
    real_tokens = all_tokens[context : context + new_frames]  # [R, h, w], R may be < new_frames
    n_real = len(real_tokens)

    gen = torch.Generator(device=torch.device(device)).manual_seed(seed)
    with timer("generate"):
        bar = C.progress_bar(new_frames, progress, f"generating {new_frames} frames", "frame")
        try:
            model = _ProgressModel(vim, bar, h * w)
            generated = generate_frames(model, ctx_tokens[None].to(device), new_frames,
                                        temperature=sample_temperature,
                                        top_k=top_k, generator=gen)[0].cpu()  # [F, h, w]
            bar.n = new_frames  # float steps of 1/p do not add up exactly
            bar.refresh()
        finally:
            bar.close()

    with timer("decode"):
        gen_images, outside = C.decode_tokens(tok, generated)
        ctx_recon, _ = C.decode_tokens(tok, ctx_tokens)
        if clip.images is not None:
            ctx_real = clip.images[:context].cpu()
            real_images = clip.images[context : context + new_frames].cpu()
        else:
            ctx_real = ctx_recon
            real_images = C.decode_tokens(tok, real_tokens)[0] if n_real else None
    if outside:
        warnings.append(f"{outside} generated token(s) outside the tokenizer's codebook were clamped for decoding")

    accuracy = [float((generated[i] == real_tokens[i]).float().mean()) for i in range(n_real)]
    copy_last = [float((ctx_tokens[-1] == real_tokens[i]).float().mean()) for i in range(n_real)]

    with timer("write"):
        out = C.make_out_dir(out)
        if not n_real:  # a real future from an earlier run into this folder would sit beside this clip's frames
            for stale in ("real.png", "real_tokens.npy"):
                (out / stale).unlink(missing_ok=True)
        frame_h = int(gen_images.shape[-2])
        scale = max(1, round(display_height / frame_h))

        def u8(x: torch.Tensor) -> list[np.ndarray]:
            return [C.upscale(im, scale) for im in C.to_uint8(x)]

        ctx_real_u8, ctx_recon_u8, gen_u8 = u8(ctx_real), u8(ctx_recon), u8(gen_images)
        real_u8 = u8(real_images) if n_real else []
        real_label = "real" if clip.images is not None else "real (decoded tokens)"
        files: dict[str, str] = {}

        # video: one picture per time step (context, then generated)
        pictures = []
        blank = np.zeros_like(gen_u8[0])
        for i in range(context):
            if n_real:
                pictures.append(C.hstack([C.labelled(ctx_real_u8[i], f"{real_label}  t{i - context + 1}"),
                                          C.labelled(ctx_recon_u8[i], f"context (tokenized)  t{i - context + 1}")]))
            else:
                pictures.append(C.labelled(ctx_recon_u8[i], f"context (tokenized)  t{i - context + 1}"))
        for i in range(new_frames):
            g = C.labelled(gen_u8[i], f"generated  t+{i + 1}", color=(255, 200, 80))
            if n_real:
                r = C.labelled(real_u8[i], f"{real_label}  t+{i + 1}") if i < n_real else C.labelled(
                    blank, f"no real frame  t+{i + 1}")
                pictures.append(C.hstack([r, g]))
            else:
                pictures.append(g)
        files["video"] = str(C.write_mp4(out / "generated.mp4", pictures, fps=video_fps))

        rows = [("context", ctx_real_u8), ("generated", gen_u8)] + ([("real", real_u8)] if n_real else [])
        strips = []
        for name, ims in rows:
            strip = C.hstack(ims)
            files[f"{name}_png"] = str(C.write_png(out / f"{name}.png", strip))
            strips.append(C.labelled(strip, name))
        files["strip_png"] = str(C.write_png(out / "strip.png", C.vstack(strips, gap=6)))

        files["context_tokens"] = str(C.write_npy(out / "context_tokens.npy", ctx_tokens.numpy().astype(np.int32)))
        files["generated_tokens"] = str(C.write_npy(out / "generated_tokens.npy", generated.numpy().astype(np.int32)))
        if n_real:
            files["real_tokens"] = str(C.write_npy(out / "real_tokens.npy", real_tokens.numpy().astype(np.int32)))

    files["summary"] = str(out / "summary.json")
    gen_s = timer.seconds["generate"]
    summary: dict[str, Any] = {
        "command": "generate",
        "checkpoint": str(checkpoint),
        "checkpoint_kind": kind,
        "tokenizer": tok_path,
        "input": clip.source,
        "frame_names": clip.names,
        "model": {"num_frames": cfg.num_frames, "tokens_per_frame": cfg.tokens_per_frame,
                  "vocab_size": cfg.vocab_size, "grid": [int(h), int(w)]},
        "context": context,
        "new_frames": new_frames,
        "real_frames_known": n_real,
        "sampling": {"top_k": top_k, "temperature": temperature, "seed": seed,
                     "mode": "greedy" if top_k == 1 else ("top-k" if top_k else "full softmax")},
        "image_size": [int(gen_images.shape[-2]), int(gen_images.shape[-1])],
        "display_scale": scale,
        "token_accuracy": accuracy,
        "token_accuracy_mean": float(np.mean(accuracy)) if accuracy else None,
        "copy_last_context_accuracy": copy_last,
        "tokens_outside_codebook": outside,
        "timings_s": {**{k: round(v, 4) for k, v in timer.seconds.items()},
                      "total": round(time.perf_counter() - t_start, 4)},
        "generated_tokens_per_s": round(new_frames * h * w / gen_s, 2) if gen_s > 0 else None,
        "files": files,
        "warnings": warnings,
        "device": device,
    }
    atomic_write_json(out / "summary.json", summary)
    acc = f", token accuracy vs real {summary['token_accuracy_mean']:.3f}" if accuracy else ""
    print(f"generated {new_frames} frame(s) in {gen_s:.2f} s{acc}; wrote {files['video']}, {files['strip_png']}, "
          f"{files['summary']}")
    return summary
